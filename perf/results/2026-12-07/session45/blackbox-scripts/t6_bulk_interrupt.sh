#!/bin/bash
# bulk get of a tree (1500 small files + 6 x 4 MiB): interrupt at random moment, rerun
W=/tmp/h45/w6; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33070 || exit 1
setup_users team alice bob > /dev/null
mkdir -p $W/tree/small $W/tree/big
python3 - <<PY
import os,random
for i in range(1500):
    d=f"$W/tree/small/d{i%30}"; os.makedirs(d,exist_ok=True)
    open(f"{d}/f{i}.bin","wb").write(os.urandom(random.randint(1,40000)))
for i in range(6): open(f"$W/tree/big/b{i}.bin","wb").write(os.urandom(4*1024*1024))
PY
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33071 --upload-rate ${RATE:-3MB} team $W/tree > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 120 || { cat $W/share.out; kill $SPID $TPID; exit 1; }
tail -2 $W/share.out
run=0
for sig in ${SIGS:-INT TERM KILL}; do
  run=$((run+1)); D=$W/dl$run; d=$(python3 -c "import random;print(round(random.uniform(1,8),1))")
  echo "===== run $run: SIG$sig after ${d}s"
  $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --quiet --stats $W/s$run.a.json team $D > $W/g$run.a 2>&1 &
  P=$!; sleep $d; kill -$sig $P; t0=$(date +%s.%N)
  wait $P; rc=$?; echo "first rc=$rc (exit took $(python3 -c "import time;print(round(time.time()-$t0,2))")s)"
  tail -4 $W/g$run.a | cut -c1-300 | sed 's/^/   | /'
  echo "   files: $(find $D -type f ! -name '*.part*' | wc -l) complete, $(find $D -name '*.part' | wc -l) .part, $(find $D -name '*.part.state' | wc -l) .state"
  [ -f $W/s$run.a.json ] && python3 -c "import json;d=json.load(open('$W/s$run.a.json'));print('   stats:',{k:d.get(k) for k in ['bytes','bytes_partial','files_done','files_failed','files_interrupted','stopped_by']})"
  timeout 180 $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --quiet --stats $W/s$run.b.json team $D > $W/g$run.b 2>&1; rc=$?
  echo "second rc=$rc"; tail -4 $W/g$run.b | cut -c1-300 | sed 's/^/   | /'
  python3 -c "
import json;d=json.load(open('$W/s$run.b.json'));print('   stats:',{k:d.get(k) for k in ['bytes','files_done','files_failed','stopped_by']})
fs=d.get('files') or []
print('   records',len(fs),'already_present',sum(1 for f in fs if f.get('already_present')),'fetched>0',sum(1 for f in fs if f.get('fetched')))"
  diff -r $W/tree $D/tree >/dev/null && echo "   TREE IDENTICAL" || echo "   TREE DIFFERS: $(diff -rq $W/tree $D/tree | head -3)"
  echo "   leftovers: $(find $D -name '*.part*' | wc -l)"
  rm -rf $D
done
kill -INT $SPID; wait $SPID; echo "share rc=$?"; tail -2 $W/share.out
kill $TPID; wait
