#!/usr/bin/env bash
# Headset links shaped by the kernel: each sensor in its own network namespace, joined to the
# host (where the aggregator runs) by a veth pair whose sensor-side egress goes through a token
# bucket (`tc tbf`). Latency, jitter and loss are not available from tbf (`netem` is not in this
# kernel): add them in process with the sensor's --emulate-latency-ms / -jitter-ms / -loss.
# Needs root.
#
#   scripts/headset-netns.sh up N [KBIT]      namespaces sn-0..sn-(N-1), host 10.77.K.1, sensor 10.77.K.2
#   scripts/headset-netns.sh rate K|all KBIT  change a link's rate live
#   scripts/headset-netns.sh exec K CMD...    run CMD in sensor K's namespace
#   scripts/headset-netns.sh show             qdisc counters (bytes sent, drops, backlog)
#   scripts/headset-netns.sh down             remove everything this script made
set -euo pipefail

BURST=${SPLITNETS_TBF_BURST:-1600}        # bytes: about one MTU, so frames queue rather than burst
QUEUE_MS=${SPLITNETS_TBF_LATENCY_MS:-2000} # how long a packet may wait before tbf drops it

die() { echo "headset-netns: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (ip netns, tc)"
command -v tc >/dev/null || die "tc not found (Debian: iproute2)"

namespaces() { ip netns list | awk '{print $1}' | grep '^sn-[0-9]*$' || true; }

set_rate() {
  local k=$1 kbit=$2
  ip netns exec "sn-$k" tc qdisc replace dev "vs-$k" root tbf rate "${kbit}kbit" \
    burst "$BURST" latency "${QUEUE_MS}ms"
}

case "${1:-}" in
  up)
    n=${2:?number of sensors}; kbit=${3:-2000}
    for k in $(seq 0 $((n - 1))); do
      ip netns add "sn-$k"
      ip link add "vh-$k" type veth peer name "vs-$k"
      ip link set "vs-$k" netns "sn-$k"
      ip addr add "10.77.$k.1/24" dev "vh-$k"
      ip link set "vh-$k" up
      ip netns exec "sn-$k" ip addr add "10.77.$k.2/24" dev "vs-$k"
      ip netns exec "sn-$k" ip link set "vs-$k" up
      ip netns exec "sn-$k" ip link set lo up
      set_rate "$k" "$kbit"
      echo "sensor $k: namespace sn-$k, aggregator reachable at 10.77.$k.1, uplink ${kbit} kbit/s (tbf)"
    done
    ;;
  rate)
    target=${2:?K or all}; kbit=${3:?kbit/s}
    if [ "$target" = all ]; then
      for ns in $(namespaces); do set_rate "${ns#sn-}" "$kbit"; done
    else
      set_rate "$target" "$kbit"
    fi
    ;;
  exec)
    k=${2:?sensor}; shift 2
    exec ip netns exec "sn-$k" "$@"
    ;;
  show)
    for ns in $(namespaces); do
      k=${ns#sn-}; echo "== sensor $k"; ip netns exec "$ns" tc -s qdisc show dev "vs-$k"
    done
    ;;
  down)
    for ns in $(namespaces); do
      k=${ns#sn-}; ip link del "vh-$k" 2>/dev/null || true; ip netns del "$ns"
    done
    ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
