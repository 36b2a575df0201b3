#!/bin/bash
# t2b.sh TAG BIN PORT N IOs...  : ext4 (no extents, no fallocate) with a filler leaving FREE KB, FREE cycling
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 n=$4; shift 4
mnt=/tmp/h44b/mnt-ext4
d=$H/run/t2b-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 $H/data/f3m || exit 1
frees=(${FREES:-100 300 500 520 540 600 700 900 1030 1060 1100 1300 1600 2000})
for io in "$@"; do
 for i in $(seq $n); do
  rm -rf $mnt/* 2>/dev/null; sync
  fr=${frees[$(( (i-1) % ${#frees[@]} ))]}
  av=$(df -k --output=avail $mnt | tail -1)
  fill=$((av - fr)); [ $fill -gt 0 ] && dd if=/dev/zero of=$mnt/filler bs=1k count=$fill status=none 2>/dev/null
  sd=$d/g-$io-$i
  RINGSHARE_STATE_DIR=$sd timeout -s INT 120 $bin/ringshare get --io $io --trackers $d/ti.txt --user l --password-file $d/pw g f3m $mnt/f3m > $d/out-$io-$i 2> $d/err-$io-$i
  rc=$?
  left=$(cd $mnt && ls -A | grep -v -e lost+found -e filler | tr '\n' ' ')
  msg=$(grep -E "error|failed|kept" $d/err-$io-$i $d/out-$io-$i | tail -2 | cut -d: -f2- | tr '\n' ' ' | sed 's/No space left on device (os error 28)/ENOSPC/')
  says=no; grep -q "kept" $d/err-$io-$i $d/out-$io-$i && says=yes
  ok=OK
  if [ $says = yes ] && [ ! -e $mnt/f3m.part ]; then ok=BAD-kept-but-no-part; fi
  if [ $says = no ] && [ -n "$left" ] && [ $rc -ne 0 ]; then ok=CHECK-left-but-not-said; fi
  if [ $rc -eq 0 ]; then ok=COMPLETE; fi
  echo "$io #$i free=${fr}k rc=$rc $ok kept=$says left=[$left] $msg"
 done
done
rm -rf $mnt/*
killpid $(cat $d/s-1.pid); killpid $(cat $d/tracker.pid)
