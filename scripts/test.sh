#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with rustup: installs what the tests need, then
# checks formatting, lints and module cycles, proves the runtime builds without std, runs every test, the C API
# example under valgrind, the aarch64 tests and CLI under qemu (Cortex-A72 and A76), and a bounded
# fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

step "system packages"
pkgs=(dataset-fashion-mnist python3-skimage python3-venv ffmpeg valgrind gcc gcc-aarch64-linux-gnu
      libc6-dev-arm64-cross qemu-user-static)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "rust components and targets"
rustup component add rustfmt clippy >/dev/null
rustup target add aarch64-unknown-linux-gnu thumbv7em-none-eabihf >/dev/null

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

step "no import cycles between modules"
python3 scripts/module_cycles.py

step "no_std build of the runtime (thumbv7em has no std)"
cargo build -p vimvq-rt --no-default-features --release --target thumbv7em-none-eabihf
cargo build -p vimvq-rt --no-default-features --features alloc --release --target thumbv7em-none-eabihf

step "tests"
VIMVQ_REQUIRE_FFMPEG=1 cargo test --workspace --release

step "static-arena example (no heap)"
cargo run -p vimvq-rt --example static_arena --release

step "C API example under valgrind"
bash scripts/capi.sh

step "aarch64 runtime tests under qemu"
bash cross/test-aarch64.sh --lib --test simd_conformance --test kernels --test forward --test threaded

step "aarch64 CLI under qemu"
bash scripts/cross-cli.sh

step "Python package"
bash scripts/python.sh

step "fuzzing (bounded)"
bash scripts/fuzz.sh

step "done"
