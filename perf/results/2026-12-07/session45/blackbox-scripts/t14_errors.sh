#!/bin/bash
# one failure -> one error: line? (stdout+stderr together)
W=/tmp/h45/w14; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33160 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/f 3000000; mkfile $W/other 100
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33161 team $W/f > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
T="--trackers $W/trackers.txt"; U="--user bob --password-file $W/bob.pw --state-dir $W/st-b"
echo wrong > $W/bad.pw
chk() { local label=$1; shift; timeout 60 "$@" > $W/e.out 2>&1; local rc=$?; local n=$(grep -c 'error' $W/e.out); echo "[$label] rc=$rc error-lines=$n"; grep -v 'I/O backend' $W/e.out | head -5 | cut -c1-220 | sed 's/^/    /'; }
chk "get no such file" $RS get $T $U team nosuch $W/d1/
chk "get no such group" $RS get $T $U nogroup f $W/d1/
chk "get dest exists differs" $RS get $T $U team f $W/other
chk "get wrong password" $RS get $T --user bob --password-file $W/bad.pw --state-dir $W/st-b team f $W/d2/
chk "get missing pwfile" $RS get $T --user bob --password-file $W/nope.pw team f $W/d2/
chk "get unknown option" $RS get $T $U --bogus team f $W/d2/
chk "ls no such group" $RS ls $T $U nogroup
chk "ls bad prefix" $RS ls $T $U team zz/
chk "share missing path" $RS share $T --user alice --password-file $W/alice.pw --state-dir $W/st-a2 team $W/missing
chk "bulk get glob nothing" $RS get $T $U --quiet team 'zz*' $W/d3
kill -INT $SPID; wait $SPID
kill $TPID; wait; sleep 0.5
chk "get tracker down" $RS get $T $U team f $W/d4/
chk "ls tracker down" $RS ls $T $U team
