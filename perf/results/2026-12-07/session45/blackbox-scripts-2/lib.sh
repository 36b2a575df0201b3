# common helpers. Usage: V=new|old; W=workdir; P=tracker port
# source /tmp/h46/scripts/lib.sh
H=/tmp/h46
bin() { echo $H/$V/ringshare; }
waitfor() { # file pattern timeout_s
  local f=$1 p=$2 t=${3:-20} i=0
  while ! grep -q -- "$p" "$f" 2>/dev/null; do sleep 0.1; i=$((i+1)); [ $i -ge $((t*10)) ] && { echo "TIMEOUT waiting for '$p' in $f" >&2; return 1; }; done
  return 0
}
start_tracker() { # W P
  mkdir -p $W; echo 127.0.0.1:$P > $W/trk.txt
  $H/$V/ringshare-tracker $W/trk.txt 1 --data-dir $W/td > $W/tr.out 2> $W/tr.err &
  echo $! > $W/tr.pid
  waitfor $W/tr.out "listening on" 10
}
stop_tracker() { kill $(cat $W/tr.pid) 2>/dev/null; }
# run interactive shell with commands from stdin; $1 = user tag for state dir, $2 listen
shell() { $(bin) 127.0.0.1:$2 $W/trk.txt --state-dir $W/st-$1 "${@:3}"; }
pw() { echo "pw$1" > $W/pw-$1; echo $W/pw-$1; }
setup_users() { # G users... ; first user owns G
  local G=$1; shift; local owner=$1
  for u in "$@"; do pw $u >/dev/null; done
  printf 'create_user %s pw%s\nlogin %s pw%s\ncreate_group %s\n' $owner $owner $owner $owner $G | shell $owner $((P+1)) >/dev/null 2>&1
  local k=2
  for u in "${@:2}"; do
    printf 'create_user %s pw%s\nlogin %s pw%s\njoin_group %s\n' $u $u $u $u $G | shell $u $((P+k)) >/dev/null 2>&1
    printf 'login %s pw%s\naccept_request %s %s\n' $owner $owner $G $u | shell $owner $((P+1)) 2>/dev/null; k=$((k+1))
  done
}
R() { # one-shot: R port user subcmd group args...   (state dir per user+subcmd)
  local port=$1 u=$2 sub=$3; shift 3
  $(bin) $sub --trackers $W/trk.txt --user $u --password-file $W/pw-$u --state-dir $W/st-$u-$sub --listen 127.0.0.1:$port "$@"
}
# same as R but exec (use in background: `RX ... & PID=$!` gives the ringshare pid itself)
RX() { local port=$1 u=$2 sub=$3; shift 3
  exec $(bin) $sub --trackers $W/trk.txt --user $u --password-file $W/pw-$u --state-dir $W/st-$u-$sub --listen 127.0.0.1:$port "$@"; }
