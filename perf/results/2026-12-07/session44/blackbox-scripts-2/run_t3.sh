#!/bin/bash
# run_t3.sh : F2/F3 floods on both builds, sequential. Ports 32001-32006
cd /tmp/h44b
p=32001
for mode in "valid 0" "silent 1" "fake 1"; do
  set -- $mode
  for b in old new; do
    echo "=== $b $1 recon=$2 port $p $(date +%T)"
    bash scripts/t3.sh $b-$1 /tmp/h44b/bin-$b $p $1 12 10 50 $2
    f=/tmp/h44b/run/t3-$b-$1/probe.txt
    awk '{s+=$2; n++; if($2>m)m=$2} END{printf "probe time mean %.2fs max %.1fs n=%d\n", s/n, m, n}' $f
    p=$((p+1))
  done
done
echo DONE
