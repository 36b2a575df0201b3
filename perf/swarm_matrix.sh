#!/usr/bin/env bash
# Runs the swarm harness over the matrix (1 and 3 seeders; 256 MiB and 2 GiB;
# io_uring and threads backends) and writes JSON, .hgrm files and SVG plots
# into perf/results/<date>/.
#   perf/swarm_matrix.sh [RUNS]          default 5 timed runs (+1 warm-up) each
# Environment: SIZES="256MiB 2GiB" SEEDERS="1 3" IOS="uring threads" to narrow it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
sizes=${SIZES:-"256MiB 2GiB"}
seeders=${SEEDERS:-"1 3"}
ios=${IOS:-"uring threads"}
out="perf/results/$(date +%Y-%m-%d)"
mkdir -p "$out"
cargo build --release --workspace >/dev/null
for size in $sizes; do
  for n in $seeders; do
    for io in $ios; do
      name="${n}seed-${size}-${io}"
      echo "== $name"
      target/release/ringshare-swarm --size "$size" --seeders "$n" --io "$io" \
        --runs "$runs" --warmup 1 --out "$out/$name" >/dev/null
    done
  done
done
python3 perf/plot.py "$out"
echo "results in $out"
