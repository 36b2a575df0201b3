#!/bin/bash
# interrupt a get, corrupt bytes inside a piece that IS verified (matches the source), rerun
W=/tmp/h45/w13b; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33142 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/big 41943040
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33143 --upload-rate 6MB team $W/big > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
for run in 1 2; do
D=$W/d$run
$RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b$run --quiet team big $D/ > /dev/null 2>&1 & P=$!
sleep 3; kill -INT $P; wait $P
PIECE=$(python3 - <<PY
a=open("$W/big","rb").read(); b=open("$D/big.part","rb").read(); P=524288
m=[i for i in range(80) if a[i*P:(i+1)*P]==b[i*P:(i+1)*P]]
print(m[len(m)//2])
PY
)
echo "run $run: corrupting verified piece $PIECE (16 bytes at offset +1000)"
printf 'XXXXXXXXXXXXXXXX' | dd of=$D/big.part bs=1 seek=$((PIECE*524288+1000)) conv=notrunc 2>/dev/null
timeout 120 $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b$run --stats $W/s$run.json team big $D/ > $W/o$run 2>&1; rc=$?
echo "rerun rc=$rc :: $(tr '\r' '\n' < $W/o$run | grep -vE '━|^\s*$|I/O backend|%' | tr '\n' '|' | cut -c1-400)"
cmp $W/big $D/big && echo "IDENTICAL"; sha1sum $W/big $D/big | awk '{print $1}' | uniq | wc -l
ls $D
done
kill -INT $SPID; wait $SPID; kill $TPID; wait
