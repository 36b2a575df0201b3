#!/bin/bash
# Encrypted against plaintext peer links on loopback, side by side: a
# tracker, SEEDERS `ringshare share` processes and one `ringshare get`, the
# two modes interleaved run by run (two shared cores make absolute figures
# drift; compare the pairs).
#
# Usage: perf/encryption_loopback.sh [RUNS]      (default 5)
# Environment: SIZE (MiB, default 2048), SEEDERS (default 3), IO (uring or
# threads, default: the node's choice), OUT (results file, default
# perf/results/<date>/encryption/loopback.txt).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-5}
SIZE=${SIZE:-2048}
SEEDERS=${SEEDERS:-3}
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/encryption/loopback.txt}
cargo build --release --locked -p ringshare -p ringshare-tracker --bin ringshare --bin ringshare-tracker
B=$ROOT/target/release
W=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
io=()
[ -n "${IO:-}" ] && io=(--io "$IO")
python3 -c "
import os
with open('$W/big.bin', 'wb') as f:
    for i in range($SIZE):
        f.write(os.urandom(1 << 20))
"
one() {
  local mode=$1 flags=() d=$W/$1
  [ "$mode" = plaintext ] && flags=(--plaintext)
  rm -rf "$d"; mkdir -p "$d/dl"
  local port=$((7600 + RANDOM % 1000))
  echo "127.0.0.1:$port" >"$d/ti.txt"; echo pw >"$d/pw"
  "$B/ringshare-tracker" "$d/ti.txt" 1 --data-dir "$d/td" >"$d/t.out" 2>"$d/t.log" </dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q key "$d/t.out" && break; sleep 0.05; done
  shell() { printf '%s\n' "$@" | RINGSHARE_STATE_DIR="$d/shell" "$B/ringshare" 127.0.0.1:0 "$d/ti.txt" >/dev/null 2>>"$d/shell.log"; }
  shell "create_user s1 pw" "login s1 pw" "create_group g"
  local accepts=("login s1 pw")
  for u in $(seq 2 "$SEEDERS" | sed 's/^/s/') leech; do
    shell "create_user $u pw" "login $u pw" "join_group g"
    accepts+=("accept_request g $u")
  done
  shell "${accepts[@]}"
  for i in $(seq 1 "$SEEDERS"); do
    RINGSHARE_STATE_DIR="$d/s$i" "$B/ringshare" share --trackers "$d/ti.txt" --user "s$i" \
      --password-file "$d/pw" "${flags[@]}" "${io[@]}" g "$W/big.bin" >"$d/s$i.out" 2>"$d/s$i.log" </dev/null &
    pids+=($!)
  done
  for i in $(seq 1 "$SEEDERS"); do
    for _ in $(seq 600); do grep -q "seeding on" "$d/s$i.out" && break; sleep 0.1; done
  done
  RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user leech \
    --password-file "$d/pw" "${flags[@]}" "${io[@]}" --quiet --stats "$d/stats.json" g big.bin "$d/dl" >/dev/null 2>"$d/get.log"
  cmp -s "$W/big.bin" "$d/dl/big.bin" || { echo "$mode: the copy differs" >&2; exit 1; }
  python3 -c "import json; print('$mode', round(json.load(open('$d/stats.json'))['mbps'], 1))"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for _ in $(seq "$RUNS"); do
  one encrypted | tee -a "$OUT"
  one plaintext | tee -a "$OUT"
done
python3 - "$OUT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {}
for mode, mbs in rows:
    by.setdefault(mode, []).append(float(mbs))
e, p = statistics.median(by["encrypted"]), statistics.median(by["plaintext"])
pairs = [a / b for a, b in zip(by["encrypted"], by["plaintext"])]
print(f"median MB/s: encrypted {e:.1f}, plaintext {p:.1f}; ratio of medians {e / p:.2f}; "
      f"pairwise {min(pairs):.2f}-{max(pairs):.2f}")
PY
