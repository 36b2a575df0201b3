#!/bin/bash
# Probe: how long a bulk get (300 x 200kB, seeder 2MB/s) takes to exit after SIGINT, per I/O backend.
set -m
V=${1:-new}; IO=${2:-threads}; P=${3:-34650}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w7-$V-$IO; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
RX $((P+20)) alice share G /tmp/h46/data300/d --upload-rate 2MB --io $IO > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "shared 300" 60
for i in 1 2; do
  RX $((P+21)) bob get G d/ $W/dest$i --io $IO --quiet > $W/g$i.out 2> $W/g$i.err & GP=$!
  sleep 4; kill -INT $GP; t0=$(date +%s.%N); wait $GP; rc=$?; t1=$(date +%s.%N)
  echo "$V $IO #$i rc=$rc exit-after-SIGINT=$(echo "$t1-$t0"|bc|cut -c1-5)s summary=[$(cat $W/g$i.out)]"
done
kill -INT $SP; wait $SP; stop_tracker; wait
