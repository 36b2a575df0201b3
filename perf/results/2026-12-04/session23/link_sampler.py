# Samples every rb<pid>-<i> (bridge side of host i's veth) every 100 ms:
# rx = host i's upload, tx = host i's download; writes each 100 ms's use.
# Usage: python3 link_sampler.py RATE_BIT_PER_S OUT, started with perf/crowd.sh 12
# (it waits for 13 links, and stops once they have been idle 3 s); then
# python3 link_use.py OUT for half-second averages.
import os, sys, time, glob, re
rate = float(sys.argv[1]) / 8  # bytes/s
out = sys.argv[2]
while True:
    ifs = sorted(glob.glob('/sys/class/net/rb*-*'), key=lambda p: int(p.rsplit('-', 1)[1]))
    if len(ifs) >= 13: break
    time.sleep(0.05)
rows = []
idle = 0
while True:
    t = time.time()
    try:
        v = [(int(open(p + '/statistics/rx_bytes').read()), int(open(p + '/statistics/tx_bytes').read())) for p in ifs]
    except OSError:
        break
    rows.append((t, v))
    if len(rows) > 2 and rows[-1][1] == rows[-2][1]:
        idle += 1
    else:
        idle = 0
    if len(rows) > 50 and idle > 30: break
    time.sleep(0.1)
# start at first movement of the seed's upload beyond 1 MB
base = rows[0][1]
start = next(i for i, (t, v) in enumerate(rows) if v[0][0] - base[0][0] > 200_000)
with open(out, 'w') as f:
    prev = rows[start - 1]
    for t, v in rows[start:]:
        dt = t - prev[0]
        up = [(v[i][0] - prev[1][i][0]) / dt / rate for i in range(len(v))]
        dn = [(v[i][1] - prev[1][i][1]) / dt / rate for i in range(len(v))]
        f.write("%.2f up %s | down %s\n" % (t - rows[start][0], ' '.join('%3.0f' % (100 * u) for u in up), ' '.join('%3.0f' % (100 * d) for d in dn)))
        prev = (t, v)
