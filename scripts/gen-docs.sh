#!/usr/bin/env bash
# Regenerates the man pages (docs/man) and shell completions (contrib/completions) from the CLI
# definition. A unit test fails when the committed files differ from what the CLI generates.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin warren
rm -rf docs/man && target/release/warren man --out-dir docs/man
mkdir -p contrib/completions
target/release/warren completions bash > contrib/completions/warren.bash
target/release/warren completions zsh > contrib/completions/_warren
target/release/warren completions fish > contrib/completions/warren.fish
