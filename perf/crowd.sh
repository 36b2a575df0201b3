#!/bin/bash
# A flash crowd on the namespace testbed, with real processes: one seeder
# (`ringshare share`) and N downloaders (`ringshare get`, started together),
# every host in its own network namespace on one bridge, each host's upload
# and download capped at RATE with tbf. Reports each downloader's
# completion time, the last one against the lower bound (size / a host's
# link), and the seeder's upload, as JSON.
#
#   host i (netns rc-PID-i, 10.66.0.(i+1)) --veth--+
#   seeder + tracker (rc-PID-0, 10.66.0.1) --veth--+-- bridge rcbr-PID
#   tbf RATE on each host's side (upload) and on the bridge's side (download)
#
# Usage: perf/crowd.sh [N]                     (default 12)
# Environment: RATE (tbf rate, default 50mbit), SIZE (default 32MiB), RUNS
# (default 1), PLAINTEXT=1 (every node with --plaintext), UPLOAD_RATE (every
# node with --upload-rate UPLOAD_RATE, e.g. 47mbit for RATE=50mbit), TCP_CC (TCP
# congestion control in every namespace, default: this machine's default,
# written into the results: it moves the figures, see docs/PERFORMANCE.md
# "Crowds: congestion control"), OUT (results
# directory, default perf/results/<date>/crowd), BIN (a directory holding
# the ringshare and ringshare-tracker to measure, e.g. an older build's;
# default: this tree's, built first), KEEP=1 (keep the work
# directory with every node's log; RUST_LOG is passed to the nodes),
# SEED_FOR (every downloader with --seed-for SEED_FOR, e.g. 60s: it goes on
# serving once complete, as BitTorrent peers seed; a downloader's
# completion is then when it wrote its --stats, and the run stops them all
# once every one is complete or has failed),
# LIBTORRENT=1 (after each ringshare run, the same crowd with libtorrent on
# the same hosts: perf/libtorrent_crowd.py, every downloader told the
# seeder and every other downloader; a line with "client": "libtorrent").
#
# Needs root. Removes its namespaces, links and processes on exit, failure
# or interruption.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-12}
RATE=${RATE:-50mbit}
SIZE=${SIZE:-32MiB}
RUNS=${RUNS:-1}
OUT=${OUT:-$ROOT/perf/results/$(date +%F)/crowd}
flags=()
[ "${PLAINTEXT:-0}" = 1 ] && flags=(--plaintext)
[ -n "${UPLOAD_RATE:-}" ] && flags+=(--upload-rate "$UPLOAD_RATE")
getflags=()
[ -n "${SEED_FOR:-}" ] && getflags=(--seed-for "$SEED_FOR")
[ "$(id -u)" = 0 ] || { echo "crowd.sh needs root (network namespaces)" >&2; exit 1; }
command -v tc >/dev/null || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 >/dev/null; }
# shellcheck source=perf/lib/bin.sh
. "$ROOT/perf/lib/bin.sh"

if [ "${LIBTORRENT:-0}" = 1 ] && ! /usr/bin/python3 -c 'import libtorrent' 2>/dev/null; then
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-libtorrent >/dev/null
fi
TCPCC=${TCP_CC:-$(sysctl -n net.ipv4.tcp_congestion_control)}
grep -qw "$TCPCC" /proc/sys/net/ipv4/tcp_available_congestion_control ||
  { echo "congestion control $TCPCC not available: $(cat /proc/sys/net/ipv4/tcp_available_congestion_control)" >&2; exit 1; }
