#!/usr/bin/env python3
# Scenario 2: variants. usage: s2_variants.py new|old BASEPORT
import sys, time
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

ver, P = sys.argv[1], int(sys.argv[2])
W = fresh(f's2-{ver}')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n')
F = lambda n, s=300000: mkfile(f'{W}/files/{n}', s)
try:
    t = Tracker(ver, info, 1, f'{W}/td', '--peer-ttl', '6')
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa')
    for g in ('g1', 'g2', 'g3', 'g4'):
        al.cmd(f'create_group {g}')
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA')
    A.cmd('create_user bob pb'); A.cmd('login bob pb')
    dv = Shell(ver, f'127.0.0.1:{P+5}', info, f'{W}/st-dave', name='dave')
    dv.cmd('create_user dave pd'); dv.cmd('login dave pd')
    # g2: dave joins BEFORE bob (so ownership passes to dave); g3: bob joins first (ownership passes to bob)
    dv.cmd('join_group g2'); al.cmd('accept_request g2 dave')
    for g in ('g1', 'g2', 'g3', 'g4'):
        A.cmd(f'join_group {g}'); al.cmd(f'accept_request {g} bob')
    dv.cmd('join_group g3'); al.cmd('accept_request g3 dave')
    for g in ('g1', 'g2', 'g3', 'g4'):
        A.cmd(f'upload_file {F(g + "-a.bin")} {g}')
    log('--- 2a/2b: A offline; bob leaves+rejoins g1; alice (owner) leaves g2 (-> dave) and g3 (-> bob)')
    A.quit()
    B = Shell(ver, f'127.0.0.1:{P+3}', info, f'{W}/st-B', name='bobB')
    B.cmd('login bob pb'); B.cmd('leave_group g1'); B.cmd('join_group g1'); al.cmd('accept_request g1 bob')
    al.cmd('leave_group g2'); al.cmd('leave_group g3')
    B.cmd('list_requests g3'); dv.cmd('list_requests g2')
    wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA2')
    A.cmd('login bob pb')
    for g in ('g1', 'g2', 'g3', 'g4'):
        dv.cmd(f'list_files {g}') if g in ('g2', 'g3') else al.cmd(f'list_files {g}')
    log('--- 2c: A running; bob leaves+rejoins g4 from B; wait for a heartbeat')
    A.new_err()
    B.cmd('leave_group g4'); B.cmd('join_group g4'); al.cmd('accept_request g4 bob')
    t0 = time.time()
    while time.time() - t0 < 15:
        e = [l for l in open(A.errpath).read().splitlines() if 'g4' in l]
        if e: break
        time.sleep(0.2)
    log(f'after {time.time()-t0:.1f}s A stderr:', A.new_err())
    al.cmd('list_files g4')
    A.cmd(f'upload_file {F("g4-b.bin")} g4')
    log('--- 2d: A running; bob leaves+rejoins g1 from B; A uploads into g1 at once (before heartbeat)')
    A.cmd(f'upload_file {F("g1-b.bin")} g1')
    B.cmd('leave_group g1'); B.cmd('join_group g1'); al.cmd('accept_request g1 bob')
    A.cmd(f'upload_file {F("g1-c.bin")} g1')
    log('A stderr:', A.new_err())
    al.cmd('list_files g1')
    time.sleep(4)
    log('A stderr after 4s:', A.new_err())
    al.cmd('list_files g1'); al.cmd('list_files g4')
    log('--- 2e: restart A: g1-c and g4-b resume')
    A.quit(); wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA3')
    A.cmd('login bob pb')
    al.cmd('list_files g1'); al.cmd('list_files g4')
    log('--- 2f: A offline; bob leaves g4 for good (not a member); login')
    A.quit()
    B.cmd('leave_group g4')
    wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA4')
    A.cmd('login bob pb')
    A.cmd('list_files g4')
    log('A stderr:', A.new_err())
    A.quit()
    for s in (al, B, dv): s.quit()
    t.stop()
finally:
    cleanup()
