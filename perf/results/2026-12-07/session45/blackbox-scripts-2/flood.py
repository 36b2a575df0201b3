#!/usr/bin/env python3
# flood.py HOST PORT SECONDS PER_ADDR NADDR : hold idle TCP connections from 127.0.0.2.. ; each second, reopen closed ones
# (newcomers), so the server stays full and keeps turning away / evicting. Prints stats every 10 s.
import socket, sys, time, select
host, port, dur, per, naddr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
srcs = ['127.0.0.%d' % (i + 2) for i in range(naddr)]
conns = {}  # sock -> src
opened = closed = failed = 0
def open_one(src):
    global opened, failed
    s = socket.socket(); s.setblocking(True); s.settimeout(1)
    try:
        s.bind((src, 0)); s.connect((host, port)); s.setblocking(False); conns[s] = src; opened += 1
    except Exception:
        failed += 1; s.close()
t0 = time.time(); last = t0
for src in srcs:
    for _ in range(per): open_one(src)
print(f"initial: open={len(conns)} failed={failed}", flush=True)
while time.time() - t0 < dur:
    r, _, _ = select.select(list(conns), [], [], 1.0)
    for s in r:
        try: d = s.recv(4096)
        except Exception: d = b''
        if not d:
            src = conns.pop(s); s.close(); closed += 1
    # refill to per-address quota (newcomers), at most 5 times a second
    time.sleep(0.2)
    cnt = {}
    for src in conns.values(): cnt[src] = cnt.get(src, 0) + 1
    for src in srcs:
        for _ in range(min(10, per - cnt.get(src, 0))): open_one(src)
    if time.time() - last >= 10:
        last = time.time(); print(f"t={last-t0:.0f} open={len(conns)} opened={opened} closed_by_server={closed} connect_failed={failed}", flush=True)
for s in conns: s.close()
