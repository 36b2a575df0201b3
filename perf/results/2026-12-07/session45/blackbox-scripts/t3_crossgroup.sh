#!/bin/bash
# alice shares the same file x in groups A and B; carol is in A only.
W=/tmp/h45/w3; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33040 --ticket-ttl 5 || exit 1
start_shell alice 33041 --upload-rate 2MB
start_shell carol 33043
sh_do alice create_user alice pa; sh_do alice login alice pa; sh_do alice create_group A; sh_do alice create_group B
sh_do carol create_user carol pc; sh_do carol login carol pc; sh_do carol join_group A
sh_do alice accept_request A carol
mkfile $W/x 41943040
sh_do alice upload_file $W/x A
sh_do alice upload_file $W/x B
sh_do carol list_files A; sh_do carol list_files B
echo "=== case 1: alice stop_share A x while carol downloads (alice still shares x in B)"
sh_do carol download_file A x $W/c1/
sleep 3; sh_do carol show_downloads
sh_do alice stop_share A x
for i in 1 2 3 4 5 6 7 8; do sleep 2; sh_do carol show_downloads; done
ls -la $W/c1
sh_do carol list_files A
echo "=== case 2: alice re-shares in A; carol resumes; alice leave_group A mid-download"
sh_do alice upload_file $W/x A
sh_do carol download_file A x $W/c1/
sleep 3; sh_do carol show_downloads
sh_do alice leave_group A
for i in 1 2 3 4 5 6 7 8; do sleep 2; sh_do carol show_downloads; done
ls -la $W/c1
sh_do carol list_files A
sh_quit carol; sh_quit alice; kill $TPID; wait
echo ---; cat $W/carol.err; echo ---; cat $W/alice.err
