#!/bin/bash
# bob's `get --seed-for 5m` is the only seeder; bob leaves team from a shell while carol downloads from it
W=/tmp/h45/w16; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33180 --ticket-ttl 5 || exit 1
setup_users team alice bob carol > /dev/null
mkfile $W/f 31457280
start_shell alice 33181; sh_do alice login alice palice; sh_do alice upload_file $W/f team
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-bg --upload-rate 2MB --seed-for 5m team f $W/bdl/ > $W/bg.out 2>&1 & BG=$!
wait_for $W/bg.out "seeding" 60; grep -v "I/O" $W/bg.out | tr '\r' '\n' | grep -v '^\s*$' | tail -2
sh_do alice stop_share team f
start_shell carol 33183; sh_do carol login carol pcarol; sh_do carol list_files team
sh_do carol download_file team f $W/cdl/; sleep 3; sh_do carol show_downloads
start_shell bob 33182; sh_do bob login bob pbob; sh_do bob leave_group team; echo "$(ts) left"
for i in $(seq 1 8); do sleep 2; echo "$(ts) $(sh_do carol show_downloads | grep out:) | bob get alive=$(kill -0 $BG 2>/dev/null && echo y || echo n)"; done
sleep 5; echo "bob get alive after 21s: $(kill -0 $BG 2>/dev/null && echo yes || echo no)"
kill -0 $BG 2>/dev/null && { kill -INT $BG; }; wait $BG; echo "bob get rc=$?"; tr '\r' '\n' < $W/bg.out | grep -v '^\s*$' | tail -4 | cut -c1-250
sh_quit bob; sh_quit carol; sh_quit alice; kill $TPID; wait
