#!/usr/bin/env bash
# Compiles contrib/apparmor/warren with AppArmor 4's parser, as Ubuntu 24.04 and Debian 13
# load it. Debian 12 ships AppArmor 3, which cannot read the profile's `abi <abi/4.0>` or
# its `userns` rule, and this kernel has no AppArmor, so the profile cannot be loaded here:
# this proves it is valid AppArmor 4 policy, not that a kernel enforces it.
#
# The parser and the C library it needs come from Debian 13's packages (deb.debian.org, as
# apt uses), unpacked under target/apparmor4 and never installed; the parser runs through
# that library's own loader. A mutated copy of the profile must fail to compile, so a
# parser that accepts anything cannot pass the check.
set -euo pipefail
cd "$(dirname "$0")/.."

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
dir=target/apparmor4
profile=contrib/apparmor/warren
mkdir -p "$dir"

# Path in the pool of a trixie package, from the archive's index (fetched once per run).
index="$dir/Packages"
[ -s "$index" ] || curl -fsS --retry 3 --max-time 120 "$mirror/dists/trixie/main/binary-amd64/Packages.xz" \
    | xz -dc > "$index"
pool_path() { awk -v p="$1" '$0 == "Package: " p {f = 1} f && /^Filename:/ {print $2; exit}' "$index"; }

for pkg in apparmor libc6; do
    path=$(pool_path "$pkg")
    [ -n "$path" ] || { echo "apparmor-check: no $pkg package in trixie's index" >&2; exit 1; }
    deb="$dir/$(basename "$path")"
    if [ ! -d "$dir/$pkg" ] || [ ! -s "$deb" ]; then
        curl -fsS --retry 3 --max-time 300 -o "$deb" "$mirror/$path"
        rm -rf "${dir:?}/$pkg"
        dpkg-deb -x "$deb" "$dir/$pkg"
    fi
done

lib="$dir/libc6/usr/lib/x86_64-linux-gnu"
etc="$dir/apparmor/etc/apparmor.d"
# An empty configuration of its own (the parser warns when /etc/apparmor/parser.conf is absent).
: > "$dir/parser.conf"
parser() {
    "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$dir/apparmor/usr/sbin/apparmor_parser" \
        --config-file "$dir/parser.conf" "$@"
}
# Compiles $1 to $2 (skipping the kernel, with AppArmor 4.0's feature set).
parse() { parser -Q -K --base "$etc" -I "$etc" --features-file "$etc/abi/4.0" -o "$2" "$1"; }

echo "apparmor-check: $(parser --version | head -n 1)"
parse "$profile" "$dir/warren.bin"
[ -s "$dir/warren.bin" ] || { echo "apparmor-check: the parser wrote no policy for $profile" >&2; exit 1; }
echo "apparmor-check: $profile compiles ($(stat -c %s "$dir/warren.bin") bytes of policy)"

sed 's/^  userns,$/  usernss,/' "$profile" > "$dir/mutated"
cmp -s "$profile" "$dir/mutated" && { echo "apparmor-check: no userns rule in $profile to mutate" >&2; exit 1; }
if parse "$dir/mutated" /dev/null 2>/dev/null; then
    echo "apparmor-check: the parser accepted a broken profile; the check proves nothing" >&2
    exit 1
fi
echo "apparmor-check: a broken copy is refused, as it must be"
