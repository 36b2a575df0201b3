#!/bin/bash
# Scenario 2b: two seeders (alice, carol) share big40.bin at 3MB each; bob one-file get; seeder alice killed (signal $2) after 3s; download must finish from carol.
set -m
V=${1:-new}; SIG=${2:-KILL}; P=${3:-34500}; IO=${4:-uring}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w2b-$V-$SIG-$IO; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob carol >/dev/null
RX $((P+20)) alice share G /tmp/h46/big/big40.bin --upload-rate 3MB --io $IO > $W/sa.out 2> $W/sa.err & SA=$!
RX $((P+21)) carol share G /tmp/h46/big/big40.bin --upload-rate 3MB --io $IO > $W/sc.out 2> $W/sc.err & SC=$!
waitfor $W/sa.out "seeding on" 30; waitfor $W/sc.out "seeding on" 30
t0=$(date +%s.%N)
RX $((P+22)) bob get G big40.bin $W/dl/ --io $IO --quiet --stats $W/get.json > $W/get.out 2> $W/get.err & GP=$!
sleep 3; kill -$SIG $SA; t1=$(date +%s.%N)
wait $GP; rc=$?; t2=$(date +%s.%N)
echo "get rc=$rc total=$(echo "$t2-$t0"|bc) after-kill=$(echo "$t2-$t1"|bc) $(cmp $W/dl/big40.bin /tmp/h46/big/big40.bin && echo identical) leftover=[$(ls $W/dl|grep part)]"
python3 -c "import json;d=json.load(open('$W/get.json'));print('peers',d['peers'])"
grep -v '^$' $W/get.err | tail -n 3
wait $SA 2>/dev/null; kill -INT $SC; wait $SC; stop_tracker; wait
