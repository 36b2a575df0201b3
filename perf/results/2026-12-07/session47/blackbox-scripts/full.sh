#!/bin/bash
# full.sh : dest on a 4 MiB tmpfs, then grown to 32 MiB and re-run
M=/tmp/bb47/mnt/small; D=$M/dest; SD=/tmp/bb47/st/full
mkdir -p $M; umount $M 2>/dev/null; rm -rf $SD
mount -t tmpfs -o size=4m tmpfs $M
/tmp/bb47/scripts/get.sh $SD $D 20035 --quiet; echo rc1=$?
echo "--- dest:"; (cd $D 2>/dev/null && find . -type f -printf '%s %p\n' | sort -k2); df -k $M | tail -1
mount -o remount,size=32m $M
/tmp/bb47/scripts/get.sh $SD $D 20035 --quiet; echo rc2=$?
/tmp/bb47/scripts/check.sh $D
