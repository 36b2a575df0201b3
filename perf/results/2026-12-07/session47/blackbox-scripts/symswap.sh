#!/bin/bash
FS=$1; D=/tmp/bb47/mnt/$FS/sym; O=/tmp/bb47/outside; SD=/tmp/bb47/st/sym_$FS
rm -rf $D $O $SD; mkdir -p $O
/tmp/bb47/scripts/get.sh $SD $D 20032 --quiet > /tmp/bb47/sym.out 2>&1 &
P=$!
for i in $(seq 100); do [ -d $D/tree/sub/deep ] && break; sleep 0.05; done
sleep 1
mv $D/tree/sub $D/tree/sub.moved && ln -s $O $D/tree/sub
mv $D/tree/ünï $D/tree/uni.moved && ln -s $O "$D/tree/ünï"
echo swapped; ls -la $D/tree
wait $P; echo rc=$?; cat /tmp/bb47/sym.out
echo "--- outside:"; find $O
echo "--- dest:"; (cd $D && find . -printf '%y %s %p\n' | sort -k3)
echo "--- rerun"; /tmp/bb47/scripts/get.sh $SD $D 20032 --quiet; echo rc=$?
echo "--- outside:"; find $O
