# The wide-area testbed's two hosts, sourced by perf/wan.sh and
# perf/bulk_wan.sh (from the repository's root): network namespaces $S (seed
# host, $SIP) and $L (leech host, $LIP) joined by a veth pair capped at
# $RATE each way by tbf; every connection from the leech host to the seed
# host steered by nftables DNAT to $LIP:$RELAY_PORT, where the caller
# starts ringshare-relay. Sets $work (a temporary directory) and $pids, and
# an EXIT trap that kills $pids and whatever runs in the namespaces, then
# removes the namespaces, the link and $work.
S=rs-seed-$$
L=rs-leech-$$
SIP=10.77.0.1
LIP=10.77.0.2
RELAY_PORT=7999
work=$(mktemp -d "${TMPDIR:-/tmp}/wan_sh.XXXXXX")
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Anything still running inside the namespaces.
  for ns in "$S" "$L"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "vs-$$" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two hosts joined by a veth pair, each direction capped at RATE.
ip netns add "$S"
ip netns add "$L"
ip link add "vs-$$" type veth peer name "vl-$$"
ip link set "vs-$$" netns "$S"
ip link set "vl-$$" netns "$L"
ip -n "$S" addr add $SIP/24 dev "vs-$$"
ip -n "$L" addr add $LIP/24 dev "vl-$$"
for ns in "$S" "$L"; do ip -n "$ns" link set lo up; done
ip -n "$S" link set "vs-$$" up
ip -n "$L" link set "vl-$$" up
ip netns exec "$S" tc qdisc add dev "vs-$$" root tbf rate "$RATE" burst 512kb latency 20ms
ip netns exec "$L" tc qdisc add dev "vl-$$" root tbf rate "$RATE" burst 512kb latency 20ms
# Connections from the leech host to the seed host go through the relay
# (its own outgoing connections carry mark 0x52 and pass).
ip netns exec "$L" nft -f - <<EOF
table ip wan {
  chain out {
    type nat hook output priority -100; policy accept;
    meta mark 0x52 return
    ip daddr $SIP tcp dport != $RELAY_PORT dnat to $LIP:$RELAY_PORT
  }
}
EOF

