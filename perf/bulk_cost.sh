#!/bin/bash
# What a file costs beyond its bytes, per process, on loopback: four trees
# of about the same size (1 GiB) cut into more and more files — one file,
# 32 of 32 MiB, 2,048 of one piece (512 KiB) and 8,000 of 4-256 KiB — each
# shared by one `ringshare share` and fetched whole by one `ringshare get`,
# with the CPU time of the tracker, the seed and the getter taken around
# the get. A least-squares fit of each process's CPU seconds to
# `a × GB + b × files` over every run then gives its cost per GB and per
# file (the same fit for all three together); a tree's rate is what the
# two cores can carry at those costs.
#
# Usage: perf/bulk_cost.sh [RUNS]           (default 3)
# Environment: BIN (a directory holding the ringshare and ringshare-tracker
# to measure; default: this tree's, built first), GETARGS (more options
# for the get), OUT (default perf/results/<date>/bulk-cost/cost.txt).
#
# Every run keeps its copy until the script exits (about 4 GB a run):
# ext4 without a journal skips recently freed inodes when it makes new
# ones (see perf/bulk.sh), so deleting one run's files would slow the next
# run's. Start it six minutes after many files were deleted.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-3}
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/bulk-cost/cost.txt}
# shellcheck source=perf/lib/bin.sh
. "$ROOT/perf/lib/bin.sh"
# shellcheck source=perf/lib/loopback.sh
. "$ROOT/perf/lib/loopback.sh"
read -r -a getargs <<<"${GETARGS:-}"

python3 - "$W" <<'PY'
import os, random, sys
w = sys.argv[1]
rng = random.Random(7)
def put(path, n):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        while n > 0:
            k = min(n, 1 << 20)
            f.write(os.urandom(k))
            n -= k
put(f"{w}/one/tree/one.bin", 1 << 30)
for i in range(32):
    put(f"{w}/mid/tree/p{i:02d}.bin", 32 << 20)
for i in range(2048):
    put(f"{w}/piece/tree/d{i % 32:02d}/f{i:05d}.bin", 512 << 10)
for i in range(8000):
    put(f"{w}/small/tree/d{i % 50:02d}/e{i % 7}/f{i:06d}.bin", rng.randint(4 << 10, 256 << 10))
PY
sync

cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }

# run KIND: share $W/KIND/tree, fetch the group; one result line.
run() {
  local kind=$1 d=$W/run-$1-$RUN
  mkdir -p "$d"
  lb_group "$d" "$B"
  local tp=${pids[0]}
  lb_seed "$d" "$B" "$W/$kind/tree"
  local sp=${pids[1]}
  local t0 s0 t1 s1
  t0=$(cpu "$tp"); s0=$(cpu "$sp")
  /usr/bin/time -f "%U %S %M" -o "$d/time" env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get \
    --trackers "$d/ti.txt" --user l --password-file "$d/pw" "${getargs[@]}" --quiet \
    --stats "$d/stats.json" g "$d/dl" >/dev/null 2>"$d/get.log" ||
    { echo "$kind: get failed:"; tail -n 5 "$d/get.log"; exit 1; } >&2
  t1=$(cpu "$tp"); s1=$(cpu "$sp")
  diff -r -q "$W/$kind/tree" "$d/dl/tree" >/dev/null || { echo "$kind: the copy differs" >&2; exit 1; }
  python3 - "$kind" "$d/stats.json" "$d/time" "$t0" "$t1" "$s0" "$s1" <<'PY'
import json, sys
kind, stats, timef, t0, t1, s0, s1 = sys.argv[1:]
s = json.load(open(stats))
user, sys_, rss = open(timef).read().split()[-3:]
get = float(user) + float(sys_)
print(f"{kind} files {s['files_done']} bytes {s['bytes']} get {s['seconds']:.3f} s {s['mbps']:.1f} MB/s "
      f"cpu tracker {float(t1) - float(t0):.2f} seed {float(s1) - float(s0):.2f} getter {get:.2f} "
      f"getter_rss_kib {rss}")
PY
  lb_stop
}

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for RUN in $(seq "$RUNS"); do
  for kind in one mid piece small; do
    run "$kind" | tee -a "$OUT"
  done
done

python3 - "$OUT" <<'PY' | tee -a "$OUT"
import re, sys
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) files (\d+) bytes (\d+) get ([\d.]+) s ([\d.]+) MB/s cpu tracker ([\d.]+) "
                 r"seed ([\d.]+) getter ([\d.]+)", line)
    if m:
        k, f, b, _, mbps, t, s, g = m.groups()
        rows.append((k, int(f), int(b) / 1e9, float(mbps), float(t), float(s), float(g)))

def fit(ys):
    # least squares of y = a * gb + b * files, no intercept
    sxx = sum(r[2] * r[2] for r in rows); sff = sum(r[1] * r[1] for r in rows)
    sxf = sum(r[2] * r[1] for r in rows)
    sxy = sum(r[2] * y for r, y in zip(rows, ys)); sfy = sum(r[1] * y for r, y in zip(rows, ys))
    det = sxx * sff - sxf * sxf
    return (sxy * sff - sfy * sxf) / det, (sxx * sfy - sxf * sxy) / det

print("\nper kind (means): files, MB/s, CPU seconds per GB: tracker, seed, getter, all")
for k in dict.fromkeys(r[0] for r in rows):
    rs = [r for r in rows if r[0] == k]
    n = len(rs)
    gb = sum(r[2] for r in rs) / n
    mean = lambda i: sum(r[i] for r in rs) / n
    print(f"  {k:6} {rs[0][1]:6d} files {mean(3):8.1f} MB/s  {mean(4) / gb:5.2f} {mean(5) / gb:5.2f} "
          f"{mean(6) / gb:5.2f} {(mean(4) + mean(5) + mean(6)) / gb:5.2f}")
print("\nfit over every run, CPU = a x GB + b x files:")
for name, i in (("tracker", 4), ("seed", 5), ("getter", 6)):
    a, b = fit([r[i] for r in rows])
    print(f"  {name:8} {a:5.2f} CPU s per GB  {b * 1e6:6.1f} us per file")
a, b = fit([r[4] + r[5] + r[6] for r in rows])
print(f"  {'all':8} {a:5.2f} CPU s per GB  {b * 1e6:6.1f} us per file")
PY
