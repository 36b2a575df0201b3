#!/bin/bash
# Scenario 5: a seeder flooded with idle TCP connections from 127.0.0.2..5 (128 each = 512 > cap 256) for $2 seconds;
# count WARN lines about connections that gave their place up / newcomers turned away; must be at most one a minute.
set -m
V=${1:-new}; DUR=${2:-140}; P=${3:-34900}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w5-$V; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
RX $((P+20)) alice share G /tmp/h46/big/big40.bin > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "seeding on" 30
python3 /tmp/h46/scripts/flood.py 127.0.0.1 $((P+20)) $DUR 128 4 > $W/flood.out 2>&1 & FP=$!
# a real downloader while the seeder is full
sleep 20; R $((P+21)) bob get G big40.bin $W/dl/ --quiet > $W/get.out 2> $W/get.err; echo "get during flood rc=$? $(cmp $W/dl/big40.bin /tmp/h46/big/big40.bin && echo identical)"
wait $FP; cat $W/flood.out
echo "--- seeder WARN/ERROR lines:"; grep -E 'WARN|ERROR' $W/share.err | cut -c1-400
kill -INT $SP; wait $SP; stop_tracker; wait
