#!/usr/bin/env bash
# The swarm scenarios in the simulator (ringshare-sim: the real download
# core and server sessions in virtual time; model in benches/src/sim.rs).
#   perf/sim.sh [SIZE_MIB] [PEERS] [SEED]      default 1024 100 1
# Writes NAME.json and NAME.svg (completion-time CDF with the lower bound)
# per scenario into perf/results/<date>/sim-<size>MiB/, and a summary.txt.
# flash-1000 runs with the same file: at 1 GiB it takes the longest.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
peers=${2:-100}
seed=${3:-1}
cargo build --release -p ringshare-benches --bin ringshare-sim >/dev/null
out="perf/results/$(date +%Y-%m-%d)/sim-${size}MiB"
mkdir -p "$out"
target/release/ringshare-sim --scenario all --size-mib "$size" --peers "$peers" --seed "$seed" \
  --out "$out" | tee "$out/summary.txt"
