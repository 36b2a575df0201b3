#!/bin/bash
# usage: prof47.sh BIN OUTDIR [perf]   -- small tree 10,000 files, one seed, get; optional perf record
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../../../.." && pwd)
B=$1; OUTD=$2; PERF=${3:-}
mkdir -p "$OUTD"
. "$ROOT/perf/lib/loopback.sh"
python3 "$ROOT/perf/lib/small_tree.py" "$W/small/tree" 10000
sync
d=$W/run; mkdir -p $d
lb_group "$d" "$B"
lb_seed "$d" "$B" "$W/small/tree"
for r in 1 2 3; do
  rm -rf $d/l
  t0=$(date +%s.%N)
  if [ -n "$PERF" ] && [ $r = 3 ]; then
    perf record -o $OUTD/perf.data $PERF -- env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" --quiet --stats "$OUTD/stats$r.json" g "$d/dl$r" >/dev/null 2>"$OUTD/get$r.log"
  else
    /usr/bin/time -f "%e s %U u %S s %M KB" env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" --quiet --stats "$OUTD/stats$r.json" g "$d/dl$r" >/dev/null 2>"$OUTD/get$r.log"
  fi
  t1=$(date +%s.%N)
  python3 -c "import json;s=json.load(open('$OUTD/stats$r.json'));print('run $r', {k:v for k,v in s.items() if not isinstance(v,(list,dict))})" | cut -c1-400
  tail -1 $OUTD/get$r.log
done
