#!/usr/bin/env python3
# two trackers, room for ~1 more file: 8 parallel one-shot shares (alternating trackers). usage: s8_race.py BASEPORT
import sys, time, os, signal, subprocess
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
P = int(sys.argv[1]); ver = 'new'
W = fresh('s8')
info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+10}\n')
info2 = f'{W}/trk2.txt'; open(info2, 'w').write(f'127.0.0.1:{P+10}\n127.0.0.1:{P}\n')
open(f'{W}/alice.pw', 'w').write('palice\n')
LIM = ['--max-share-mib-per-user', '1']
try:
    T1 = Tracker(ver, info, 1, f'{W}/td1', *LIM); T2 = Tracker(ver, info, 2, f'{W}/td2', *LIM)
    a1 = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-a1', name='a1')
    a1.cmd('create_user alice palice'); a1.cmd('login alice palice'); a1.cmd('create_group g')
    D = f'{W}/many'; os.makedirs(D)
    for i in range(6590): open(f'{D}/f{i:05d}', 'w').write('x')
    r = a1.cmd(f'upload_file {D} g', quiet=True, timeout=120); log(r[-1])
    time.sleep(2)
    ps = []
    for k in range(8):
        f = f'{W}/x/p{k}'; os.makedirs(os.path.dirname(f), exist_ok=True); open(f, 'w').write(str(k))
        ep = f'{W}/p{k}.err'
        p = subprocess.Popen([f'{BIN[ver]}/ringshare', 'share', '--trackers', info if k % 2 else info2, '--user', 'alice', '--password-file', f'{W}/alice.pw',
                              '--state-dir', f'{W}/st-p{k}', '--listen', f'127.0.0.1:{P+20+k}', 'g', f], stdout=open(f'{W}/p{k}.out', 'w'), stderr=open(ep, 'w'))
        PROCS.append(p); ps.append(p)
    time.sleep(6)
    for k, p in enumerate(ps):
        p.send_signal(signal.SIGINT)
    for k, p in enumerate(ps):
        p.wait(30); log(f'p{k} rc={p.returncode} out={open(f"{W}/p{k}.out").read().strip()[:80]!r} err={open(f"{W}/p{k}.err").read().strip().splitlines()[-1][:120]!r}')
    time.sleep(1)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    r = a1.cmd('list_files g p', quiet=True); log('list_files g p:', r)
    r = a1.cmd(f'upload_file {D}/f00000 g'); 
    a1.quit(); T1.stop(); T2.stop()
finally:
    cleanup()
