#!/bin/bash
# Scenario 3b: dave (member of A and B) fetches A/big40.bin and B/big40.bin from one shell (same node, may share a link to alice).
# alice (shell, --upload-rate 2MB) shares it in A and B, then stop_share A after 4 s. B download must go on and finish.
set -m
V=${1:-new}; P=${2:-34700}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w3b-$V; rm -rf $W; mkdir -p $W
start_tracker || exit 1
printf 'create_user alice pwalice\nlogin alice pwalice\ncreate_group A\ncreate_group B\n' | shell alice0 $((P+1)) >/dev/null 2>&1
printf 'create_user dave pwdave\nlogin dave pwdave\njoin_group A\njoin_group B\n' | shell dave0 $((P+2)) >/dev/null 2>&1
printf 'login alice pwalice\naccept_request A dave\naccept_request B dave\n' | shell alice0 $((P+1)) 2>/dev/null
mkfifo $W/fa $W/fd
( exec $(bin) 127.0.0.1:$((P+20)) $W/trk.txt --state-dir $W/st-alice --upload-rate 2MB < $W/fa > $W/a.out 2> $W/a.err ) & SA=$!
exec 3>$W/fa
echo "login alice pwalice" >&3; echo "upload_file /tmp/h46/big/big40.bin A" >&3; echo "upload_file /tmp/h46/big/big40.bin B" >&3
waitfor $W/a.out "to B" 30
( exec $(bin) 127.0.0.1:$((P+21)) $W/trk.txt --state-dir $W/st-dave < $W/fd > $W/d.out 2> $W/d.err ) & SD=$!
exec 4>$W/fd
echo "login dave pwdave" >&4; echo "download_file A big40.bin $W/da/" >&4; echo "download_file B big40.bin $W/db/" >&4
sleep 4; echo "show_downloads" >&4; sleep 0.3
echo "stop_share A big40.bin" >&3; ts=$(date +%s)
for i in $(seq 1 45); do sleep 1; echo "show_downloads" >&4; sleep 0.2; n=$(grep -cE '^\[(C|F)\]' $W/d.out); [ $n -ge 2 ] && tail -n 2 $W/d.out | grep -q '^\[[CF]\]' && [ $(tail -n 2 $W/d.out | grep -c '^\[[CF]\]') -eq 2 ] && break; done
echo "after $(( $(date +%s)-ts )) s:"; grep -v '%' $W/d.out; tail -n 2 $W/d.out
cmp $W/db/big40.bin /tmp/h46/big/big40.bin && echo "B identical"; ls $W/da $W/db
grep -v '^$' $W/d.err | tail -n 4
exec 3>&- 4>&-; kill -INT $SD; wait $SD; wait $SA; stop_tracker; wait
