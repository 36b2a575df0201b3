#!/usr/bin/env python3
# budget with two trackers. usage: s4_two.py BASEPORT
import sys, time, subprocess, os, signal
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
P = int(sys.argv[1]); ver = 'new'
W = fresh('s4')
info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+10}\n')
info2 = f'{W}/trk2.txt'; open(info2, 'w').write(f'127.0.0.1:{P+10}\n127.0.0.1:{P}\n')
for u in ('alice', 'bob'): open(f'{W}/{u}.pw', 'w').write(f'p{u}\n')
LIM = ['--max-share-mib-per-user', '1']
ERRN = [0]
def spawn(*args):
    ERRN[0] += 1; ep = f'{W}/spawn{ERRN[0]}.err'
    p = subprocess.Popen([f'{BIN[ver]}/ringshare', *args], stdout=subprocess.PIPE, stderr=open(ep, 'w'), text=True)
    p.errpath = ep; PROCS.append(p); return p
def until_seeding(p):
    out = ''
    while True:
        l = p.stdout.readline()
        if not l: break
        out += l
        if 'seeding' in l: break
    return out.strip()
def summ(e):
    el = e.strip().splitlines(); return f'{len(el)} stderr lines, {sum("skipped" in l for l in el)} skipped; non-skip lines: {[l for l in el if "skipped" not in l][:6]}'
def run(*args, timeout=60):
    r = subprocess.run([f'{BIN[ver]}/ringshare', *args], capture_output=True, text=True, timeout=timeout)
    log(f'  $ ringshare {" ".join(a.replace(W,"W") for a in args)}\n    rc={r.returncode} out={r.stdout.strip()[:400]!r}\n    err: {summ(r.stderr)}')
    return r
def share_args(user, trk, st, *rest):
    return ['share', '--trackers', trk, '--user', user, '--password-file', f'{W}/{user}.pw', '--state-dir', st, *rest]
try:
    T1 = Tracker(ver, info, 1, f'{W}/td1', *LIM); T2 = Tracker(ver, info, 2, f'{W}/td2', *LIM)
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice palice'); al.cmd('login alice palice'); al.cmd('create_group g')
    B = Shell(ver, f'127.0.0.1:{P+2}', info2, f'{W}/st-bobB', name='bobB')
    B.cmd('create_user bob pbob'); B.cmd('login bob pbob'); B.cmd('join_group g'); time.sleep(1); al.cmd('accept_request g bob'); time.sleep(1)
    D = f'{W}/many'; os.makedirs(D)
    for i in range(7000): open(f'{D}/f{i:05d}', 'w').write('x')
    D2 = f'{W}/more'; os.makedirs(D2)
    for i in range(50): open(f'{D2}/m{i:03d}', 'w').write('y')
    log('--- 4a bob shares 7000 via T1 (random port), keeps seeding')
    p1 = spawn(*share_args('bob', info, f'{W}/st-b1', 'g', D)); log('out:', until_seeding(p1))
    time.sleep(0.5)
    log('--- 4b bob shares 50 via T2 (random port): all refused by replicated count?')
    run(*share_args('bob', info2, f'{W}/st-b2', 'g', D2))
    log('--- 4c bob shell node (on T2) upload single')
    B.cmd(f'upload_file {D2}/m000 g')
    log('--- 4d alice (not at limit) downloads more/ ... first alice shares more/')
    al.cmd(f'upload_file {D2} g')
    log('--- 4e bob at limit downloads more/m001 in shell; then peers count of more/m001')
    B.cmd(f'download_file g more/m001 {W}/dlB/'); time.sleep(1.5); B.cmd('show_downloads'); B.cmd('list_files g more/m00')
    log('--- 4f SIGINT the 7000 share: withdrawn -> room')
    p1.send_signal(signal.SIGINT); o, _ = p1.communicate(timeout=60); log(f'rc={p1.returncode} out={o.strip()[-300:]!r} err: {summ(open(p1.errpath).read())}')
    time.sleep(0.5)
    run('ls', '--trackers', info2, '--user', 'alice', '--password-file', f'{W}/alice.pw', 'g', 'many/')
    p2 = spawn(*share_args('bob', info2, f'{W}/st-b2', 'g', D2)); log('bob 50 via T2 now:', until_seeding(p2))
    log('--- 4g kill -9 T1 while p2 seeds; bob 7000 via T2 (random port): fits 6594-50-1?')
    T1.stop(signal.SIGKILL)
    p3 = spawn(*share_args('bob', info2, f'{W}/st-b3', 'g', D)); log('out:', until_seeding(p3))
    wait_port_free(P); T1 = Tracker(ver, info, 1, f'{W}/td1', *LIM); time.sleep(3)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    log('--- 4h via T1 after its restart: bob still at limit?')
    r = run(*share_args('bob', info, f'{W}/st-b4', 'g', f'{D2}/m000'), timeout=20)
    log('--- 4i SIGTERM both trackers, restart, check again')
    p2.send_signal(signal.SIGINT); p3.send_signal(signal.SIGINT)
    for p in (p2, p3): o, _ = p.communicate(timeout=60); log(f'rc={p.returncode} out={o.strip()[-200:]!r} err: {summ(open(p.errpath).read())}')
    T1.stop(); T2.stop(); wait_port_free(P); wait_port_free(P+10)
    T1 = Tracker(ver, info, 1, f'{W}/td1', *LIM); T2 = Tracker(ver, info, 2, f'{W}/td2', *LIM); time.sleep(2)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    p4 = spawn(*share_args('bob', info, f'{W}/st-b5', 'g', D)); log('bob 7000 again (all withdrawn before):', until_seeding(p4))
    p4.send_signal(signal.SIGINT); o, _ = p4.communicate(timeout=60); log(f'rc={p4.returncode} err: {summ(open(p4.errpath).read())}')
    for s in (al, B): s.quit()
    T1.stop(); T2.stop()
finally:
    cleanup()
