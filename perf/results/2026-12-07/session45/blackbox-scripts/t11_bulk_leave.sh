#!/bin/bash
# bulk get of a 1506-file tree; bob leaves the group (from a shell) mid-way; then rejoins and reruns
W=/tmp/h45/w11; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33120 --ticket-ttl 5 || exit 1
setup_users team alice bob > /dev/null
mkdir -p $W/tree/small $W/tree/big
python3 - <<PY
import os,random
random.seed(1)
for i in range(1500):
    d=f"$W/tree/small/d{i%30}"; os.makedirs(d,exist_ok=True)
    open(f"{d}/f{i}.bin","wb").write(os.urandom(random.randint(1,40000)))
for i in range(6): open(f"$W/tree/big/b{i}.bin","wb").write(os.urandom(4*1024*1024))
PY
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33121 --upload-rate 3MB team $W/tree > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 120 || exit 1
start_shell bob 33122; sh_do bob login bob pbob; start_shell alice 33123; sh_do alice login alice palice
GET="$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b --quiet --stats $W/s.json team $W/dl"
$GET > $W/g1.out 2>&1 & GP=$!
sleep 5; sh_do bob leave_group team; t0=$(date +%s)
for i in $(seq 1 120); do kill -0 $GP 2>/dev/null || break; sleep 1; done
kill -0 $GP 2>/dev/null && { echo "GET still running 120s after leave"; kill -INT $GP; }
wait $GP; echo "get rc=$? $(( $(date +%s)-t0 ))s after leave"
echo "lines: $(wc -l < $W/g1.out), error: lines: $(grep -c '^error:' $W/g1.out), failed lines: $(grep -c 'failed' $W/g1.out)"
head -3 $W/g1.out | cut -c1-250; echo ...; tail -3 $W/g1.out | cut -c1-300
python3 -c "import json;d=json.load(open('$W/s.json'));print('stats:',{k:d.get(k) for k in ['bytes','files_done','files_failed','files_interrupted','stopped_by']}); f=d.get('failed') or []; print('failed sample:', f[:2] if isinstance(f,list) else list(f.items())[:2])"
echo "files complete: $(find $W/dl -type f ! -name '*.part*' | wc -l), part: $(find $W/dl -name '*.part' | wc -l)"
echo "=== rejoin and rerun"
sh_do bob join_group team; sh_do alice accept_request team bob
timeout 200 $GET > $W/g2.out 2>&1; echo "get2 rc=$?"; tail -3 $W/g2.out | cut -c1-300
diff -r $W/tree $W/dl/tree > /dev/null && echo "TREE IDENTICAL"; echo "leftovers: $(find $W/dl -name '*.part*' | wc -l)"
sh_quit bob; sh_quit alice; kill -INT $SPID; wait $SPID; kill $TPID; wait
