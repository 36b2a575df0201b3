#!/bin/bash
# black-box: a get killed with -9 while seeding; its registration goes after --session-expiry
set -u
B=/tmp/bin50b
d=$(mktemp -d); trap 'pkill -f -- "$d/"; rm -rf "$d"' EXIT
port=$((7600 + RANDOM % 1000)); echo "127.0.0.1:$port" >"$d/ti.txt"; echo pw >"$d/pw"
RUST_LOG=info "$B/ringshare-tracker" "$d/ti.txt" 1 --data-dir "$d/td" --session-expiry 3 --peer-ttl 1 >"$d/t.out" 2>"$d/t.log" </dev/null &
for _ in $(seq 100); do grep -q key "$d/t.out" && break; sleep 0.05; done
for cmds in "create_user s pw|login s pw|create_group g" "create_user l pw|login l pw|join_group g" "login s pw|accept_request g l"; do
  tr '|' '\n' <<<"$cmds" | RINGSHARE_STATE_DIR="$d/shell" "$B/ringshare" 127.0.0.1:0 "$d/ti.txt" >/dev/null 2>>"$d/shell.log"
done
head -c 3000000 /dev/urandom > "$d/big.bin"
RINGSHARE_STATE_DIR="$d/s" "$B/ringshare" share --trackers "$d/ti.txt" --user s --password-file "$d/pw" g "$d/big.bin" >"$d/s.out" 2>"$d/s.log" </dev/null &
sp=$!
for _ in $(seq 600); do grep -q "seeding on" "$d/s.out" && break; sleep 0.05; done
ls_() { RINGSHARE_STATE_DIR="$d/ls" "$B/ringshare" ls --trackers "$d/ti.txt" --user l --password-file "$d/pw" g 2>&1; }
echo "before: $(ls_)"
RINGSHARE_STATE_DIR="$d/g" "$B/ringshare" get --seed-for 10m --trackers "$d/ti.txt" --user l --password-file "$d/pw" g "$d/dl" >"$d/g.out" 2>"$d/g.log" </dev/null &
gp=$!
for _ in $(seq 600); do grep -q "seeding" "$d/g.log" && break; sleep 0.05; done
echo "seeding get: $(ls_)"
kill -TERM $sp; wait $sp 2>/dev/null
echo "first sharer gone (withdrew): $(ls_)"
kill -9 $gp; t0=$(date +%s.%N)
sleep 1.5; echo "1.5 s after kill -9 of the get: $(ls_)"
for i in $(seq 80); do sleep 0.25; out=$(ls_); if ! grep -q big.bin <<<"$out"; then echo "$(python3 -c "print(round($(date +%s.%N)-$t0,1))") s after kill -9: [$out]"; break; fi; done
grep -i "ended" "$d/t.log"
