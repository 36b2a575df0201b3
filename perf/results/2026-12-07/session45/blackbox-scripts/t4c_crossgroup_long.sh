#!/bin/bash
# how long does the cross-group leak last? 48 MiB at 1 MB/s, stop_share A at 3 s, ticket-ttl 5
W=/tmp/h45/w4c; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33220 --ticket-ttl 5 || exit 1
setup_users A alice carol > /dev/null
start_shell alice 33221 --upload-rate 1MB; sh_do alice login alice palice; sh_do alice create_group B
mkfile $W/x 50331648; sh_do alice upload_file $W/x A >/dev/null; sh_do alice upload_file $W/x B >/dev/null
$RS get --trackers $W/trackers.txt --user carol --password-file $W/carol.pw --state-dir $W/st-c --quiet --stats $W/s.json A x $W/c/ > $W/g.out 2>&1 & P=$!
sleep 3; sh_do alice stop_share A x; t0=$(date +%s)
for i in $(seq 1 120); do kill -0 $P 2>/dev/null || break; sleep 1; done
wait $P; echo "get rc=$? ended $(( $(date +%s)-t0 ))s after stop_share (ticket-ttl 5)"; cat $W/g.out
python3 -c "import json;d=json.load(open('$W/s.json'));print('fetched',d.get('fetched'),'peers',d.get('peers'))"
cmp $W/x $W/c/x && echo "COMPLETE+IDENTICAL"
sh_quit alice; kill $TPID; wait
