#!/bin/bash
# SIGINT/SIGTERM sent to `share` within the first ~100 ms: is it honoured?
W=/tmp/h45/w7c; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33088 || exit 1
setup_users g0 alice > /dev/null
mkdir -p $W/tree; head -c 1000000 /dev/urandom > $W/tree/a.bin
for spec in ${SPECS:-INT:0.01 INT:0.02 INT:0.03 INT:0.05 INT:0.07 INT:0.1 TERM:0.01 TERM:0.03 TERM:0.05 TERM:0.07 HUP:0.03 HUP:0.05}; do
  sig=${spec%:*}; d=${spec#*:}
  $RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a g0 $W/tree > $W/o 2>&1 & P=$!
  sleep $d; kill -$sig $P; t0=$(date +%s.%N)
  for i in $(seq 1 50); do kill -0 $P 2>/dev/null || break; sleep 0.2; done
  if kill -0 $P 2>/dev/null; then st="STILL RUNNING 10s after signal"; kill -KILL $P; wait $P; else wait $P; st="exited rc=$?"; fi
  echo "SIG$sig at ${d}s: $st; last: $(grep -v 'I/O backend' $W/o | tail -1 | cut -c1-120)"
done
kill $TPID; wait
