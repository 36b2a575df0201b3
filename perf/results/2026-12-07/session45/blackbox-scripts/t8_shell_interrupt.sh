#!/bin/bash
# shell with 3 running downloads killed by SIG; restart, login, show_downloads, download_file again
W=/tmp/h45/w8; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33090 || exit 1
setup_users team alice bob > /dev/null
mkdir -p $W/src; for f in a b c; do mkfile $W/src/$f 25165824; done
$RS share --trackers $W/trackers.txt --user alice --password-file $W/alice.pw --state-dir $W/st-a --listen 127.0.0.1:33091 --upload-rate 6MB team $W/src/a $W/src/b $W/src/c > $W/share.out 2>&1 &
SPID=$!; wait_for $W/share.out "seeding on" 60 || exit 1
run=0
for sig in ${SIGS:-INT TERM KILL}; do
  run=$((run+1)); D=$W/dl$run; mkdir -p $D
  echo "===== run $run: shell SIG$sig"
  STATE=$W/st-b$run start_shell bob 33092
  sh_do bob login bob pbob
  for f in a b c; do sh_do bob download_file team $f $D/ | grep out; done
  sleep 3; sh_do bob show_downloads
  kill -$sig $PID_bob; t0=$(date +%s.%N)
  for i in $(seq 1 75); do kill -0 $PID_bob 2>/dev/null || break; sleep 0.2; done
  kill -0 $PID_bob 2>/dev/null && { echo "   HANG: shell alive 15s after SIG$sig"; kill -KILL $PID_bob; }
  wait $PID_bob; echo "shell rc=$? after $(python3 -c "import time;print(round(time.time()-$t0,2))")s"
  tail -4 $W/bob.err | sed 's/^/   err| /'; tail -2 $W/bob.out | sed 's/^/   out| /'
  ls $D | sed 's/^/   ls: /' | tr '\n' ' '; echo
  mv $W/bob.err $W/bob.err.$run; mv $W/bob.out $W/bob.out.$run
  echo "-- restart"
  STATE=$W/st-b$run start_shell bob 33092
  sh_do bob show_downloads
  sh_do bob login bob pbob
  sh_do bob show_downloads
  for f in a b c; do sh_do bob download_file team $f $D/ | grep out; done
  for i in $(seq 1 60); do sleep 1; [ $(sh_do bob show_downloads | grep -c '\[C\]') -eq 3 ] && break; done
  sh_do bob show_downloads
  for f in a b c; do cmp -s $W/src/$f $D/$f && echo "   $f IDENTICAL" || echo "   $f DIFFERS/MISSING"; done
  echo "   leftovers: $(ls $D | grep -c part)"
  sh_quit bob; cat $W/bob.err | grep -v "I/O backend\|serving on" | sed 's/^/   err2| /'
  mv $W/bob.err $W/bob.err.$run.b; mv $W/bob.out $W/bob.out.$run.b
done
kill -INT $SPID; wait $SPID; kill $TPID; wait
