#!/bin/bash
# CPU accounting of one small-tree get: getter, seeder, tracker, system.
set -euo pipefail
ROOT=/work/main
B=${BIN:-/tmp/bin42a}
N=${N:-10000}
. "$ROOT/perf/lib/loopback.sh"
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
sync
d=$W/run; mkdir -p $d
lb_group "$d" "$B"
lb_seed "$d" "$B" "$W/small/tree"
tp=$(pgrep -f "ringshare-tracker $d/ti.txt" | head -1)
sp=$(pgrep -f "ringshare share .*$d/ti.txt" | head -1)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
sys0=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $5}' /proc/stat)
t0=$(cpu $tp); s0=$(cpu $sp)
/usr/bin/time -f "getter wall %e user %U sys %S" ${PERF:-} env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log" || { tail $d/get.log; exit 1; }
tail -1 $d/get.log
t1=$(cpu $tp); s1=$(cpu $sp)
sys1=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $5}' /proc/stat)
echo "tracker ticks $((t1-t0)) seeder ticks $((s1-s0)) (1 tick = 10 ms)"
echo "system busy/idle ticks before $sys0 after $sys1"
python3 -c "import json;s=json.load(open('$d/stats.json'));print('seconds',s['seconds'],'mbps',s['mbps'])"
