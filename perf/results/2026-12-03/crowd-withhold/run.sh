#!/bin/bash
# Thirteenth session: the seed withholding second copies while a crowd
# gets its first ones, on the namespace testbed. BASE and NEW are
# directories holding ringshare and ringshare-tracker (before: the
# commit before the change; after: with it), run alternately.
# Output lines: "<build> <congestion control> <crowd JSON>". results.txt
# holds the runs of three versions of the change as they were taken (new
# first from the second session on): the first version (offers of
# never-sent pieces only) — the loops below, then 3 more 1 -> 12 BBR and
# 2 more 1 -> 6 pairs, then 3 1 -> 12 CUBIC pairs; the second (sent pieces
# offered as a fallback) — 4 1 -> 12 and 3 1 -> 6 pairs; the shipped one —
# 3 1 -> 12 and 3 1 -> 6 pairs.
cd "$(dirname "$0")/../../../.."
OUT=$(mktemp -d)
one() {  # build cc args...
  local b=$1 cc=$2; shift 2
  local dir=$BASE; [ "$b" = new ] && dir=$NEW
  echo "$b $cc $(env BIN="$dir" TCP_CC="$cc" RUNS=1 OUT="$OUT" "$@" | grep '"run"')"
}
for r in 1 2 3; do
  for b in base new; do one $b bbr perf/crowd.sh 12; done
done
for r in 1 2; do
  for b in base new; do one $b cubic perf/crowd.sh 12; done
done
for r in 1 2; do
  for b in base new; do RATE=100mbit SIZE=64MiB one $b bbr perf/crowd.sh 6; done
done
rm -rf "$OUT"
