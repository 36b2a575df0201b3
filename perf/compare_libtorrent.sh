#!/usr/bin/env bash
# ringshare and libtorrent on the same file, side by side in one run.
#   perf/compare_libtorrent.sh [SIZE] [SEEDERS] [RUNS]    default 2GiB 1 5
# Installs Debian's python3-libtorrent when missing. The libtorrent side is
# ../shared/bench/libtorrent_swarm.py (tuned: TCP only, large buffers).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-2GiB}
seeders=${2:-1}
runs=${3:-5}
if ! /usr/bin/python3 -c 'import libtorrent' 2>/dev/null; then
  apt-get update >/dev/null && apt-get install -y python3-libtorrent >/dev/null
fi
lt_script=../shared/bench/libtorrent_swarm.py
[ -f "$lt_script" ] || { echo "missing $lt_script" >&2; exit 1; }
cargo build --release --workspace >/dev/null
export ANCHOR_DATA=${ANCHOR_DATA:-/tmp/ringshare-compare}
mkdir -p "$ANCHOR_DATA"
file="$ANCHOR_DATA/big-$size.bin"
if [ ! -f "$file" ]; then
  bytes=$(python3 -c "import sys; s=sys.argv[1]; u={'GiB':1<<30,'MiB':1<<20}; print(int(s[:-3])*u[s[-3:]])" "$size")
  head -c "$bytes" /dev/urandom > "$file"
fi
out="perf/results/$(date +%Y-%m-%d)/compare-${seeders}seed-$size-$(date +%H%M)"
mkdir -p "$out"
lt_line=$(/usr/bin/python3 "$lt_script" --file "$file" --seeders "$seeders" --runs "$runs" --warmup 1 2>/dev/null | tail -n 1)
rs_mbps=$(target/release/ringshare-swarm --file "$file" --seeders "$seeders" --io uring --runs "$runs" --warmup 1 --out "$out" \
  | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["median_mbps"])')
lt_mbps=$(echo "$lt_line" | sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/')
echo "$lt_line"
echo "ringshare: $seeders seeders -> 1 leecher: $rs_mbps MB/s"
echo "$lt_line" > "$out/libtorrent.txt"
python3 -c "import sys; r,l=float(sys.argv[1]),float(sys.argv[2]); print('ratio ringshare/libtorrent: %.2fx' % (r/l))" "$rs_mbps" "$lt_mbps" | tee "$out/ratio.txt"
