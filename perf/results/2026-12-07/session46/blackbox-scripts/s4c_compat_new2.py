#!/usr/bin/env python3
# 4c: (a) NEW client against an OLD tracker: login with recorded shares, upload_file, leave_group, share one-shot.
#     (b) two OLD trackers stopped together (SIGTERM T1 then T2), both started NEW: do digests agree?
# usage: s4c_compat.py BASEPORT
import sys, time, signal, subprocess
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

P = int(sys.argv[1])
W = fresh('s4c' + ('-kill9' if len(sys.argv) > 2 else ''))
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n127.0.0.1:{P+1}\n')
F = lambda n, s=300000: mkfile(f'{W}/files/{n}', s)
TT = ['--peer-ttl', '6']


def digests(tag, ver=('new2', 'new2'), tries=30):
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
    A = Shell('old', f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA-old')
    A.cmd('create_user bob pb'); A.cmd('login bob pb'); A.cmd('join_group g'); A.cmd('join_group h')
    al.cmd('accept_request g bob'); al.cmd('accept_request h bob')
    A.cmd(f'upload_file {F("g-a.bin")} g'); A.quit()
    log('--- (a) NEW client, OLD trackers')
    wait_port_free(P+12)
    A = Shell('new2', f'127.0.0.1:{P+12}', info, f'{W}/st-A', name='bobA-new-vs-old')
    A.cmd('login bob pb'); A.cmd(f'upload_file {F("h-a.bin")} h'); A.cmd('leave_group h'); A.cmd('list_files g')
    A.quit()
    open(f'{W}/pw-bob', 'w').write('pb\n')
    try:
        r = subprocess.run([f'{BIN["new2"]}/ringshare', 'share', '--trackers', info, '--user', 'bob', '--password-file', f'{W}/pw-bob',
                            '--state-dir', f'{W}/st-S', 'g', F('g-s.bin')], capture_output=True, text=True, timeout=8)
        log('share rc', r.returncode, r.stdout.strip(), r.stderr.strip())
    except subprocess.TimeoutExpired as e:
        log('share still running after 8 s (seeding):', e.stdout, e.stderr)
    log('--- (b) stop both OLD (SIGTERM), start both NEW')
    digests('OLD', ('old', 'old'))
    if len(sys.argv) > 2 and sys.argv[2] == 'kill9':
        T[1].stop(); T[2].stop(signal.SIGKILL); log('T1 SIGTERM, T2 kill -9')
    else:
        T[1].stop(); T[2].stop()
    wait_port_free(P); wait_port_free(P+1)
    T = {1: Tracker('new2', info, 1, f'{W}/t1', *TT), 2: Tracker('new2', info, 2, f'{W}/t2', *TT)}
    digests('both NEW')
    al.quit()
    for n in (1, 2):
        T[n].stop()
finally:
    cleanup()
