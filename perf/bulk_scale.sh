#!/bin/bash
# Per-file cost of sharing and listing as a group grows: one `ringshare
# share` of a tree of N tiny files (1 KiB), for each N given, then
# `ringshare ls` of the whole group and of one directory (1 % of it). The
# per-file figures should stay flat as N grows (the share record is an
# append-only log, the tracker's file map is ordered and paged).
#
# Usage: perf/bulk_scale.sh [N...]       (default 10000 100000)
# Environment: OUT (results, default perf/results/<date>/bulk/scale.txt).
# A node keeps one descriptor per file it serves: the script raises its
# open-files limit (run as root for N above the hard limit).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(10000 100000)
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/bulk/scale.txt}
cargo build --release --locked -p ringshare -p ringshare-tracker --bin ringshare --bin ringshare-tracker
B=$ROOT/target/release
W=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Runs go through pipelines (subshells): their processes are found by
  # the work directory on their command lines.
  pkill -f -- "$W/" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
max=0
for n in "${SIZES[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
ulimit -n $((max + 4096)) 2>/dev/null || echo "cannot raise the open-files limit to $((max + 4096)); share may skip files" >&2

one() {
  local n=$1 d=$W/run-$1
  mkdir -p "$d"
  python3 - "$d/tree" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = f"{root}/d{i % 100:02d}"
    if i < 100:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:07d}", "wb") as f:
        f.write(i.to_bytes(8, "little") * 128)
PY
  local port=$((7600 + RANDOM % 1000))
  echo "127.0.0.1:$port" >"$d/ti.txt"; echo pw >"$d/pw"
  "$B/ringshare-tracker" "$d/ti.txt" 1 --data-dir "$d/td" >"$d/t.out" 2>"$d/t.log" </dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q key "$d/t.out" && break; sleep 0.05; done
  shell() { printf '%s\n' "$@" | RINGSHARE_STATE_DIR="$d/shell" "$B/ringshare" 127.0.0.1:0 "$d/ti.txt" >/dev/null 2>>"$d/shell.log"; }
  shell "create_user s pw" "login s pw" "create_group g"
  RINGSHARE_STATE_DIR="$d/s" "$B/ringshare" share --trackers "$d/ti.txt" --user s \
    --password-file "$d/pw" g "$d/tree" >"$d/s.out" 2>"$d/s.log" </dev/null &
  pids+=($!)
  for _ in $(seq 36000); do grep -q "seeding on" "$d/s.out" && break; sleep 0.05; done
  grep -q "seeding on" "$d/s.out" || { echo "share of $n files did not finish" >&2; tail -3 "$d/s.log" >&2; exit 1; }
  local t0 t1 t2
  t0=$(date +%s.%N)
  RINGSHARE_STATE_DIR="$d/ls" "$B/ringshare" ls --trackers "$d/ti.txt" --user s --password-file "$d/pw" g >"$d/ls.txt" 2>>"$d/ls.log"
  t1=$(date +%s.%N)
  RINGSHARE_STATE_DIR="$d/ls" "$B/ringshare" ls --trackers "$d/ti.txt" --user s --password-file "$d/pw" g tree/d07/ >"$d/ls1.txt" 2>>"$d/ls.log"
  t2=$(date +%s.%N)
  local listed dir
  listed=$(wc -l <"$d/ls.txt"); dir=$(wc -l <"$d/ls1.txt")
  [ "$listed" -eq "$n" ] || { echo "ls listed $listed of $n" >&2; exit 1; }
  python3 - "$n" "$d/s.log" "$t0" "$t1" "$t2" "$dir" <<'PY'
import re, sys
n, slog, t0, t1, t2, dirn = sys.argv[1:]
n = int(n)
m = re.search(r"hashed (\d+) bytes in ([\d.]+) s .*registered (\d+) file\(s\) in ([\d.]+) s", open(slog).read())
hs, rs = float(m.group(2)), float(m.group(4))
ls_all, ls_dir = float(t1) - float(t0), float(t2) - float(t1)
print(f"files {n} hash {hs:.2f} s ({hs / n * 1e6:.0f} us/file) register {rs:.2f} s ({rs / n * 1e6:.0f} us/file) "
      f"ls-all {ls_all:.2f} s ({ls_all / n * 1e6:.1f} us/file) ls-dir {dirn} files {ls_dir:.2f} s")
PY
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  rm -rf "$d"
}

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for n in "${SIZES[@]}"; do
  one "$n" | tee -a "$OUT"
done
