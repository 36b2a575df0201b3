#!/bin/bash
# probels.sh BIN DIR DURATION OUT : honest `ringshare ls` every 0.5 s
bin=$1 d=$2 dur=$3 out=$4; end=$((SECONDS+dur)); : > $out
while [ $SECONDS -lt $end ]; do
  t0=$(date +%s.%N)
  r=$(RINGSHARE_STATE_DIR=$d/probels timeout 30 $bin/ringshare ls --trackers $d/ti.txt --user l --password-file $d/pw g 2>&1 | tr '\n' '|'); rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  ok=FAIL; [ "$rc" = 0 ] && ok=OK
  printf '%s %.1fs rc=%s %s\n' $ok $(echo "$t1-$t0"|bc) $rc "${r:0:400}" >> $out
  sleep 0.5
done
