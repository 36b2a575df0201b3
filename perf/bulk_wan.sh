#!/usr/bin/env bash
# Bulk transfers over the wide-area testbed (the two hosts, tbf rate cap and
# delaying relay of perf/wan.sh): one seeder sharing a tree of many small
# files and a tree of a few large ones, one `ringshare get` of each whole
# tree per RTT and per --jobs value.
#
# Usage: perf/bulk_wan.sh [RTT_MS ...]            (default: 50)
# Environment (all optional):
#   SMALL  files of 4-256 KiB in the small tree            [2000]
#   LARGE  files of 50 MiB in the large tree               [8]
#   JOBS   --jobs values to run; auto: get's own window  ["auto 16"]
#   RATE   tbf rate of the link, each direction            [1gbit]
#   BIN    a directory with the ringshare, ringshare-tracker and
#          ringshare-relay to measure                [this tree's, built]
#   OUT    results file        [perf/results/<date>/bulk/wan.txt]
#   LIBTORRENT=1  also fetch each tree, at each RTT, as one multi-file
#          torrent from a libtorrent seeder on the seed host, with libtorrent
#          and with aria2c on the leech host (perf/libtorrent_tree.py; the
#          same path through the relay)
#
# Needs root. Installs nftables when missing. Removes its namespaces, links
# and processes on exit, failure or interruption.
set -euo pipefail
cd "$(dirname "$0")/.."

