#!/bin/bash
# A bulk get from a node that holds its upload to a rate, on loopback:
# N files of 200 kB shared with `share --upload-rate RATE`, fetched by one
# `get G rs/ DEST`; every 5 s the files in place and the sockets in
# CLOSE-WAIT (links the node had not noticed closing), then the get's time
# against the bytes over the rate. (A get like this wedged at ~155 of 300
# files before the forty-fourth session.)
#
# With STOP_AFTER=S the get is stopped (SIGINT) S seconds in, and one file
# it had not fetched is then got on its own: how long the node makes a
# newcomer wait for what it had queued for the stopped get (3-4 s for a
# 200 kB file before the forty-fifth session), and how long the stopped get
# took to exit after its SIGINT (1.2-3.2 s with IO=threads before the
# forty-sixth session: its downloads were stopped one after another).
#
# Usage: perf/paced_bulk.sh
# Environment: N (files, default 300), RATE (default 2MB), IO (uring or
# threads, both ends, default uring), T (seconds before the get is
# stopped, default 120), STOP_AFTER (see above), BIN (a directory holding
# ringshare and ringshare-tracker; default: this tree's release build,
# made first).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-300}
RATE=${RATE:-2MB}
IO=${IO:-uring}
T=${T:-120}
# shellcheck source=perf/lib/bin.sh
. "$ROOT/perf/lib/bin.sh"
# shellcheck source=perf/lib/loopback.sh
. "$ROOT/perf/lib/loopback.sh"
python3 - "$W" "$N" <<'PY'
import os, sys
w, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{w}/src/rs", exist_ok=True)
for i in range(n):
    with open(f"{w}/src/rs/r{i:04d}", "wb") as f:
        f.write(os.urandom(200_000))
PY
lb_group "$W" "$B"
lb_seed "$W" "$B" "$W/src/rs" --io "$IO" --upload-rate "$RATE"
t0=$(date +%s.%N)
RINGSHARE_STATE_DIR="$W/l" timeout "$T" "$B/ringshare" get --io "$IO" --trackers "$W/ti.txt" \
  --user l --password-file "$W/pw" --quiet g rs/ "$W/dl" >/dev/null 2>"$W/get.log" &
gp=$!
if [ -n "${STOP_AFTER:-}" ]; then
  sleep "$STOP_AFTER"
  s0=$(date +%s.%N)
  kill -INT $gp
  wait $gp
  s1=$(date +%s.%N)
  n=$(find "$W/dl" -type f ! -name '*.part*' 2>/dev/null | wc -l)
  last=$(printf 'rs/r%04d' $((N - 1)))
  [ -e "$W/dl/$last" ] && { echo "the stopped get had fetched $last already: use more files" >&2; exit 1; }
  t0=$(date +%s.%N)
  RINGSHARE_STATE_DIR="$W/l2" "$B/ringshare" get --io "$IO" --trackers "$W/ti.txt" --user l \
    --password-file "$W/pw" --quiet g "$last" "$W/one" >/dev/null 2>"$W/one.log"
  rc=$?
  t1=$(date +%s.%N)
  python3 -c "print(f'get stopped after $STOP_AFTER s with $n files (exited {$s1 - $s0:.3f} s after SIGINT); then one 200 kB file: exit $rc in {$t1 - $t0:.2f} s')"
  exit $rc
fi
for i in $(seq "$T"); do
  sleep 1
  kill -0 $gp 2>/dev/null || break
  if [ $((i % 5)) = 0 ]; then
    n=$(find "$W/dl" -type f ! -name '*.part*' 2>/dev/null | wc -l)
    echo "t=$i s files=$n close-wait=$(ss -tan state close-wait | tail -n +2 | wc -l)"
  fi
done
wait $gp
rc=$?
t1=$(date +%s.%N)
python3 - "$N" "$RATE" "$t0" "$t1" "$rc" <<'PY'
import sys
n, rate, t0, t1, rc = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
units = {"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
r = next((float(rate[:-len(u)]) * m for u, m in units.items() if rate.endswith(u)), None)
bound = f"{int(n) * 200_000 / r:.1f} s at the rate" if r else "rate in bits: see --help"
print(f"get exit {rc} in {t1 - t0:.1f} s ({n} files of 200 kB; {bound})")
PY
tail -n 3 "$W/get.log"
