#!/usr/bin/env bash
# Self-contained demo of kfd on examples/config.d (run as root):
#   1. creates two network namespaces joined by a veth:
#      kfd-demo-client (client0) <-> kfd-demo-edge (edge0)
#   2. `kfd plan`, then `kfd apply`: blocklist -> ratelimit -> counter on
#      edge0's XDP hook, mark -> counter on its TC egress hook
#   3. sends UDP from allowed and denied documentation addresses, and back
#   4. shows `kfd status` (verdicts per function), then a config change and
#      its `kfd plan`
#   5. `kfd down` and removes everything it created, even on failure.
# Traffic never leaves the two namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) == 0 ]] || { echo "demo.sh: run as root (it creates namespaces and loads XDP programs)" >&2; exit 1; }

echo "== building kfd (release)"
cargo build --release --quiet -p reconciler -p kfd-tests --bins
KFD_BIN=target/release/kfd
TRAFFIC=target/release/kfd-traffic

remove_namespaces() {
  ip netns del kfd-demo-client 2>/dev/null || true
  ip netns del kfd-demo-edge 2>/dev/null || true
}
remove_namespaces # leftovers of an interrupted run

WORK=$(mktemp -d /tmp/kfd-demo.XXXXXX)
CONF="$WORK/config.d"
cp -r examples/config.d "$CONF"
chmod -R go-w "$CONF"
export KFD_CONFIG_DIR="$CONF" KFD_BPFFS=/sys/fs/bpf/kfd-demo KFD_STATE_DIR="$WORK/state"
kfd() { "$KFD_BIN" "$@"; }

cleanup() {
  "$KFD_BIN" down >/dev/null 2>&1 || true
  remove_namespaces
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== network: kfd-demo-client/client0 <-> kfd-demo-edge/edge0"
ip netns add kfd-demo-client
ip netns add kfd-demo-edge
ip link add client0 netns kfd-demo-client type veth peer name edge0 netns kfd-demo-edge
ip -n kfd-demo-client addr add 10.10.0.1/24 dev client0
for a in 198.51.100.10 203.0.113.7 203.0.113.10 192.0.2.66; do
  ip -n kfd-demo-client addr add "$a/32" dev client0
done
ip -n kfd-demo-edge addr add 10.10.0.2/24 dev edge0
for ns in kfd-demo-client kfd-demo-edge; do ip -n $ns link set lo up; done
ip -n kfd-demo-client link set client0 up
ip -n kfd-demo-edge link set edge0 up
ip -n kfd-demo-edge route add default dev edge0
mac=$(ip -n kfd-demo-edge -br link show edge0 | awk '{print $3}')
ip -n kfd-demo-client neigh replace 10.10.0.2 lladdr "$mac" dev client0 nud permanent
cmac=$(ip -n kfd-demo-client -br link show client0 | awk '{print $3}')
ip -n kfd-demo-edge neigh replace 10.10.0.1 lladdr "$cmac" dev edge0 nud permanent

echo; echo "== kfd validate"
kfd validate
echo; echo "== kfd plan   (exit 2: changes pending)"
kfd plan || [[ $? == 2 ]]
echo; echo "== kfd apply"
kfd apply

echo; echo "== traffic: 200 UDP packets from each source to 10.10.0.2"
for src in 198.51.100.10 203.0.113.7 203.0.113.10 192.0.2.66; do
  case $src in
    203.0.113.7|192.0.2.66) note="denied";;
    203.0.113.10) note="denied range, but allow-listed";;
    *) note="allowed; 50-packet burst, then 1000/s";;
  esac
  printf '%s   # %s\n' "$("$TRAFFIC" kfd-demo-client kfd-demo-edge "$src" 10.10.0.2 200)" "$note"
done

echo; echo "== traffic the edge sends: 100 UDP packets to the client (tc-egress: tagged AF11, counted)"
printf '%s\n' "$("$TRAFFIC" kfd-demo-edge kfd-demo-client 10.10.0.2 10.10.0.1 100)"

echo; echo "== kfd status"
kfd status

echo; echo "== a change: deny 198.51.100.0/24 too, drop the counter"
sed -i 's|          - {key: 192.0.2.66, value: 1}         # a single host (= /32)|&\n          - {key: 198.51.100.0/24, value: 1}|' "$CONF/10-blocklist.yaml"
rm "$CONF/30-counter.yaml"
echo "== kfd plan"
kfd plan || [[ $? == 2 ]]
kfd apply
printf '%s   # now denied\n' "$("$TRAFFIC" kfd-demo-client kfd-demo-edge 198.51.100.10 10.10.0.2 200)"

echo; echo "== kfd down"
kfd down
echo "demo done: namespaces and pins are removed on exit"
