#!/usr/bin/env python3
# Scenario 4b: rolling upgrade of two trackers OLD -> NEW (one at a time, SIGTERM each),
# a membership made between the two restarts; digests and a node checked against each.
# usage: s4b_rolling_upgrade.py BASEPORT
import sys, time, signal
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

P = int(sys.argv[1])
W = fresh('s4b')
info = f'{W}/trk.txt'; rev = f'{W}/trk-rev.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+1}\n')
open(rev, 'w').write(f'127.0.0.1:{P+1}\n127.0.0.1:{P}\n')
F = lambda n, s=300000: mkfile(f'{W}/files/{n}', s)
TT = ['--peer-ttl', '6']


def digests(tag, ver=('new', 'new'), tries=30):
    for _ in range(tries):
        d = [digest(ver[0], info, 1), digest(ver[1], info, 2)]
        if d[0] == d[1]:
            break
        time.sleep(0.2)
    log(f'digests {tag}: T1={d[0]} T2={d[1]} {"AGREE" if d[0]==d[1] else "DIFFER"}')

try:
    T = {1: Tracker('old', info, 1, f'{W}/t1', *TT), 2: Tracker('old', info, 2, f'{W}/t2', *TT)}
    al = Shell('old', f'127.0.0.1:{P+11}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa'); al.cmd('create_group g'); al.cmd('create_group h')
    al.cmd('create_user bob pb')
    digests('all OLD', ('old', 'old'))
    log('--- upgrade T2 first (SIGTERM, start NEW on its dir)')
    T[2].stop(); wait_port_free(P+1); T[2] = Tracker('new', info, 2, f'{W}/t2', *TT)
    log('--- while T1 OLD / T2 NEW: bob joins g (accepted through T1, OLD)')
    A = Shell('new', f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA')
    A.cmd('login bob pb'); A.cmd('join_group g'); al.cmd('accept_request g bob'); A.cmd('join_group h'); al.cmd('accept_request h bob')
    A.cmd(f'upload_file {F("g-a.bin")} g')   # NEW client against OLD T1: Membership request
    A.cmd(f'upload_file {F("h-a.bin")} h')
    A.quit(); al.quit()
    digests('T1 OLD, T2 NEW', ('old', 'new'))
    log('--- upgrade T1 (SIGTERM, start NEW)')
    T[1].stop(); wait_port_free(P); T[1] = Tracker('new', info, 1, f'{W}/t1', *TT)
    digests('both NEW')
    wait_port_free(P+11)
    al = Shell('new', f'127.0.0.1:{P+11}', info, f'{W}/st-alice', name='alice2'); al.cmd('login alice pa')
    log('--- node A: upload into g against T1 (records T1\'s id), then check against T2 (rev list)')
    wait_port_free(P+12)
    A = Shell('new', f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA-T1')
    A.cmd('login bob pb'); A.cmd(f'upload_file {F("g-b.bin")} g'); A.cmd(f'upload_file {F("h-b.bin")} h')
    A.quit(); wait_port_free(P+12)
    A = Shell('new', f'127.0.0.1:{P+12}', rev, f'{W}/st-A', name='bobA-T2')
    A.cmd('login bob pb'); A.cmd('list_files g')
    time.sleep(3); log('A stderr:', A.new_err())
    A.cmd(f'upload_file {F("g-c.bin")} g')
    A.quit(); wait_port_free(P+12)
    A = Shell('new', f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA-T1b')
    A.cmd('login bob pb'); A.cmd('list_files g')
    log('--- while running against T1: kill -9 T1, A fails over to T2')
    A.new_err()
    T[1].stop(signal.SIGKILL)
    time.sleep(6); log('A stderr:', A.new_err()); A.cmd('list_files g')
    A.quit(); al.quit()
    wait_port_free(P); T[1] = Tracker('new', info, 1, f'{W}/t1', *TT)
    digests('after all that')
    for n in (1, 2):
        T[n].stop()
finally:
    cleanup()
