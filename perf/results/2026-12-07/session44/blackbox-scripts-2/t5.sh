#!/bin/bash
# t5.sh TAG BIN PORT NLINKS NADDR RATE MAXDUR : tracker memory under 16 MiB request frames
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 n=$4 na=$5 rate=$6 maxdur=$7
d=$H/run/t5-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port || exit 1
tp=$(cat $d/tracker.pid)
echo "start: $(grep -E 'VmHWM|VmRSS' /proc/$tp/status | tr -s ' \n' ' ')"
python3 $H/scripts/mem.py $port $n $na $rate $maxdur > $d/mem.txt 2>&1 & mp=$!; reg $mp
hwm=0
while kill -0 $mp 2>/dev/null; do
  sleep 1; l=$(grep -E 'VmHWM|VmRSS' /proc/$tp/status | tr -s ' \n' ' '); echo "$(date +%T) $l" >> $d/memlog.txt
done
echo "end: $(tail -1 $d/memlog.txt)"
tail -1 $d/mem.txt
# honest probe still works?
r=$(printf 'login l pw\nlist_groups\n' | RINGSHARE_STATE_DIR=$d/probe timeout 30 $bin/ringshare 127.0.0.1:0 $d/ti.txt 2>&1 | tr '\n' '|'); echo "probe after: $r"
killpid $tp
grep -l panicked $d/*.log 2>/dev/null && echo "PANIC in $tag"
grep -v "^$" $d/t.log | tail -3 | cut -c1-300
