#!/bin/bash
# t3ls.sh TAG BIN PORT MODE NADDR PER DUR RECON : like t3.sh, probe with `ringshare ls`
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 mode=$4 na=$5 per=$6 dur=$7 recon=$8
d=$H/run/t3ls-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port prlimit --nofile=200:200 2>/dev/null || exit 1
python3 $H/scripts/t3.py $port $mode 2 $na $per $dur $recon > $d/att.txt 2>&1 & ap=$!; reg $ap
sleep 8
$H/scripts/probels.sh $bin $d $((dur-20)) $d/probe.txt
wait $ap
echo "probes: $(grep -c ^OK $d/probe.txt) OK, $(grep -c ^FAIL $d/probe.txt) FAIL"
awk '{s+=$2; n++; if($2>m)m=$2} END{printf "probe time mean %.2fs max %.1fs n=%d\n", s/n, m, n}' $d/probe.txt
grep ^FAIL $d/probe.txt | cut -d' ' -f2- | sed 's/^[0-9.]*s //' | sort | uniq -c | sort -rn | head -3 | cut -c1-300
tail -1 $d/att.txt
killpid $(cat $d/tracker.pid)
grep -l panicked $d/*.log 2>/dev/null && echo "PANIC in $tag"
