#!/bin/bash
# strace a bulk get of N small files on loopback
set -euo pipefail
ROOT=/work/main
B=$ROOT/target/release
N=${N:-2000}
. $ROOT/perf/lib/loopback.sh
python3 - "$W" "$N" <<'PY'
import os, random, sys
w, small = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(small):
    d = f"{w}/small/tree/d{i % 50:02d}/e{i % 7}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.bin", "wb") as f:
        f.write(os.urandom(rng.randint(4 << 10, 256 << 10)))
PY
d=$W/r; mkdir -p $d
lb_group $d $B
lb_seed $d $B $W/small/tree
SPID=$(pgrep -f "share.*$W/small/tree" | head -1)
strace -f -c -o /tmp/s31/seed.strace -p $SPID &
STP=$!
sleep 0.5
RINGSHARE_STATE_DIR="$d/l" strace -f -c -o /tmp/s31/get.strace $B/ringshare get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log"
kill -INT $STP; wait $STP || true
cat $d/stats.json | head -c 300; echo
lb_stop
