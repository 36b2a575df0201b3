#!/bin/bash
# Two builds side by side on one tree of small files, on loopback: for each
# run and each build, a tracker, one `ringshare share` of the tree and one
# `ringshare get` of the whole group; prints the get's time, rate and peer
# links (opened / taken over). Runs alternate between the builds so that
# both see the same machine.
#
# Usage: perf/bulk_ab.sh BIN_DIR_A BIN_DIR_B [RUNS]     (default 3)
#   BIN_DIR_*: directories holding ringshare and ringshare-tracker (e.g. a
#   worktree's target/release: `git worktree add /tmp/a REV && (cd /tmp/a &&
#   cargo build --release -p ringshare -p ringshare-tracker)`).
# Environment: FILES (files of 4-256 KiB, default 6000), JOBS (get --jobs,
# default: get's), IO (uring or threads, default: the node's choice),
# OUT (results, default perf/results/<date>/bulk/ab.txt).
#
# Every copy is kept until the script exits: on ext4 without a journal,
# inodes freed in the last minute are skipped one by one when files are
# created, so deleting one run's files slows the next run's downloads.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
RUNS=${3:-3}
FILES=${FILES:-6000}
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/bulk/ab.txt}
# shellcheck source=perf/lib/loopback.sh
. "$ROOT/perf/lib/loopback.sh"
jobs=()
[ -n "${JOBS:-}" ] && jobs=(--jobs "$JOBS")
io=()
[ -n "${IO:-}" ] && io=(--io "$IO")

python3 "$ROOT/perf/lib/small_tree.py" "$W/tree" "$FILES"
sync

# one LABEL BIN_DIR RUN: prints one result line.
one() {
  local label=$1 bin=$2 d=$W/run-$1-$3
  mkdir -p "$d"
  lb_group "$d" "$bin"
  lb_seed "$d" "$bin" "$W/tree" "${io[@]}"
  RINGSHARE_STATE_DIR="$d/l" "$bin/ringshare" get "${io[@]}" --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" "${jobs[@]}" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log" ||
    { echo "$label: get failed:"; tail -n 5 "$d/get.log"; exit 1; } >&2
  diff -r -q "$W/tree" "$d/dl/tree" >/dev/null || { echo "$label: the copy differs" >&2; exit 1; }
  python3 - "$label" "$d/stats.json" <<'PY'
import json, sys
label, stats = sys.argv[1:]
s = json.load(open(stats))
links = f"links opened {s.get('peer_links_opened', '?')} reused {s.get('peer_links_reused', '?')}"
print(f"{label} files {s['files_done']} get {s['seconds']:.2f} s {s['mbps']:.1f} MB/s "
      f"{s['files_done'] / s['seconds']:.0f} files/s {links}")
PY
  lb_stop
}

mkdir -p "$(dirname "$OUT")"
echo "# A=$A B=$B files=$FILES jobs=${JOBS:-default} io=${IO:-default}" | tee "$OUT"
for run in $(seq "$RUNS"); do
  one A "$A" "$run" | tee -a "$OUT"
  one B "$B" "$run" | tee -a "$OUT"
done
