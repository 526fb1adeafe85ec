#!/usr/bin/env bash
# Relinks the binaries pier runs once per container or pod, pier-monitor and
# pier-infra, as static PIEs, over the dynamic ones `cargo build` made:
#
#   contrib/static-bins.sh [CARGO OPTIONS]     e.g. --release, --target-dir DIR
#
# A hundred monitors each kept about 40 kB of private pages for the dynamic
# loader, libgcc_s and the relocated tables of glibc; static, a monitor's
# PSS drops from about 150 kB to 105 kB (docs/benchmarks.md, Density).
# Static PIE keeps ASLR. Neither binary looks up users or hosts through
# NSS, the one part of glibc that needs shared libraries at run time.
#
# Cargo keeps both builds and restores the dynamic one at its next build of
# these binaries, so run this after the last `cargo build` of the profile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for bin in pier-monitor pier-infra; do
  cargo rustc --quiet -p pier-monitor --bin "$bin" "$@" -- -C target-feature=+crt-static
done
