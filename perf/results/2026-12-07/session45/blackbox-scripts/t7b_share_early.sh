#!/bin/bash
# `share` interrupted very early (hashing/registering) into a fresh group each run, then re-run
W=/tmp/h45/w7b; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33085 || exit 1
setup_users g0 alice bob > /dev/null
start_shell al 33086; sh_do al login alice palice >/dev/null
for i in 1 2 3 4 5 6 7 8; do sh_do al create_group g$i >/dev/null; done
sh_quit al
mkdir -p $W/tree/small
python3 - <<PY
import os,random
for i in range(3000):
    d=f"$W/tree/small/d{i%20}"; os.makedirs(d,exist_ok=True)
    open(f"{d}/f{i}.bin","wb").write(os.urandom(random.randint(1,20000)))
PY
head -c 62914560 /dev/urandom > $W/tree/big.bin
run=0
for spec in ${SPECS:-INT:0.05 TERM:0.1 KILL:0.1 INT:0.15 KILL:0.2 TERM:0.2 INT:0.25 KILL:0.3}; do
  sig=${spec%:*}; d=${spec#*:}; run=$((run+1)); g=g$run
  LS="$RS ls --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-als $g"
  SH="$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33087 $g $W/tree"
  echo "===== run $run: share into $g, SIG$sig after ${d}s"
  $SH > $W/sh$run.a 2>&1 & P=$!; sleep $d; kill -$sig $P; t0=$(date +%s.%N)
  for i in $(seq 1 100); do kill -0 $P 2>/dev/null || break; sleep 0.2; done
  kill -0 $P 2>/dev/null && { echo "   HANG: share still alive 20s after SIG$sig"; kill -KILL $P; }
  wait $P; echo "first rc=$? (exit $(python3 -c "import time;print(round(time.time()-$t0,2))")s)"; grep -v "I/O backend" $W/sh$run.a | tail -3 | cut -c1-250 | sed 's/^/   | /'
  echo "   ls: $($LS 2>/dev/null | wc -l) listed; $($LS 2>&1 | grep -c '0 peers') with 0 peers"
  $SH > $W/sh$run.b 2>&1 & P=$!; wait_for $W/sh$run.b "seeding on|^error" 120
  echo "second:"; grep -v "I/O backend" $W/sh$run.b | tail -3 | cut -c1-250 | sed 's/^/   | /'
  echo "   ls: $($LS 2>/dev/null | wc -l) listed; $($LS 2>&1 | grep -c ' 1 peer') with 1 peer"
  kill -INT $P; wait $P; echo "   second rc=$?"
done
kill $TPID; wait
