#!/bin/bash
# the only seeder (`share`, fixed --listen) is killed -9 / SIGTERMed mid-download; get's outcome; seeder back; get resumes
W=/tmp/h45/w10; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33110 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/big 41943040
SHARE="$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33111 --upload-rate 4MB team $W/big"
for sig in ${SIGS:-KILL TERM}; do
echo "===== seeder gets SIG$sig"
$SHARE > $W/share.out 2>&1 & SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
rm -rf $W/dl
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --quiet team big $W/dl/ > $W/g.out 2>&1 & GP=$!
sleep 3; kill -$sig $SPID; wait $SPID; echo "share rc=$?"; t0=$(date +%s)
for i in $(seq 1 100); do kill -0 $GP 2>/dev/null || break; sleep 1; done
kill -0 $GP 2>/dev/null && { echo "GET HANG >100s"; kill -INT $GP; }
wait $GP; echo "get rc=$? after $(( $(date +%s) - t0 ))s"; cat $W/g.out
ls $W/dl
$SHARE > $W/share.out 2>&1 & SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
grep -v "I/O" $W/share.out
timeout 100 $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b team big $W/dl/ 2>&1 | tr '\r' '\n' | grep -E "resum|download|error|^/" ; echo "get2 rc=${PIPESTATUS[0]}"
cmp $W/big $W/dl/big && echo IDENTICAL; ls $W/dl
kill -INT $SPID; wait $SPID
done
kill $TPID; wait
