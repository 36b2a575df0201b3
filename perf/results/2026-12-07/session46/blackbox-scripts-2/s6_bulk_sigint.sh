#!/bin/bash
# Bulk get (300 files, 60-140 kB) from a seeder at --upload-rate 2MB; SIGINT after 4 s; time to exit; resume to completion.
# usage: s5_bulk_sigint.sh new|old threads|uring BASEPORT [ROUNDS]
set -m
V=${1:-new}; IO=${2:-threads}; P=${3:-37600}; ROUNDS=${4:-3}
source /tmp/h48/scripts/lib.sh
W=/tmp/h48/w5-$V-$IO; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
RX $((P+20)) alice share G /tmp/h48/data300/d --upload-rate 2MB --io $IO > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "shared 300" 60 || { cat $W/share.*; kill $SP; stop_tracker; exit 1; }
for i in $(seq 1 $ROUNDS); do
  RX $((P+21)) bob get G d/ $W/dest --io $IO --quiet > $W/g$i.out 2> $W/g$i.err & GP=$!
  sleep 4; t0=$(date +%s.%N); kill -${SIG:-INT} $GP; wait $GP; rc=$?; t1=$(date +%s.%N)
  echo "$V $IO #$i rc=$rc exit-after-SIG${SIG:-INT}=$(echo "$t1-$t0"|bc|cut -c1-5)s summary=[$(head -c 300 $W/g$i.out | tr '\n' '|')] err=[$(grep -v '^$' $W/g$i.err | tail -n1 | cut -c1-200)]"
  sleep 0.3
done
t0=$(date +%s.%N)
R $((P+21)) bob get G d/ $W/dest --io $IO --quiet > $W/gfinal.out 2> $W/gfinal.err; rc=$?
t1=$(date +%s.%N)
echo "$V $IO resume rc=$rc in $(echo "$t1-$t0"|bc|cut -c1-5)s out=[$(cat $W/gfinal.out)] $(diff -r $W/dest/d /tmp/h48/data300/d >/dev/null && echo IDENTICAL || echo DIFFERENT) leftover_parts=$(find $W/dest -name '*.part*' | wc -l) err=[$(grep -v '^$' $W/gfinal.err|tail -n1)]"
kill -INT $SP; wait $SP; echo "share rc=$?"; stop_tracker; wait
