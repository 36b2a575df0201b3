#!/usr/bin/env python3
# huge limit values: does MiB*2^20 wrap? usage: s5_overflow.py BASEPORT VALUE
import sys, time
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
P = int(sys.argv[1]); V = sys.argv[2]; ver = 'new'
W = fresh(f's5-{V}')
info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n')
try:
    T = Tracker(ver, info, 1, f'{W}/td', '--max-share-mib-per-user', V, '--max-share-mib', V)
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice palice'); al.cmd('login alice palice'); al.cmd('create_group g')
    al.cmd(f'upload_file {mkfile(W + "/f/a.bin", 100)} g'); al.cmd('list_files g')
    al.quit(); T.stop()
    log('tracker err:', open(T.errpath).read()[-800:])
finally:
    cleanup()
