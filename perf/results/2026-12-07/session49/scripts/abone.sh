#!/bin/bash
# abcpu.sh A B RUNS: like perf/bulk_ab.sh, plus each process's CPU seconds over the get
set -euo pipefail
ROOT=/work/main
RUNS=$1; shift; FILES=${FILES:-10000}
. "$ROOT/perf/lib/loopback.sh"
mkdir -p $W/tree; head -c 1073741824 /dev/urandom > $W/tree/one.bin
sync
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
one() {
  local label=$1 bin=$2 d=$W/run-$1-$3
  if [ -n "${DROP:-}" ]; then sync; echo 3 > /proc/sys/vm/drop_caches; find "$W/tree" -type f -print0 | xargs -0 cat > /dev/null; fi
  mkdir -p "$d"
  lb_group "$d" "$bin"
  local tp=${pids[0]}
  lb_seed "$d" "$bin" "$W/tree"
  local sp=${pids[-1]}
  local t0 s0
  t0=$(cpu $tp); s0=$(cpu $sp)
  /usr/bin/time -f "%R %U %S" -o "$d/time" env RINGSHARE_STATE_DIR="$d/l" "$bin/ringshare" get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log"
  local t1 s1
  t1=$(cpu $tp); s1=$(cpu $sp)
  diff -r -q "$W/tree" "$d/dl/tree" >/dev/null || { echo "$label: the copy differs" >&2; exit 1; }
  python3 - "$label" "$d/stats.json" "$d/time" $t0 $t1 $s0 $s1 <<'PY'
import json, sys
label, stats, tf, t0, t1, s0, s1 = sys.argv[1:]
s = json.load(open(stats)); flt, u, sy = map(float, open(tf).read().split()[-3:])
tr, se = float(t1)-float(t0), float(s1)-float(s0)
print(f"{label} faults {flt:.0f} get {s['seconds']:.2f} s {s['mbps']:.1f} MB/s cpu getter {u+sy:.2f} ({u:.2f} u {sy:.2f} s) seed {se:.2f} tracker {tr:.2f} all {u+sy+se+tr:.2f}")
PY
  lb_stop
}
for run in $(seq "$RUNS"); do
  for b in "$@"; do one "$(basename $b)" "$b" "$run"; done
done
