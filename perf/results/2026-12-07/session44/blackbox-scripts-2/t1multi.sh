#!/bin/bash
# t1multi.sh TAG BIN PORT SIO RATE   -- 3 getters at once, disjoint sets, users l,l2,l3, io uring/threads/uring
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 sio=$4 rate=$5
d=$H/run/$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 $H/data/many/m --upload-rate $rate --io $sio || exit 1
spid=$(cat $d/s-1.pid)
( maxcw=0; while kill -0 $spid 2>/dev/null; do c=$(ss -tanpH state close-wait 2>/dev/null | grep -c "pid=$spid,"); [ $c -gt $maxcw ] && maxcw=$c; echo $maxcw > $d/cw.max; sleep 2; done ) &
mon=$!
i=0; gp=()
for spec in "l uring m/f0??" "l2 threads m/f1??" "l3 uring m/f2??"; do
  set -- $spec; i=$((i+1))
  ( t0=$(date +%s.%N); RINGSHARE_STATE_DIR=$d/g$i timeout -s INT 150 $bin/ringshare get --io $2 --quiet --trackers $d/ti.txt --user $1 --password-file $d/pw g "$3" $d/dest$i > $d/g$i.out 2> $d/g$i.err; rc=$?; t1=$(date +%s.%N)
    printf 'getter%s(%s,%s) rc=%s wall=%.1fs %s\n' $i $1 $2 $rc $(echo "$t1-$t0"|bc) "$(tail -1 $d/g$i.out)" ) &
  gp+=($!)
done
wait ${gp[@]}
cw=""; for w in 0 3 10 30; do sleep $((w - ${lw:-0})); lw=$w; cw="$cw +${w}s:$(ss -tanpH state close-wait | grep -c "pid=$spid,")"; done
killpid $spid; kill $mon 2>/dev/null; killpid $(cat $d/tracker.pid)
echo "$tag cw_max=$(cat $d/cw.max) cw_after:$cw"; cat $d/g*.err | grep -v '^$' | head
