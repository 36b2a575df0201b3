#!/bin/bash
# midswap.sh FS MODE : MODE=dest (a different file appears at tree/big5m mid-fetch)
#                      MODE=part (tree/big5m.part swapped for the user's own file mid-fetch)
#                      MODE=part1 (same for the one-piece tree/sub/deep/p511.part)
FS=$1 MODE=$2; D=/tmp/bb47/mnt/$FS/mid_$MODE; SD=/tmp/bb47/st/mid_${FS}_$MODE
rm -rf $D $SD /tmp/bb47/moved_part
/tmp/bb47/scripts/get.sh $SD $D 20037 --quiet > /tmp/bb47/mid.out 2>&1 &
P=$!
for i in $(seq 100); do [ -e $D/tree/big5m.part ] && break; sleep 0.05; done
sleep 2
case $MODE in
 dest) echo "user's own big5m" > $D/tree/big5m; F=$D/tree/big5m;;
 part) mv $D/tree/big5m.part /tmp/bb47/moved_part; echo "user's own file" > $D/tree/big5m.part; F=$D/tree/big5m.part;;

 link) mv $D/tree/big5m.part /tmp/bb47/moved_part; ln -s /etc/hostname $D/tree/big5m.part; F=/etc/hostname;;

 state) mv $D/tree/big5m.part.state /tmp/bb47/moved_part; echo "user own state" > $D/tree/big5m.part.state; F=$D/tree/big5m.part.state;;
 part1) mv $D/tree/sub/deep/p511.part /tmp/bb47/moved_part; echo "user's own file" > $D/tree/sub/deep/p511.part; F=$D/tree/sub/deep/p511.part;;
esac
md5sum $F > /tmp/bb47/mid.md5; echo "planted $F"
wait $P; echo rc=$?; cat /tmp/bb47/mid.out
echo "--- dest:"; (cd $D && find . -type f -printf '%s %p\n' | sort -k2)
echo "--- planted file now:"; md5sum -c /tmp/bb47/mid.md5; grep -rl "user's own" $D
echo "--- rerun"; /tmp/bb47/scripts/get.sh $SD $D 20037 --quiet; echo rc=$?
/tmp/bb47/scripts/check.sh $D; grep -rl "user's own" $D
