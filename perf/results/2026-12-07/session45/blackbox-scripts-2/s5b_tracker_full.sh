#!/bin/bash
# Scenario 5b: tracker with a low open-files limit (hard 400) flooded with idle connections; WARN at most once a minute.
set -m
V=${1:-new}; DUR=${2:-130}; P=${3:-34950}
W=/tmp/h46/w5b-$V; rm -rf $W; mkdir -p $W; echo 127.0.0.1:$P > $W/trk.txt
( ulimit -Sn 400; ulimit -Hn 400; exec /tmp/h46/$V/ringshare-tracker $W/trk.txt 1 --data-dir $W/td > $W/tr.out 2> $W/tr.err ) & TP=$!
source /tmp/h46/scripts/lib.sh; waitfor $W/tr.out "listening on" 10
grep -v '^$' $W/tr.err | head -3
python3 /tmp/h46/scripts/flood.py 127.0.0.1 $P $DUR ${PER:-34} ${NADDR:-10} > $W/flood.out 2>&1
# a real client while/after full
printf 'create_user zed pwzed\nlogin zed pwzed\n' | timeout 30 /tmp/h46/$V/ringshare 127.0.0.1:$((P+1)) $W/trk.txt --state-dir $W/st 2>/dev/null
cat $W/flood.out
echo "--- tracker WARN lines:"; grep -E 'WARN|ERROR' $W/tr.err | cut -c1-400
kill $TP; wait