P=rc-$$
BR=rcbr-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/crowd_sh.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for i in $(seq 0 "$N"); do
    for p in $(ip netns pids "$P-$i" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$P-$i" 2>/dev/null || true
    ip link del "rb$$-$i" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip link add "$BR" type bridge
ip link set "$BR" up
for i in $(seq 0 "$N"); do
  ns=$P-$i
  ip netns add "$ns"
  ip link add "rh$$-$i" type veth peer name "rb$$-$i"
  ip link set "rh$$-$i" netns "$ns"
  ip link set "rb$$-$i" master "$BR"
  ip link set "rb$$-$i" up
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$TCPCC"
  ip -n "$ns" addr add "10.66.0.$((i + 1))/16" dev "rh$$-$i"
  ip -n "$ns" link set "rh$$-$i" up
  # Upload: the host's side; download: the bridge's side toward the host.
  ip netns exec "$ns" tc qdisc add dev "rh$$-$i" root tbf rate "$RATE" burst 64kb latency 50ms
  tc qdisc add dev "rb$$-$i" root tbf rate "$RATE" burst 64kb latency 50ms
done
SIP=10.66.0.1

FILE=$work/crowd.bin
python3 - "$FILE" "$SIZE" <<'EOF'
import os, re, sys
path, size = sys.argv[1], sys.argv[2]
m = re.fullmatch(r"(\d+)\s*(|B|KiB|MiB|GiB)", size)
n = int(m.group(1)) * {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]
with open(path, "wb") as f:
    while n > 0:
        k = min(n, 1 << 20)
        f.write(os.urandom(k))
        n -= k
EOF
LEN=$(stat -c %s "$FILE")
LT=$ROOT/perf/libtorrent_crowd.py
[ "${LIBTORRENT:-0}" = 1 ] && /usr/bin/python3 "$LT" torrent "$FILE" "$work/crowd.torrent"
echo pw >"$work/pw"
printf '%s:7000\n' $SIP >"$work/tracker_info.txt"

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
seed_shell() {
  printf '%s\n' "$@" | in_ns "$P-0" env RINGSHARE_STATE_DIR="$work/state-shell" \
    "$B/ringshare" "$SIP:7201" "$work/tracker_info.txt" >/dev/null 2>>"$work/shell.log"
}

results=$work/results.jsonl
: >"$results"
for run in $(seq "$RUNS"); do
  rm -rf "$work/tracker-data" "$work"/state-* "$work"/dl-*
  # Every account is made from the seeder's address: lift the signup limit.
  # Started with `ip netns exec` itself (not a shell function) so that $!
  # is the process to kill.
  ip netns exec "$P-0" "$B/ringshare-tracker" "$work/tracker_info.txt" 1 --data-dir "$work/tracker-data" \
    --signups-per-minute 100000 >"$work/tracker.out" 2>"$work/tracker.log" </dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q " key " "$work/tracker.out" && break; sleep 0.1; done
  grep -q " key " "$work/tracker.out" || { echo "tracker did not start" >&2; cat "$work/tracker.log" >&2; exit 1; }
  seed_shell "create_user s pw" "login s pw" "create_group crowd"
  accepts=("login s pw")
  for i in $(seq 1 "$N"); do
    seed_shell "create_user d$i pw" "login d$i pw" "join_group crowd"
    accepts+=("accept_request crowd d$i")
  done
  seed_shell "${accepts[@]}"
  ip netns exec "$P-0" env RINGSHARE_STATE_DIR="$work/state-s" "$B/ringshare" share \
    --trackers "$work/tracker_info.txt" --user s --password-file "$work/pw" \
    --listen "$SIP:7100" "${flags[@]}" crowd "$FILE" >"$work/seed.out" 2>"$work/seed.log" </dev/null &
  seeder=$!
  pids+=($seeder)
  for _ in $(seq 600); do grep -q "seeding on" "$work/seed.out" && break; sleep 0.1; done
  grep -q "seeding on" "$work/seed.out" || { echo "the seeder did not start" >&2; cat "$work/seed.log" >&2; exit 1; }
  sent() { in_ns "$P-0" cat /proc/net/dev | awk -v d="rh$$-0:" '$1 == d {print $10}'; }
  # The seeder's TCP segments sent and retransmitted (its namespace's
  # counters): a tbf queue that overflows costs the seeder's link twice.
  segs() { in_ns "$P-0" awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {print $12, $13}' /proc/net/snmp; }
  up0=$(sent)
  seg0=$(segs)
  # Every downloader at once; each writes its own end time.
  t0=$(date +%s.%N)
  gets=()
  for i in $(seq 1 "$N"); do
    mkdir -p "$work/dl-$i"
    (
      code=0
      in_ns "$P-$i" env RINGSHARE_STATE_DIR="$work/state-d$i" "$B/ringshare" get \
        --trackers "$work/tracker_info.txt" --user "d$i" --password-file "$work/pw" \
        --listen "10.66.0.$((i + 1)):7300" "${flags[@]}" "${getflags[@]}" --quiet --stats "$work/stats-$i.json" \
        crowd crowd.bin "$work/dl-$i" >/dev/null 2>"$work/get-$i.log" </dev/null || code=$?
      echo "$code $(date +%s.%N)" >"$work/end-$i"
      [ "$code" = 0 ] || { echo "downloader $i failed:" >&2; tail -3 "$work/get-$i.log" >&2; }
    ) &
    gets+=($!)
  done
  if [ -n "${SEED_FOR:-}" ]; then
    # Seeding downloaders run on: each is done when its figures are
    # written (or it ended, failing); then every one is stopped.
    while :; do
      left=0
      for i in $(seq 1 "$N"); do
        [ -s "$work/stats-$i.json" ] || [ -e "$work/end-$i" ] || left=$((left + 1))
      done
      [ "$left" = 0 ] && break
      sleep 0.05
    done
    for i in $(seq 1 "$N"); do
      for p in $(ip netns pids "$P-$i" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
    done
  fi
  for g in "${gets[@]}"; do wait "$g" || true; done
  up=$(( $(sent) - up0 ))
  read -r o1 r1 <<<"$(segs)"
  read -r o0 r0 <<<"$seg0"
  export SEGS_OUT=$((o1 - o0)) SEGS_RETRANS=$((r1 - r0))
  python3 - "$work" "$N" "$t0" "$LEN" "$RATE" "$run" "${PLAINTEXT:-0}" "$up" "$TCPCC" >>"$results" <<'EOF'
import json, os, re, sys
work, n, t0, length, rate, run, plain, up, cc = sys.argv[1:]
n, t0, length = int(n), float(t0), int(length)
m = re.fullmatch(r"(\d+)(k|m|g)bit", rate)
bps = int(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
bound = length * 8 / bps
ends, failed = [], []
seeding = bool(os.environ.get("SEED_FOR"))
for i in range(1, n + 1):
    code, t = open(f"{work}/end-{i}").read().split()
    t = float(t)
    if seeding and code == "0":
        # Stopped by a signal while it seeded: complete when it wrote its figures.
        t = os.stat(f"{work}/stats-{i}.json").st_mtime
    (ends if code == "0" else failed).append((i, t - t0))
done = sorted(t for _, t in ends)
print(json.dumps({"client": "ringshare", "run": int(run), "downloaders": n, "rate": rate, "bytes": length,
                  "plaintext": plain == "1", "congestion_control": cc,
                  "upload_rate": os.environ.get("UPLOAD_RATE") or None,
                  "seed_for": os.environ.get("SEED_FOR") or None, "bound_s": round(bound, 2),
                  "completion_s": [round(t, 2) for t in done],
                  "all_done_s": round(max(done), 2) if done and not failed else None,
                  "all_done_over_bound": round(max(done) / bound, 2) if done and not failed else None,
                  "failed": [i for i, _ in failed],
                  "seeder_sent_bytes": int(up), "seeder_copies": round(int(up) / length, 2),
                  "seeder_tcp_segments": int(os.environ["SEGS_OUT"]),
                  "seeder_tcp_retransmitted": int(os.environ["SEGS_RETRANS"])}))
EOF
  for i in $(seq 1 "$N"); do cmp -s "$FILE" "$work/dl-$i/crowd.bin" || echo "downloader $i: copy differs or missing" >&2; done
  tail -1 "$results"
  echo "seeder interface sent $up bytes ($(python3 -c "print(round($up / $LEN, 2))") copies, TCP/IP overhead included)"
  kill "$seeder" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  [ "${LIBTORRENT:-0}" = 1 ] || continue
  # The same crowd with libtorrent: the seeder on host 0, every downloader
  # told every other host.
  rm -rf "$work"/lt-*
  mkdir -p "$work/lt-seed"
  ln "$FILE" "$work/lt-seed/crowd.bin"
  ip netns exec "$P-0" /usr/bin/python3 "$LT" seed "$work/crowd.torrent" "$work/lt-seed" $SIP \
    >"$work/lt-seed.out" 2>"$work/lt-seed.log" </dev/null &
  seeder=$!
  pids+=($seeder)
  for _ in $(seq 600); do grep -q READY "$work/lt-seed.out" && break; sleep 0.1; done
  grep -q READY "$work/lt-seed.out" || { echo "the libtorrent seeder did not start" >&2; cat "$work/lt-seed.log" >&2; exit 1; }
  everyone=("$SIP:6881")
  for i in $(seq 1 "$N"); do everyone+=("10.66.0.$((i + 1)):6881"); done
  up0=$(sent)
  seg0=$(segs)
  t0=$(date +%s.%N)
  gets=()
  for i in $(seq 1 "$N"); do
    mkdir -p "$work/lt-$i"
    (
      code=0
      ip netns exec "$P-$i" /usr/bin/python3 "$LT" leech "$work/crowd.torrent" "$work/lt-$i" \
        "10.66.0.$((i + 1))" "${everyone[@]}" >"$work/lt-$i.out" 2>"$work/lt-$i.log" </dev/null || code=$?
      echo "$code $(date +%s.%N)" >"$work/end-$i"
      [ "$code" = 0 ] || { echo "libtorrent downloader $i failed:" >&2; tail -3 "$work/lt-$i.log" >&2; }
    ) &
    gets+=($!)
  done
  for g in "${gets[@]}"; do wait "$g" || true; done
  up=$(( $(sent) - up0 ))
  read -r o1 r1 <<<"$(segs)"
  read -r o0 r0 <<<"$seg0"
  export SEGS_OUT=$((o1 - o0)) SEGS_RETRANS=$((r1 - r0))
  python3 - "$work" "$N" "$t0" "$LEN" "$RATE" "$run" "$up" "$TCPCC" >>"$results" <<'EOF2'
import json, os, re, sys
work, n, t0, length, rate, run, up, cc = sys.argv[1:]
n, t0, length = int(n), float(t0), int(length)
m = re.fullmatch(r"(\d+)(k|m|g)bit", rate)
bps = int(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
bound = length * 8 / bps
ends, failed = [], []
for i in range(1, n + 1):
    code, t = open(f"{work}/end-{i}").read().split()
    (ends if code == "0" else failed).append((i, float(t) - t0))
done = sorted(t for _, t in ends)
print(json.dumps({"client": "libtorrent", "run": int(run), "downloaders": n, "rate": rate,
                  "bytes": length, "congestion_control": cc, "bound_s": round(bound, 2),
                  "completion_s": [round(t, 2) for t in done],
                  "all_done_s": round(max(done), 2) if done and not failed else None,
                  "all_done_over_bound": round(max(done) / bound, 2) if done and not failed else None,
                  "failed": [i for i, _ in failed],
                  "seeder_sent_bytes": int(up), "seeder_copies": round(int(up) / length, 2),
                  "seeder_tcp_segments": int(os.environ["SEGS_OUT"]),
                  "seeder_tcp_retransmitted": int(os.environ["SEGS_RETRANS"])}))
EOF2
  for i in $(seq 1 "$N"); do cmp -s "$FILE" "$work/lt-$i/crowd.bin" || echo "libtorrent downloader $i: copy differs or missing" >&2; done
  tail -1 "$results"
  kill "$seeder" 2>/dev/null || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
done
mkdir -p "$OUT"
suffix=
if [ "${PLAINTEXT:-0}" = 1 ]; then suffix=-plaintext; fi
name=crowd-1to$N-$RATE-$SIZE-$TCPCC$suffix
cp "$results" "$OUT/$name.jsonl"
echo "results in $OUT/$name.jsonl"
