# helpers (adapted from /tmp/h46/scripts/lib.sh). V=new|old; W=workdir; P=tracker port
declare -A BD=([new]=/tmp/bin46c [old]=/tmp/bin45f)
bin() { echo ${BD[$V]}/ringshare; }
waitfor() { local f=$1 p=$2 t=${3:-20} i=0
  while ! grep -q -- "$p" "$f" 2>/dev/null; do sleep 0.1; i=$((i+1)); [ $i -ge $((t*10)) ] && { echo "TIMEOUT waiting for '$p' in $f" >&2; return 1; }; done; return 0; }
start_tracker() { mkdir -p $W; echo 127.0.0.1:$P > $W/trk.txt
  ${BD[$V]}/ringshare-tracker $W/trk.txt 1 --data-dir $W/td > $W/tr.out 2> $W/tr.err & echo $! > $W/tr.pid
  waitfor $W/tr.out "listening on" 10; }
stop_tracker() { kill $(cat $W/tr.pid) 2>/dev/null; }
shell() { $(bin) 127.0.0.1:$2 $W/trk.txt --state-dir $W/st-$1 "${@:3}"; }
pw() { echo "pw$1" > $W/pw-$1; echo $W/pw-$1; }
setup_users() { local G=$1; shift; local owner=$1
  for u in "$@"; do pw $u >/dev/null; done
  printf 'create_user %s pw%s\nlogin %s pw%s\ncreate_group %s\n' $owner $owner $owner $owner $G | shell $owner $((P+1)) >/dev/null 2>&1
  local k=2
  for u in "${@:2}"; do
    printf 'create_user %s pw%s\nlogin %s pw%s\njoin_group %s\n' $u $u $u $u $G | shell $u $((P+k)) >/dev/null 2>&1
    printf 'login %s pw%s\naccept_request %s %s\n' $owner $owner $G $u | shell $owner $((P+1)) 2>/dev/null; k=$((k+1))
  done; }
RX() { local port=$1 u=$2 sub=$3; shift 3
  exec $(bin) $sub --trackers $W/trk.txt --user $u --password-file $W/pw-$u --state-dir $W/st-$u-$sub --listen 127.0.0.1:$port "$@"; }
R() { local port=$1 u=$2 sub=$3; shift 3
  $(bin) $sub --trackers $W/trk.txt --user $u --password-file $W/pw-$u --state-dir $W/st-$u-$sub --listen 127.0.0.1:$port "$@"; }
