#!/bin/bash
# t3burst.sh TAG BIN PORT MODE K : K honest shells at once from 127.0.0.1 under a reconnecting flood, 3 rounds
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 mode=$4 k=$5
d=$H/run/t3b-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port prlimit --nofile=200:200 2>/dev/null || exit 1
one() { local t0=$(date +%s.%N); r=$(printf 'login l pw\nlist_groups\n' | RINGSHARE_STATE_DIR=$d/p$1 timeout 30 $bin/ringshare 127.0.0.1:0 $d/ti.txt 2>&1 | tr '\n' '|'); local t1=$(date +%s.%N)
  ok=FAIL; [[ "$r" == *"logged in as l"*"|g|"* ]] && ok=OK; printf '%s %.1fs %s\n' $ok $(echo "$t1-$t0"|bc) "${r:0:400}"; }
echo "no flood:"; ps=; for i in $(seq $k); do one $i > $d/nf$i.txt & ps="$ps $!"; done; wait $ps; cat $d/nf*.txt | awk '{print $1, $2}' | sort | uniq -c
python3 $H/scripts/t3.py $port $mode 2 12 10 40 1 > $d/att.txt 2>&1 & ap=$!; reg $ap
sleep 8
for r in 1 2 3; do
  ps=; for i in $(seq $k); do one $i > $d/r$r-$i.txt & ps="$ps $!"; done; wait $ps
  echo "round $r: $(cat $d/r$r-*.txt | awk '{print $1, $2}' | sort | uniq -c | tr '\n' ';')"; sleep 2
done
cat $d/r*-*.txt | grep ^FAIL | cut -d' ' -f3- | sed 's/serving on [0-9.:]*//' | sort | uniq -c | head -3 | cut -c1-400
wait $ap; killpid $(cat $d/tracker.pid)
grep -l panicked $d/*.log 2>/dev/null && echo "PANIC in $tag"
