#!/bin/bash
cd /tmp/h44b
while ! grep -q DONE t3-results.txt; do sleep 2; done
echo "### item 3: memory $(date +%T)"
for b in old new; do echo "=== mem $b"; bash scripts/t5.sh $b /tmp/h44b/bin-$b $([ $b = old ] && echo 32011 || echo 32012) 40 5 1000000 30; done
echo "### item 2: seeder $(date +%T)"
tp=32020; sp=32520
for spec in "new uring -1 3" "new threads -1 3" "old uring -1 2" "old threads -1 2" "new uring 0 3" "new threads 0 3" "old uring 0 1" "old threads 0 1"; do
  set -- $spec
  echo "=== seeder $1 io=$2 recon_delay=$3 $(date +%T)"
  bash scripts/t4.sh $1-$2-r$3 /tmp/h44b/bin-$1 $tp $sp $2 $2 $3 $4
  tp=$((tp+1)); sp=$((sp+1))
done
echo "### extra $(date +%T)"
echo "=== new valid recon=1 (shell probe)"; bash scripts/t3.sh new-validrecon /tmp/h44b/bin-new 32030 valid 12 10 45 1
echo "=== new silent recon=1 (ls probe)"; bash scripts/t3ls.sh new-silent /tmp/h44b/bin-new 32031 silent 12 10 45 1
echo QDONE $(date +%T)
