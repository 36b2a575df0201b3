#!/usr/bin/env bash
# The tracker under `tracker_load` next to redis-server under redis-benchmark,
# at the same concurrency, on loopback:
#
#   reads:  redis GET (no persistence)           vs tracker ListGroups + ListFiles
#   writes: redis SET (appendfsync always)       vs tracker join/accept/reject/
#                                                   leave/upload/stop_share
#                                                   (each fsync'ed before the answer)
#
# Usage: perf/tracker_load.sh
# Environment (all optional):
#   CLIENTS   concurrent clients of both tools               [256]
#   WINDOW    tracker_load's measured window, seconds        [10]
#   WARMUP    tracker_load's warm-up, seconds                [2]
#   REDIS_N   requests per redis-benchmark run               [500000]
#   OUT       results directory              [perf/results/<date>]
#
# Installs Debian's redis-server (which provides redis-benchmark) when it is
# missing, builds the tracker and tracker_load (release), prints each pair
# side by side with the ratio tracker/redis, and writes a JSON summary to
# $OUT/tracker_load.json. Everything it starts is stopped on exit, failure
# or interruption. Exits 1 when a tool reported errors.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-256}
WINDOW=${WINDOW:-10}
WARMUP=${WARMUP:-2}
REDIS_N=${REDIS_N:-500000}
DATE=$(date +%F)
OUT=${OUT:-perf/results/$DATE}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$CARGO_TARGET_DIR/release

work=$(mktemp -d "${TMPDIR:-/tmp}/tracker_load_sh.XXXXXX")
# Processes this script started (redis-servers, tracker_load) and trackers
# tracker_load reported spawning.
pids=()

stop_pid() {
  local p=$1
  kill -0 "$p" 2>/dev/null || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
  wait "$p" 2>/dev/null || true
}

cleanup() {
  local p
  # A tracker tracker_load spawned (tracker_load stops it itself unless it
  # was killed outright): only if that PID is still a ringshare-tracker.
  for log in "$work"/tracker_load_*.err; do
    [ -f "$log" ] || continue
    p=$(sed -n 's/^tracker_load: spawned tracker pid \([0-9]*\) .*/\1/p' "$log" | head -1)
    if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ringshare-trac ]; then
      pids+=("$p")
    fi
  done
  for p in "${pids[@]}"; do stop_pid "$p"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "== installing redis-server (Debian)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

echo "== building ringshare-tracker and tracker_load (release)"
cargo build --release -p ringshare-tracker -p ringshare-benches \
  --bin ringshare-tracker --bin tracker_load

# Starts a private redis-server on a free loopback port: sets REDIS_PORT and
# REDIS_PID. Extra arguments go to redis-server.
start_redis() {
  local dir=$1 port pid
  shift
  mkdir -p "$dir"
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
      --logfile "$dir/redis.log" --save "" --maxclients 4096 "$@" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 50); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        REDIS_PORT=$port
        REDIS_PID=$pid
        return 0
      fi
      sleep 0.1
    done
    stop_pid "$pid" # the port was taken, or it did not come up: try another
  done
  echo "could not start redis-server; its log:" >&2
  cat "$dir/redis.log" >&2 || true
  return 1
}

