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
# OUT (results, default perf/results/<date>/bulk/ab.txt), DROP=1 (as root:
# the page cache dropped and the tree read back before each get, so that
# every get starts from the same memory; on this machine it narrowed the
# spread of one build's gets, CPU of all three processes, from 4.18-5.61
# s to 4.48-5.05 s).
#
# Each line also gives the CPU seconds of the get, the seed and the
# tracker over the get: a change of a few per cent is easier seen there
# than in the rate.
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
  if [ -n "${DROP:-}" ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
    find "$W/tree" -type f -print0 | xargs -0 cat >/dev/null
  fi
  lb_group "$d" "$bin"
  local tracker=${pids[0]}
  lb_seed "$d" "$bin" "$W/tree" "${io[@]}"
  local seed=${pids[-1]} t0 s0 t1 s1 getter
  t0=$(cpu "$tracker")
  s0=$(cpu "$seed")
  # The get's CPU: the children's of a subshell that waited for it.
  getter=$(
    RINGSHARE_STATE_DIR="$d/l" "$bin/ringshare" get "${io[@]}" --trackers "$d/ti.txt" --user l \
      --password-file "$d/pw" "${jobs[@]}" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log" ||
      { echo "$label: get failed:"; tail -n 5 "$d/get.log"; exit 1; } >&2
    awk '{print ($16 + $17) / 100}' "/proc/$BASHPID/stat"
  )
  t1=$(cpu "$tracker")
  s1=$(cpu "$seed")
  diff -r -q "$W/tree" "$d/dl/tree" >/dev/null || { echo "$label: the copy differs" >&2; exit 1; }
  python3 - "$label" "$d/stats.json" "$getter" "$s0" "$s1" "$t0" "$t1" <<'PY'
import json, sys
label, stats, getter, s0, s1, t0, t1 = sys.argv[1:]
s = json.load(open(stats))
links = f"links opened {s.get('peer_links_opened', '?')} reused {s.get('peer_links_reused', '?')}"
g, se, tr = float(getter), float(s1) - float(s0), float(t1) - float(t0)
print(f"{label} files {s['files_done']} get {s['seconds']:.2f} s {s['mbps']:.1f} MB/s "
      f"{s['files_done'] / s['seconds']:.0f} files/s {links} "
      f"cpu get {g:.2f} seed {se:.2f} tracker {tr:.2f} all {g + se + tr:.2f} s")
PY
  lb_stop
}

# cpu PID: the process's CPU seconds so far.
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }

mkdir -p "$(dirname "$OUT")"
echo "# A=$A B=$B files=$FILES jobs=${JOBS:-default} io=${IO:-default}" | tee "$OUT"
for run in $(seq "$RUNS"); do
  one A "$A" "$run" | tee -a "$OUT"
  one B "$B" "$run" | tee -a "$OUT"
done
