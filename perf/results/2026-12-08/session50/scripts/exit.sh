#!/bin/bash
# exit.sh BIN_A BIN_B N : small tree 10,000; N rounds of a get by each build (ENVX=... added to B's environment), each timed as a process with its minor faults and by its --stats seconds
set -euo pipefail
ROOT=/work/main
A=$1; B=$2; N=${3:-3}
. "$ROOT/perf/lib/loopback.sh"
python3 "$ROOT/perf/lib/small_tree.py" "$W/small/tree" 10000
sync
d=$W/run; mkdir -p $d
lb_group "$d" "$B"
lb_seed "$d" "$B" "$W/small/tree"
for r in $(seq 1 $N); do
  for x in A B; do
    bin=$A; [ $x = B ] && bin=$B
    /usr/bin/time -f "$x %e s %U u %S s minflt %R" env RINGSHARE_STATE_DIR="$d/l$r$x" $( [ $x = B ] && echo ${ENVX:-} ) "$bin/ringshare" get --trackers "$d/ti.txt" --user l \
      --password-file "$d/pw" --quiet --stats "$d/st$r$x.json" g "$d/dl$r$x" >/dev/null 2>"$d/get$r$x.log" || true
    tail -1 "$d/get$r$x.log" | tr "\n" " "; python3 -c "import json,sys; print(\"stats %.2f s\" % json.load(open(sys.argv[1]))[\"seconds\"])" "$d/st$r$x.json"
  done
done
