#!/bin/bash
# Thirteenth session: the namespace testbed's crowds under the two TCP
# congestion controls this kernel offers (BBR, this machine's default and
# what every earlier crowd figure used; CUBIC, Linux's usual default),
# alternating, same binaries. results.jsonl: the lines it printed (each
# crowd.sh call rewrites its own .jsonl in OUT, so those were dropped).
cd "$(dirname "$0")/../../../.."
OUT=$(pwd)/perf/results/2026-12-03/crowd-cc
for r in 1 2 3; do
  for cc in bbr cubic; do
    TCP_CC=$cc RUNS=1 OUT=$OUT perf/crowd.sh 12 | grep '"run"'
  done
done
for r in 1 2; do
  for cc in bbr cubic; do
    TCP_CC=$cc RATE=100mbit SIZE=64MiB RUNS=1 OUT=$OUT perf/crowd.sh 6 | grep '"run"'
  done
done
