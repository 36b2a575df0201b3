set -m
# usage: source lib.sh ; PIDF=/tmp/h44b/pids
H=/tmp/h44b
PIDF=$H/pids
touch $PIDF
reg() { echo "$1" >> $PIDF; }
# mkgroup DIR BIN PORT [tracker-prefix...]
mkgroup() {
  local d=$1 bin=$2 port=$3; shift 3
  mkdir -p "$d"
  echo "127.0.0.1:$port" >"$d/ti.txt"; echo pw >"$d/pw"
  "$@" "$bin/ringshare-tracker" "$d/ti.txt" 1 --data-dir "$d/td" >"$d/t.out" 2>"$d/t.log" </dev/null &
  reg $!; echo $! > "$d/tracker.pid"
  for _ in $(seq 200); do grep -q key "$d/t.out" && break; sleep 0.05; done
  grep -q key "$d/t.out" || { echo "tracker failed"; cat "$d/t.log"; return 1; }
  local cmds
  for cmds in "create_user s pw|login s pw|create_group g" \
    "create_user l pw|login l pw|join_group g" "login s pw|accept_request g l" \
    "create_user l2 pw|login l2 pw|join_group g" "login s pw|accept_request g l2" \
    "create_user l3 pw|login l3 pw|join_group g" "login s pw|accept_request g l3"; do
    tr '|' '\n' <<<"$cmds" | RINGSHARE_STATE_DIR="$d/shell" "$bin/ringshare" 127.0.0.1:0 "$d/ti.txt" \
      >>"$d/shell.out" 2>>"$d/shell.log"
  done
}
# seed DIR BIN NAME PATH [opts...]  (state dir $d/s-NAME)
seed() {
  local d=$1 bin=$2 n=$3 path=$4; shift 4
  RINGSHARE_STATE_DIR="$d/s-$n" "$bin/ringshare" share "$@" --trackers "$d/ti.txt" --user s \
    --password-file "$d/pw" g $path >"$d/s-$n.out" 2>"$d/s-$n.log" </dev/null &
  local p=$!; reg $p; echo $p > "$d/s-$n.pid"
  for _ in $(seq 6000); do grep -q "seeding on" "$d/s-$n.out" && break; kill -0 $p 2>/dev/null || break; sleep 0.05; done
  grep -q "seeding on" "$d/s-$n.out" || { echo "seed failed"; tail "$d/s-$n.log"; return 1; }
}
killpid() { kill -INT "$1" 2>/dev/null; for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null; }
