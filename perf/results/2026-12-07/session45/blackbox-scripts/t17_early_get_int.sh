#!/bin/bash
W=/tmp/h45/w17; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33190 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/big 20971520
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33191 --upload-rate 2MB team $W/big > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
python3 /tmp/h45/scripts/t17_early_get_int.py $W
kill -INT $SPID; wait $SPID; kill $TPID; wait
