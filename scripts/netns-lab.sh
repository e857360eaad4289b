#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, the rdprobe lab in the server one, and an nftables
# middlebox fault in front of it — the setup tests/netns.rs builds, for trying faults by hand.
#
#   sudo scripts/netns-lab.sh up [SCENARIO]      # client 10.77.0.2 (ns rdprobe-c), lab on 10.77.0.1:3389 (ns rdprobe-s)
#   sudo scripts/netns-lab.sh fault reset|drop|loss|none
#   sudo ip netns exec rdprobe-c target/release/rdprobe probe 10.77.0.1 --pcap out.pcapng
#   sudo scripts/netns-lab.sh down
#
# Faults (nftables in the server namespace; this kernel may lack sch_netem, so loss uses numgen):
#   reset  a TLS ClientHello (payload 0x16 0x03) is answered with a TCP RST (endpoint security)
#   drop   every payload that is not a TPKT (0x03) is dropped: a silent firewall after X.224
#   loss   30 % of the packets each way are dropped
set -euo pipefail
C=rdprobe-c
S=rdprobe-s
BIN=${RDPROBE:-$(dirname "$0")/../target/release/rdprobe}
[ "$(id -u)" = 0 ] || { echo "netns-lab.sh needs root (ip netns, nft)" >&2; exit 2; }

rules() {
  case "$1" in
    reset) echo 'tcp dport 3389 @ih,0,16 0x1603 counter reject with tcp reset' ;;
    drop)  echo 'tcp dport 3389 @ih,0,8 != 0x03 counter drop' ;;
    loss)  echo 'tcp dport 3389 numgen random mod 100 < 30 counter drop' ;;
    none)  echo '' ;;
    *) echo "unknown fault $1 (reset, drop, loss, none)" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up)
    ip netns add "$C"; ip netns add "$S"
    ip link add c0 netns "$C" type veth peer name s0 netns "$S"
    ip -n "$C" addr add 10.77.0.2/24 dev c0; ip -n "$S" addr add 10.77.0.1/24 dev s0
    for ns in "$C" "$S"; do ip -n "$ns" link set lo up; done
    ip -n "$C" link set c0 up; ip -n "$S" link set s0 up
    ip netns exec "$S" "$BIN" lab --listen 10.77.0.1:3389 --scenario "${2:-healthy-tls}" \
      >"/tmp/rdprobe-netns-lab.log" 2>&1 &
    echo "lab pid $! in $S on 10.77.0.1:3389 (log /tmp/rdprobe-netns-lab.log); client namespace $C"
    ;;
  fault)
    ip netns exec "$S" nft delete table inet rdprobe 2>/dev/null || true
    rule=$(rules "${2:?fault name}")
    [ -z "$rule" ] && exit 0
    out=''
    [ "$2" = loss ] && out='chain output { type filter hook output priority filter; policy accept; tcp sport 3389 numgen random mod 100 < 30 counter drop; }'
    ip netns exec "$S" nft -f - <<NFT
table inet rdprobe {
  chain input { type filter hook input priority filter; policy accept; $rule; }
  $out
}
NFT
    ip netns exec "$S" nft list table inet rdprobe
    ;;
  down)
    ip netns pids "$S" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$C" 2>/dev/null || true; ip netns del "$S" 2>/dev/null || true
    ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
