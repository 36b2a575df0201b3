#!/bin/bash
# continues on the layout of t1: rejoin & resume; shell download + leave_group; logout; stop_share; seeder killed
W=/tmp/h45/w2; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33030 --ticket-ttl 5 || exit 1
start_shell alice 33031 --upload-rate 2MB
start_shell bob 33032
mkpw bob pb
sh_do alice create_user alice pa; sh_do alice login alice pa; sh_do alice create_group team
sh_do bob create_user bob pb; sh_do bob login bob pb; sh_do bob join_group team
sh_do alice accept_request team bob
mkfile $W/big 41943040
sh_do alice upload_file $W/big team
GET="$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-bget --quiet team big $W/dl/"
get_bg g1 --user bob --password-file $W/bob.pw --state-dir $W/st-bget --quiet team big $W/dl/
sleep 4; sh_do bob leave_group team; wait $GPID_g1; echo "get1 rc=$?"; cat $W/g1.gout
echo "=== rejoin"
sh_do bob join_group team; sh_do alice accept_request team bob
sh_do bob list_files team
echo "$(ts) get2 (expect resume)"
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-bget --stats $W/g2.json team big $W/dl/ 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -5; echo "get2 rc=${PIPESTATUS[0]} $(ts)"
python3 -c "import json;d=json.load(open('$W/g2.json'));print({k:d.get(k) for k in ['bytes','fetched','already_present','stopped_by']}, d.get('file'))"
cmp $W/big $W/dl/big && echo IDENTICAL; ls -la $W/dl
echo "=== shell download then leave_group in same shell"
sh_do bob download_file team big $W/sdl/
sleep 3; sh_do bob show_downloads
sh_do bob leave_group team
sleep 2; sh_do bob show_downloads; sleep 8; sh_do bob show_downloads
ls -la $W/sdl
echo "=== rejoin, download_file again (resume?)"
sh_do bob join_group team; sh_do alice accept_request team bob
sh_do bob download_file team big $W/sdl/
sleep 3; sh_do bob show_downloads
echo "=== logout during download"
sh_do bob logout; sleep 1; sh_do bob show_downloads; ls -la $W/sdl
sh_do bob login bob pb; sh_do bob show_downloads
sh_do bob download_file team big $W/sdl/
sleep 2; sh_do bob show_downloads
echo "=== alice stop_share during download"
sh_do alice stop_share team big
sleep 2; sh_do bob show_downloads; sleep 13; sh_do bob show_downloads
sh_do bob list_files team
ls -la $W/sdl
sh_quit bob; sh_quit alice; kill $TPID; wait
cat $W/bob.err
