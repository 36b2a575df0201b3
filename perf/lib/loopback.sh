# Sourced by the loopback perf scripts (perf/bulk.sh, perf/bulk_ab.sh):
# a scratch directory cleaned up on exit, and a group on a fresh tracker.
#
# After sourcing: $W is the scratch directory; `pids+=($!)` registers a
# background process to kill on exit (and at `lb_stop`).

W=$(mktemp -d)
pids=()
lb_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Runs go through pipelines (subshells): their processes are found by
  # the work directory on their command lines.
  pkill -f -- "$W/" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap lb_cleanup EXIT

# lb_group DIR BIN_DIR: a tracker on a random loopback port (DIR/ti.txt),
# the password file DIR/pw, and group g owned by user s with member l.
lb_group() {
  local d=$1 bin=$2
  local port=$((7600 + RANDOM % 1000))
  echo "127.0.0.1:$port" >"$d/ti.txt"; echo pw >"$d/pw"
  "$bin/ringshare-tracker" "$d/ti.txt" 1 --data-dir "$d/td" >"$d/t.out" 2>"$d/t.log" </dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q key "$d/t.out" && break; sleep 0.05; done
  local cmds
  for cmds in "create_user s pw|login s pw|create_group g" \
    "create_user l pw|login l pw|join_group g" "login s pw|accept_request g l"; do
    tr '|' '\n' <<<"$cmds" | RINGSHARE_STATE_DIR="$d/shell" "$bin/ringshare" 127.0.0.1:0 "$d/ti.txt" \
      >/dev/null 2>>"$d/shell.log"
  done
}

# lb_seed DIR BIN_DIR PATH [OPTION...]: user s shares PATH in g (in the
# background); returns once it seeds.
lb_seed() {
  local d=$1 bin=$2 path=$3
  shift 3
  RINGSHARE_STATE_DIR="$d/s" "$bin/ringshare" share "$@" --trackers "$d/ti.txt" --user s \
    --password-file "$d/pw" g "$path" >"$d/s.out" 2>"$d/s.log" </dev/null &
  pids+=($!)
  for _ in $(seq 6000); do grep -q "seeding on" "$d/s.out" && break; sleep 0.05; done
}

# lb_stop: ends the processes of the last run.
lb_stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
