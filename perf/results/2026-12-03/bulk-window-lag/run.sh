#!/bin/bash
# The bulk get's files-at-once window before and after its rounds skip the
# files started before a change: alternating builds on the wide-area
# testbed (perf/bulk_wan.sh, auto window, 50 and 200 ms).
# BEFORE/AFTER: directories with ringshare, ringshare-tracker, ringshare-relay.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
out=perf/results/2026-12-03/bulk-window-lag
for i in 1 2 3; do
  for b in before after; do
    dir=BEFORE; [ $b = after ] && dir=AFTER
    BIN=${!dir} JOBS=auto LARGE=2 OUT=$out/$b-$i.txt perf/bulk_wan.sh 50 200 >/dev/null 2>"$out/$b-$i.log"
    sed "s/^/$b $i: /" "$out/$b-$i.txt"
  done
done
# Then the start: the same "after" build run with the window starting at 16,
# 64 and 32 (a temporary X_START variable, since fixed at 64):
# start-s16-1.txt ... start-s32-2.txt.
