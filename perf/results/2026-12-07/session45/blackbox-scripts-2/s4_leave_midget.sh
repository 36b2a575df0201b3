#!/bin/bash
# Scenario 4: bob's bulk get of G (300 x 200kB, seeder at 2MB/s); after 5s bob leaves G from another shell.
# Expect one closing line 'error: not a member of group G: N file(s) not fetched; once a member of G again, run the same command to resume'
# and no 'ringshare: failed' lines. Then bob rejoins, alice accepts, same command resumes & finishes.
set -m
V=${1:-new}; P=${2:-34800}
source /tmp/h46/scripts/lib.sh
W=/tmp/h46/w4-$V; rm -rf $W; mkdir -p $W
start_tracker || exit 1
setup_users G alice bob >/dev/null
RX $((P+20)) alice share G /tmp/h46/data300/d --upload-rate 2MB > $W/share.out 2> $W/share.err & SP=$!
waitfor $W/share.out "shared 300" 60
t0=$(date +%s.%N)
RX $((P+21)) bob get G $W/dest > $W/get1.out 2> $W/get1.err & GP=$!
sleep 5
printf 'login bob pwbob\nleave_group G\n' | shell bob2 $((P+30)) 2>/dev/null
tl=$(date +%s.%N)
wait $GP; rc=$?; te=$(date +%s.%N)
echo "get#1 rc=$rc ended $(echo "$te-$tl"|bc) s after leave_group; files present: $(ls $W/dest/d | grep -vc part) parts: $(ls $W/dest/d | grep -c part)"
echo "--- get#1 stdout (last 3):"; tail -n 3 $W/get1.out | tr '\r' '\n' | tail -n 3
echo "--- get#1 stderr lines (progress lines excluded):"; tr '\r' '\n' < $W/get1.err | grep -E 'error|failed|ringshare:' | sort | uniq -c | head -20
echo "count of 'ringshare: failed' lines: $( (cat $W/get1.out $W/get1.err) | tr '\r' '\n' | grep -c 'ringshare: failed')"
echo "count of 'error:' lines: $( (cat $W/get1.out $W/get1.err) | tr '\r' '\n' | grep -c '^error:')"
printf 'login bob pwbob\njoin_group G\n' | shell bob2 $((P+30)) 2>/dev/null
printf 'login alice pwalice\naccept_request G bob\n' | shell alice $((P+1)) 2>/dev/null
R $((P+21)) bob get G $W/dest --quiet > $W/get2.out 2> $W/get2.err; rc=$?
echo "get#2 rc=$rc: $(cat $W/get2.out) $(grep -v '^$' $W/get2.err | tail -n 2)"
diff -r $W/dest/d /tmp/h46/data300/d >/dev/null && echo "bulk identical"; echo "leftover parts: $(find $W/dest -name '*.part*' | wc -l)"
kill -INT $SP; wait $SP; stop_tracker; wait
