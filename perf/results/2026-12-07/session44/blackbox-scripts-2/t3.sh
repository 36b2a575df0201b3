#!/bin/bash
# t3.sh TAG BIN PORT MODE NADDR PER DUR RECON
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 mode=$4 na=$5 per=$6 dur=$7 recon=$8
d=$H/run/t3-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port prlimit --nofile=200:200 2>/dev/null || exit 1
grep -i -E "connection|limit" $d/t.log $d/t.out | head -3
# baseline
$H/scripts/probe.sh $bin $d 4 $d/base.txt; echo "baseline: $(head -1 $d/base.txt)"
python3 $H/scripts/t3.py $port $mode 2 $na $per $dur $recon > $d/att.txt 2>&1 & ap=$!
sleep 8
$H/scripts/probe.sh $bin $d $((dur-20)) $d/probe.txt
wait $ap
echo "probes: $(grep -c ^OK $d/probe.txt) OK, $(grep -c ^FAIL $d/probe.txt) FAIL"; sort $d/probe.txt | uniq -c | sort -rn | head -4 | cut -c1-250
tail -2 $d/att.txt
echo "tracker fds: $(ls /proc/$(cat $d/tracker.pid)/fd | wc -l)"
killpid $(cat $d/tracker.pid)
grep -v "^$" $d/t.log | tail -3
