#!/bin/bash
# probe.sh BIN DIR DURATION OUT
bin=$1 d=$2 dur=$3 out=$4; end=$((SECONDS+dur)); : > $out
while [ $SECONDS -lt $end ]; do
  t0=$(date +%s.%N)
  r=$(printf 'login l pw\nlist_groups\n' | RINGSHARE_STATE_DIR=$d/probe timeout 30 $bin/ringshare 127.0.0.1:0 $d/ti.txt 2>&1 | tr '\n' '|')
  rc=$?
  t1=$(date +%s.%N)
  ok=FAIL; [[ "$r" == *"logged in as l"*"|g|"* ]] && ok=OK
  printf '%s %.1fs %s\n' $ok $(echo "$t1-$t0"|bc) "${r:0:400}" >> $out
  sleep 0.5
done
