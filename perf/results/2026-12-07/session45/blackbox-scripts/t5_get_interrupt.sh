#!/bin/bash
# one-file get: interrupt with SIG at a random moment, then rerun the same command
W=/tmp/h45/w5; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33060 || exit 1
setup_users team alice bob
mkfile $W/big 50331648
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33061 --upload-rate 6MB team $W/big > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || { cat $W/share.out; kill $SPID $TPID; exit 1; }
cat $W/share.out
run=0
for sig in ${SIGS:-INT TERM KILL INT TERM KILL}; do
  run=$((run+1)); D=$W/dl$run; d=$(python3 -c "import random;print(round(random.uniform(0.3,7),1))")
  echo "===== run $run: SIG$sig after ${d}s"
  $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --stats $W/s$run.a.json team big $D/ > $W/g$run.a 2>&1 &
  P=$!; sleep $d; kill -$sig $P; t0=$(date +%s.%N)
  wait $P; rc=$?; echo "first rc=$rc (exit took $(python3 -c "import time;print(round(time.time()-$t0,2))")s)"
  tr '\r' '\n' < $W/g$run.a | grep -vE '^\s*$|━|%' | tail -4 | sed 's/^/   | /'
  ls -la $D 2>&1 | tail -n +2 | sed 's/^/   ls: /'
  [ -f $W/s$run.a.json ] && python3 -c "import json;d=json.load(open('$W/s$run.a.json'));print('   stats:',{k:d.get(k) for k in ['bytes','fetched','bytes_partial','files_interrupted','stopped_by']})"
  timeout 120 $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --stats $W/s$run.b.json team big $D/ > $W/g$run.b 2>&1; rc=$?
  echo "second rc=$rc"
  tr '\r' '\n' < $W/g$run.b | grep -vE '^\s*$|━|%' | tail -4 | sed 's/^/   | /'
  python3 -c "import json;d=json.load(open('$W/s$run.b.json'));print('   stats:',{k:d.get(k) for k in ['bytes','fetched','already_present','stopped_by']})"
  cmp $W/big $D/big && echo "   IDENTICAL"; ls -la $D | tail -n +2 | sed 's/^/   ls: /'
  rm -rf $D
done
kill -INT $SPID; wait $SPID; echo "share rc=$?"; tail -3 $W/share.out
kill $TPID; wait
