#!/usr/bin/env python3
# A state dir whose share record was written by the NEW client (with Member records) read by the OLD client
# (client downgrade), then by the NEW one again. usage: s5_client_downgrade.py BASEPORT
import sys, time
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

P = int(sys.argv[1])
W = fresh('s5cd')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n')
F = lambda n, s=200000: mkfile(f'{W}/files/{n}', s)
try:
    t = Tracker('new', info, 1, f'{W}/td')
    al = Shell('new', f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa'); al.cmd('create_group g'); al.cmd('create_group h')
    A = Shell('new', f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA-new')
    A.cmd('create_user bob pb'); A.cmd('login bob pb')
    for g in 'gh':
        A.cmd(f'join_group {g}'); al.cmd(f'accept_request {g} bob'); A.cmd(f'upload_file {F(g + "1.bin")} {g}')
    A.quit(); wait_port_free(P+2)
    log('sharelog files:', os.listdir(f'{W}/st-A'))
    A = Shell('old', f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA-old')
    A.cmd('login bob pb'); A.cmd(f'upload_file {F("g2.bin")} g')
    time.sleep(1); log('OLD stderr:', A.new_err())
    A.quit(); wait_port_free(P+2)
    A = Shell('new', f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA-new2')
    A.cmd('login bob pb')
    time.sleep(1); log('NEW stderr:', A.new_err())
    A.quit(); al.quit(); t.stop()
finally:
    cleanup()
