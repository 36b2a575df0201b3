#!/bin/bash
# cross-group leak with one-shot `get` as the downloader: alice (shell) shares x in A and B; carol in A only
W=/tmp/h45/w4b; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33150 --ticket-ttl 5 || exit 1
setup_users A alice carol > /dev/null
start_shell alice 33151 --upload-rate 2MB; sh_do alice login alice palice; sh_do alice create_group B
for f in p q r; do mkfile $W/$f 25165824; sh_do alice upload_file $W/$f A | grep -c uploaded; sh_do alice upload_file $W/$f B | grep -c uploaded; done
mkfile $W/ctl 25165824; sh_do alice upload_file $W/ctl A | grep -c uploaded
for spec in "p stop_share" "q stop_share" "ctl stop_share" "r leave_group"; do
  f=${spec% *}; act=${spec#* }
  $RS get --trackers $W/trackers.txt --user carol --password-file $W/carol.pw --state-dir $W/st-c-$f --quiet A $f $W/c/ > $W/g$f 2>&1 &
  P=$!; sleep 3
  if [ $act = stop_share ]; then sh_do alice stop_share A $f | grep out; else sh_do alice leave_group A | grep out; fi
  t0=$(date +%s); for i in $(seq 1 60); do kill -0 $P 2>/dev/null || break; sleep 1; done
  wait $P; rc=$?
  echo "  $f after $act: get rc=$rc, ended $(( $(date +%s)-t0 ))s after it :: $(tail -1 $W/g$f | cut -c1-200)"
  cmp -s $W/$f $W/c/$f && echo "  $f: carol got the COMPLETE file from alice after alice's $act in A"
done
sh_quit alice; kill $TPID; wait
