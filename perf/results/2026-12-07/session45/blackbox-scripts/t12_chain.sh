#!/bin/bash
# chains of interrupts: one-file get and bulk get, each interrupted 4 times (mixed INT/TERM/KILL, double INT), then finished
W=/tmp/h45/w12; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33130 || exit 1
setup_users team alice bob > /dev/null
mkdir -p $W/tree/small $W/tree/big
python3 - <<PY
import os,random
for i in range(800):
    d=f"$W/tree/small/d{i%16}"; os.makedirs(d,exist_ok=True)
    open(f"{d}/f{i}.bin","wb").write(os.urandom(random.randint(1,60000)))
for i in range(4): open(f"$W/tree/big/b{i}.bin","wb").write(os.urandom(6*1024*1024))
PY
mkfile $W/one 60000000
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33131 --upload-rate 4MB team $W/tree $W/one > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 120 || exit 1
interrupt() { # pid spec
  case $2 in
    INT2) kill -INT $1; sleep 0.05; kill -INT $1;;
    *) kill -$2 $1;;
  esac; }
for mode in one bulk; do
  if [ $mode = one ]; then ARGS="team one $W/d1/"; else ARGS="team $W/d2"; fi
  i=0
  for spec in INT2 KILL TERM INT; do i=$((i+1))
    $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b-$mode --quiet $ARGS > $W/$mode.$i 2>&1 & P=$!
    sleep $(python3 -c "import random;print(round(random.uniform(1.5,4),1))"); interrupt $P $spec
    for k in $(seq 1 50); do kill -0 $P 2>/dev/null || break; sleep 0.2; done
    kill -0 $P 2>/dev/null && { echo "HANG"; kill -KILL $P; }
    wait $P 2>/dev/null; echo "$mode run $i ($spec): rc=$? :: $(grep -v '^ringshare: failed' $W/$mode.$i | tail -2 | tr '\n' '|' | cut -c1-260)"
  done
  timeout 200 $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b-$mode --quiet --stats $W/$mode.json $ARGS > $W/$mode.final 2>&1; echo "$mode final rc=$? :: $(tail -2 $W/$mode.final | tr '\n' '|')"
done
cmp $W/one $W/d1/one && echo "one IDENTICAL"; ls $W/d1
diff -r $W/tree $W/d2/tree >/dev/null && echo "tree IDENTICAL"; echo "leftovers: $(find $W/d1 $W/d2 -name '*.part*' | wc -l)"
python3 -c "import json;d=json.load(open('$W/one.json'));print('one final stats:',d.get('fetched'),d.get('bytes'))"
kill -INT $SPID; wait $SPID; kill $TPID; wait
