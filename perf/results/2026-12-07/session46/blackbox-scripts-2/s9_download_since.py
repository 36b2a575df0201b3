#!/usr/bin/env python3
# Probe: a file bob DOWNLOADED (shell download_file, or one-shot get with a fixed --listen) in an old
# membership of g, node stopped before its first heartbeat; g deleted and made anew by carol, bob let in;
# the node logs in again: is the downloaded file resumed into carol's new g?
# usage: s5_download_since.py new|old BASEPORT
import sys, time, subprocess
sys.path.insert(0, '/tmp/h48/scripts')
from rs import *

ver, P = sys.argv[1], int(sys.argv[2])
W = fresh(f's5d-{ver}')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n')
try:
    t = Tracker(ver, info, 1, f'{W}/td')
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa'); al.cmd('create_group g')
    al.cmd(f'upload_file {mkfile(f"{W}/files/secret1.bin", 600000)} g')
    al.cmd(f'upload_file {mkfile(f"{W}/files/secret2.bin", 600000)} g')
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA')
    A.cmd('create_user bob pb'); A.cmd('login bob pb'); A.cmd('join_group g'); al.cmd('accept_request g bob')
    os.makedirs(f'{W}/dl', exist_ok=True)
    A.cmd(f'download_file g secret1.bin {W}/dl/')
    for _ in range(50):
        r = A.cmd('show_downloads', quiet=True)
        if r and r[0].startswith('[C]'): break
        time.sleep(0.1)
    log('show_downloads:', r)
    time.sleep(float(os.environ.get('HOLD','0')))
    A.quit()
    # one-shot get with a fixed --listen
    open(f'{W}/pw-bob', 'w').write('pb\n')
    r = subprocess.run([f'{BIN[ver]}/ringshare', 'get', '--trackers', info, '--user', 'bob', '--password-file', f'{W}/pw-bob',
                        '--state-dir', f'{W}/st-G', '--listen', f'127.0.0.1:{P+6}', '--quiet', 'g', 'secret2.bin', f'{W}/dl2/'],
                       capture_output=True, text=True, timeout=60)
    log('get rc', r.returncode, r.stdout.strip(), r.stderr.strip())
    al.cmd('list_files g')
    # bob leaves, alice leaves (g deleted), carol makes g anew, bob let in
    B = Shell(ver, f'127.0.0.1:{P+3}', info, f'{W}/st-B', name='bobB')
    B.cmd('login bob pb'); B.cmd('leave_group g'); al.cmd('leave_group g')
    ca = Shell(ver, f'127.0.0.1:{P+4}', info, f'{W}/st-carol', name='carol')
    ca.cmd('create_user carol pc'); ca.cmd('login carol pc'); ca.cmd('create_group g')
    B.cmd('join_group g'); ca.cmd('accept_request g bob')
    wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA2')
    A.cmd('login bob pb')
    wait_port_free(P+6)
    G = Shell(ver, f'127.0.0.1:{P+6}', info, f'{W}/st-G', name='bobG')
    G.cmd('login bob pb')
    time.sleep(0.3)
    ca.cmd('list_files g')
    for s in (A, G, B, ca, al): s.quit()
    t.stop()
finally:
    cleanup()
