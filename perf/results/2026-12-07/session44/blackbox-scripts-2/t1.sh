#!/bin/bash
# t1.sh TAG BIN PORT SIO GIO RATE PATTERN TIMEOUT [getter-bin]
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 sio=$4 gio=$5 rate=$6 pat=$7 to=$8 gbin=${9:-$2}
d=$H/run/$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port || exit 1
seed $d $bin 1 $H/data/many/m --upload-rate $rate --io $sio || exit 1
spid=$(cat $d/s-1.pid)
( maxcw=0; while kill -0 $spid 2>/dev/null; do c=$(ss -tanpH state close-wait 2>/dev/null | grep -c "pid=$spid,"); [ $c -gt $maxcw ] && maxcw=$c; echo $maxcw > $d/cw.max; sleep 2; done ) &
mon=$!
t0=$(date +%s.%N)
RINGSHARE_STATE_DIR=$d/g timeout -s INT $to $gbin/ringshare get --io $gio --quiet --stats $d/stats.json --trackers $d/ti.txt --user l --password-file $d/pw g "$pat" $d/dest > $d/g.out 2> $d/g.err
rc=$?
t1=$(date +%s.%N)
cwnow=$(ss -tanpH state close-wait | grep -c "pid=$spid,")
sleep ${CWWAIT:-0}; cwlater=$(ss -tanpH state close-wait | grep -c "pid=$spid,"); estlater=$(ss -tanpH state established | grep -c "pid=$spid,")
n=$(find $d/dest -type f ! -name '*.part*' 2>/dev/null | wc -l)
killpid $spid; kill $mon 2>/dev/null; killpid $(cat $d/tracker.pid)
printf '%s rc=%s wall=%.1fs files=%s cw_max=%s cw_end=%s cw_after=%s est_after=%s\n' "$tag" $rc $(echo "$t1-$t0"|bc) $n "$(cat $d/cw.max 2>/dev/null)" $cwnow $cwlater $estlater
tail -n 3 $d/g.out $d/g.err | sed 's/^/   /'
