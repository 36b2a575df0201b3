#!/usr/bin/env python3
# Scenario 4: two NEW trackers. usage: s4_two_trackers.py BASEPORT
import sys, time, signal
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

P = int(sys.argv[1]); ver = 'new'
W = fresh('s4')
info = f'{W}/trk.txt'; rev = f'{W}/trk-rev.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+1}\n')
open(rev, 'w').write(f'127.0.0.1:{P+1}\n127.0.0.1:{P}\n')
F = lambda n, s=300000: mkfile(f'{W}/files/{n}', s)
TT = ['--peer-ttl', '6']


def digests(tag):
    for _ in range(50):
        d = [digest(ver, info, 1), digest(ver, info, 2)]
        if d[0] == d[1]:
            break
        time.sleep(0.2)
    log(f'digests {tag}: T1={d[0]} T2={d[1]} {"AGREE" if d[0]==d[1] else "DIFFER"}')

try:
    T = {1: Tracker(ver, info, 1, f'{W}/t1', *TT), 2: Tracker(ver, info, 2, f'{W}/t2', *TT)}
    al = Shell(ver, f'127.0.0.1:{P+11}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa')
    for g in ('g', 'h', 'k'):
        al.cmd(f'create_group {g}')
    A = Shell(ver, f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA')
    A.cmd('create_user bob pb'); A.cmd('login bob pb')
    for g in ('g', 'h', 'k'):
        A.cmd(f'join_group {g}'); al.cmd(f'accept_request {g} bob')
        A.cmd(f'upload_file {F(g + "-a.bin")} {g}')
    digests('after setup')
    log('--- kill -9 T2, restart')
    T[2].stop(signal.SIGKILL); wait_port_free(P+1); T[2] = Tracker(ver, info, 2, f'{W}/t2', *TT)
    digests('after T2 restart')
    log('--- A quits; node A logs in against T2 first (reversed list)')
    A.quit(); wait_port_free(P+12)
    A = Shell(ver, f'127.0.0.1:{P+12}', rev, f'{W}/st-A', name='bobA-rev')
    A.cmd('login bob pb')
    time.sleep(3); log('A stderr:', A.new_err())
    log('--- kill -9 T2 while A runs against it: A moves to T1; no spurious stop')
    T[2].stop(signal.SIGKILL)
    time.sleep(6); log('A stderr:', A.new_err()); A.cmd('list_files g')
    log('--- while T2 is down: bob leaves+rejoins g from B via T1; T2 restarts and catches up')
    B = Shell(ver, f'127.0.0.1:{P+13}', info, f'{W}/st-B', name='bobB')
    B.cmd('login bob pb'); B.cmd('leave_group g'); B.cmd('join_group g'); al.cmd('accept_request g bob')
    time.sleep(3); log('A stderr:', A.new_err())
    A.quit()
    wait_port_free(P+1); T[2] = Tracker(ver, info, 2, f'{W}/t2', *TT)
    digests('after T2 back')
    log('--- kill T1 -9; A logs in against T2 (rev list)')
    T[1].stop(signal.SIGKILL)
    wait_port_free(P+12)
    A = Shell(ver, f'127.0.0.1:{P+12}', rev, f'{W}/st-A', name='bobA-rev2')
    A.cmd('login bob pb')
    A.cmd(f'upload_file {F("g-b.bin")} g')
    wait_port_free(P); T[1] = Tracker(ver, info, 1, f'{W}/t1', *TT)
    digests('after T1 back')
    A.quit(); wait_port_free(P+12)
    A = Shell(ver, f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA-fwd')
    A.cmd('login bob pb')
    time.sleep(3); log('A stderr:', A.new_err())
    log('--- SIGTERM both (v3 snapshots), restart both, digests and login')
    A.quit()
    for n in (1, 2):
        T[n].stop()
    for n in (1, 2):
        wait_port_free(P + n - 1); T[n] = Tracker(ver, info, n, f'{W}/t{n}', *TT)
    digests('after both restarted')
    wait_port_free(P+12)
    A = Shell(ver, f'127.0.0.1:{P+12}', rev, f'{W}/st-A', name='bobA-rev3')
    A.cmd('login bob pb')
    A.quit(); B.quit(); al.quit()
    for n in (1, 2):
        T[n].stop()
finally:
    cleanup()
