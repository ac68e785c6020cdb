#!/usr/bin/env bash
# Network namespace + veth pair for firmware-config/sluice-veth.conf.
#
#   setup-netns.sh [--ns NAME] [--veth NAME] [--peer-ip A.B.C.D/P]
#   setup-netns.sh --down [--ns NAME] [--veth NAME]
#
# Creates namespace NAME (default "sluice") and the pair VETH0 (default
# sluice-v0, stays here, no address: sluice-dataplane owns it through
# net_af_packet) / VETH1 (moved into the namespace as 10.77.0.1/24). Offloads
# are turned off on both ends so af_packet sees whole frames with real
# checksums. Idempotent: an existing setup is left as it is; --down removes
# it. Needs root and the packages iproute2 and ethtool.
set -euo pipefail

ns=sluice
veth=sluice-v0
peer_ip=10.77.0.1/24
down=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ns) ns="$2"; shift 2 ;;
    --veth) veth="$2"; shift 2 ;;
    --peer-ip) peer_ip="$2"; shift 2 ;;
    --down) down=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
peer="${veth%0}1"
[ "$peer" != "$veth" ] || peer="${veth}-p"
[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }

if [ "$down" -eq 1 ]; then
  ip link del "$veth" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  echo "removed namespace $ns and $veth"
  exit 0
fi

ip netns list | grep -qw "^$ns" || ip netns add "$ns"
if ! ip link show "$veth" >/dev/null 2>&1; then
  ip link add "$veth" type veth peer name "$peer"
  ip link set "$peer" netns "$ns"
fi
ip -n "$ns" link set lo up
ip -n "$ns" addr replace "$peer_ip" dev "$peer"
ip -n "$ns" link set "$peer" up
ip link set "$veth" up
sysctl -qw "net.ipv6.conf.$veth.disable_ipv6=1" || true
sysctl -qw "net.ipv4.conf.$veth.forwarding=0" || true
# Some features may be fixed on a given kernel; segmentation and TX checksums
# are the ones that matter, so only their failure stops the script.
ethtool -K "$veth" rx off tx off tso off gso off gro off >/dev/null 2>&1 ||
  ethtool -K "$veth" tx off tso off gso off
ip netns exec "$ns" ethtool -K "$peer" rx off tx off tso off gso off gro off >/dev/null 2>&1 ||
  ip netns exec "$ns" ethtool -K "$peer" tx off tso off gso off
echo "namespace $ns: $peer $peer_ip; here: $veth (no address, for net_af_packet)"
