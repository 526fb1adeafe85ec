#!/usr/bin/env bash
# Runs pier's whole test suite as root: formatting, lints, unit tests and the
# end-to-end tests (real runc, a local docker-registry, CNI plugins), and the
# released crictl and critest (cri-tools v1.26.1) where their source is at
# hand.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
"$repo/contrib/setup.sh" --deps
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

# The real CRI clients: built offline from ../shared/cri-tools (or
# $PIER_CRI_TOOLS_SRC) into target/cri-tools; the tests that drive them say
# they skipped where neither the source nor $PIER_CRI_TOOLS is there.
cri_tools_src=${PIER_CRI_TOOLS_SRC:-$repo/../shared/cri-tools}
if [ -z "${PIER_CRI_TOOLS:-}" ]; then
  if [ -x "$cri_tools_src/build.sh" ] || [ -f "$cri_tools_src/build.sh" ]; then
    bash "$cri_tools_src/build.sh" "$repo/target/cri-tools"
  else
    echo "test.sh: no cri-tools source at $cri_tools_src: crictl and critest tests will skip" >&2
  fi
fi

# The crash tests (tests/tests/crash_failpoints.rs) need pierd and
# pier-monitor with their named failpoints compiled in. A failpoint does
# nothing until a test arms it through FAILPOINTS, so every other test runs
# these binaries as it would a normal build.
features=pierd/failpoints,pier-monitor/failpoints
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features "$features" -- -D warnings
# End-to-end tests run pierd and pier-monitor as separate processes.
cargo build --workspace --bins --locked --features "$features"
cargo test --workspace --locked --features "$features"

# What setup.sh installs links pier-monitor and pier-infra statically
# (contrib/static-bins.sh); the tests above ran dynamic builds. The real
# clients, the native-exec oracle and the container lifecycle run again
# against static ones, built in their own target dir so target/debug stays
# as cargo left it, beside the same pierd.
static=$repo/target/static
contrib/static-bins.sh --locked --target-dir "$static"
mkdir -p "$static/bins"
ln -f target/debug/pierd "$static/bins/pierd"
ln -f "$static/debug/pier-monitor" "$static/debug/pier-infra" "$static/bins/"
for bin in pier-monitor pier-infra; do
  ldd "$static/bins/$bin" 2>&1 | grep -q 'statically linked' || {
    echo "test.sh: $static/bins/$bin is not statically linked" >&2
    exit 1
  }
done
PIER_BIN_DIR=$static/bins cargo test --workspace --locked --features "$features" \
  --test critest --test crictl_cli --test exec_equivalence --test containers --test pod_pid
