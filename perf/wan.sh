#!/usr/bin/env bash
# The wide-area testbed: ringshare and libtorrent downloading the same file
# over the same rate-capped, delayed path, RTT by RTT.
#
#   seed host (netns rs-seed-PID, 10.77.0.1)        leech host (netns rs-leech-PID, 10.77.0.2)
#   tracker, N seeders (ringshare share),  <-veth->  downloader (ringshare get),
#   libtorrent seeders                     tbf RATE  libtorrent leecher,
#                                          each way  ringshare-relay + nftables DNAT
#
# Every TCP connection the leech host opens to the seed host is steered by a
# DNAT rule (nat output chain) to ringshare-relay on the leech host, which
# relays it to its original destination and holds each direction for RTT/2:
# one extra round trip of RTT for every request and answer. The delay is
# added above TCP, so this measures what each program keeps in flight, not
# TCP's window (on a real path the kernel's receive-buffer autotuning caps a
# connection too; see the README's tuning notes).
#
# Usage: perf/wan.sh [RTT_MS ...]                 (default: 20 50 100 200)
# Environment (all optional):
#   SEEDERS    seeders                                     [3]
#   SIZE       file size (e.g. 512MiB)                     [512MiB]
#   RATE       tbf rate of the link, each direction        [1gbit]
#   RUNS       runs per RTT and program                    [1]
#   LIBTORRENT 0 to skip libtorrent                        [1]
#   MODES      ringshare link modes: encrypted, plaintext  [encrypted]
#              (plaintext: --plaintext on every seeder and the downloader;
#              reported as program "ringshare-plaintext")
#   OUT        results directory                           [perf/results/<date>]
#   BIN        directory holding ringshare, ringshare-tracker and
#              ringshare-relay (an A/B against a saved build)  [built here]
#
# Needs root. Installs nftables and python3-libtorrent with apt-get when they
# are missing. Writes $OUT/wan/wan.json and $OUT/wan/wan.svg (MB/s against
# RTT). Removes its namespaces, links and processes on exit, failure or
# interruption.
set -euo pipefail
cd "$(dirname "$0")/.."

