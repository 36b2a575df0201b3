#!/bin/bash
# Thirteenth session (#16 item 5): ringshare's bulk get against libtorrent
# and aria2c fetching the same kind of trees (as one multi-file torrent
# from a libtorrent seeder) on loopback, one after the other on this
# machine. The trees are made as perf/bulk.sh makes its own (same sizes,
# random content): 10,000 files of 4-256 KiB and 20 of 50 MiB.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
HERE=perf/results/2026-12-03/bulk-aria2c
SAMPLE=0 ONE=1024 OUT=$HERE/ringshare.txt perf/bulk.sh 2
T=$(mktemp -d /tmp/bulk-aria2c.XXXXXX)
trap 'rm -rf "$T"' EXIT
python3 - "$T" <<'PY'
import os, random, sys
w = sys.argv[1]
rng = random.Random(7)
for i in range(10000):
    d = f"{w}/small/tree/d{i % 50:02d}/e{i % 7}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.bin", "wb") as f:
        f.write(os.urandom(rng.randint(4 << 10, 256 << 10)))
os.makedirs(f"{w}/large/tree", exist_ok=True)
for i in range(20):
    with open(f"{w}/large/tree/part{i:02d}.bin", "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
PY
for kind in small large; do
  /usr/bin/python3 perf/libtorrent_tree.py "$T/$kind/tree" 2 | tee -a "$HERE/libtorrent-$kind.txt"
  LEECHER=aria2c /usr/bin/python3 perf/libtorrent_tree.py "$T/$kind/tree" 2 | tee -a "$HERE/aria2c-$kind.txt"
done
