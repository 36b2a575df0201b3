#!/bin/bash
# Seeder alice in groups A and B; carol only in A. Separate file per case.
W=/tmp/h45/w4; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33050 --ticket-ttl 5 || exit 1
start_shell alice 33051 --upload-rate 2MB
start_shell carol 33053
sh_do alice create_user alice pa; sh_do alice login alice pa; sh_do alice create_group A; sh_do alice create_group B
sh_do carol create_user carol pc; sh_do carol login carol pc; sh_do carol join_group A
sh_do alice accept_request A carol
for f in x1 x1b y1 x2 x3; do mkfile $W/$f 31457280; sh_do alice upload_file $W/$f A >/dev/null; done
for f in x1 x1b x2 x3; do sh_do alice upload_file $W/$f B >/dev/null; done
sh_do carol list_files A
watch() { for i in $(seq 1 10); do sleep 2; sh_do carol show_downloads | grep out: ; done; }
echo "=== case 1: x1 shared in A and B; stop_share A x1 mid-download"
sh_do carol download_file A x1 $W/c/; sleep 3; sh_do alice stop_share A x1; echo "$(ts) stopped"; watch
echo "=== case 1 repeat: x1b"
sh_do carol download_file A x1b $W/c/; sleep 3; sh_do alice stop_share A x1b; echo "$(ts) stopped"; watch
echo "=== control: y1 shared in A only; stop_share A y1 mid-download"
sh_do carol download_file A y1 $W/c/; sleep 3; sh_do alice stop_share A y1; echo "$(ts) stopped"; watch
echo "=== case 3: x3 in A and B; alice logout mid-download"
sh_do carol download_file A x3 $W/c/; sleep 3; sh_do alice logout; echo "$(ts) logged out"; watch
sh_do alice login alice pa
echo "=== case 2: x2 in A and B; alice leave_group A mid-download"
sh_do carol download_file A x2 $W/c/; sleep 3; sh_do alice leave_group A; echo "$(ts) left"; watch
ls -la $W/c; for f in x1 x1b y1 x2 x3; do cmp -s $W/$f $W/c/$f && echo "$f complete+identical"; done
sh_quit carol; sh_quit alice; kill $TPID; wait
echo ---; cat $W/carol.err
