#!/usr/bin/env bash
# Sets up pier on a Debian machine, as root.
#
#   contrib/setup.sh            install missing packages, build release binaries,
#                               install them, the default config and CNI network,
#                               then run pierd in the foreground
#   contrib/setup.sh --deps     only install what building and testing need
#   contrib/setup.sh --no-start everything but running pierd
#   contrib/setup.sh --bench    also install the peers benchmarks compare with
#                               (conmon, containerd)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=full
bench=0
for arg in "$@"; do
  case "$arg" in
    --deps) mode=deps ;;
    --no-start) mode=install ;;
    --bench) bench=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (pier manages mounts, namespaces and cgroups)" >&2
  exit 1
fi

# What building, running and testing pier needs. docker-registry and
# busybox-static serve the tests' images; apache2-utils gives htpasswd and
# openssl signs the test token server's tokens; Go and spdystream build the
# SPDY client the streaming tests talk through, and the released crictl and
# critest (../shared/cri-tools); umoci, skopeo, jq and util-linux build and
# push the images critest pulls; prometheus scrapes a test pierd's metrics.
packages=(runc protobuf-compiler containernetworking-plugins iptables iproute2
          docker-registry busybox-static apache2-utils openssl build-essential
          pkg-config ca-certificates golang-go golang-github-docker-spdystream-dev
          umoci skopeo jq curl util-linux prometheus)
if [ "$bench" = 1 ]; then
  packages+=(conmon containerd hyperfine)
fi
# kubectl drives the streaming server in the tests; a newer one may already
# be installed outside Debian's packages, and is kept.
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A Rust toolchain new enough for edition 2024. Debian 12's rustc is too old,
# so use rustup's stable toolchain where cargo is missing or old.
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
need_minor=88
have_minor=$(cargo --version 2>/dev/null | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')
if [ -z "$have_minor" ] || [ "$have_minor" -lt "$need_minor" ]; then
  if ! command -v rustup >/dev/null; then
    apt-get install -y -qq rustup >/dev/null 2>&1 || {
      echo "setup.sh: cargo >= 1.$need_minor is needed; install it with rustup (https://rustup.rs)" >&2
      exit 1
    }
  fi
  rustup toolchain install stable --profile minimal -c rustfmt -c clippy
  rustup default stable
fi

[ "$mode" = deps ] && exit 0

cd "$repo"
cargo build --release --locked --bins
contrib/static-bins.sh --release --locked
install -m 0755 target/release/pierd target/release/pier-monitor target/release/pier-infra /usr/local/bin/

# Never overwrite what an operator wrote.
install -d -m 0755 /etc/pier /etc/pier/pier.d
[ -e /etc/pier/pier.toml ] || install -m 0644 contrib/pier.toml /etc/pier/pier.toml
install -d -m 0755 /etc/cni/net.d
if ! ls /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf /etc/cni/net.d/*.json >/dev/null 2>&1; then
  install -m 0644 contrib/cni/10-pier.conflist /etc/cni/net.d/10-pier.conflist
fi
if [ -d /etc/systemd/system ] && [ ! -e /etc/systemd/system/pierd.service ]; then
  install -m 0644 contrib/pierd.service /etc/systemd/system/pierd.service
fi

[ "$mode" = install ] && exit 0
echo "setup.sh: starting pierd on /run/pier/pier.sock (Ctrl-C stops it; containers keep running)"
exec /usr/local/bin/pierd
