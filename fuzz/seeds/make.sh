#!/usr/bin/env bash
# Regenerates the `frame` target's seed corpus from real captures: each scenario runs a
# container under warren with --pcap (or a bridge network with two containers) and the frames
# the containers sent become one seed (seeds/pcap2seed.py). Run as root from the project root
# after `cargo build --release --bins --examples`; everything happens in a fresh network
# namespace holding only lo (10.200.0.1 and fd99:200::1 on it stand in for remote hosts).
# The output replaces fuzz/corpus/frame/*.seed and refreshes the dns, api and specs seeds
# (seeds/other.py); commit it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (it creates a network namespace)" >&2; exit 1; }
exec unshare --net -- bash -c '
set -euo pipefail
ip link set lo up
ip addr add 10.200.0.1/32 dev lo
ip addr add fd99:200::1/128 dev lo nodad
W=$PWD/target/release/warren N=$PWD/target/release/examples/nettool
out=$PWD/fuzz/corpus/frame tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$tmp/rt/warren/daemon.pid" ] && kill "$(cat "$tmp/rt/warren/daemon.pid")" 2>/dev/null || true
    rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$out" && rm -f "$out"/*.seed
"$N" serve 127.0.0.1:7000 & pids+=($!)
"$N" serve 10.200.0.1:7000 & pids+=($!)
"$N" serve "[::]:7001" & pids+=($!)
"$N" udp-serve 10.200.0.1:7002 & pids+=($!)
"$N" udp-serve "[fd99:200::1]:7002" & pids+=($!)
sleep 0.3
single() {
    local name=$1; shift
    timeout -s KILL 20 "$W" run --allow-host-loopback --dns-upstream 127.0.0.1:9 --pcap "$tmp/$name.pcap" -- "$@" >/dev/null 2>&1 || true
    python3 fuzz/seeds/pcap2seed.py single "$tmp/$name.pcap" "$out/$name.seed"
}
single tcp4-host-loopback "$N" fetch 10.0.2.2 7000 20000 1
single tcp6-host-loopback "$N" fetch fd00::2 7001 20000 2
single tcp4-egress "$N" fetch 10.200.0.1 7000 100000 3
single tcp6-egress "$N" fetch fd99:200::1 7001 3000 4
single tcp4-ask "$N" ask 10.200.0.1 7000 peer
single tcp4-refused "$N" refused 10.200.0.1 1
single tcp4-reset "$N" reset 10.200.0.1 7000
single udp4 "$N" udp-ask 10.200.0.1 7002 hello
single udp6 "$N" udp-ask fd99:200::1 7002 hello
single dns-a "$N" dns 10.0.2.3 example.test
single dns-aaaa "$N" dns fd00::3 example.test aaaa
single dns-tcp "$N" dns 10.0.2.3 example.test tcp
single ping4 "$N" ping 10.200.0.1
single ping6 "$N" ping fd99:200::1
single ping-gateway "$N" ping 10.0.2.2
single ping6-gateway "$N" ping fd00::2
single mld sh -c "sleep 0.3"
single dhcp busybox udhcpc -i tap0 -f -q -n -t 3 -T 1 -s /bin/true
# A bridge network: b fetches from a by name, asks names, pings it and the outside.
export XDG_RUNTIME_DIR=$tmp/rt XDG_DATA_HOME=$tmp/data
mkdir -p "$XDG_RUNTIME_DIR" && chmod 0700 "$XDG_RUNTIME_DIR"
"$W" network create fz --subnet 10.89.0.0/24 --ipv6 --subnet6 fd89::/64 --dns-upstream 127.0.0.1:9 --pcap "$tmp/bridge.pcap" >/dev/null
"$W" run --network fz --name a -- "$N" serve 80 >/dev/null 2>&1 & pids+=($!)
sleep 1.5
"$W" run --network fz --name b -- sh -c "$N fetch 10.89.0.2 80 30000 6; $N dns 10.89.0.1 a; $N dns fd89::1 a aaaa;
    $N ping 10.89.0.2; $N ping fd89::2; $N fetch 10.200.0.1 7000 5000 7; $N udp-ask 10.200.0.1 7002 hi" >"$tmp/b.log" 2>&1 || true
cat "$tmp/b.log"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
"$W" network rm fz >/dev/null 2>&1 || true
kill "$(cat "$XDG_RUNTIME_DIR/warren/daemon.pid")"; sleep 0.3
python3 fuzz/seeds/pcap2seed.py bridge "$tmp/bridge.pcap" "$out/bridge.seed"
python3 fuzz/seeds/other.py fuzz
ls -l "$out"
'
