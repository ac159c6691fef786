#!/usr/bin/env bash
# The main job, from a fresh Debian machine (run as root: it installs what it needs):
# builds warren, then, as the unprivileged user warren-ci, runs `curl` in a container whose
# only network is warren's userspace stack, fetching 64 MiB from a web server on the host's
# loopback through the gateway address, and checks the bytes by SHA-256.
# Everything happens inside a fresh network namespace holding only lo, so nothing leaves
# this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins

stage=$(mktemp -d /tmp/warren-demo.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp target/release/warren "$stage/"
head -c $((64 << 20)) /dev/urandom > "$stage/blob"
chmod -R a+rX "$stage"
want=$(sha256sum "$stage/blob" | cut -d' ' -f1)

unshare --net -- bash -c '
    set -euo pipefail
    stage=$1 want=$2
    ip link set lo up
    python3 -m http.server 8080 --bind 127.0.0.1 --directory "$stage" >/dev/null 2>&1 &
    server=$!
    trap "kill $server" EXIT
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done
    echo "== as $(id -un warren-ci) (uid $(id -u warren-ci)), no root, no iptables:"
    echo "   warren run --allow-host-loopback -- sh -c \"ip -br addr; ip route; curl http://10.0.2.2:8080/blob | sha256sum\""
    setpriv --reuid=warren-ci --regid=warren-ci --init-groups env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/tmp \
        "$stage/warren" run --allow-host-loopback -- sh -c "
            ip -br addr; ip route
            curl -s -o /tmp/warren-demo-blob -w \"curl: %{size_download} bytes at %{speed_download} bytes/s\n\" http://10.0.2.2:8080/blob
            got=\$(sha256sum /tmp/warren-demo-blob | cut -d\" \" -f1); rm -f /tmp/warren-demo-blob
            echo \"sha256 inside: \$got\"
            [ \"\$got\" = $want ] && echo \"sha256 matches the host file: OK\""
' demo "$stage" "$want"
