#!/usr/bin/env bash
# upload_file's hashing (whole-file SHA1 + every piece SHA1) against
# `openssl dgst -sha1` on the same file, page cache warm, side by side.
#   perf/hash_vs_openssl.sh [SIZE_MIB] [RUNS]      default 2048 5
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-2048}
runs=${2:-5}
cargo build --release -p ringshare-benches >/dev/null
f=${HASH_FILE:-/tmp/ringshare-hash-${mib}MiB.bin}
[ -f "$f" ] || head -c $((mib << 20)) /dev/urandom > "$f"
cat "$f" > /dev/null
for i in $(seq "$runs"); do
  t0=$(date +%s.%N); openssl dgst -sha1 "$f" >/dev/null; t1=$(date +%s.%N)
  o=$(python3 -c "print('%.3f' % ($mib*1048576/($t1-$t0)/1e9))")
  r=$(target/release/ringshare-hash "$f" | sed -E 's/.*: ([0-9.]+) GB\/s/\1/')
  echo "run $i: openssl dgst -sha1 $o GB/s, ringshare (whole + pieces) $r GB/s, ratio $(python3 -c "print('%.2f' % ($r/$o))")"
done
