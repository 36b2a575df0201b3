#!/bin/bash
# `share` interrupted at random moments (during hashing / registering / seeding), then re-run
W=/tmp/h45/w7; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33080 || exit 1
setup_users team alice bob > /dev/null
mkdir -p $W/tree/small
python3 - <<PY
import os,random
for i in range(2000):
    d=f"$W/tree/small/d{i%20}"; os.makedirs(d,exist_ok=True)
    open(f"{d}/f{i}.bin","wb").write(os.urandom(random.randint(1,20000)))
PY
head -c 62914560 /dev/urandom > $W/tree/big.bin
LS="$RS ls --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-bls team"
SH="$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33081 team $W/tree"
run=0
for spec in ${SPECS:-INT:0.3 TERM:0.8 KILL:0.5 INT:1.5 KILL:2.5}; do
  sig=${spec%:*}; d=${spec#*:}; run=$((run+1))
  echo "===== run $run: share, SIG$sig after ${d}s"
  $SH > $W/sh$run.a 2>&1 & P=$!; sleep $d; kill -$sig $P; t0=$(date +%s.%N)
  for i in $(seq 1 100); do kill -0 $P 2>/dev/null || break; sleep 0.2; done
  kill -0 $P 2>/dev/null && { echo "   HANG: share still alive 20s after SIG$sig"; kill -KILL $P; }
  wait $P; echo "first rc=$? (exit $(python3 -c "import time;print(round(time.time()-$t0,2))")s)"; tail -3 $W/sh$run.a | cut -c1-250 | sed 's/^/   | /'
  echo "   ls: $($LS 2>&1 | wc -l) lines; $($LS 2>&1 | grep -c ' 0 peers') with 0 peers; $($LS 2>&1 | grep -c 'error')"
  $SH > $W/sh$run.b 2>&1 & P=$!; wait_for $W/sh$run.b "seeding on|^error" 120
  echo "second:"; grep -v "I/O backend" $W/sh$run.b | tail -3 | cut -c1-250 | sed 's/^/   | /'
  echo "   ls: $($LS 2>&1 | wc -l) lines; $($LS 2>&1 | grep -c ' 1 peer')  with 1 peer"
  kill -INT $P; wait $P; echo "   second rc=$?"; tail -1 $W/sh$run.b
  find $W/tree -newer $W/trackers.txt -name '*.part*' | head
done
ls -la $W/st-a
kill $TPID; wait
