#!/bin/bash
# SIGHUP on one-file get; shell `quit` / end of input with a running download
W=/tmp/h45/w20; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33230 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/big 20971520
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33231 --upload-rate 4MB team $W/big > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --quiet team big $W/d1/ > $W/g.out 2>&1 & P=$!
sleep 2; kill -HUP $P; wait $P; echo "get SIGHUP rc=$? :: $(cat $W/g.out)"; ls $W/d1
STATE=$W/st-b2 start_shell bob 33232; sh_do bob login bob pbob; sh_do bob download_file team big $W/d2/
t0=$(date +%s); sh_cmd bob quit; wait $PID_bob; echo "shell quit rc=$? after $(( $(date +%s)-t0 ))s"; ls $W/d2; cmp $W/big $W/d2/big && echo IDENTICAL; tail -2 $W/bob.err
kill -INT $SPID; wait $SPID; kill $TPID; wait
