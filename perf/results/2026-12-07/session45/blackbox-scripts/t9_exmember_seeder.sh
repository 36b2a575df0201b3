#!/bin/bash
# bob's node is the only seeder of f in team; bob leaves team from ANOTHER session while carol downloads from bob
W=/tmp/h45/w9; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33100 --ticket-ttl 5 || exit 1
setup_users team alice bob carol > /dev/null
start_shell alice 33101; start_shell bob 33102 --upload-rate 2MB; start_shell carol 33103
sh_do alice login alice palice; sh_do bob login bob pbob; sh_do carol login carol pcarol
mkfile $W/f 31457280
sh_do alice upload_file $W/f team
sh_do bob download_file team f $W/bdl/
for i in $(seq 1 30); do sleep 1; sh_do bob show_downloads | grep -q '\[C\]' && break; done
sh_do bob show_downloads
sh_do alice stop_share team f
sh_do carol list_files team
echo "=== carol downloads from bob; bob leaves team from a second session (shell bob2)"
sh_do carol download_file team f $W/cdl/
sleep 3; sh_do carol show_downloads
STATE=$W/st-bob2 start_shell bob2 33104; sh_do bob2 login bob pbob
sh_do bob2 leave_group team; echo "$(ts) left"
for i in $(seq 1 12); do sleep 2; echo "$(ts) $(sh_do carol show_downloads | grep out:)"; done
sh_do carol list_files team
sh_do bob list_files team
sh_do bob show_downloads
ls -la $W/cdl
sh_quit bob2; sh_quit carol; sh_quit bob; sh_quit alice; kill $TPID; wait
echo --- bob.err; cat $W/bob.err; echo --- carol.err; cat $W/carol.err