# CPU ticks (user + system, 1/100 s) a process has used.
cpu_ticks() {
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# redis-benchmark at $CLIENTS clients; its CSV line goes to $work/redis_$name.csv,
# the CPU time redis-server used during it to $work/redis_$name.cpu.
redis_run() {
  local name=$1 test=$2 cpu0
  cpu0=$(cpu_ticks "$REDIS_PID")
  local cmd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CLIENTS" -n "$REDIS_N" -t "$test" --csv)
  echo "\$ ${cmd[*]}" | tee "$work/redis_$name.cmd"
  # In the background, so that a signal is handled at once (bash defers
  # traps until a foreground command ends).
  "${cmd[@]}" >"$work/redis_$name.out" 2>&1 &
  local p=$!
  pids+=("$p")
  wait "$p" || true
  echo $(($(cpu_ticks "$REDIS_PID") - cpu0)) >"$work/redis_$name.cpu"
  grep -i "^\"$test\"" "$work/redis_$name.out" >"$work/redis_$name.csv" || {
    echo "redis-benchmark printed no result:" >&2
    cat "$work/redis_$name.out" >&2
    return 1
  }
  cat "$work/redis_$name.csv"
}

# tracker_load against a freshly spawned tracker (its data directory in $work).
tracker_run() {
  local mix=$1 rc=0
  local cmd=("$BIN/tracker_load" --spawn "$BIN/ringshare-tracker" --clients "$CLIENTS"
    --seconds "$WINDOW" --warmup "$WARMUP" --mix "$mix" --json "$work/tracker_$mix.json"
    # Every client logs in from 127.0.0.1: lift the per-address attempt
    # limits, which are not what this measures.
    --tracker-arg=--signups-per-minute=1000000 --tracker-arg=--login-burst=1000000)
  echo "\$ ${cmd[*]}" | tee "$work/tracker_$mix.cmd"
  TMPDIR=$work "${cmd[@]}" >"$work/tracker_$mix.out" 2>"$work/tracker_load_$mix.err" &
  local p=$!
  pids+=("$p")
  wait "$p" || rc=$?
  cat "$work/tracker_$mix.out"
  if [ ! -s "$work/tracker_$mix.json" ]; then
    echo "tracker_load failed (exit $rc):" >&2
    cat "$work/tracker_load_$mix.err" >&2
    return 1
  fi
  echo "$rc" >"$work/tracker_$mix.rc"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== reads: redis GET, no persistence"
start_redis "$work/redis-get" --appendonly no
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" set 'key:__rand_int__' xxx >/dev/null
redis_run get get
stop_pid "$REDIS_PID"

echo "== reads: tracker"
tracker_run reads

echo "== writes: redis SET, appendonly yes, appendfsync always"
start_redis "$work/redis-set" --appendonly yes --appendfsync always
redis_run set set
stop_pid "$REDIS_PID"

echo "== writes: tracker"
tracker_run writes

mkdir -p "$OUT"
WORK=$work OUT=$OUT REDIS_N=$REDIS_N DATE=$DATE CLIENTS=$CLIENTS LOAD_BEFORE=$load_before \
  REDIS_VERSION="$(redis-server --version)" python3 - <<'EOF'
import csv, json, os, platform, subprocess

work, out = os.environ["WORK"], os.environ["OUT"]

def redis(name):
    row = next(csv.reader(open(f"{work}/redis_{name}.csv")))
    ticks = int(open(f"{work}/redis_{name}.cpu").read())
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    ms = lambda x: round(float(x) * 1000)
    return {
        "command": open(f"{work}/redis_{name}.cmd").read().strip().lstrip("$ "),
        "ops_per_sec": float(row[1]),
        "mean_us": ms(row[2]),
        "p50_us": ms(row[4]),
        "p95_us": ms(row[5]),
        "p99_us": ms(row[6]),
        "max_us": ms(row[7]),
        # CPU time of redis-server over the whole run (ticks of 10 ms).
        "server_cpu_s": ticks / 100,
        "server_cpu_us_per_op": round(ticks * 1e4 / int(os.environ["REDIS_N"]), 2),
    }

def tracker(mix):
    r = json.load(open(f"{work}/tracker_{mix}.json"))
    r["command"] = open(f"{work}/tracker_{mix}.cmd").read().strip().lstrip("$ ")
    r["exit_status"] = int(open(f"{work}/tracker_{mix}.rc").read())
    return r

pairs = [
    ("reads", "redis GET (no persistence)", redis("get"), "tracker reads", tracker("reads")),
    ("writes", "redis SET (AOF, fsync always)", redis("set"), "tracker writes (fsync'ed)", tracker("writes")),
]
summary = {
    "date": os.environ["DATE"],
    "machine": {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "network": "loopback",
        "loadavg_before": os.environ["LOAD_BEFORE"].split(),
        "loadavg_after": open("/proc/loadavg").read().split()[:3],
    },
    "redis_version": os.environ["REDIS_VERSION"],
    "clients": int(os.environ["CLIENTS"]),
    "pairs": {},
}
print()
print(f"{'':32} {'ops/s':>10} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8} {'server CPU µs/op':>17}")
errors = 0
for key, rname, r, tname, t in pairs:
    tt = t["total"]
    ratio = {k: round(tt[k] / r[k], 3) if r[k] else None for k in ("ops_per_sec", "p50_us", "p99_us", "max_us")}
    for name, row, cpu in ((rname, r, r["server_cpu_us_per_op"]), (tname, tt, t["tracker_cpu_us_per_op"])):
        print(f"{name:32} {row['ops_per_sec']:>10.0f} {row['p50_us']:>8} {row['p99_us']:>8} {row['max_us']:>8} {cpu:>17.1f}")
    print(f"{'  ratio tracker/redis':32} {ratio['ops_per_sec']:>10.2f} {ratio['p50_us']:>8.2f} {ratio['p99_us']:>8.2f} {ratio['max_us']:>8.2f}")
    print(f"{'  tracker errors':32} {t['errors']} in the window, {t['warmup_errors']} in the warm-up")
    errors += t["errors"] + t["warmup_errors"]
    summary["pairs"][key] = {"redis": r, "tracker": t, "ratio_tracker_over_redis": ratio}
path = f"{out}/tracker_load.json"
with open(path, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
print(f"\nwrote {path}")
if errors:
    print(f"tracker_load reported {errors} error(s)")
    raise SystemExit(1)
EOF
