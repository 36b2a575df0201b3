#!/bin/bash
# Scenario 3: alice shares big40.bin in groups A and B (shell, --upload-rate 2MB). bob (A only) and carol (B only) fetch.
# After 4 s alice runs $2 (stop_share|leave_group) for A. bob's A download must stop getting data within ~1s and fail ~10s later; carol's goes on.
set -m
V=${1:-new}; ACT=${2:-stop_share}; P=${3:-34700}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w3-$V-$ACT; rm -rf $W; mkdir -p $W
start_tracker || exit 1
for u in alice bob carol; do pw $u >/dev/null; done
printf 'create_user alice pwalice\nlogin alice pwalice\ncreate_group A\ncreate_group B\n' | shell alice0 $((P+1)) >/dev/null 2>&1
printf 'create_user bob pwbob\nlogin bob pwbob\njoin_group A\n' | shell bob0 $((P+2)) >/dev/null 2>&1
printf 'create_user carol pwcarol\nlogin carol pwcarol\njoin_group B\n' | shell carol0 $((P+3)) >/dev/null 2>&1
printf 'login alice pwalice\naccept_request A bob\naccept_request B carol\n' | shell alice0 $((P+1)) 2>/dev/null
mkfifo $W/fifo
( exec $(bin) 127.0.0.1:$((P+20)) $W/trk.txt --state-dir $W/st-alice --upload-rate 2MB < $W/fifo > $W/sh.out 2> $W/sh.err ) & SH=$!
exec 3>$W/fifo
echo "login alice pwalice" >&3; echo "upload_file /tmp/h46/big/big40.bin A" >&3; echo "upload_file /tmp/h46/big/big40.bin B" >&3
waitfor $W/sh.out "to B" 30
t0=$(date +%s.%N)
RX $((P+21)) bob get A big40.bin $W/bob/ --quiet --stats $W/bob.json > $W/bob.out 2> $W/bob.err & BP=$!
RX $((P+22)) carol get B big40.bin $W/carol/ --quiet --stats $W/carol.json > $W/carol.out 2> $W/carol.err & CP=$!
sleep 4
cnt() { python3 - $1 <<'PY'
import sys,os
p=sys.argv[1]
try: print(sum(bin(b).count('1') for b in open(p,'rb').read()[-10:]), end='')
except Exception as e: print('NA',end='')
PY
}
# bob's progress: size of the verified-piece state is not directly readable; sample bytes received via /proc net? use part.state mtime + ss bytes
samp() { echo "t=$(echo "$(date +%s.%N)-$t0"|bc|cut -c1-5) bob_rx=$(ss -tni state established "( sport = :$((P+20)) )" 2>/dev/null | grep -o 'bytes_acked:[0-9]*' | tr '\n' ' ')"; }
echo "$ACT A ..."; [ $ACT = stop_share ] && echo "stop_share A big40.bin" >&3 || echo "leave_group A" >&3
ts=$(date +%s.%N)
for i in 1 2 3 4 5 6 7 8; do sleep 0.5; echo "t=$(echo "$(date +%s.%N)-$ts"|bc|cut -c1-4) conns-from-seeder: $(ss -tni state established "( sport = :$((P+20)) )" | grep -o 'bytes_acked:[0-9]*' | tr '\n' ' ')"; done
wait $BP; rb=$?; tb=$(echo "$(date +%s.%N)-$ts"|bc)
wait $CP; rc=$?; tc=$(echo "$(date +%s.%N)-$ts"|bc)
echo "bob (A): rc=$rb ended $tb s after $ACT; fetched=$(python3 -c "import json;d=json.load(open('$W/bob.json'));print(d['fetched'])"); err=[$(grep -v '^$' $W/bob.err|tail -n1)]"
echo "carol (B): rc=$rc ended $tc s after $ACT; $(cmp $W/carol/big40.bin /tmp/h46/big/big40.bin && echo identical)"
echo "--- alice shell"; cat $W/sh.out; grep -v '^$' $W/sh.err | cut -c1-200 | tail -n 5
exec 3>&-; wait $SH; stop_tracker; wait
