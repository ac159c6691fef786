#!/usr/bin/env bash
# Installs everything warren's build, tests and demo need on a fresh Debian machine (as root).
# Idempotent: a second run changes nothing.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need_pkgs+=(iproute2)
have newuidmap || need_pkgs+=(uidmap)
have unshare || need_pkgs+=(util-linux)
have setpriv || need_pkgs+=(util-linux)
have nsenter || need_pkgs+=(util-linux)
have script || need_pkgs+=(bsdutils)
have getent || need_pkgs+=(libc-bin)
have useradd || need_pkgs+=(passwd)
have gcc || need_pkgs+=(gcc)
# libfuzzer-sys builds libFuzzer (C++) for the fuzz targets.
have g++ || need_pkgs+=(g++)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3-minimal)
have curl || need_pkgs+=(curl)
# xz unpacks Debian's package index (scripts/apparmor-check.sh).
have xz || need_pkgs+=(xz-utils)
# The real slirp4netns: the compatibility suite runs every scenario against it too.
have slirp4netns || need_pkgs+=(slirp4netns)
# RootlessKit: a real caller of the drop-in (network and port driver) in the suite.
have rootlesskit || need_pkgs+=(rootlesskit)
# tshark reads the pcap files warren writes (the capture tests check them with it).
have tshark || need_pkgs+=(tshark)
# busybox udhcpc: a real DHCP client for the DHCP test.
have busybox || need_pkgs+=(busybox)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "setup: installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! have cargo; then
    # The machines this project runs on ship a rustup toolchain; elsewhere try Debian's rustup.
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        apt-get install -y -qq rustup >/dev/null && rustup default stable
    fi
fi

# /dev/net/tun is 0666 on normal distributions; some images ship it 0600.
if [ ! -c /dev/net/tun ]; then
    modprobe tun 2>/dev/null || true
    mkdir -p /dev/net
    [ -c /dev/net/tun ] || mknod -m 0666 /dev/net/tun c 10 200
fi
chmod 0666 /dev/net/tun

# The unprivileged user the end-to-end suite also runs as, with subordinate ids.
if ! id warren-ci >/dev/null 2>&1; then
    useradd --create-home --shell /bin/sh warren-ci
fi
if ! grep -q '^warren-ci:' /etc/subuid 2>/dev/null; then
    usermod --add-subuids 400000-465535 warren-ci
fi
if ! grep -q '^warren-ci:' /etc/subgid 2>/dev/null; then
    usermod --add-subgids 400000-465535 warren-ci
fi
