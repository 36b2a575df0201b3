# source me. B=bin dir, G=group dir
B=/tmp/bb47/bin
export PATH=$B:$PATH
G=${G:-/tmp/bb47/g}
mkgroup() {
  mkdir -p $G; echo "127.0.0.1:20001" > $G/ti.txt; echo pw > $G/pw; chmod 644 $G/pw $G/ti.txt
  $B/ringshare-tracker $G/ti.txt 1 --data-dir $G/td > $G/t.out 2> $G/t.log </dev/null &
  echo $! > $G/tracker.pid
  for i in $(seq 100); do grep -q key $G/t.out && break; sleep 0.1; done
  local p=20002
  for cmds in "create_user s pw|login s pw|create_group g" "create_user l pw|login l pw|join_group g" "login s pw|accept_request g l"; do
    tr '|' '\n' <<<"$cmds" | RINGSHARE_STATE_DIR=$G/shell $B/ringshare 127.0.0.1:$p $G/ti.txt >> $G/shell.out 2>>$G/shell.log
    p=$((p+1))
  done
}
# seed PATH PORT [opts]
seed() {
  local path=$1 port=$2; shift 2
  RINGSHARE_STATE_DIR=$G/s $B/ringshare share --listen 127.0.0.1:$port "$@" --trackers $G/ti.txt --user s --password-file $G/pw g "$path" > $G/s.out 2> $G/s.log </dev/null &
  echo $! > $G/seed.pid
  for i in $(seq 600); do grep -q "seeding on" $G/s.out && break; sleep 0.1; done
}
