#!/usr/bin/env python3
# T1 per-user 1 MiB, T2 default: shares accepted at T2 must replicate to T1. usage: s10_mixed_limits.py BASEPORT
import sys, time, os, signal, subprocess
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
P = int(sys.argv[1]); ver = 'new'
W = fresh('s10')
info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+10}\n')
info2 = f'{W}/trk2.txt'; open(info2, 'w').write(f'127.0.0.1:{P+10}\n127.0.0.1:{P}\n')
try:
    T1 = Tracker(ver, info, 1, f'{W}/td1', '--max-share-mib-per-user', '1'); T2 = Tracker(ver, info, 2, f'{W}/td2')
    a = Shell(ver, f'127.0.0.1:{P+1}', info2, f'{W}/st-a', name='a_via_T2')
    a.cmd('create_user alice palice'); a.cmd('login alice palice'); a.cmd('create_group g')
    D = f'{W}/many'; os.makedirs(D)
    for i in range(7000): open(f'{D}/f{i:05d}', 'w').write('x')
    r = a.cmd(f'upload_file {D} g', quiet=True, timeout=120); log('via T2:', r[-1])
    time.sleep(3)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    b = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-b', name='a_via_T1'); b.cmd('login alice palice')
    open(f'{W}/one', 'w').write('z'); b.cmd(f'upload_file {W}/one g')
    r = b.cmd('list_files g', quiet=True); log('list_files via T1:', len(r))
    log('--- T2 killed: node a fails over to T1; heartbeats/re-registration must not drop shares')
    T2.stop(signal.SIGKILL); time.sleep(12)
    log('a stderr:', [l[:250] for l in a.new_err()][-5:])
    r = a.cmd('list_files g', quiet=True); log('list_files via a:', len(r), r[:1])
    a.cmd('logout'); r = a.cmd('login alice palice', timeout=120); log('a stderr:', [l[:250] for l in a.new_err()][-5:])
    wait_port_free(P+10); T2 = Tracker(ver, info, 2, f'{W}/td2'); time.sleep(3)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    a.quit(); b.quit(); T1.stop(); T2.stop()
finally:
    cleanup()
