#!/usr/bin/env bash
# Builds every fuzz target under fuzz/ (cargo-fuzz, libFuzzer, stable toolchain: -s none, no
# sanitizer runtime needed in safe Rust), replays the committed seed corpora and regression
# inputs, then fuzzes each target for FUZZ_SECONDS (default 45) inside a fresh network
# namespace that holds only lo: fuzzed frames open real host sockets. Run as root.
# Prints executions per target; a finding fails the run and leaves its input under
# fuzz/artifacts/TARGET/ (minimise it, add it to fuzz/regressions/TARGET/, fix, add a test).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
secs=${FUZZ_SECONDS:-45}
targets=(frame dns dhcp api specs)

if ! cargo fuzz --version 2>/dev/null | grep -q '0.13'; then
    echo "-- installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
echo "-- building fuzz targets: ${targets[*]}"
(cd fuzz && cargo fuzz build -s none 2>&1 | tail -n 1)

work=$(mktemp -d /tmp/warren-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
unshare --net -- bash -c '
    set -euo pipefail
    ip link set lo up
    cd fuzz
    secs=$1 work=$2; shift 2
    for t in "$@"; do
        mkdir -p "$work/$t"
        seeds=()
        for d in corpus/$t regressions/$t; do [ -d "$d" ] && seeds+=("$d"); done
        if [ ${#seeds[@]} -gt 0 ]; then
            cargo fuzz run -s none "$t" "${seeds[@]}" -- -runs=0 >"$work/$t.replay" 2>&1 \
                || { cat "$work/$t.replay"; echo "replaying the seeds of $t failed" >&2; exit 1; }
        fi
        cargo fuzz run -s none "$t" "$work/$t" "${seeds[@]}" -- -max_total_time="$secs" \
            -rss_limit_mb=4096 -timeout=10 >"$work/$t.log" 2>&1 \
            || { tail -n 40 "$work/$t.log"; echo "fuzz target $t found a failure" >&2; exit 1; }
        runs=$(grep -o "Done [0-9]* runs in [0-9]* second" "$work/$t.log" | tail -n 1)
        cov=$(grep -o "cov: [0-9]*" "$work/$t.log" | tail -n 1)
        echo "fuzz $t: ${runs:-?}s, $cov, $(ls "$work/$t" | wc -l) new corpus entries, no failure"
    done
' fuzz "$secs" "$work" "${targets[@]}"
