#!/usr/bin/env bash
# The flood table: every hostile load of docs/SECURITY.md against a real
# tracker or node, with a legitimate client measured beside it
# (benches/src/bin/flood.rs does one flood; this runs them all).
#
# Usage: perf/flood.sh [KIND ...]        (default: every kind)
# Environment (all optional):
#   CLIENTS   hostile connections or tasks             [1000]
#   HASH_CLIENTS  hostile clients of the login and signup floods [200]: a
#             tracker without a hashing budget (BEFORE) needs 19 MiB per
#             concurrent one, and 1000 of them would take this machine down
#   META_CLIENTS  hostile clients of the metadata flood [20]: each holds
#             the 12 MB request it sends
#   SECONDS_  length of each flood, seconds            [10]
#   FILES     files in the group of the list-files flood [10000]
#   BEFORE    a git revision to measure too, side by side (its tracker and
#             node are built in a temporary worktree), e.g. ded4654
#   OUT       results directory                        [perf/results/<date>]
#
# Writes $OUT/flood/<label>-<kind>.json and $OUT/flood/table.md. Every
# process a flood starts is stopped by the flood tool, on failure too.
# Exits 1 when a target died during a flood.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1000}
HASH_CLIENTS=${HASH_CLIENTS:-200}
META_CLIENTS=${META_CLIENTS:-20}
SECONDS_=${SECONDS_:-10}
FILES=${FILES:-10000}
DATE=$(date +%F)
OUT=${OUT:-perf/results/$DATE}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
KINDS=("$@")
if [ ${#KINDS[@]} -eq 0 ]; then
  KINDS=(login signup conns half-open oversized slow list-files sync
         metadata node-conns node-half-open bad-tickets all-pieces)
fi
mkdir -p "$OUT/flood"
# 1000 connections from one process, and as many on the target.
ulimit -n 65536 2>/dev/null || true

cargo build --release --locked -p ringshare-tracker -p ringshare -p ringshare-benches \
  --bin ringshare-tracker --bin ringshare --bin ringshare-flood
FLOOD=$CARGO_TARGET_DIR/release/ringshare-flood
labels=(after)
declare -A TRACKER NODE
TRACKER[after]=$CARGO_TARGET_DIR/release/ringshare-tracker
NODE[after]=$CARGO_TARGET_DIR/release/ringshare

work=$(mktemp -d "${TMPDIR:-/tmp}/flood_sh.XXXXXX")
cleanup() {
  if [ -d "$work/before-src" ]; then
    git worktree remove --force "$work/before-src" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${BEFORE:-}" ]; then
  git worktree add --detach "$work/before-src" "$BEFORE" >/dev/null
  (cd "$work/before-src" && CARGO_TARGET_DIR=$work/before-target \
    cargo build --release -p ringshare-tracker -p ringshare)
  TRACKER[before]=$work/before-target/release/ringshare-tracker
  NODE[before]=$work/before-target/release/ringshare
  labels=(before after)
fi

status=0
for kind in "${KINDS[@]}"; do
  clients=$CLIENTS
  case $kind in
    login | signup) clients=$HASH_CLIENTS ;;
    metadata) clients=$META_CLIENTS ;;
  esac
  for label in "${labels[@]}"; do
    "$FLOOD" --kind "$kind" --label "$label" --clients "$clients" --seconds "$SECONDS_" \
      --files "$FILES" --tracker-bin "${TRACKER[$label]}" --node-bin "${NODE[$label]}" \
      --json "$OUT/flood/$label-$kind.json" 2>"$work/$label-$kind.err" || {
        status=1
        echo "flood $kind ($label) failed:" >&2
        tail -5 "$work/$label-$kind.err" >&2
      }
  done
done

python3 - "$OUT/flood" "${labels[@]}" <<'EOF' >"$OUT/flood/table.md"
import json, os, sys
d = sys.argv[1]
rows = {}
for f in sorted(os.listdir(d)):
    if f.endswith(".json"):
        r = json.load(open(os.path.join(d, f)))
        rows.setdefault(r["kind"], {})[r["label"]] = r
# Every label in the directory (an earlier BEFORE run stays in the table),
# "before" first.
found = {l for by in rows.values() for l in by}
labels = sorted(found, key=lambda l: (l != "before", l))
print("| flood | target | clients | " + " | ".join(
    f"{l}: peak RSS MiB (anon) | {l}: CPU s / wall s | {l}: legit p50 / p99 ms (ok/failed)"
    for l in labels) + " |")
print("|---|---|---|" + "---|---|---|" * len(labels))
for kind, by in rows.items():
    first = next(iter(by.values()))
    cells = []
    for l in labels:
        r = by.get(l)
        if r is None:
            cells += ["–", "–", "–"]
            continue
        alive = "" if r["target_alive"] else " DIED"
        cells += [
            f'{r["rss_peak_kib"]/1024:.0f} ({r["rss_anon_peak_kib"]/1024:.0f}){alive}',
            f'{r["cpu_seconds"]:.1f} / {r["elapsed_seconds"]:.1f}',
            f'{r["legit_p50_ms"]:.1f} / {r["legit_p99_ms"]:.1f} ({r["legit_ok"]}/{r["legit_failed"]})',
        ]
    print(f'| {kind} | {first["target"]} | {first["clients"]} | ' + " | ".join(cells) + " |")
EOF
cat "$OUT/flood/table.md"
exit $status
