#!/bin/bash
# bob's node (offline) had shared f in team; bob leaves team from another node; node logs in; later bob rejoins; node logs in again
W=/tmp/h45/w19; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33210 || exit 1
setup_users team alice bob > /dev/null
start_shell alice 33211; sh_do alice login alice palice
mkfile $W/f 3000000; mkfile $W/g 2000000
STATE=$W/st-bob1 start_shell bob 33212; sh_do bob login bob pbob; sh_do bob upload_file $W/g team; sh_quit bob
STATE=$W/st-bob2 start_shell bob2 33213; sh_do bob2 login bob pbob; sh_do bob2 leave_group team
sh_do alice list_files team; echo "(nothing listed above = g gone)"
STATE=$W/st-bob1 start_shell bob 33212; sh_do bob login bob pbob; sh_quit bob
sh_do bob2 join_group team; sh_do alice accept_request team bob
STATE=$W/st-bob1 start_shell bob 33212; sh_do bob login bob pbob
sh_do alice list_files team
sh_quit bob; sh_quit bob2; sh_quit alice; kill $TPID; wait
