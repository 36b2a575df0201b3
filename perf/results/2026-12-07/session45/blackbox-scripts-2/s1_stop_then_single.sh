#!/bin/bash
# Scenario 1: seeder --upload-rate 2MB, 300 x 200kB; bulk get SIGINT after 5s; then one-file get of unfetched file (timed); then resume bulk.
# usage: s1_stop_then_single.sh new|old [uring|threads] [baseport]
set -m
V=${1:-new}; IO=${2:-uring}; P=${3:-34100}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w1-$V-$IO; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
# data (deterministic)
if [ ! -d /tmp/h46/data300 ]; then
  mkdir -p /tmp/h46/data300/d; for i in $(seq -w 1 300); do head -c 200000 /dev/urandom > /tmp/h46/data300/d/f$i.bin; done
fi
RX $((P+20)) alice share G /tmp/h46/data300/d --upload-rate 2MB --io $IO > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "shared 300" 60 || { cat $W/share.*; kill $SP; stop_tracker; exit 1; }
RX $((P+21)) bob get G d/ $W/dest --io $IO --quiet > $W/get1.out 2> $W/get1.err & GP=$!
sleep 5; kill -INT $GP; wait $GP; echo "bulk get#1 rc=$?"; tail -n 3 $W/get1.out $W/get1.err
# pick a file not yet present
F=""; for i in $(seq -w 300 -1 1); do [ ! -e $W/dest/d/f$i.bin ] && [ ! -e $W/dest/d/f$i.bin.part ] && { F=d/f$i.bin; break; }; done
echo "fetched so far: $(ls $W/dest/d 2>/dev/null | grep -vc part) ; parts: $(ls $W/dest/d 2>/dev/null| grep -c part); single target $F"
[ -z "$F" ] && { echo "no unfetched file"; kill -INT $SP; stop_tracker; exit 1; }
t0=$(date +%s.%N)
R $((P+22)) bob get G $F $W/single/ --io $IO --quiet --stats $W/single.json > $W/single.out 2> $W/single.err; rc=$?
t1=$(date +%s.%N)
echo "single get rc=$rc wall=$(echo "$t1-$t0"|bc) stats_seconds=$(python3 -c "import json;print(json.load(open('$W/single.json')).get('seconds'))")"
cat $W/single.err | head -5
cmp $W/single/$F /tmp/h46/data300/$F && echo single-identical
# resume bulk
t0=$(date +%s.%N)
R $((P+21)) bob get G d/ $W/dest --io $IO --quiet > $W/get2.out 2> $W/get2.err; rc=$?
t1=$(date +%s.%N)
echo "bulk get#2 rc=$rc wall=$(echo "$t1-$t0"|bc)"; tail -n 2 $W/get2.out $W/get2.err
diff -r $W/dest/d /tmp/h46/data300/d && echo "bulk identical"; echo "leftover parts: $(find $W/dest -name '*.part*' | wc -l)"
kill -INT $SP; wait $SP; stop_tracker; wait
