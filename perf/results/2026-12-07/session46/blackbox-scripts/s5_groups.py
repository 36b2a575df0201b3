#!/usr/bin/env python3
# Scenario 5: groups and resuming, demanding-user edition. usage: s5_groups.py new|old BASEPORT
import sys, time, subprocess
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

ver, P = sys.argv[1], int(sys.argv[2])
W = fresh(f's5g-{ver}')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n')
F = lambda n, s=200000: mkfile(f'{W}/files/{n}', s)
open(f'{W}/pw-bob', 'w').write('pb\n')


def share_oneshot(group, *paths, port, state, secs=4):
    p = subprocess.Popen([f'{BIN[ver]}/ringshare', 'share', '--trackers', info, '--user', 'bob', '--password-file', f'{W}/pw-bob',
                          '--state-dir', state, '--listen', f'127.0.0.1:{port}', group, *paths],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.append(p)
    time.sleep(secs)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    log(f'  share {group} {paths} rc={p.returncode}\n    out: {out.strip()}\n    err: ' +
        ' | '.join(l for l in err.splitlines() if 'I/O backend' not in l and 'tcp_rmem' not in l))

import signal
try:
    t = Tracker(ver, info, 1, f'{W}/td', '--peer-ttl', '6')
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa'); al.cmd('login alice pa')
    B = Shell(ver, f'127.0.0.1:{P+3}', info, f'{W}/st-B', name='bobB')
    B.cmd('create_user bob pb'); B.cmd('login bob pb')
    log('=== 5a: many groups (12), 6 of them remade/left+rejoined while A is offline')
    gs = [f'm{i:02d}' for i in range(12)]
    for g in gs:
        al.cmd(f'create_group {g}', quiet=True); B.cmd(f'join_group {g}', quiet=True); al.cmd(f'accept_request {g} bob', quiet=True)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA')
    A.cmd('login bob pb')
    for g in gs:
        A.cmd(f'upload_file {F(g + "-1.bin")} {g}', quiet=True)
        A.cmd(f'upload_file {F(g + "-2.bin")} {g}', quiet=True)
    A.quit()
    for i, g in enumerate(gs[:6]):
        if i % 2 == 0:   # left and rejoined
            B.cmd(f'leave_group {g}', quiet=True); B.cmd(f'join_group {g}', quiet=True); al.cmd(f'accept_request {g} bob', quiet=True)
        else:            # deleted (both leave) and made anew by bob himself
            B.cmd(f'leave_group {g}', quiet=True); al.cmd(f'leave_group {g}', quiet=True); B.cmd(f'create_group {g}')
    wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA2')
    A.cmd('login bob pb')
    A.cmd('list_files m01'); A.cmd('list_files m06')
    A.quit()
    log('=== 5b: one name reused several times; A shares in each incarnation, offline across each remake')
    B.cmd('create_group r')
    for k in range(1, 5):
        wait_port_free(P+2)
        A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name=f'bobA-r{k}')
        A.cmd('login bob pb'); A.cmd(f'upload_file {F(f"r-v{k}.bin")} r'); A.cmd('list_files r')
        A.quit()
        B.cmd('leave_group r')  # bob is the only member: r deleted
        if k % 2:
            al.cmd('create_group r'); B.cmd('join_group r', quiet=True); al.cmd('accept_request r bob', quiet=True); al.cmd('leave_group r')
        else:
            B.cmd('create_group r')
    wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA-r5')
    A.cmd('login bob pb'); A.cmd('list_files r')
    log('=== 5c: group deleted and NOT remade while offline; and bob not a member any more')
    A.cmd(f'upload_file {F("gone.bin")} m07'); A.cmd(f'upload_file {F("left.bin")} m08')
    A.quit()
    B.cmd('leave_group m07'); al.cmd('leave_group m07'); B.cmd('leave_group m08')
    wait_port_free(P+2)
    A = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-A', name='bobA-c')
    A.cmd('login bob pb')
    log('=== 5d: bad input around groups')
    for c in ['upload_file /etc/hostname m08', 'upload_file /nonexistent m09', 'leave_group nosuch', 'join_group m09',
              'leave_group m08', 'accept_request m09 bob', 'list_files', 'upload_file', 'create_group m09',
              'join_group "a b"', 'create_group ' + 'x' * 65, 'stop_share m07 gone.bin', 'stop_share m09 nope.bin']:
        A.cmd(c)
    A.quit()
    log('=== 5e: one-shot share with a fixed --listen; group remade; same share command again')
    S = f'{W}/st-S'
    B.cmd('create_group s1')
    share_oneshot('s1', F('s-a.bin'), F('s-b.bin'), port=P+6, state=S)
    B.cmd('leave_group s1'); al.cmd('create_group s1'); B.cmd('join_group s1'); al.cmd('accept_request s1 bob')
    share_oneshot('s1', F('s-b.bin'), port=P+6, state=S)
    al.cmd('list_files s1')
    share_oneshot('s1', F('s-b.bin'), port=P+6, state=S)
    log('=== 5f: one-shot get with the same state dir/listen after a remake (resume check at get\'s login)')
    B.cmd('leave_group s1'); al.cmd('leave_group s1'); al.cmd('create_group s1'); B.cmd('join_group s1'); al.cmd('accept_request s1 bob')
    al.cmd(f'upload_file {F("al-s.bin")} s1')
    r = subprocess.run([f'{BIN[ver]}/ringshare', 'get', '--trackers', info, '--user', 'bob', '--password-file', f'{W}/pw-bob',
                        '--state-dir', S, '--listen', f'127.0.0.1:{P+6}', 's1', 'al-s.bin', f'{W}/dl/'], capture_output=True, text=True, timeout=60)
    log('  get rc', r.returncode, r.stdout.strip(), '|', ' | '.join(l for l in r.stderr.splitlines() if 'I/O' not in l)[-600:])
    al.cmd('list_files s1')
    log('=== 5g: OLD-format client against this tracker (OLD ringshare shell, login with shares, upload, leave)')
    wait_port_free(P+7)
    O = Shell('old', f'127.0.0.1:{P+7}', info, f'{W}/st-O', name='bobOLD')
    O.cmd('login bob pb'); O.cmd(f'upload_file {F("old-cl.bin")} m09'); O.quit(); wait_port_free(P+7)
    O = Shell('old', f'127.0.0.1:{P+7}', info, f'{W}/st-O', name='bobOLD2')
    O.cmd('login bob pb'); O.cmd('leave_group m10'); O.quit()
    for s in (al, B): s.quit()
    t.stop()
finally:
    cleanup()
