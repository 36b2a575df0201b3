#!/bin/bash
# rmdest.sh FS MODE(rm|ro)
FS=$1 MODE=$2; D=/tmp/bb47/mnt/$FS/rm_$MODE; SD=/tmp/bb47/st/rm_${FS}_$MODE
rm -rf $D $SD
/tmp/bb47/scripts/get.sh $SD $D 20033 --quiet > /tmp/bb47/rm.out 2>&1 &
P=$!
for i in $(seq 100); do [ -d $D/tree/sub/deep ] && break; sleep 0.05; done
sleep 1.5
if [ $MODE = rm ]; then rm -rf $D; echo removed; else chmod -R a-w $D; echo made read-only; fi
T0=$(date +%s); wait $P; echo rc=$? after $(( $(date +%s)-T0 )) s; cat /tmp/bb47/rm.out
echo "--- dest:"; (cd $D 2>/dev/null && find . -printf '%y %s %p\n' | sort -k3)
[ $MODE = ro ] && chmod -R u+w $D
echo "--- rerun"; /tmp/bb47/scripts/get.sh $SD $D 20033 --quiet; echo rc=$?
/tmp/bb47/scripts/check.sh $D
