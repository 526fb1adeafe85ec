#!/usr/bin/env bash
# Runs pier's whole test suite as root: formatting, lints, unit tests and the
# end-to-end tests (real runc, a local docker-registry, CNI plugins).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
"$repo/contrib/setup.sh" --deps
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests run pierd and pier-monitor as separate processes.
cargo build --workspace --bins --locked
cargo test --workspace --locked
