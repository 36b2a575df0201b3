#!/bin/bash
# revocation: bob leaves team while a `get` of a rate-limited file runs; ticket ttl 5s
W=/tmp/h45/w1; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33020 --ticket-ttl 5 || exit 1
start_shell alice 33021 --upload-rate 2MB
start_shell bob 33022
mkpw bob pb
sh_do alice create_user alice pa; sh_do alice login alice pa; sh_do alice create_group team
sh_do bob create_user bob pb; sh_do bob login bob pb; sh_do bob join_group team
sh_do alice accept_request team bob
mkfile $W/big 41943040
sh_do alice upload_file $W/big team
echo "$(ts) start get"
get_bg g1 --user bob --password-file $W/bob.pw --state-dir $W/st-bget --quiet team big $W/dl/
sleep 4
echo "$(ts) leave"; sh_do bob leave_group team
sh_do bob list_files team
for i in $(seq 1 40); do kill -0 $GPID_g1 2>/dev/null || break; sleep 1; ls -l $W/dl/ 2>/dev/null | tail -n +2 | awk '{print "   ",$5,$9}' | head -2 ; done
echo "$(ts) get alive? $(kill -0 $GPID_g1 2>/dev/null && echo yes || echo no)"
kill -0 $GPID_g1 2>/dev/null && { kill -INT $GPID_g1; sleep 3; }
wait $GPID_g1; echo "get rc=$?"; cat $W/g1.gout
ls -la $W/dl/; cmp $W/big $W/dl/big && echo "COMPLETE+IDENTICAL after leaving"
echo "--- new get after leaving"
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-bget2 --quiet team big $W/dl2/ ; echo "rc=$?"
$RS ls --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-bls team ; echo "ls rc=$?"
sh_do bob download_file team big $W/dl3/
sh_quit bob; sh_quit alice; kill $TPID; wait
