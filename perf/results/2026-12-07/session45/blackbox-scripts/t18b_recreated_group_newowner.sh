#!/bin/bash
# a group is deleted and re-created under the same name by someone else; bob's node (offline meanwhile) logs in again
W=/tmp/h45/w18b; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33200 || exit 1
setup_users team alice bob > /dev/null
start_shell alice 33201; sh_do alice login alice palice
mkfile $W/f 3000000; sh_do alice upload_file $W/f team
STATE=$W/st-bob1 start_shell bob 33202; sh_do bob login bob pbob; sh_do bob download_file team f $W/bdl/; sleep 3; sh_do bob show_downloads
sh_quit bob
STATE=$W/st-bob2 start_shell bob2 33203; sh_do bob2 login bob pbob; sh_do bob2 leave_group team
sh_do alice leave_group team
start_shell eve 33204; sh_do eve create_user mallory pm; sh_do eve login mallory pm; sh_do eve list_groups; echo "(empty above = no groups: team was deleted)"
sh_do eve create_group team
sh_do bob2 join_group team; sh_do eve accept_request team bob
sh_do eve list_files team; echo "(empty above = no files)"
echo "=== bob's old node logs in again"
STATE=$W/st-bob1 start_shell bob 33202; sh_do bob login bob pbob
sleep 2; sh_do eve list_files team; sh_do eve download_file team f $W/mdl/; sleep 3; sh_do eve show_downloads; cmp $W/f $W/mdl/f && echo "mallory has alice's file from the deleted group"
sh_quit bob; sh_quit bob2; sh_quit eve; sh_quit alice; kill $TPID; wait
