#!/bin/bash
# tracker (ticket-ttl 5) stopped during a get; restarted 25 s later
W=/tmp/h45/w15; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33170 --ticket-ttl 5 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/big 41943040
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33171 --upload-rate 2MB team $W/big > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --quiet team big $W/dl/ > $W/g.out 2>&1 & GP=$!
sleep 3; kill -TERM $TPID; wait $TPID; echo "$(ts) tracker stopped rc=$?"
for i in $(seq 1 25); do sleep 1; [ $((i%5)) = 0 ] && echo "$(ts) part pieces verified-bytes: $(stat -c %s $W/dl/big.part 2>/dev/null) alive=$(kill -0 $GP 2>/dev/null && echo y || echo n) state=$(stat -c %Y $W/dl/big.part.state 2>/dev/null)"; done
echo "$(ts) restart tracker"
$RT $W/trackers.txt 1 --data-dir $W/t1 --ticket-ttl 5 >> $W/tracker.out 2>&1 < /dev/null & TPID=$!
for i in $(seq 1 90); do kill -0 $GP 2>/dev/null || break; sleep 1; done
kill -0 $GP 2>/dev/null && { echo "get still running 90s after tracker restart"; kill -INT $GP; }
wait $GP; echo "$(ts) get rc=$?"; cat $W/g.out | cut -c1-300
tail -5 $W/share.out
cmp $W/big $W/dl/big && echo IDENTICAL; ls $W/dl
kill -INT $SPID; wait $SPID; kill $TPID; wait
