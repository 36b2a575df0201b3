#!/bin/bash
# inject.sh NAME FS STRACE-INJECT-ARGS... : bulk get under strace fault injection, then a clean re-run
N=$1 FS=$2; shift 2
D=/tmp/bb47/mnt/$FS/inj_$N; SD=/tmp/bb47/st/inj_$N; rm -rf $D $SD
source /tmp/bb47/scripts/lib.sh
RINGSHARE_STATE_DIR=$SD strace -f -qq -o /tmp/bb47/inj_$N.strace "$@" $B/ringshare get --quiet --listen 127.0.0.1:20036 --trackers $G/ti.txt --user l --password-file $G/pw g $D; echo rc1=$?
echo "--- dest:"; (cd $D 2>/dev/null && find . -type f -printf '%s %p\n' | sort -k2)
/tmp/bb47/scripts/check.sh $D
echo "--- clean rerun"; /tmp/bb47/scripts/get.sh $SD $D 20036 --quiet; echo rc2=$?
/tmp/bb47/scripts/check.sh $D
