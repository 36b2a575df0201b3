#!/bin/bash
# Probe: one-file get (40 MiB, seeder 4MB/s), SIGTERM after $3 s, repeated $2 times; report rc, message, leftover, port reuse.
set -m
V=${1:-new}; N=${2:-5}; D=${3:-3}; IO=${4:-threads}; P=${5:-34600}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w6-$V-$IO; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
RX $((P+20)) alice share G /tmp/h46/big/big40.bin --upload-rate 4MB --io $IO > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "seeding on" 30
for i in $(seq 1 $N); do
  RX $((P+30+i)) bob get G big40.bin $W/one-$i/ --io $IO --quiet > $W/g$i.out 2> $W/g$i.err & GP=$!
  sleep $D; kill -TERM $GP; t0=$(date +%s.%N); wait $GP; rc=$?; t1=$(date +%s.%N)
  alive=$(kill -0 $GP 2>/dev/null && echo ALIVE || echo gone)
  echo "#$i rc=$rc exit-after-signal=$(echo "$t1-$t0"|bc|cut -c1-5)s $alive err=[$(grep -v '^$' $W/g$i.err|grep -v backend|tail -n1)] files=[$(ls $W/one-$i 2>/dev/null|tr '\n' ' ')] listen=$(ss -ltn "( sport = :$((P+30+i)) )" | tail -n +2 | wc -l)"
done
kill -INT $SP; wait $SP; stop_tracker; wait
