#!/bin/bash
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 sio=$4 gio=$5 rate=$6 ka=$7
d=$H/run/$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 $H/data/big64 --upload-rate $rate --io $sio || exit 1
spid=$(cat $d/s-1.pid)
cmd() { RINGSHARE_STATE_DIR=$d/g exec $bin/ringshare get --io $gio --stats $d/st$1.json --trackers $d/ti.txt --user l --password-file $d/pw g big64 $d/dest/; }
cmd 1 > $d/g1.out 2> $d/g1.err & gp=$!
sleep $ka; kill -INT $gp; wait $gp; echo "run1 rc=$?"; tr '\r' '\n' < $d/g1.err | grep -v '^\s*$' | tail -2; ls -la $d/dest | tail -n +2
t0=$(date +%s.%N); cmd 2 > $d/g2.out 2> $d/g2.err; rc=$?; t1=$(date +%s.%N)
echo "run2 rc=$rc wall=$(echo "$t1-$t0"|bc)"; tr '\r' '\n' < $d/g2.err | grep -v '^\s*$' | tail -2; cat $d/g2.out; ls -A $d/dest
cmp $d/dest/big64 $H/data/big64 && echo identical
python3 -c "import json;[print(f,{k:json.load(open(f)).get(k) for k in ['bytes','fetched','seconds','bytes_partial','stopped_by','files_interrupted']}) for f in ['$d/st1.json','$d/st2.json']]"
killpid $spid; killpid $(cat $d/tracker.pid)
