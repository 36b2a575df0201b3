#!/bin/bash
# preexist.sh FS : pre-existing different file at dest path + user's own .part / .part.state files
FS=$1; D=/tmp/bb47/mnt/$FS/pre
rm -rf $D; mkdir -p $D/tree/sub/deep
echo "my own different file" > $D/tree/one1
echo "my own notes" > $D/tree/sub/f4095.part
echo "my own state" > $D/tree/big5m.part.state
echo "my big part" > $D/tree/sub/deep/p512.part
cp $D/tree/one1 /tmp/bb47/pre_one1.bak
/tmp/bb47/scripts/get.sh /tmp/bb47/st/pre_$FS $D 20023 --quiet; echo rc=$?
echo "--- after run 1"
cmp $D/tree/one1 /tmp/bb47/pre_one1.bak && echo "one1 untouched"
cat $D/tree/sub/f4095.part $D/tree/big5m.part.state $D/tree/sub/deep/p512.part
ls -la $D/tree $D/tree/sub $D/tree/sub/deep
