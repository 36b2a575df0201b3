#!/bin/bash
# Self-contained reproduction: a file put at DEST/NAME.part while a bulk get runs is
# moved to DEST/NAME and reported as fetched (exit 0).  Usage: repro_partswap.sh [file|symlink|state]
MODE=${1:-file}
B=/tmp/bb47/bin; W=/tmp/bb47/repro; rm -rf $W; mkdir -p $W/src/t
head -c 6000000 /dev/urandom > $W/src/t/big
echo 127.0.0.1:20101 > $W/ti; echo pw > $W/pw
$B/ringshare-tracker $W/ti 1 --data-dir $W/td > $W/t.out 2>&1 & TP=$!
for i in $(seq 100); do grep -q key $W/t.out && break; sleep 0.1; done
p=20102
for c in "create_user s pw|login s pw|create_group g" "create_user l pw|login l pw|join_group g" "login s pw|accept_request g l"; do
  tr '|' '\n' <<<"$c" | RINGSHARE_STATE_DIR=$W/sh $B/ringshare 127.0.0.1:$p $W/ti >/dev/null 2>&1; p=$((p+1)); done
RINGSHARE_STATE_DIR=$W/s $B/ringshare share --listen 127.0.0.1:20110 --upload-rate 300kB --trackers $W/ti --user s --password-file $W/pw g $W/src/t > $W/s.out 2>&1 & SP=$!
for i in $(seq 300); do grep -q "seeding on" $W/s.out && break; sleep 0.1; done
RINGSHARE_STATE_DIR=$W/l $B/ringshare get --quiet --listen 127.0.0.1:20111 --trackers $W/ti --user l --password-file $W/pw g $W/dest & GP=$!
for i in $(seq 100); do [ -e $W/dest/t/big.part ] && break; sleep 0.1; done; sleep 2
case $MODE in
  file)    mv $W/dest/t/big.part $W/moved; echo "my own file" > $W/dest/t/big.part ;;
  symlink) mv $W/dest/t/big.part $W/moved; ln -s /etc/hostname $W/dest/t/big.part ;;
  state)   echo "my own file" > $W/dest/t/big.part.state.mine; mv $W/dest/t/big.part.state.mine $W/dest/t/big.part.state ;;
esac
wait $GP; echo "get exit status: $?"
ls -la $W/dest/t; cmp $W/src/t/big $W/dest/t/big && echo "big is correct" || echo "big is NOT the group's file"
kill $SP $TP; wait 2>/dev/null
