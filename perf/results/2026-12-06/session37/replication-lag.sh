#!/bin/bash
# Replication lag under write load: two trackers on loopback, four shells
# each creating 6,000 groups through tracker 1; every second, the ops each
# tracker holds (--digest). Usage: replication-lag.sh BIN_DIR (holding
# ringshare and ringshare-tracker).
B=$(cd "$1" && pwd); D=$(mktemp -d); cd "$D" 
P1=$((46100 + RANDOM % 400)); P2=$((P1+1))
printf "127.0.0.1:$P1\n127.0.0.1:$P2\n" > ti.txt
printf "127.0.0.1:$P1\n" > ti1.txt
for n in 1 2; do $B/ringshare-tracker ti.txt $n --data-dir $D/d$n > t$n.log 2>&1 & echo $! >> pids; done
for n in 1 2; do until grep -q "listening" t$n.log; do sleep 0.1; done; done
printf 'create_user u pw\n' | $B/ringshare 127.0.0.1:0 ti1.txt --state-dir $D/s0 >/dev/null 2>&1
for k in 1 2 3 4; do
  ( echo "login u pw"; for i in $(seq 6000); do echo "create_group w${k}_$i"; done ) | $B/ringshare 127.0.0.1:0 ti1.txt --state-dir $D/s$k > sh$k.out 2>&1 &
  echo $! >> shells
done
for t in 1 2 3 4 5 6 7 8 9 10 11 12; do
  sleep 1
  a=$($B/ringshare-tracker ti.txt 1 --digest | grep -o 'ops=[0-9]*'); b=$($B/ringshare-tracker ti.txt 2 --digest | grep -o 'ops=[0-9]*')
  echo "$t s t1 $a t2 $b"
done
kill $(cat shells) 2>/dev/null; kill $(cat pids); wait 2>/dev/null; cd /; rm -rf $D
