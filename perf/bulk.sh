#!/bin/bash
# Bulk transfers on loopback, side by side: a tree of many small files, a
# tree of a few large files and one large file, each shared by one
# `ringshare share` and fetched by one `ringshare get` (the whole group);
# then the small tree's hashing against `sha1sum` under `xargs -P2`, and a
# sample of the small files fetched one `ringshare get` process per file
# (the path bulk transfers replace).
#
# Usage: perf/bulk.sh [RUNS]        (default 3)
# Environment: SMALL (files in the small tree, default 10000; sizes 4-256
# KiB, ~1.3 GB), LARGE (files of 50 MiB, default 20), ONE (MiB of the
# single file, default 1024), JOBS (get --jobs, default: get's), SAMPLE
# (files fetched one process each, default 200), OUT (results, default
# perf/results/<date>/bulk/loopback.txt), BIN (a directory holding the
# ringshare and ringshare-tracker to measure, e.g. an older build's; default:
# this tree's, built first).
#
# On ext4 without a journal (this machine's root), start it at least six
# minutes after many files were deleted (an earlier run's, at its exit):
# each file created skips every inode freed in the last 60 s, 360 s while
# its inode table block is dirty (`recently_deleted` in fs/ext4/ialloc.c),
# which made the small tree's get a fifth to a third slower here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-3}
SMALL=${SMALL:-10000}
LARGE=${LARGE:-20}
ONE=${ONE:-1024}
SAMPLE=${SAMPLE:-200}
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/bulk/loopback.txt}
# shellcheck source=perf/lib/bin.sh
. "$ROOT/perf/lib/bin.sh"
# shellcheck source=perf/lib/loopback.sh
. "$ROOT/perf/lib/loopback.sh"
jobs=()
[ -n "${JOBS:-}" ] && jobs=(--jobs "$JOBS")

python3 "$ROOT/perf/lib/small_tree.py" "$W/small/tree" "$SMALL"
python3 - "$W" "$LARGE" "$ONE" <<'PY'
import os, sys
w, large, one = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{w}/large/tree", exist_ok=True)
for i in range(large):
    with open(f"{w}/large/tree/part{i:02d}.bin", "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
os.makedirs(f"{w}/one/tree", exist_ok=True)
with open(f"{w}/one/tree/one.bin", "wb") as f:
    for _ in range(one):
        f.write(os.urandom(1 << 20))
PY
# Written back before the first run, not during it (3.4 GB of new files'
# writeback took CPU from the first run: 34 % against 53 % for the next).
sync

# kind run: share $W/kind/tree, fetch the group; prints one result line.
one() {
  # Each run keeps its copy until the script exits: on ext4 without a
  # journal (this machine's root) every inode freed in the last minute is
  # skipped, one by one, when a new file is created, so deleting the last
  # run's 10,000 files made the next run's file creation the bottleneck.
  local kind=$1 d=$W/run-$1-$RUN
  mkdir -p "$d"
  lb_group "$d" "$B"
  local t0 t1
  t0=$(date +%s.%N)
  lb_seed "$d" "$B" "$W/$kind/tree"
  t1=$(date +%s.%N)
  RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
    --password-file "$d/pw" "${jobs[@]}" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log" ||
    { echo "$kind: get failed:"; tail -n 5 "$d/get.log"; exit 1; } >&2
  diff -r -q "$W/$kind/tree" "$d/dl/tree" >/dev/null || { echo "$kind: the copy differs" >&2; exit 1; }
  python3 - "$kind" "$d/stats.json" "$d/s.log" "$t0" "$t1" <<'PY'
import json, re, sys
kind, stats, slog, t0, t1 = sys.argv[1:]
s = json.load(open(stats))
m = re.search(r"hashed (\d+) bytes in ([\d.]+) s .*registered (\d+) file\(s\) in ([\d.]+) s", open(slog).read())
hashed = f"hash {float(m.group(2)):.2f} s register {float(m.group(4)):.2f} s" if m else "hash ? (one file)"
print(f"{kind} files {s['files_done']} bytes {s['bytes']} share {float(t1) - float(t0):.2f} s ({hashed}) "
      f"get {s['seconds']:.2f} s {s['mbps']:.1f} MB/s {s['files_done'] / s['seconds']:.0f} files/s")
PY
  if [ "$kind" = small ] && [ "$SAMPLE" -gt 0 ]; then
    # The same files, one `ringshare get` process each (a sample).
    local t2 t3
    mkdir -p "$d/each"
    t2=$(date +%s.%N)
    (cd "$W/small" && find tree -type f | sort | awk -v n="$SAMPLE" 'NR <= n') | while read -r name; do
      RINGSHARE_STATE_DIR="$d/e" "$B/ringshare" get --trackers "$d/ti.txt" --user l \
        --password-file "$d/pw" --quiet g "$name" "$d/each/$(echo "$name" | tr / _)" >/dev/null 2>>"$d/each.log"
    done
    t3=$(date +%s.%N)
    local bytes
    bytes=$(du -sb "$d/each" | cut -f1)
    python3 -c "print(f'small-one-process-each files $SAMPLE bytes $bytes get {$t3 - $t2:.2f} s {$bytes / ($t3 - $t2) / 1e6:.1f} MB/s {$SAMPLE / ($t3 - $t2):.0f} files/s')"
  fi
  lb_stop
}

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for RUN in $(seq "$RUNS"); do
  for kind in small large one; do
    one "$kind" | tee -a "$OUT"
  done
  # Hashing the small tree: sha1sum, two processes (files in the page cache
  # for both: the run above just read them).
  t0=$(date +%s.%N)
  (cd "$W/small" && find tree -type f -print0 | xargs -0 -P2 -n 256 sha1sum >/dev/null)
  t1=$(date +%s.%N)
  python3 -c "print(f'sha1sum-xargs-P2 small {$t1 - $t0:.2f} s')" | tee -a "$OUT"
done
