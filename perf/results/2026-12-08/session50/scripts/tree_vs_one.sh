#!/bin/bash
# tree_vs_one.sh BIN RUNS: #16's ratio measured side by side under the same
# conditions: the 10,000-file tree (perf/lib/small_tree.py, 1.33 GB) and one
# 1 GiB file, each shared by a fresh `ringshare share` and fetched by one
# `ringshare get`, alternating tree and file RUNS times; with DROP=1 the
# page cache is dropped and the source read back before each get (as
# perf/bulk_ab.sh's DROP=1). Copies are kept until the script exits.
set -euo pipefail
ROOT=/work/main
B=$1; RUNS=${2:-3}
. "$ROOT/perf/lib/loopback.sh"
python3 "$ROOT/perf/lib/small_tree.py" "$W/small/tree" 10000
mkdir -p "$W/one/tree"; head -c 1073741824 /dev/urandom > "$W/one/tree/one.bin"
sync
one() {
  local kind=$1 run=$2 d=$W/run-$1-$2
  if [ -n "${DROP:-}" ]; then sync; echo 3 > /proc/sys/vm/drop_caches; find "$W/$kind/tree" -type f -print0 | xargs -0 cat > /dev/null; fi
  mkdir -p "$d"
  lb_group "$d" "$B"
  lb_seed "$d" "$B" "$W/$kind/tree"
  env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log"
  diff -r -q "$W/$kind/tree" "$d/dl/tree" >/dev/null || { echo "$kind: the copy differs" >&2; exit 1; }
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s['mbps']:.1f}\")" "$d/stats.json"
  lb_stop
}
for run in $(seq "$RUNS"); do
  t=$(one small "$run"); o=$(one one "$run")
  python3 -c "print(f'run $run tree $t MB/s one file $o MB/s ratio {100*$t/$o:.1f} %')"
done
