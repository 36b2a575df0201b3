#!/usr/bin/env python3
# partial dir upload in the shell, per-node counting, lowered limit + resume. usage: s7_misc.py BASEPORT
import sys, time, os, signal
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *
P = int(sys.argv[1]); ver = 'new'
W = fresh('s7'); info = f'{W}/trk.txt'; open(info, 'w').write(f'127.0.0.1:{P}\n')
try:
    T = Tracker(ver, info, 1, f'{W}/td', '--max-share-mib-per-user', '1')
    a1 = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-a1', name='a1')
    a1.cmd('create_user alice palice'); a1.cmd('login alice palice'); a1.cmd('create_group g')
    D = f'{W}/many'; os.makedirs(D)
    for i in range(6600): open(f'{D}/f{i:05d}', 'w').write('x')
    log('--- 7a shell upload_file of a dir slightly over the limit')
    r = a1.cmd(f'upload_file {D} g', quiet=True, timeout=120)
    log(f'{len(r)} lines; first 2: {r[:2]}; last 2: {r[-2:]}; lines starting error: {sum(l.startswith("error:") for l in r)}')
    log('--- 7b second node of alice (same user, other address) shares the same file: counted again?')
    a1.cmd('stop_share g many/f00000'); a1.cmd('stop_share g many/f00001')
    a2 = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-a2', name='a2'); a2.cmd('login alice palice')
    a2.cmd(f'upload_file {D}/f00002 g')  # many/f00002 is shared by a1 under name many/f00002; a2 shares as f00002 (new name)
    os.makedirs(f'{W}/b/many', exist_ok=True); open(f'{W}/b/many/f00003', 'w').write('x')
    a2.cmd(f'upload_file {W}/b/many g')
    a2.cmd(f'upload_file {D}/f00004 g')
    a1.cmd('list_files g many/f0000')
    log('--- 7c restart tracker with per-user 1 -> lowered? use tiny total: --max-share-mib 1 while alice holds ~1 MiB; then a1 quit + restart same addr: resume?')
    a1.quit(); a2.quit(); T.stop(); wait_port_free(P); wait_port_free(P+1)
    T = Tracker(ver, info, 1, f'{W}/td', '--max-share-mib-per-user', '1', '--max-share-mib', '1')
    a1 = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-a1', name='a1b'); a1.cmd('login alice palice', timeout=120)
    log('a1b stderr:', [l[:300] for l in a1.new_err()][:5])
    r = a1.cmd('list_files g', quiet=True); log(f'list_files g: {len(r)} lines')
    a1.quit(); T.stop()
finally:
    cleanup()
