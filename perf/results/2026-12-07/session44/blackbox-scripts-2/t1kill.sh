#!/bin/bash
# t1kill.sh TAG BIN PORT SIO GIO RATE KILLAFTER : get, SIGINT after KILLAFTER s, then same command again
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 port=$3 sio=$4 gio=$5 rate=$6 ka=$7
d=$H/run/$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $port 2>/dev/null || exit 1
seed $d $bin 1 $H/data/many/m --upload-rate $rate --io $sio || exit 1
spid=$(cat $d/s-1.pid)
cmd() { RINGSHARE_STATE_DIR=$d/g exec $bin/ringshare get --io $gio --quiet --stats $d/stats$1.json --trackers $d/ti.txt --user l --password-file $d/pw g m/ $d/dest; }
t0=$(date +%s.%N)
cmd 1 > $d/g1.out 2> $d/g1.err & gp=$!
sleep $ka; kill -INT $gp; wait $gp; rc1=$?
t1=$(date +%s.%N)
n1=$(find $d/dest -type f ! -name '*.part*' | wc -l); p1=$(find $d/dest -name '*.part' | wc -l)
echo "run1 rc=$rc1 wall=$(echo "$t1-$t0"|bc) complete=$n1 partfiles=$p1 cw_at_seeder=$(ss -tanpH state close-wait | grep -c "pid=$spid,")"
cat $d/g1.out $d/g1.err | sed 's/^/   /'
for i in $(seq ${GAP:-0}); do sleep 1; [ $((i%3)) -eq 0 ] && echo -n " +${i}s cw=$(ss -tanpH state close-wait | grep -c "pid=$spid,")"; done; echo
t0=$(date +%s.%N)
timeout -s INT 120 bash -c "$(declare -f cmd); d=$d bin=$bin gio=$gio cmd 2" > $d/g2.out 2> $d/g2.err; rc2=$?
t1=$(date +%s.%N)
n2=$(find $d/dest -type f ! -name '*.part*' | wc -l); p2=$(find $d/dest -name '*.part*' | wc -l)
echo "run2 rc=$rc2 wall=$(echo "$t1-$t0"|bc) complete=$n2 partfiles_left=$p2 cw_at_seeder=$(ss -tanpH state close-wait | grep -c "pid=$spid,")"
cat $d/g2.out $d/g2.err | sed 's/^/   /'
bad=0; for f in $d/dest/m/*; do cmp -s $f $H/data/many/m/$(basename $f) || bad=$((bad+1)); done; echo "mismatching files: $bad"
python3 -c "import json;a=json.load(open('$d/stats1.json'));b=json.load(open('$d/stats2.json'));print('stats1',{k:a.get(k) for k in ['bytes','bytes_partial','files_done','files_interrupted','stopped_by']});print('stats2',{k:b.get(k) for k in ['bytes','bytes_partial','files_done','files_interrupted','stopped_by']}); print('already_present in run2:', sum(1 for f in b.get('files',[]) if f.get('already_present')))"
killpid $spid; killpid $(cat $d/tracker.pid)
