#!/bin/bash
set -euo pipefail
. /work/main/perf/lib/loopback.sh
NEW=/work/main/target/release; OLD=/tmp/busy/old-bin
mkdir -p $W/src && head -c 5000000 /dev/urandom > $W/src/a.bin && head -c 100000 /dev/urandom > $W/src/b.bin
lb_group $W $NEW
lb_seed $W $OLD $W/src
echo "old seeder -> new getter:"
RINGSHARE_STATE_DIR=$W/l timeout 60 $NEW/ringshare get --trackers $W/ti.txt --user l --password-file $W/pw g $W/dst 2>&1 | tail -3
diff -r $W/src $W/dst/src && echo "files identical"
lb_stop
lb_group $W $NEW
mkdir -p $W/s2
lb_seed $W $NEW $W/src
echo "new seeder -> old getter:"
RINGSHARE_STATE_DIR=$W/l2 timeout 60 $OLD/ringshare get --trackers $W/ti.txt --user l --password-file $W/pw g $W/dst2 2>&1 | tail -3
diff -r $W/src $W/dst2/src && echo "files identical"
