#!/bin/bash
# usage: hung-get.sh BIN  -> prints get's time to exit with tracker 1 stopped 1 s in
B=$1; W=$(mktemp -d); cd $W
P1=$((24000 + RANDOM % 500)); P2=$((P1+1))
printf "127.0.0.1:$P1\n127.0.0.1:$P2\n" > ti.txt; echo pw > pw
$B/ringshare-tracker ti.txt 1 --data-dir t1 > t1.out 2>&1 & T1=$!
$B/ringshare-tracker ti.txt 2 --data-dir t2 > t2.out 2>&1 & T2=$!
sleep 1.5
printf "create_user a pw\nlogin a pw\ncreate_group g\n" | RINGSHARE_STATE_DIR=sa $B/ringshare 127.0.0.1:0 ti.txt >/dev/null 2>&1
printf "create_user b pw\nlogin b pw\njoin_group g\n" | RINGSHARE_STATE_DIR=sb $B/ringshare 127.0.0.1:0 ti.txt >/dev/null 2>&1
printf "login a pw\naccept_request g b\n" | RINGSHARE_STATE_DIR=sa $B/ringshare 127.0.0.1:0 ti.txt >/dev/null 2>&1
head -c 100000000 /dev/urandom > f.bin
RINGSHARE_STATE_DIR=ss $B/ringshare share --trackers ti.txt --user a --password-file pw --upload-rate 40MB g f.bin > s.out 2>s.err & S=$!
for i in $(seq 100); do grep -q "seeding on" s.out && break; sleep 0.1; done
s0=$(date +%s.%N)
( sleep 1; kill -STOP $T1 ) &
RINGSHARE_STATE_DIR=sg $B/ringshare get --trackers ti.txt --user b --password-file pw --quiet g f.bin got.bin > g.out 2> g.err
rc=$?
s1=$(date +%s.%N)
done_at=$(stat -c %Y.%y got.bin 2>/dev/null | head -1)
echo "exit $rc after $(echo "$s1 - $s0" | bc) s; file ok: $(cmp -s f.bin got.bin && echo yes || echo no)"
kill -CONT $T1; kill $S $T1 $T2 2>/dev/null; wait 2>/dev/null; cd /; rm -rf $W