RTTS=("$@")
[ ${#RTTS[@]} -gt 0 ] || RTTS=(50)
SMALL=${SMALL:-2000}
LARGE=${LARGE:-8}
JOBS=${JOBS:-"auto 16"}
RATE=${RATE:-1gbit}
OUT=${OUT:-perf/results/$(date +%F)/bulk/wan.txt}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# BIN: a directory holding another build's ringshare, ringshare-tracker and
# ringshare-relay to measure instead of this tree's.
BUILD=1
[ -n "${BIN:-}" ] && BUILD=0
BIN=${BIN:-$CARGO_TARGET_DIR/release}

[ "$(id -u)" -eq 0 ] || { echo "perf/bulk_wan.sh needs root (network namespaces)" >&2; exit 1; }
if ! command -v nft >/dev/null; then
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y nftables >/dev/null
fi
if [ "${LIBTORRENT:-0}" = 1 ] && ! /usr/bin/python3 -c 'import libtorrent' 2>/dev/null; then
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-libtorrent >/dev/null
fi
[ "$BUILD" = 0 ] || cargo build --release --locked -p ringshare -p ringshare-tracker -p ringshare-benches \
  --bin ringshare --bin ringshare-tracker --bin ringshare-relay

source perf/testbed_wan.sh

python3 - "$work" "$SMALL" "$LARGE" <<'PY'
import os, random, sys
w, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
for i in range(small):
    d = f"{w}/small/d{i % 20:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.bin", "wb") as f:
        f.write(os.urandom(rng.randint(4 << 10, 256 << 10)))
os.makedirs(f"{w}/large", exist_ok=True)
for i in range(large):
    with open(f"{w}/large/part{i:02d}.bin", "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
PY
echo pw >"$work/pw"
printf '%s:7000\n' $SIP >"$work/tracker_info.txt"

seed_shell() {
  printf '%s\n' "$@" | ip netns exec "$S" env RINGSHARE_STATE_DIR="$work/state-shell" \
    "$BIN/ringshare" "$SIP:7200" "$work/tracker_info.txt" >/dev/null 2>>"$work/shell.log"
}

ip netns exec "$S" "$BIN/ringshare-tracker" "$work/tracker_info.txt" 1 \
  --data-dir "$work/tracker-data" >"$work/tracker.out" 2>"$work/tracker.log" </dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/tracker.out" && break; sleep 0.1; done
seed_shell "create_user s pw" "login s pw" "create_group team"
seed_shell "create_user leech pw" "login leech pw" "join_group team"
seed_shell "login s pw" "accept_request team leech"
ip netns exec "$S" env RINGSHARE_STATE_DIR="$work/state-s" "$BIN/ringshare" share \
  --trackers "$work/tracker_info.txt" --user s --password-file "$work/pw" \
  --listen "$SIP:7101" team "$work/small" "$work/large" >"$work/seed.out" 2>"$work/seed.log" </dev/null &
pids+=($!)
for _ in $(seq 3000); do grep -q "seeding on" "$work/seed.out" && break; sleep 0.1; done
grep -q "seeding on" "$work/seed.out" || { echo "the seeder did not start" >&2; tail -3 "$work/seed.log" >&2; exit 1; }

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for rtt in "${RTTS[@]}"; do
  ip netns exec "$L" "$BIN/ringshare-relay" --listen "$LIP:$RELAY_PORT" --rtt-ms "$rtt" \
    >"$work/relay.out" 2>"$work/relay.log" </dev/null &
  relay=$!
  pids+=($relay)
  for _ in $(seq 50); do grep -q listening "$work/relay.out" && break; sleep 0.1; done
  for kind in small large; do
    for jobs in $JOBS; do
      dest=$work/dl
      rm -rf "$dest" "$work/state-leech"
      jobarg=(--jobs "$jobs")
      [ "$jobs" = auto ] && jobarg=()
      ip netns exec "$L" env RINGSHARE_STATE_DIR="$work/state-leech" "$BIN/ringshare" get \
        --trackers "$work/tracker_info.txt" --user leech --password-file "$work/pw" \
        --listen "$LIP:7300" "${jobarg[@]}" --quiet --stats "$work/stats.json" team "$kind" "$dest" \
        >"$work/get.out" 2>"$work/get.log" </dev/null ||
        { echo "get of $kind failed at RTT $rtt:" >&2; tail -5 "$work/get.log" >&2; exit 1; }
      diff -r -q "$work/$kind" "$dest/$kind" >/dev/null || { echo "$kind: the copy differs" >&2; exit 1; }
      python3 - "$kind" "$rtt" "$jobs" "$work/stats.json" <<'PY' | tee -a "$OUT"
import json, sys
kind, rtt, jobs, stats = sys.argv[1:]
s = json.load(open(stats))
# Each file's own time, its download's start to its end (a small file's
# round trips and its share of the link).
each = sorted(f["seconds"] for f in s.get("files", []) if f.get("seconds"))
per = f" per file p50 {each[len(each) // 2]:.3f} s p90 {each[len(each) * 9 // 10]:.3f} s" if each else ""
print(f"{kind} RTT {rtt} ms jobs {jobs}: files {s['files_done']} bytes {s['bytes']} "
      f"{s['seconds']:.2f} s {s['mbps']:.1f} MB/s {s['files_done'] / s['seconds']:.0f} files/s{per}"
      + (" window " + " ".join(f"{j['limit']}@{j['at_s']:.2f}s" for j in s.get('jobs', [])) if jobs == "auto" else ""))
PY
    done
  done
  if [ "${LIBTORRENT:-0}" = 1 ]; then
    for kind in small large; do
      for leecher in libtorrent aria2c; do
        line=$(ip netns exec "$L" env SEED_IP=$SIP LEECH_IP=$LIP SEED_PREFIX="ip netns exec $S" \
          LEECHER=$leecher /usr/bin/python3 perf/libtorrent_tree.py "$work/$kind" 1 2>"$work/lt.log" | tail -2 | tr '\n' ' ') ||
          { echo "$leecher on the $kind tree failed at RTT $rtt:" >&2; tail -5 "$work/lt.log" >&2; exit 1; }
        echo "$kind RTT $rtt ms: $line" | tee -a "$OUT"
      done
    done
  fi
  kill "$relay" 2>/dev/null || true
  wait "$relay" 2>/dev/null || true
done
