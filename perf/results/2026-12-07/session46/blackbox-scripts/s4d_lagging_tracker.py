#!/usr/bin/env python3
# 4d: a tracker that lags (was cut off while bob left and rejoined g) answers a running node's heartbeat
# membership check with the OLD membership id: does the node withdraw a file it shared in the NEW membership?
# usage: s4d_lagging_tracker.py BASEPORT
import sys, time, signal
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

P = int(sys.argv[1]); ver = 'new'
W = fresh('s4d')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+1}\n')
F = lambda n, s=200000: mkfile(f'{W}/files/{n}', s)
TT = ['--peer-ttl', '6']
try:
    T = {1: Tracker(ver, info, 1, f'{W}/t1', *TT), 2: Tracker(ver, info, 2, f'{W}/t2', *TT)}
    al = Shell(ver, f'127.0.0.1:{P+11}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa'); al.cmd('create_group g')
    A = Shell(ver, f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA')
    A.cmd('create_user bob pb'); A.cmd('login bob pb'); A.cmd('join_group g'); al.cmd('accept_request g bob')
    A.cmd(f'upload_file {F("g-a.bin")} g')
    time.sleep(1)
    log('--- SIGSTOP T2 (cut off); bob leaves and rejoins g from B via T1')
    T[2].p.send_signal(signal.SIGSTOP)
    B = Shell(ver, f'127.0.0.1:{P+13}', info, f'{W}/st-B', name='bobB')
    B.cmd('login bob pb'); B.cmd('leave_group g'); B.cmd('join_group g'); al.cmd('accept_request g bob')
    time.sleep(3); log('A stderr:', A.new_err())
    A.cmd(f'upload_file {F("g-new.bin")} g')
    log('--- SIGSTOP T1, SIGCONT T2 (T2 lags: it never got the leave/rejoin)')
    T[1].p.send_signal(signal.SIGSTOP); T[2].p.send_signal(signal.SIGCONT)
    t0 = time.time()
    while time.time() - t0 < 45:
        e = A.new_err()
        if e:
            log(f'after {time.time()-t0:.1f}s A stderr:', e)
        if any('g-new' in l for l in e):
            break
        time.sleep(0.5)
    log('--- SIGCONT T1; let them sync')
    T[1].p.send_signal(signal.SIGCONT)
    time.sleep(5)
    log('digests', digest(ver, info, 1), digest(ver, info, 2))
    log('A stderr:', A.new_err())
    al.cmd('list_files g')
    os.makedirs(f'{W}/dl', exist_ok=True)
    al.cmd(f'download_file g g-new.bin {W}/dl/')
    for _ in range(30):
        r = al.cmd('show_downloads', quiet=True)
        if r and not r[0].startswith('[D]'): break
        time.sleep(1)
    log('alice show_downloads:', r, 'alice stderr:', al.new_err()[-2:])
    A.cmd('logout'); A.cmd('login bob pb'); al.cmd('list_files g')
    A.quit(); B.quit(); al.quit()
    for n in (1, 2):
        T[n].stop()
finally:
    for n in (1, 2):
        try:
            T[n].p.send_signal(signal.SIGCONT)
        except Exception:
            pass
    cleanup()
