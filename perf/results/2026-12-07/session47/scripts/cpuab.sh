#!/bin/bash
# cpuab.sh A B RUNS [N]: one tracker + seed (build A), getters of A and B alternating; wall + getter CPU
# Leaves its scratch directory (named in /tmp/cpuab.left) for the caller to delete once nothing is measured:
# deleting ~100,000 files slows file creation for minutes after (ext4 without a journal skips recently freed inodes).
set -euo pipefail
A=$1; B=$2; RUNS=${3:-5}; N=${4:-10000}
. "$(dirname "$0")/../../../../lib/loopback.sh"
trap 'echo "$W" > /tmp/cpuab.left; lb_stop' EXIT
python3 "$(dirname "$0")/../../../../lib/small_tree.py" "$W/small/tree" "$N"
sync
d=$W/run; mkdir -p $d
lb_group "$d" "$A"
lb_seed "$d" "$A" "$W/small/tree"
for r in $(seq $RUNS); do
  for x in A B; do
    bin=$A; [ $x = B ] && bin=$B
    /usr/bin/time -o $d/time -f "%e %U %S" env RINGSHARE_STATE_DIR="$d/l$x$r" "$bin/ringshare" get --trackers "$d/ti.txt" --user l \
      --password-file "$d/pw" --quiet g "$d/dl$x$r" >/dev/null 2>$d/get.log
    read e u s < $d/time
    echo "$x $r wall $e cpu $(python3 -c "print(round($u+$s,2))") user $u sys $s"
  done
done | tee $d/out
python3 - $d/out <<'PY'
import sys,statistics as st
rows=[l.split() for l in open(sys.argv[1])]
for x in 'AB':
    w=[float(r[3]) for r in rows if r[0]==x]; c=[float(r[5]) for r in rows if r[0]==x]
    print(x,'wall mean %.3f median %.3f  cpu mean %.3f median %.3f'%(st.mean(w),st.median(w),st.mean(c),st.median(c)))
PY
