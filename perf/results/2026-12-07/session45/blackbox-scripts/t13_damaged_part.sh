#!/bin/bash
# interrupt a get, damage the part files in various ways, rerun: is the result identical, and what is said?
W=/tmp/h45/w13; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33140 || exit 1
setup_users team alice bob > /dev/null
mkfile $W/big 41943040
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33141 --upload-rate 6MB team $W/big > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
run=0
for dmg in garble_state corrupt_piece0 delete_part truncate_part delete_state empty_state; do
  run=$((run+1)); D=$W/d$run
  $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b$run --quiet team big $D/ > /dev/null 2>&1 & P=$!
  sleep 3; kill -INT $P; wait $P
  case $dmg in
    garble_state) head -c 35 /dev/urandom > $D/big.part.state.tmp; cat $D/big.part.state.tmp > $D/big.part.state; rm $D/big.part.state.tmp;;
    corrupt_piece0) printf 'XXXXXXXXXXXXXXXX' | dd of=$D/big.part bs=1 seek=1000 conv=notrunc 2>/dev/null;;
    delete_part) rm $D/big.part;;
    truncate_part) truncate -s 1000000 $D/big.part;;
    delete_state) rm $D/big.part.state;;
    empty_state) : > $D/big.part.state;;
  esac
  timeout 120 $RS get --trackers $W/trackers.txt --user bob --password-file $W/bob.pw --state-dir $W/st-b$run --stats $W/s$run.json team big $D/ > $W/o$run 2>&1; rc=$?
  echo "== $dmg: rerun rc=$rc :: $(tr '\r' '\n' < $W/o$run | grep -vE '━|^\s*$|I/O backend|%' | tr '\n' '|' | cut -c1-400)"
  cmp -s $W/big $D/big && echo "   IDENTICAL" || echo "   NOT IDENTICAL / missing: $(ls $D)"
  python3 -c "import json;d=json.load(open('$W/s$run.json'));print('   fetched',d.get('fetched'),'of',d.get('bytes'))"
  echo "   left: $(ls $D | tr '\n' ' ')"
done
kill -INT $SPID; wait $SPID; kill $TPID; wait
