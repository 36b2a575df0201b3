#!/bin/bash
FS=$1; D=/tmp/bb47/mnt/$FS/two; rm -rf $D /tmp/bb47/st/two*
/tmp/bb47/scripts/get.sh /tmp/bb47/st/twoA $D 20030 --quiet > /tmp/bb47/twoA.out 2>&1 &
A=$!
sleep 0.5
/tmp/bb47/scripts/get.sh /tmp/bb47/st/twoB $D 20031 --quiet > /tmp/bb47/twoB.out 2>&1 &
B=$!
wait $A; echo rcA=$?; wait $B; echo rcB=$?
echo "--A"; cat /tmp/bb47/twoA.out; echo "--B"; cat /tmp/bb47/twoB.out
/tmp/bb47/scripts/check.sh $D
