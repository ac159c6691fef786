#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: set-up, lint, unit tests, then the
# end-to-end suite in a network namespace that holds only lo, once as root and once as an
# unprivileged user. Run as root (it installs packages and creates the test user).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== lint"
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
# The library's API docs build without broken intra-doc links.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib

echo "== unit tests"
cargo test --release --lib --bins

echo "== AppArmor profile compiles with AppArmor 4's parser"
bash scripts/apparmor-check.sh

echo "== fuzz targets (seed replay, then ${FUZZ_SECONDS:-45} s each, in a netns with only lo)"
bash scripts/fuzz.sh

echo "== build end-to-end suite"
cargo build --release --bins --examples
e2e=$(cargo test --release --test e2e --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*/e2e-[^"]*"' | tail -n 1 | cut -d'"' -f4)
[ -x "$e2e" ] || { echo "cannot find the e2e test binary" >&2; exit 1; }

# Stage the binaries where the unprivileged user can run them; removed on exit.
stage=$(mktemp -d /tmp/warren-e2e.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp target/release/warren target/release/warren-slirp4netns target/release/examples/nettool "$e2e" "$stage/"
mv "$stage/$(basename "$e2e")" "$stage/e2e"
chmod 0755 "$stage" "$stage"/*

# Isolation: a fresh network namespace with lo up and 10.200.0.1 / fd99:200::1 on it as
# "remote" addresses, plus a second namespace ("the remote host", owned by warren-ci's user
# namespace so both passes can enter it) joined by a veth pair: 10.201.0.1 / fd99:201::1 here,
# 10.201.0.2 / fd99:201::2 there.
isolated() {
    local ping_range=$1; shift
    unshare --net -- bash -c '
        set -e
        ip link set lo up
        ip addr add 10.200.0.1/32 dev lo
        ip addr add fd99:200::1/128 dev lo nodad
        echo "$0" > /proc/sys/net/ipv4/ping_group_range
        setpriv --reuid=warren-ci --regid=warren-ci --init-groups unshare --user --map-root-user --net sleep 3600 &
        remote=$!
        trap "kill $remote" EXIT
        for _ in $(seq 100); do
            [ "$(readlink /proc/$remote/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
            sleep 0.05
        done
        ip link add wrn-remote0 type veth peer name wrn-remote1
        ip link set wrn-remote1 netns "$remote"
        ip addr add 10.201.0.1/24 dev wrn-remote0
        ip addr add fd99:201::1/64 dev wrn-remote0 nodad
        ip link set wrn-remote0 up
        # A blackhole: frames to 10.201.0.99 leave on the veth to a MAC nobody has.
        ip neigh add 10.201.0.99 lladdr 02:00:00:00:00:99 dev wrn-remote0 nud permanent
        nsenter -t "$remote" -n sh -c "ip link set lo up; ip addr add 10.201.0.2/24 dev wrn-remote1;
            ip addr add fd99:201::2/64 dev wrn-remote1 nodad;
            ip link set wrn-remote1 up; ip route add default via 10.201.0.1;
            ip -6 route add default via fd99:201::1"
        export WARREN_REMOTE_NS_PID=$remote
        "$@"' "$ping_range" "$@"
}
export WARREN_BIN="$stage/warren" NETTOOL_BIN="$stage/nettool" WARREN_SLIRP_BIN="$stage/warren-slirp4netns"
threads=${WARREN_TEST_THREADS:-2}

echo "== end-to-end suite as root (ping sockets not allowed: honest ICMP errors)"
isolated "1 0" env -u XDG_RUNTIME_DIR "$stage/e2e" --test-threads="$threads"

echo "== end-to-end suite as unprivileged user warren-ci (ping sockets allowed)"
isolated "0 2147483647" setpriv --reuid=warren-ci --regid=warren-ci --init-groups \
    env -u XDG_RUNTIME_DIR HOME=/tmp "$stage/e2e" --test-threads="$threads"
