#!/bin/bash
# prof.sh BIN OUTDIR : small tree 10,000; run 2 gets, the second with perf record (dwarf) on the seed and getter
set -euo pipefail
ROOT=/work/main
B=$1; OUTD=$2
mkdir -p "$OUTD"
. "$ROOT/perf/lib/loopback.sh"
python3 "$ROOT/perf/lib/small_tree.py" "$W/small/tree" 10000
sync
d=$W/run; mkdir -p $d
lb_group "$d" "$B"
lb_seed "$d" "$B" "$W/small/tree"
spid=${pids[-1]}
tpid=${pids[0]}
for r in 1 2; do
  if [ $r = 2 ]; then
    perf record -o $OUTD/seed.data -F 1999 --call-graph dwarf,16384 -p $spid 2>/dev/null &
    pp=$!
    perf record -o $OUTD/tracker.data -F 1999 --call-graph dwarf,16384 -p $tpid 2>/dev/null &
    pt=$!
    sleep 1
    perf record -o $OUTD/get.data -F 1999 --call-graph dwarf,16384 -- env RINGSHARE_STATE_DIR="$d/l$r" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
      --password-file "$d/pw" --quiet g "$d/dl$r" 2>"$OUTD/get$r.log" >/dev/null
    kill -INT $pp $pt; wait $pp $pt || true
  else
    /usr/bin/time -f "%e s %U u %S s" env RINGSHARE_STATE_DIR="$d/l$r" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
      --password-file "$d/pw" --quiet g "$d/dl$r" >/dev/null 2>"$OUTD/get$r.log"
  fi
  tail -2 $OUTD/get$r.log
done
