#!/bin/bash
W=/tmp/h45/w0; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33010 --ticket-ttl 5 || exit 1
cat $W/tracker.out
start_shell alice 33011
start_shell bob 33012
sh_do alice create_user alice pa
sh_do alice login alice pa
sh_do alice create_group team
sh_do bob create_user bob pb
sh_do bob login bob pb
sh_do bob join_group team
sh_do alice list_requests team
sh_do alice accept_request team bob
mkfile $W/f1 3000000
sh_do alice upload_file $W/f1 team
sh_do bob list_files team
sh_do bob list_files nope
sh_do bob download_file team f1 $W/dl/
sleep 2; sh_do bob show_downloads
cmp $W/f1 $W/dl/f1 && echo SAME
sh_do bob quit; sh_do alice quit
sleep 1; ps -p $PID_alice,$PID_bob; kill $TPID; wait
