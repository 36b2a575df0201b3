#!/bin/bash
# nobody.sh FS MODE(plain|ro|sym)
FS=$1 MODE=$2; BASE=/tmp/bb47/mnt/$FS/nob_$MODE; D=$BASE/dest; SD=/tmp/bb47/st/nob_${FS}_$MODE
rm -rf $BASE $SD; mkdir -p $BASE $SD; chown nobody: $BASE $SD; chmod 700 $SD
run() { runuser -u nobody -- env RINGSHARE_STATE_DIR=$SD /tmp/bb47/bin/ringshare get --listen 127.0.0.1:20034 --quiet --trackers /tmp/bb47/g/ti.txt --user l --password-file /tmp/bb47/g/pw g $D; }
run > /tmp/bb47/nob.out 2>&1 &
P=$!
if [ $MODE = ro ]; then
  for i in $(seq 100); do [ -d $D/tree/sub/deep ] && break; sleep 0.05; done
  sleep 1.5; chmod -R a-w $D; echo made read-only; find $D -type f -printf '%s %p\n'
fi
wait $P; echo rc=$?; cat /tmp/bb47/nob.out
echo "--- dest:"; (cd $D 2>/dev/null && find . -printf '%y %m %u %s %p\n' | sort -k5)
[ $MODE = ro ] && chmod -R u+w $D
echo "--- rerun"; run; echo rc=$?
/tmp/bb47/scripts/check.sh $D
