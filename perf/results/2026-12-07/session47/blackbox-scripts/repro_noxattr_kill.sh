#!/bin/bash
# Self-contained reproduction: on a filesystem without user xattrs (ramfs), a bulk get killed
# with -9 leaves unmarked one-piece part files that every re-run refuses as "in the way".
B=/tmp/bb47/bin; W=/tmp/bb47/repro; rm -rf $W; mkdir -p $W/src/t $W/mnt
for n in 1 2 3; do head -c 300000 /dev/urandom > $W/src/t/small$n; done   # one piece each (< 512 KiB)
echo 127.0.0.1:20101 > $W/ti; echo pw > $W/pw
$B/ringshare-tracker $W/ti 1 --data-dir $W/td > $W/t.out 2>&1 & TP=$!
for i in $(seq 100); do grep -q key $W/t.out && break; sleep 0.1; done
p=20102
for c in "create_user s pw|login s pw|create_group g" "create_user l pw|login l pw|join_group g" "login s pw|accept_request g l"; do
  tr '|' '\n' <<<"$c" | RINGSHARE_STATE_DIR=$W/sh $B/ringshare 127.0.0.1:$p $W/ti >/dev/null 2>&1; p=$((p+1)); done
RINGSHARE_STATE_DIR=$W/s $B/ringshare share --listen 127.0.0.1:20110 --upload-rate 100kB --trackers $W/ti --user s --password-file $W/pw g $W/src/t > $W/s.out 2>&1 & SP=$!
for i in $(seq 300); do grep -q "seeding on" $W/s.out && break; sleep 0.1; done
mount -t ramfs ramfs $W/mnt
get() { RINGSHARE_STATE_DIR=$W/l $B/ringshare get --quiet --listen 127.0.0.1:20111 --trackers $W/ti --user l --password-file $W/pw g $W/mnt/dest; }
RINGSHARE_STATE_DIR=$W/l $B/ringshare get --quiet --listen 127.0.0.1:20111 --trackers $W/ti --user l --password-file $W/pw g $W/mnt/dest & GP=$!; sleep 3; kill -9 $GP; wait $GP 2>/dev/null
echo "after kill -9:"; ls -la $W/mnt/dest/t
get; echo "re-run exit status: $?"
get; echo "third run exit status: $?"
ls -la $W/mnt/dest/t
umount $W/mnt; kill $SP $TP; wait 2>/dev/null
