#!/usr/bin/env python3
# Shell `logout` with 8 downloads running (seeder --upload-rate 2MB): time to answer; resume; bytes identical.
# usage: s5_logout_downloads.py new|old threads|uring BASEPORT
import sys, time, subprocess, filecmp, signal
sys.path.insert(0, '/tmp/h47/scripts')
from rs import *

ver, io, P = sys.argv[1], sys.argv[2], int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else 'logout'
W = fresh(f's5l-{ver}-{io}-{mode}')
info = f'{W}/trk.txt'
open(info, 'w').write(f'127.0.0.1:{P}\n')
open(f'{W}/pw-alice', 'w').write('pa\n')
try:
    t = Tracker(ver, info, 1, f'{W}/td')
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice')
    al.cmd('create_user alice pa', quiet=True); al.cmd('login alice pa', quiet=True); al.cmd('create_group g', quiet=True)
    al.quit()
    files = [mkfile(f'{W}/src/d/f{i}.bin', 1500000) for i in range(8)]
    sp = subprocess.Popen([f'{BIN[ver]}/ringshare', 'share', '--trackers', info, '--user', 'alice', '--password-file', f'{W}/pw-alice',
                           '--state-dir', f'{W}/st-share', '--upload-rate', '2MB', '--io', io, 'g', f'{W}/src/d'],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    PROCS.append(sp)
    sp.stdout.readline()
    b = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-bob', '--io', io, name='bob')
    b.cmd('create_user bob pb', quiet=True); b.cmd('login bob pb', quiet=True); b.cmd('join_group g', quiet=True)
    al = Shell(ver, f'127.0.0.1:{P+1}', info, f'{W}/st-alice', name='alice2'); al.cmd('login alice pa', quiet=True); al.cmd('accept_request g bob', quiet=True)
    os.makedirs(f'{W}/dest', exist_ok=True)
    for i in range(8):
        b.cmd(f'download_file g d/f{i}.bin {W}/dest/', quiet=True)
    time.sleep(2.5)
    b.cmd('show_downloads')
    if mode == 'sigint':
        t0 = time.time(); b.p.send_signal(signal.SIGINT); rc = b.p.wait(30); dt = time.time() - t0
        log(f'{ver} {io}: shell exited {rc} {dt:.3f}s after SIGINT; stdout tail {b.out.lines[-2:]}')
        wait_port_free(P+2)
        b = Shell(ver, f'127.0.0.1:{P+2}', info, f'{W}/st-bob', '--io', io, name='bob2')
    else:
        t0 = time.time(); r = b.cmd('logout'); dt = time.time() - t0
        log(f'{ver} {io}: logout answered in {dt:.3f}s: {r}')
    b.cmd('login bob pb')
    for i in range(8):
        b.cmd(f'download_file g d/f{i}.bin {W}/dest/', quiet=True)
    end = time.time() + 60
    while time.time() < end:
        s = b.cmd('show_downloads', quiet=True)
        if all(l.startswith('[C]') for l in s) and len(s) >= 8:
            break
        time.sleep(0.5)
    log('final show_downloads:', s)
    same = all(filecmp.cmp(f'{W}/src/d/f{i}.bin', f'{W}/dest/d/f{i}.bin', shallow=False) for i in range(8) if os.path.exists(f'{W}/dest/d/f{i}.bin'))
    log('identical:', same, 'count', len([f for f in os.listdir(f'{W}/dest/d') if f.endswith('.bin')]), 'leftover', [f for f in os.listdir(f'{W}/dest/d') if 'part' in f])
    b.quit(); al.quit()
    sp.send_signal(signal.SIGINT); sp.wait(10)
    t.stop()
finally:
    cleanup()
