#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with rustup: installs what the tests need, then
# checks formatting and lints, proves the runtime builds without std, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "system packages"
need_apt=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
[ -d /usr/lib/python3/dist-packages/skimage/data ] || need_apt+=(python3-skimage)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

step "rust components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

step "no_std build of the runtime"
cargo build -p vimvq-rt --no-default-features --release

step "tests"
cargo test --workspace --release
