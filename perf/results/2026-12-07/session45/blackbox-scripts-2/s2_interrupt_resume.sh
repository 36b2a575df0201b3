#!/bin/bash
# Scenario 2a: interrupt (INT/TERM/KILL) + resume, one-file (40 MiB) and bulk (300 x 200kB); seeder --upload-rate 4MB
# usage: s2_interrupt_resume.sh new|old [io] [baseport]
set -m
V=${1:-new}; IO=${2:-uring}; P=${3:-34400}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w2-$V-$IO; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
[ -f /tmp/h46/big/big40.bin ] || { mkdir -p /tmp/h46/big; head -c 41943040 /dev/urandom > /tmp/h46/big/big40.bin; }
RX $((P+20)) alice share G /tmp/h46/big/big40.bin /tmp/h46/data300/d --upload-rate 4MB --io $IO > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "shared 301" 60 || { cat $W/share.*; kill $SP; stop_tracker; exit 1; }
n=0
for sig in INT TERM KILL; do
  n=$((n+1))
  RX $((P+30+n)) bob get G big40.bin $W/one-$sig/ --io $IO --quiet > $W/one-$sig.1.out 2> $W/one-$sig.1.err & GP=$!
  sleep 3; kill -$sig $GP; wait $GP; rc=$?
  echo "one-file $sig: rc=$rc out=[$(cat $W/one-$sig.1.out)] err=[$(grep -v '^$' $W/one-$sig.1.err|tail -n1)] after-stop: $(ls $W/one-$sig 2>/dev/null|tr '\n' ' ') partsize=$(du -b $W/one-$sig/big40.bin.part 2>/dev/null|cut -f1)"
  R $((P+30+n)) bob get G big40.bin $W/one-$sig/ --io $IO --quiet --stats $W/one-$sig.json > $W/one-$sig.2.out 2> $W/one-$sig.2.err; rc=$?
  echo "   resume rc=$rc fetched=$(python3 -c "import json;d=json.load(open('$W/one-$sig.json'));print(d['fetched'],d['seconds'])") $(cmp $W/one-$sig/big40.bin /tmp/h46/big/big40.bin && echo identical) leftover=[$(ls $W/one-$sig | grep part)] err=[$(grep -v '^$' $W/one-$sig.2.err|tail -n1)]"
  RX $((P+40+n)) bob get G d/ $W/bulk-$sig --io $IO --quiet > $W/bulk-$sig.1.out 2> $W/bulk-$sig.1.err & GP=$!
  sleep 4; kill -$sig $GP; wait $GP; rc=$?
  echo "bulk $sig: rc=$rc out=[$(cat $W/bulk-$sig.1.out)] err=[$(grep -v '^$' $W/bulk-$sig.1.err|tail -n1)] done=$(ls $W/bulk-$sig/d 2>/dev/null | grep -vc part) parts=$(ls $W/bulk-$sig/d 2>/dev/null | grep -c part)"
  R $((P+40+n)) bob get G d/ $W/bulk-$sig --io $IO --quiet > $W/bulk-$sig.2.out 2> $W/bulk-$sig.2.err; rc=$?
  echo "   resume rc=$rc out=[$(cat $W/bulk-$sig.2.out)] $(diff -r $W/bulk-$sig/d /tmp/h46/data300/d >/dev/null && echo identical) leftover=$(find $W/bulk-$sig -name '*.part*' | wc -l) err=[$(grep -v '^$' $W/bulk-$sig.2.err|tail -n1)]"
done
kill -INT $SP; wait $SP; echo "share rc=$?"; stop_tracker; wait
grep -iE 'warn|error' $W/share.err | cut -c1-200 | sort | uniq -c | head
