#!/bin/bash
# bad values for the budget options: each must give one error: line and rc 2. usage: s0_badopts.sh (uses port 37000)
mkdir -p /tmp/h48/opt && cd /tmp/h48/opt && echo 127.0.0.1:37000 > trk.txt
for v in 0 -1 abc 1.5 "" 99999999999999999999; do
 for o in --max-share-mib-per-user --max-share-mib; do
  timeout 3 /tmp/bin46c/ringshare-tracker trk.txt 1 --data-dir td $o "$v" >out 2>err; echo "== $o '$v' rc=$? lines=$(grep -c . err)"; cat err
 done; done
