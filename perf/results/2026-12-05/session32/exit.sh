#!/bin/bash
# bulk get wall time vs its own summary: what stopping costs (withdrawal)
set -e
B=/work/main/target/release
D=/tmp/s32/wd; rm -rf $D; mkdir -p $D; cd $D
P=$((20000 + RANDOM % 20000))
echo 127.0.0.1:$P > ti.txt
$B/ringshare-tracker ti.txt 1 --data-dir $D/t1 > t1.log 2>&1 &
TP=$!
trap 'kill $TP $SP 2>/dev/null; wait 2>/dev/null' EXIT
for i in $(seq 50); do grep -q listening t1.log 2>/dev/null && break; sleep 0.1; done
echo pw > pw.txt
export RINGSHARE_STATE_DIR=$D/state
printf 'create_user alice pw\nlogin alice pw\ncreate_group g\ncreate_user bob pw\n' | $B/ringshare 127.0.0.1:0 ti.txt >/dev/null 2>&1
printf 'login bob pw\njoin_group g\n' | $B/ringshare 127.0.0.1:0 ti.txt >/dev/null 2>&1
printf 'login alice pw\naccept_request g bob\n' | $B/ringshare 127.0.0.1:0 ti.txt >/dev/null 2>&1
mkdir -p tree; python3 -c "
import os,random
r=random.Random(1)
for i in range($N):
    d='tree/d%02d'%(i%50); os.makedirs(d,exist_ok=True)
    open(d+'/f%05d'%i,'wb').write(os.urandom(r.randint(4096,16384)))
"
$B/ringshare share --trackers ti.txt --user alice --password-file pw.txt g tree > share.out 2> share.err &
SP=$!
for i in $(seq 600); do grep -q seeding share.out 2>/dev/null && break; sleep 0.1; done
for r in 1 2 3; do
  rm -rf dl$r; mkdir dl$r
  s=$(date +%s.%N)
  $B/ringshare get --trackers ti.txt --user bob --password-file pw.txt --quiet g dl$r > get$r.out 2>&1
  e=$(date +%s.%N)
  echo "run $r wall $(python3 -c "print(round($e-$s,3))") :: $(cat get$r.out)"
done
$B/ringshare ls --trackers ti.txt --user bob --password-file pw.txt g | awk '{print $4}' | sort | uniq -c