RTTS=("$@")
[ ${#RTTS[@]} -gt 0 ] || RTTS=(20 50 100 200)
SEEDERS=${SEEDERS:-3}
SIZE=${SIZE:-512MiB}
RATE=${RATE:-1gbit}
RUNS=${RUNS:-1}
LIBTORRENT=${LIBTORRENT:-1}
MODES=${MODES:-encrypted}
DATE=$(date +%F)
OUT=${OUT:-perf/results/$DATE}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
ROOT=$PWD

[ "$(id -u)" -eq 0 ] || { echo "perf/wan.sh needs root (network namespaces)" >&2; exit 1; }
need=()
command -v nft >/dev/null || need+=(nftables)
[ -x /usr/bin/time ] || need+=(time)
if [ "$LIBTORRENT" = 1 ] && ! /usr/bin/python3 -c 'import libtorrent' 2>/dev/null; then
  need+=(python3-libtorrent)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
fi
if [ -n "${BIN:-}" ]; then
  BIN=$(cd "$BIN" && pwd)
else
  cargo build --release --locked -p ringshare -p ringshare-tracker -p ringshare-benches \
    --bin ringshare --bin ringshare-tracker --bin ringshare-relay
  BIN=$CARGO_TARGET_DIR/release
fi

source perf/testbed_wan.sh

FILE=$work/shared.bin
python3 - "$FILE" "$SIZE" <<'EOF'
import os, re, sys
path, size = sys.argv[1], sys.argv[2]
m = re.fullmatch(r"(\d+)\s*(|B|KiB|MiB|GiB)", size)
n = int(m.group(1)) * {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]
with open(path, "wb") as f:
    left = n
    while left:
        chunk = os.urandom(min(left, 1 << 24))
        f.write(chunk)
        left -= len(chunk)
EOF
LEN=$(stat -c %s "$FILE")
echo pw >"$work/pw"
printf '%s:7000\n' $SIP >"$work/tracker_info.txt"

# One shell session of `ringshare` on the seed host, commands on stdin.
seed_shell() {
  local port=$1
  shift
  printf '%s\n' "$@" | ip netns exec "$S" env RINGSHARE_STATE_DIR="$work/state-shell" \
    "$BIN/ringshare" "$SIP:$port" "$work/tracker_info.txt" 2>>"$work/shell.log"
}

start_ringshare_swarm() {
  local flags=()
  [ "$1" = plaintext ] && flags=(--plaintext)
  rm -rf "$work/tracker-data" "$work"/state-*
  ip netns exec "$S" "$BIN/ringshare-tracker" "$work/tracker_info.txt" 1 \
    --data-dir "$work/tracker-data" >"$work/tracker.out" 2>"$work/tracker.log" </dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$work/tracker.out" && break; sleep 0.1; done
  grep -q listening "$work/tracker.out" || { echo "tracker did not start" >&2; exit 1; }
  seed_shell 7200 "create_user s1 pw" "login s1 pw" "create_group team" >/dev/null
  local users=(leech)
  for i in $(seq 2 "$SEEDERS"); do users+=("s$i"); done
  for u in "${users[@]}"; do
    seed_shell 7201 "create_user $u pw" "login $u pw" "join_group team" >/dev/null
  done
  local accepts=("login s1 pw")
  for u in "${users[@]}"; do accepts+=("accept_request team $u"); done
  seed_shell 7200 "${accepts[@]}" >/dev/null
  for i in $(seq 1 "$SEEDERS"); do
    ip netns exec "$S" env RINGSHARE_STATE_DIR="$work/state-s$i" "$BIN/ringshare" share \
      --trackers "$work/tracker_info.txt" --user "s$i" --password-file "$work/pw" \
      --listen "$SIP:$((7100 + i))" "${flags[@]}" team "$FILE" >"$work/seed$i.out" 2>"$work/seed$i.log" </dev/null &
    pids+=($!)
    for _ in $(seq 3000); do grep -q "seeding on" "$work/seed$i.out" && break; sleep 0.1; done
    grep -q "seeding on" "$work/seed$i.out" || { echo "seeder $i did not start" >&2; cat "$work/seed$i.log" >&2; exit 1; }
  done
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

results=$work/results.jsonl
: >"$results"
for rtt in "${RTTS[@]}"; do
  ip netns exec "$L" "$BIN/ringshare-relay" --listen "$LIP:$RELAY_PORT" --rtt-ms "$rtt" \
    >"$work/relay.out" 2>"$work/relay.log" </dev/null &
  relay=$!
  for _ in $(seq 50); do grep -q listening "$work/relay.out" && break; sleep 0.1; done

  for mode in $MODES; do
  prog=ringshare
  flags=()
  if [ "$mode" = plaintext ]; then prog=ringshare-plaintext; flags=(--plaintext); fi
  start_ringshare_swarm "$mode"
  for run in $(seq "$RUNS"); do
    dest=$work/dl-$rtt-$run
    mkdir -p "$dest"
    t0=$(date +%s.%N)
    ip netns exec "$L" env RINGSHARE_STATE_DIR="$work/state-leech" \
      /usr/bin/time -f 'peak_rss_kib %M' -o "$work/rss.txt" "$BIN/ringshare" get \
      --trackers "$work/tracker_info.txt" --user leech --password-file "$work/pw" \
      --listen "$LIP:7300" "${flags[@]}" --quiet --stats "$work/stats.json" team shared.bin "$dest" \
      >"$work/get.out" 2>"$work/get.log" </dev/null
    t1=$(date +%s.%N)
    cmp -s "$FILE" "$dest/shared.bin" || { echo "ringshare: copy differs at RTT $rtt" >&2; exit 1; }
    # MB/s of the download itself (download_file to verified on disk, like
    # libtorrent's add_torrent to finished), and of the whole command
    # (login and logout through the delayed path included).
    mbs=$(python3 -c "import json; print(round(json.load(open('$work/stats.json'))['mbps'], 1))")
    wall=$(python3 -c "print(round($LEN / ($t1 - $t0) / 1e6, 1))")
    rss=$(awk '/peak_rss_kib/ {print $2}' "$work/rss.txt")
    echo "$prog  RTT $rtt ms  $SEEDERS seeder(s)  $mbs MB/s (whole command: $wall MB/s, peak RSS $rss KiB)"
    printf '{"program":"%s","rtt_ms":%s,"seeders":%s,"run":%s,"mb_s":%s,"command_mb_s":%s,"peak_rss_kib":%s}\n' \
      "$prog" "$rtt" "$SEEDERS" "$run" "$mbs" "$wall" "${rss:-0}" >>"$results"
    rm -rf "$dest" "$work/state-leech"
  done
  stop_all
  done

  if [ "$LIBTORRENT" = 1 ]; then
    mkdir -p "$work/lt"
    (cd "$work" && ip netns exec "$S" env ANCHOR_DATA="$work/lt" /usr/bin/python3 \
      "$ROOT/../shared/bench/libtorrent_swarm.py" --file "$FILE" --seeders "$SEEDERS" \
      --runs "$RUNS" --seed-ip $SIP --leech-ip $LIP --leech-prefix "ip netns exec $L" \
      >"$work/lt.out" 2>"$work/lt.log") || { echo "libtorrent run failed" >&2; tail "$work/lt.log" >&2; }
    lt=$(sed -n 's/^libtorrent: .*: \([0-9.]*\) MB\/s.*/\1/p' "$work/lt.out" | tail -1)
    if [ -n "$lt" ]; then
      echo "libtorrent RTT $rtt ms  $SEEDERS seeder(s)  $lt MB/s (median of $RUNS)"
      printf '{"program":"libtorrent","rtt_ms":%s,"seeders":%s,"run":0,"mb_s":%s}\n' \
        "$rtt" "$SEEDERS" "$lt" >>"$results"
    fi
  fi
  kill "$relay" 2>/dev/null || true
  wait "$relay" 2>/dev/null || true
done

mkdir -p "$OUT/wan"
python3 - "$results" "$OUT/wan" "$RATE" "$SEEDERS" "$SIZE" <<'EOF'
import json, statistics, sys
src, out, rate, seeders, size = sys.argv[1:]
rows = [json.loads(l) for l in open(src) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["program"], {}).setdefault(r["rtt_ms"], []).append(r["mb_s"])
summary = {p: {str(k): statistics.median(v) for k, v in sorted(d.items())} for p, d in by.items()}
json.dump({"rate": rate, "seeders": int(seeders), "size": size, "runs": rows, "median_mb_s": summary},
          open(f"{out}/wan.json", "w"), indent=2)
# A line per program, MB/s against RTT, plain SVG.
W, H, M = 640, 380, 60
rtts = sorted({r["rtt_ms"] for r in rows})
top = max([r["mb_s"] for r in rows] + [1]) * 1.15
x = lambda v: M + (W - 2 * M) * (rtts.index(v) / max(1, len(rtts) - 1))
y = lambda v: H - M - (H - 2 * M) * v / top
body = [f'<line x1="{M}" y1="{H-M}" x2="{W-M}" y2="{H-M}" stroke="black"/>',
        f'<line x1="{M}" y1="{M}" x2="{M}" y2="{H-M}" stroke="black"/>']
for r in rtts:
    body.append(f'<text x="{x(r):.0f}" y="{H-M+18}" text-anchor="middle">{r} ms</text>')
for i in range(6):
    v = top * i / 5
    body.append(f'<text x="{M-6}" y="{y(v)+4:.0f}" text-anchor="end">{v:.0f}</text>')
for color, (prog, d) in zip(["#1f77b4", "#ff7f0e", "#2ca02c"], summary.items()):
    pts = " ".join(f"{x(int(k)):.0f},{y(v):.0f}" for k, v in d.items())
    body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    for k, v in d.items():
        body.append(f'<circle cx="{x(int(k)):.0f}" cy="{y(v):.0f}" r="3" fill="{color}"/>')
    last = list(d.items())[-1]
    body.append(f'<text x="{x(int(last[0]))-4:.0f}" y="{y(last[1])-8:.0f}" fill="{color}" text-anchor="end">{prog}</text>')
title = f"{size}, {seeders} seeder(s), {rate} each way: MB/s against RTT"
with open(f"{out}/wan.svg", "w") as f:
    f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="{W//2}" y="24" font-size="15" text-anchor="middle">{title}</text>' + "".join(body) + "</svg>\n")
for prog, d in summary.items():
    print(prog, " ".join(f"{k}ms={v}" for k, v in d.items()))
EOF
