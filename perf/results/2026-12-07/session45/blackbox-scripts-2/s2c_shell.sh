#!/bin/bash
# Scenario 2c: interactive shell flows: download_file / show_downloads / logout / resume / stop_share
set -m
V=${1:-new}; P=${2:-34600}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w2c-$V; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
RX $((P+20)) alice share G /tmp/h46/big/big40.bin --upload-rate 2MB > $W/sa.out 2> $W/sa.err & SA=$!
waitfor $W/sa.out "seeding on" 30
mkfifo $W/fifo
( exec $(bin) 127.0.0.1:$((P+30)) $W/trk.txt --state-dir $W/st-bobsh < $W/fifo > $W/sh.out 2> $W/sh.err ) & SH=$!
exec 3>$W/fifo
c() { echo ">> $*" >> $W/sh.log; echo "$*" >&3; sleep ${SL:-0.7}; }
c login bob pwbob
c download_file G big40.bin $W/dl/
sleep 2; c show_downloads
c logout
sleep 0.5; ls -la $W/dl > $W/ls-after-logout
c show_downloads
c login bob pwbob
c show_downloads
c download_file G big40.bin $W/dl/
for i in $(seq 1 40); do c show_downloads; grep -q '\[C\] \[G\] big40.bin' $W/sh.out && break; sleep 1; done
cmp $W/dl/big40.bin /tmp/h46/big/big40.bin && echo "shell download identical"; echo "leftover: $(ls $W/dl | grep -c part)"
c list_files G
c stop_share G big40.bin
c list_files G
c stop_share G big40.bin
c logout
c logout
exec 3>&-; wait $SH; echo "shell rc=$?"
echo "--- shell stdout"; cat $W/sh.out | awk '!/%/ || !seen[$0]++' | uniq | head -50
echo "--- shell stderr"; grep -v '^$' $W/sh.err | head
echo "--- ls after logout"; cat $W/ls-after-logout
kill -INT $SA; wait $SA; stop_tracker; wait
