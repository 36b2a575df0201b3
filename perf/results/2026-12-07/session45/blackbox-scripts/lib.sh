# common helpers; source me.  W = work dir
H=/tmp/h45; B=$H/bin; RS=$B/ringshare; RT=$B/ringshare-tracker
W=${W:-$H/w}
mkdir -p $W
# wait_for FILE REGEX [timeout]
wait_for() { local f=$1 re=$2 t=${3:-30} i=0; while ! grep -qE "$re" "$f" 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -ge $((t*5)) ] && { echo "TIMEOUT waiting for /$re/ in $f" >&2; return 1; }; done; return 0; }
start_tracker() { # port [extra opts]
  local port=$1; shift
  echo 127.0.0.1:$port > $W/trackers.txt
  $RT $W/trackers.txt 1 --data-dir $W/t1 "$@" > $W/tracker.out 2>&1 < /dev/null &
  TPID=$!; echo $TPID > $W/tracker.pid
  wait_for $W/tracker.out "key" 20
}
mkpw() { echo "$2" > $W/$1.pw; }
# shell node: start_shell name port ; commands via  sh_cmd name "cmd"
start_shell() { local n=$1 port=$2; shift 2
  rm -f $W/$n.in; mkfifo $W/$n.in
  exec {fd}<>$W/$n.in; eval "FD_$n=$fd"
  $RS 127.0.0.1:$port $W/trackers.txt --state-dir ${STATE:-$W/st-$n} "$@" < $W/$n.in > $W/$n.out 2> $W/$n.err &
  echo $! > $W/$n.pid; eval "PID_$n=$!"
  wait_for $W/$n.err "I/O backend" 15
}
sh_cmd() { local n=$1; shift; local fdv=FD_$n; echo "$*" >&${!fdv}; }
# run a shell command and wait for N new lines of output
sh_do() { local n=$1; shift; local b1=$(wc -l < $W/$n.out) b2=$(wc -l < $W/$n.err); sh_cmd $n "$@"; local i=0; while [ $(wc -l < $W/$n.out) -le $b1 ] && [ $(wc -l < $W/$n.err) -le $b2 ]; do sleep 0.1; i=$((i+1)); [ $i -gt 300 ] && { echo "TIMEOUT on $n: $*"; return 1; }; done; sleep 0.4; echo "[$n> $*]"; tail -n +$((b1+1)) $W/$n.out | sed 's/^/  out: /'; tail -n +$((b2+1)) $W/$n.err | sed 's/^/  err: /'; }
mkfile() { head -c $2 /dev/urandom > $1; }
sh_quit() { local n=$1; local p=PID_$n; sh_cmd $n quit; local i=0; while kill -0 ${!p} 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -gt 150 ] && { echo "HANG: $n did not quit in 30s"; return 1; }; done; wait ${!p}; echo "[$n quit rc=$?]"; }
ts() { date +%H:%M:%S.%N | cut -c1-12; }
get_bg() { # name args... ; runs ringshare get in background, output to $W/name.gout
  local n=$1; shift; $RS get --trackers $W/trackers.txt "$@" > $W/$n.gout 2>&1 & eval "GPID_$n=$!"; }
# create users via ls-less path: use a throwaway shell
setup_users() { # group user1(owner) user2...
  local g=$1 o=$2; shift 2
  start_shell setup 33999
  sh_do setup create_user $o p$o >/dev/null; sh_do setup login $o p$o >/dev/null; sh_do setup create_group $g >/dev/null
  for u in "$@"; do sh_do setup logout >/dev/null; sh_do setup create_user $u p$u >/dev/null; sh_do setup login $u p$u >/dev/null; sh_do setup join_group $g >/dev/null; done
  sh_do setup logout >/dev/null; sh_do setup login $o p$o >/dev/null
  for u in "$@"; do sh_do setup accept_request $g $u; done
  sh_quit setup
  for u in $o "$@"; do echo p$u > $W/$u.pw; done
}
