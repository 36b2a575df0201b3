#!/usr/bin/env python3
# membership ids via one-shot share/get. usage: s3_member.py new|old BASEPORT
import sys, time, subprocess, os, signal
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
ver = sys.argv[1]; P = int(sys.argv[2])
W = fresh(f's3-{ver}')
info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+10}\n')
info2 = f'{W}/trk2.txt'; open(info2, 'w').write(f'127.0.0.1:{P+10}\n127.0.0.1:{P}\n')
for u in ('alice', 'bob', 'carol'): open(f'{W}/{u}.pw', 'w').write(f'p{u}\n')
def run(*args, timeout=60, trk=None):
    t0 = time.time()
    r = subprocess.run([f'{BIN[ver]}/ringshare', *args], capture_output=True, text=True, timeout=timeout)
    log(f'  $ ringshare {" ".join(a.replace(W, "W") for a in args)}\n    rc={r.returncode} ({time.time()-t0:.1f}s)\n    out: {r.stdout.strip()!r}\n    err: {r.stderr.strip()!r}')
    return r
def share_until_seeding(user, listen, st, group, *paths, trk=None):
    args = ['share', '--trackers', trk or info, '--user', user, '--password-file', f'{W}/{user}.pw', '--state-dir', st, '--listen', listen, group, *paths]
    p = subprocess.Popen([f'{BIN[ver]}/ringshare', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True); PROCS.append(p)
    out = ''
    while True:
        l = p.stdout.readline()
        if not l: break
        out += l
        if 'seeding' in l: break
    p.send_signal(signal.SIGINT); o, e = p.communicate(timeout=30)
    log(f'  $ ringshare share {user} {listen} {os.path.basename(st)} {group} {[os.path.basename(x) for x in paths]}\n    rc={p.returncode} out={(out+o).strip()!r}\n    err={e.strip()!r}')
def get(user, st, group, name, dest, *extra, trk=None):
    return run('get', '--trackers', trk or info, '--user', user, '--password-file', f'{W}/{user}.pw', '--state-dir', st, *extra, group, name, dest)
try:
    T1 = Tracker(ver, info, 1, f'{W}/td1'); T2 = Tracker(ver, info, 2, f'{W}/td2')
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    ca = Shell(ver, f'127.0.0.1:{P+3}', info, f'{W}/st-carol', name='carol')
    B = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-bobB', name='bobB')
    al.cmd('create_user alice palice'); al.cmd('login alice palice'); al.cmd('create_group g'); al.cmd('create_group k')
    ca.cmd('create_user carol pcarol'); ca.cmd('login carol pcarol')
    B.cmd('create_user bob pbob'); B.cmd('login bob pbob'); B.cmd('join_group g'); B.cmd('join_group k')
    al.cmd('accept_request g bob'); al.cmd('accept_request k bob')
    ga = mkfile(f'{W}/files/ga.bin', 300000); ka = mkfile(f'{W}/files/ka.bin', 200000)
    al_s = mkfile(f'{W}/files/secret.bin', 600000); al.cmd(f'upload_file {al_s} g')
    log('--- 3a get --quiet, random port: stderr must be empty')
    get('bob', f'{W}/st-q', 'g', 'secret.bin', f'{W}/dlq/', '--quiet')
    log('--- 3b bob shares ga (g) + ka (k) from fixed 127.0.0.1:P+5 (st-S), get with fixed --listen P+6 (st-G)')
    share_until_seeding('bob', f'127.0.0.1:{P+5}', f'{W}/st-S', 'g', ga)
    share_until_seeding('bob', f'127.0.0.1:{P+5}', f'{W}/st-S', 'k', ka)
    get('bob', f'{W}/st-G', 'g', 'secret.bin', f'{W}/dlG/', '--quiet', '--listen', f'127.0.0.1:{P+6}')
    log('--- 3c nothing changed: rerun share (fixed) and get --quiet (fixed): what is printed?')
    share_until_seeding('bob', f'127.0.0.1:{P+5}', f'{W}/st-S', 'k', ka)
    os.remove(f'{W}/dlG/secret.bin')
    get('bob', f'{W}/st-G', 'g', 'secret.bin', f'{W}/dlG/', '--quiet', '--listen', f'127.0.0.1:{P+6}')
    log('--- 3d owner change of k (alice leaves k -> bob owner): no spurious stop')
    al.cmd('leave_group k')
    share_until_seeding('bob', f'127.0.0.1:{P+5}', f'{W}/st-S', 'k', ka)
    log('--- 3e g deleted and made anew by carol; bob let in')
    B.cmd('leave_group g'); al.cmd('leave_group g'); ca.cmd('create_group g'); B.cmd('join_group g'); ca.cmd('accept_request g bob')
    share_until_seeding('bob', f'127.0.0.1:{P+5}', f'{W}/st-S', 'k', ka)
    os.remove(f'{W}/dlG/secret.bin') if os.path.exists(f'{W}/dlG/secret.bin') else None
    cs = mkfile(f'{W}/files/cs.bin', 100000); ca.cmd(f'upload_file {cs} g')
    get('bob', f'{W}/st-G', 'g', 'cs.bin', f'{W}/dlG2/', '--quiet', '--listen', f'127.0.0.1:{P+6}')
    ca.cmd('list_files g')
    log('--- 3f tracker T1 SIGTERM restart + T2 kill -9 restart, then nodes via the other list order: no spurious stop')
    T1.stop(); wait_port_free(P); T1 = Tracker(ver, info, 1, f'{W}/td1')
    T2.stop(signal.SIGKILL); wait_port_free(P+10); T2 = Tracker(ver, info, 2, f'{W}/td2')
    time.sleep(1)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    share_until_seeding('bob', f'127.0.0.1:{P+5}', f'{W}/st-S', 'k', ka, trk=info2)
    get('bob', f'{W}/st-G', 'g', 'cs.bin', f'{W}/dlG3/', '--quiet', '--listen', f'127.0.0.1:{P+6}', trk=info2)
    ca.cmd('list_files g'); B.cmd('list_files k')
    for s in (al, ca, B): s.quit()
    T1.stop(); T2.stop()
finally:
    cleanup()
