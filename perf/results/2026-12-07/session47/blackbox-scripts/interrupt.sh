#!/bin/bash
# interrupt.sh FS SIGNAL DELAY : start get, signal it after DELAY s, show state, re-run, check
FS=$1 SIG=$2 DELAY=$3; D=/tmp/bb47/mnt/$FS/int_$SIG; SD=/tmp/bb47/st/int_${FS}_$SIG
rm -rf $D $SD
/tmp/bb47/scripts/get.sh $SD $D 20024 --quiet > /tmp/bb47/int_${FS}_$SIG.1 2>&1 &
P=$!; sleep $DELAY
# the get.sh bash wrapper execs? find the ringshare child
C=$(pgrep -P $P -f 'ringshare get' || echo $P)
kill -$SIG $C; wait $P; echo "rc1=$?"
cat /tmp/bb47/int_${FS}_$SIG.1
echo "--- left after interrupt:"; (cd $D 2>/dev/null && find . -type f -printf '%s %p\n' | sort -k2)
python3 -c "
import os,sys
for r,ds,fs in os.walk('$D'):
  for f in fs:
    p=os.path.join(r,f)
    try: x=os.listxattr(p)
    except OSError as e: x=e.strerror
    if x: print('xattr',p,x)
"
echo "--- rerun"; /tmp/bb47/scripts/get.sh $SD $D 20024 --quiet; echo "rc2=$?"
/tmp/bb47/scripts/check.sh $D
