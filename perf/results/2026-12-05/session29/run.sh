#!/bin/bash
# run.sh BIN RUNS : 10,000-file tree, tracker+seed+get per run; CPU per process.
set -euo pipefail
BIN=$(cd "$1" && pwd); RUNS=${2:-2}
. /work/main/perf/lib/loopback.sh
# keep every copy (ext4 without a journal: deleting slows later creates)
K=${K:-/tmp/prof/keep}; mkdir -p $K; W2=$(mktemp -d $K/XXXX); rmdir $W; W=$W2
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; pkill -f -- "$W/" || true; wait 2>/dev/null || true' EXIT
FILES=${FILES:-10000}
T=${T:-/tmp/prof/tree}
if [ ! -d $T ]; then
python3 - "$T" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = f"{root}/d{i % 50:02d}/e{i % 7}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.bin", "wb") as f:
        f.write(os.urandom(rng.randint(4 << 10, 256 << 10)))
PY
sync
fi
cpu() { awk '{print ($14+$15)/100}' /proc/$1/stat; }
for r in $(seq $RUNS); do
  d=$W/run-$r; mkdir -p $d
  lb_group $d $BIN
  tp=${pids[0]}
  lb_seed $d $BIN $T
  sp=${pids[1]}
  t0=$(cpu $tp); s0=$(cpu $sp); po0=$(awk "/^Tcp:/{n++} /^Tcp:/ && n==2{print \$7}" /proc/net/snmp); oo0=$(awk "/^IpExt:/{n++} /^IpExt:/ && n==2{print \$9}" /proc/net/netstat)
  if [ -n "${PERFALL:-}" ]; then perf record -a -g -F 1999 -o /tmp/s29/all.data >/dev/null 2>&1 & pp=$!; sleep 0.5; elif [ -n "${PERFA:-}" ]; then perf record -p $sp --call-graph dwarf,16384 -F 800 -o /tmp/prof/seed.data >/dev/null 2>&1 & pp=$!; sleep 0.5; fi
  /usr/bin/time -f "get user %U sys %S wall %e minflt %R maxrss %M" ${PERF:-} env RINGSHARE_STATE_DIR=$d/l $BIN/ringshare get --trackers $d/ti.txt --user l --password-file $d/pw ${GETARGS:-} --quiet --stats $d/stats.json g $d/dl >/dev/null 2>$d/get.log || { tail $d/get.log; exit 1; }
  t1=$(cpu $tp); s1=$(cpu $sp)
  if [ -n "${PERFA:-}${PERFALL:-}" ]; then kill -INT $pp; wait $pp || true; fi
  python3 -c "import json;s=json.load(open('$d/stats.json'));print(f\"run $r files {s['files_done']} {s['seconds']:.2f}s {s['mbps']:.0f}MB/s\")"
  echo "octets $(( $(awk "/^IpExt:/{n++} /^IpExt:/ && n==2{print \$9}" /proc/net/netstat) - oo0 )) passive opens $(( $(awk "/^Tcp:/{n++} /^Tcp:/ && n==2{print \$7}" /proc/net/snmp) - po0 )) seed minflt $(awk "{print \$10}" /proc/$sp/stat) tracker cpu $(echo "$t1 - $t0" | bc) seeder cpu $(echo "$s1 - $s0" | bc)"
  tail -1 $d/get.log
  lb_stop
  [ -n "${CLEAN:-}" ] && rm -rf $d/dl $d/l $d/s.state 2>/dev/null; true
done
