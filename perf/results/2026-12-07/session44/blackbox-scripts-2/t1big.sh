#!/bin/bash
# t1big.sh TAG BIN PORT SIO BIGIO BULKIO RATE
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 sio=$4 bio=$5 mio=$6 rate=$7
d=$H/run/$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 "$H/data/many/m $H/data/big64" --upload-rate $rate --io $sio || exit 1
spid=$(cat $d/s-1.pid)
( t0=$(date +%s.%N); RINGSHARE_STATE_DIR=$d/g1 timeout -s INT 200 $bin/ringshare get --io $mio --quiet --trackers $d/ti.txt --user l --password-file $d/pw g m/ $d/dest1 > $d/g1.out 2> $d/g1.err; rc=$?; t1=$(date +%s.%N)
    printf 'bulk(%s) rc=%s wall=%.1fs %s\n' $mio $rc $(echo "$t1-$t0"|bc) "$(tail -1 $d/g1.out)" ) & p1=$!
sleep 3
( t0=$(date +%s.%N); RINGSHARE_STATE_DIR=$d/g2 timeout -s INT 200 $bin/ringshare get --io $bio --quiet --stats $d/big.json --trackers $d/ti.txt --user l2 --password-file $d/pw g big64 $d/big > $d/g2.out 2> $d/g2.err; rc=$?; t1=$(date +%s.%N)
    printf 'big64(%s) rc=%s wall=%.1fs %s\n' $bio $rc $(echo "$t1-$t0"|bc) "$(tail -1 $d/g2.out)" ) & p2=$!
wait $p1 $p2
cw=$(ss -tanpH state close-wait | grep -c "pid=$spid,")
killpid $spid; killpid $(cat $d/tracker.pid)
cmp $d/big $H/data/big64 && echo big-identical
echo "$tag cw_end=$cw"; cat $d/g*.err | grep -v '^$' | head
