#!/usr/bin/env python3
# Budget basics on one NEW tracker. usage: s1_budget.py BASEPORT
import sys, time, subprocess
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
P = int(sys.argv[1]); ver = 'new'
W = fresh('s1'); S = '/tmp/h48/sparse'
info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n')
for u in ('alice', 'bob', 'carol'): open(f'{W}/{u}.pw', 'w').write(f'p{u}\n')
def oneshot(*args, timeout=120):
    t0 = time.time()
    r = subprocess.run([f'{BIN[ver]}/ringshare', *args], capture_output=True, text=True, timeout=timeout)
    log(f'  $ ringshare {" ".join(args)}\n    rc={r.returncode} ({time.time()-t0:.1f}s)\n    out: {r.stdout.strip()!r}\n    err: {r.stderr.strip()!r}')
    return r
try:
    T = Tracker(ver, info, 1, f'{W}/td', '--max-share-mib-per-user', '1', '--max-share-mib', '2')
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    bo = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-bob', name='bob')
    ca = Shell(ver, f'127.0.0.1:{P+3}', info, f'{W}/st-carol', name='carol')
    for s, u in ((al, 'alice'), (bo, 'bob'), (ca, 'carol')):
        s.cmd(f'create_user {u} p{u}'); s.cmd(f'login {u} p{u}')
    al.cmd('create_group g'); al.cmd('create_group h')
    for s, u in ((bo, 'bob'), (ca, 'carol')):
        s.cmd('join_group g'); s.cmd('join_group h'); al.cmd(f'accept_request g {u}'); al.cmd(f'accept_request h {u}')
    log('--- 1a alice fills her 1 MiB with 10 GiB sparse files')
    for f in ('f10a', 'f10b', 'f10c'):
        t0 = time.time(); al.cmd(f'upload_file {S}/{f}.bin g', timeout=300); log(f'   ({time.time()-t0:.1f}s)')
    al.cmd('list_files g')
    log('--- 1b small file still fits?'); sm = mkfile(f'{W}/files/small1.bin', 1000)
    al.cmd(f'upload_file {sm} g')
    log('--- 1c bob is unaffected'); t0 = time.time(); bo.cmd(f'upload_file {S}/f10c.bin g', timeout=300); log(f'   ({time.time()-t0:.1f}s)')
    bo.cmd('list_files g')
    log('--- 1d re-share same file from same node costs nothing'); al.cmd(f'upload_file {S}/f10a.bin g', timeout=300)
    log('--- 1e alice in another group h: still her budget'); al.cmd(f'upload_file {S}/f10d.bin h', timeout=300)
    log('--- 1f stop_share makes room'); al.cmd('stop_share g f10b.bin'); al.cmd(f'upload_file {S}/f10d.bin h', timeout=300)
    al.cmd('list_files g'); al.cmd('list_files h')
    log('--- 1g total limit 2 MiB: carol adds a 20 GiB file (total would be > 2 MiB)')
    ca.cmd(f'upload_file {S}/f20a.bin h', timeout=300)
    ca.cmd(f'upload_file {S}/f10e.bin h', timeout=300)
    ca.cmd('list_files h')
    log('digest', digest(ver, info, 1))
    log('--- 1h SIGTERM restart: counts survive')
    log('rc', T.stop()); wait_port_free(P)
    T = Tracker(ver, info, 1, f'{W}/td', '--max-share-mib-per-user', '1', '--max-share-mib', '2')
    time.sleep(1)
    al.cmd(f'upload_file {S}/f10b.bin g', timeout=300)
    log('--- 1i kill -9 restart: counts survive')
    T.stop(signal.SIGKILL); wait_port_free(P)
    T = Tracker(ver, info, 1, f'{W}/td', '--max-share-mib-per-user', '1', '--max-share-mib', '2')
    time.sleep(1)
    al.cmd(f'upload_file {S}/f10b.bin g', timeout=300)
    log('--- 1j bob leave_group g frees; bob then uploads 2 more 10G into h')
    bo.cmd('leave_group g'); bo.cmd(f'upload_file {S}/f10a.bin h', timeout=300); bo.cmd(f'upload_file {S}/f10b.bin h', timeout=300)
    bo.cmd('list_files h')
    log('--- 1k user at the limit can still download'); al.cmd(f'upload_file {sm} h')
    bo.cmd(f'download_file h small1.bin {W}/dl-bob/'); time.sleep(2); bo.cmd('show_downloads')
    log('--- 1l restart with larger limits: refused share now accepted')
    T.stop(); wait_port_free(P)
    T = Tracker(ver, info, 1, f'{W}/td')
    al.cmd(f'upload_file {S}/f10b.bin g', timeout=300)
    al.cmd('list_files g')
    for s in (al, bo, ca): log('quit rc', s.quit())
    log('tracker rc', T.stop())
finally:
    cleanup()
