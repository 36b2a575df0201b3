#!/bin/bash
# The pairs in pairs-small-and-one.txt: BIN_DIR TAG [stat|blk|perf]; the tree
# is TREE (default /tmp/bk/small/tree: the 10,000 files perf/bulk_ab.sh makes,
# generated once and never deleted between runs), e.g. TREE=/tmp/bk/one/tree
# for a 1 GiB file. Runs were: for i in 1 2 3 4; for v in base new:
# run.sh /tmp/bk/$v small-$v; TREE=/tmp/bk/one/tree run.sh /tmp/bk/$v one-$v.
# Columns of the last line: tag, files, seconds, MB/s, files/s.
# usage: run.sh BIN_DIR TAG [perf]
set -euo pipefail
B=$1; TAG=$2; PERF=${3:-}
ROOT=/work/main
. "$ROOT/perf/lib/loopback.sh"
trap "lb_stop; pkill -f -- \"$W/\" 2>/dev/null; true" EXIT
d=$W/r; mkdir -p $d
lb_group "$d" "$B"
lb_seed "$d" "$B" ${TREE:-/tmp/bk/small/tree}
grep -E "hashed" $d/s.log | tail -1
d0=$(awk '$3=="vda"{print $8, $19}' /proc/diskstats)
if [ "$PERF" = stat ]; then
  perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_clone3,task-clock -o /tmp/bk/stat-$TAG.txt -- env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l --password-file "$d/pw" ${JOBSARG:-} --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>$d/get.log
elif [ "$PERF" = blk ]; then
  perf record -e block:block_rq_issue -a -g -o /tmp/bk/blk-$TAG.data -- env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l --password-file "$d/pw" --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>$d/get.log
elif [ -n "$PERF" ]; then
  perf record -F 1999 ${PERFA--a} -g -o /tmp/bk/perf-$TAG.data -- env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l --password-file "$d/pw" ${JOBSARG:-} --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>$d/get.log
else
  /usr/bin/time -v env RINGSHARE_STATE_DIR="$d/l" "$B/ringshare" get --trackers "$d/ti.txt" --user l --password-file "$d/pw" ${JOBSARG:-} --quiet --stats "$d/stats.json" g "$d/dl" >/dev/null 2>$d/get.log
  grep -E "Elapsed|Maximum resident|context|User time|System time" $d/get.log
fi
d1=$(awk '$3=="vda"{print $8, $19}' /proc/diskstats)
echo "disk writes,flushes before $d0 after $d1" | awk '{print "io", $7-$4, $8-$5}'
python3 -c "import json;s=json.load(open('$d/stats.json'));print('$TAG', s['files_done'], round(s['seconds'],2), round(s['mbps'],1), round(s['files_done']/s['seconds']))"
