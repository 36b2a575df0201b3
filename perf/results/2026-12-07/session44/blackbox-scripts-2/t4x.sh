#!/bin/bash
# t4.sh TAG BIN TPORT SPORT SIO GIO RECON_DELAY NGETS [NADDR PER]
# seeder flooded with silent TCP; honest gets timed
source /tmp/h44b/scripts/lib.sh
tag=$1 bin=$2 tport=$3 sport=$4 sio=$5 gio=$6 rd=$7 ngets=$8 na=${9:-3} per=${10:-128}
d=$H/run/t4x-$tag; rm -rf $d; mkdir -p $d
mkgroup $d $bin $tport || exit 1
seed $d $bin 1 $H/data/f3m --listen 127.0.0.1:$sport --io $sio || exit 1
grep "seeding on" $d/s-1.out
hget() { # N
  local t0=$(date +%s.%N)
  RINGSHARE_STATE_DIR=$d/g$1 timeout ${GT:-40} $bin/ringshare get ${GQ---quiet} --io $gio --trackers $d/ti.txt --user l --password-file $d/pw g f3m $d/dst$1/ >$d/g$1.out 2>&1
  local rc=$? t1=$(date +%s.%N)
  local ok=BAD; cmp -s $H/data/f3m $d/dst$1/f3m && ok=OK
  printf '%s get%s rc=%s %.2fs %s\n' $ok $1 $rc $(echo "$t1-$t0"|bc) "$(tr '\n' '|' < $d/g$1.out | cut -c1-300)"
}
hget 0
python3 $H/scripts/flood.py $sport 2 $na $per 120 $rd > $d/flood.txt 2>&1 & fp=$!; reg $fp
sleep 3
echo "seeder conns: $(ss -tanH state established "( sport = :$sport )" | wc -l)"
for i in $(seq 1 $ngets); do hget $i; sleep 0.5; done
echo "seeder conns: $(ss -tanH state established "( sport = :$sport )" | wc -l)"
kill $fp 2>/dev/null; wait $fp 2>/dev/null
tail -1 $d/flood.txt
killpid $(cat $d/s-1.pid); killpid $(cat $d/tracker.pid)
grep -l panicked $d/*.log $d/*.out 2>/dev/null && echo "PANIC in $tag"
grep -v "^$" $d/s-1.log | grep -iv "i/o backend\|tcp_rmem" | tail -3
