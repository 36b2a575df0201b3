#!/bin/bash
set -euo pipefail
ROOT=/work/main
B=$1; OUTD=$2
mkdir -p $OUTD
. "$ROOT/perf/lib/loopback.sh"
python3 "$ROOT/perf/lib/small_tree.py" "$W/small/tree" 10000
sync
d=$W/run; mkdir -p $d
lb_group "$d" "$B"
lb_seed "$d" "$B" "$W/small/tree"
env RINGSHARE_STATE_DIR="$d/l0" "$B/ringshare" get --trackers "$d/ti.txt" --user l --password-file "$d/pw" --quiet g "$d/dl0" >/dev/null 2>&1
perf record -o $OUTD/pf.data -e minor-faults -c 1 --call-graph dwarf,8192 -- env RINGSHARE_STATE_DIR="$d/l1" ${ENVX:-} "$B/ringshare" get --trackers "$d/ti.txt" --user l \
      --password-file "$d/pw" --quiet g "$d/dl1" >/dev/null 2>$OUTD/get.log
