#!/usr/bin/env python3
# Scenario 1: D2. usage: s1_d2.py new|old BASEPORT
import sys, time
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

ver, P = sys.argv[1], int(sys.argv[2])
W = fresh(f's1-{ver}')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n')
try:
    t = Tracker(ver, info, 1, f'{W}/td')
    fa = mkfile(f'{W}/files/ga.bin', 700000)
    fh = mkfile(f'{W}/files/ha.bin', 300000)
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa'); al.cmd('create_group g'); al.cmd('create_group h')
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA')
    A.cmd('create_user bob pb'); A.cmd('login bob pb'); A.cmd('join_group g'); A.cmd('join_group h')
    al.cmd('accept_request g bob'); al.cmd('accept_request h bob')
    A.cmd(f'upload_file {fa} g'); A.cmd(f'upload_file {fh} h')
    A.cmd('list_files g')
    log('A quit rc', A.quit())
    B = Shell(ver, f'127.0.0.1:{P+3}', info, f'{W}/st-B', name='bobB')
    B.cmd('login bob pb'); B.cmd('leave_group g')
    al.cmd('leave_group g'); al.cmd('list_groups')
    ca = Shell(ver, f'127.0.0.1:{P+4}', info, f'{W}/st-carol', name='carol')
    ca.cmd('create_user carol pc'); ca.cmd('login carol pc'); ca.cmd('create_group g')
    B.cmd('join_group g'); ca.cmd('accept_request g bob')
    ca.cmd('list_files g')
    wait_port_free(P+2)
    A2 = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA2')
    A2.cmd('login bob pb')
    time.sleep(0.5)
    ca.cmd('list_files g'); A2.cmd('list_files h'); A2.cmd('list_files g')
    log('A2 stderr:', A2.new_err())
    # logout / login again in the same process: still not resumed, h still resumed
    A2.cmd('logout'); A2.cmd('login bob pb')
    # upload into the new g from A2 and restart: must resume now
    fa2 = mkfile(f'{W}/files/ga2.bin', 200000)
    A2.cmd(f'upload_file {fa2} g')
    A2.quit(); wait_port_free(P+2)
    A3 = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA3')
    A3.cmd('login bob pb'); ca.cmd('list_files g')
    A3.quit()
    for s in (al, B, ca): s.quit()
    t.stop()
finally:
    cleanup()
