#!/bin/bash
# t2.sh TAG BIN PORT MNT N IOs...   (seeder already running in group dir run/t2-TAG? no: we create it)
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 mnt=$4 n=$5; shift 5
d=$H/run/t2-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 $H/data/f3m || exit 1
for io in "$@"; do
 for i in $(seq $n); do
  rm -rf $mnt/* 2>/dev/null
  sd=$d/g-$io-$i
  RINGSHARE_STATE_DIR=$sd timeout -s INT 120 $bin/ringshare get --io $io --trackers $d/ti.txt --user l --password-file $d/pw g f3m $mnt/f3m > $d/out-$io-$i 2> $d/err-$io-$i
  rc=$?
  left=$(cd $mnt && ls -A | grep -v lost+found | tr '\n' ' ')
  msg=$(grep -E "error|failed|kept" $d/err-$io-$i $d/out-$io-$i | tail -2 | cut -d: -f2- | tr '\n' ' ')
  says=no; grep -q "kept" $d/err-$io-$i $d/out-$io-$i && says=yes
  ok=OK
  if [ $says = yes ] && [ ! -e $mnt/f3m.part ]; then ok=BAD-kept-but-no-part; fi
  if [ $says = no ] && [ -n "$left" ] && [ $rc -ne 0 ]; then ok=CHECK-left-but-not-said; fi
  echo "$io #$i rc=$rc $ok says_kept=$says left=[$left] msg=$msg"
 done
done
killpid $(cat $d/s-1.pid); killpid $(cat $d/tracker.pid)
