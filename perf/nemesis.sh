#!/bin/bash
# The nemesis: SCHEDULES random fault schedules against three real
# ringshare-tracker processes, each in its own network namespace, under
# client load; each schedule is healed and checked (every acknowledged op
# on every tracker, identical states, conflicts as docs/DURABILITY.md's
# table says, nothing refused or lost appearing as done). What it does and
# checks: benches/src/nemesis.rs. Convergence after the heal (ms, p50 /
# p99 / max) is in the summary.
#
# Usage: perf/nemesis.sh [SCHEDULES]          (default 100)
# Environment: SEED (first seed, default 1), DURATION (seconds of faults per
# schedule, default 10), CLIENTS (per tracker, default 2), OUT (results
# directory, default perf/results/<date>/nemesis).
#
# A failing schedule prints its seed, what the checker found and the
# history; replay it with
#   target/release/ringshare-nemesis --seed SEED --duration DURATION --verbose --keep
#
# Needs root, ip and nft (installed if missing). The harness removes its
# namespaces, bridge and tmpfs mounts itself; if it is killed, this script
# removes what is left on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-100}
SEED=${SEED:-1}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/nemesis}
[ "$(id -u)" = 0 ] || { echo "nemesis.sh needs root (network namespaces, tmpfs)" >&2; exit 1; }
if ! command -v ip >/dev/null || ! command -v nft >/dev/null; then
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 nftables >/dev/null
fi
cargo build --release --locked -p ringshare-tracker --bin ringshare-tracker
cargo build --release --locked -p ringshare-benches --bin ringshare-nemesis
mkdir -p "$OUT"

cleanup() {
  # Only what a killed harness of this run can have left: its namespaces
  # are nm<N>-<k>, its bridge nm<N>br, its mounts under nemesis* tmp dirs.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^nm[0-9]+-[0-2]$' || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^nm[0-9]+br$' || true); do
    ip link del "$br" 2>/dev/null || true
  done
  grep -o " ${TMPDIR:-/tmp}/nemesis[^ ]*/t[0-2] " /proc/mounts 2>/dev/null | xargs -r -n1 umount -l 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log="$OUT/nemesis-seed$SEED-x$N.log"
status=0
"$ROOT/target/release/ringshare-nemesis" --schedules "$N" --seed "$SEED" --duration "$DURATION" \
  --clients-per-tracker "$CLIENTS" --json "$OUT/nemesis-seed$SEED-x$N.json" 2>&1 | tee "$log" || status=$?
echo "results: $OUT/nemesis-seed$SEED-x$N.json, log: $log"
exit "$status"
