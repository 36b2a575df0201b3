#!/bin/bash
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 sio=$4 gio=$5 rate=$6 ka=$7
d=$H/run/$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 $H/data/many/m --upload-rate $rate --io $sio || exit 1
spid=$(cat $d/s-1.pid)
(RINGSHARE_STATE_DIR=$d/g exec $bin/ringshare get --io $gio --quiet --trackers $d/ti.txt --user l --password-file $d/pw g m/ $d/dest > $d/g1.out 2> $d/g1.err) & gp=$!
sleep $ka; kill -INT $gp; wait $gp; echo "getter rc=$? $(cat $d/g1.out)"
tx0=$(ss -tinpH | grep -A1 "pid=$spid," | grep -o 'bytes_sent:[0-9]*' | cut -d: -f2 | paste -sd+ | bc)
[ -z "$NOSAMPLE" ] && for i in 0 5 10 15 20 30 40 50; do sleep $((i - ${li:-0})); li=$i; echo -n " +${i}s cw=$(ss -tanpH state close-wait | grep -c "pid=$spid,")"; done; echo
# second getter now
t0=$(date +%s.%N); RINGSHARE_STATE_DIR=$d/g2 timeout -s INT 60 $bin/ringshare get --io $gio --quiet --trackers $d/ti.txt --user l2 --password-file $d/pw g m/f001 $d/dest2/ > /dev/null 2>&1; echo "one 200kB file after drain: rc=$? $(echo "$(date +%s.%N)-$t0"|bc)s"
killpid $spid; killpid $(cat $d/tracker.pid)
