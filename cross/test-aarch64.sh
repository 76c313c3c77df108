#!/usr/bin/env bash
# Runs the vimvq-rt tests for aarch64-unknown-linux-gnu under qemu user-mode emulation, once as a
# Raspberry Pi 4 (cortex-a72) and once as a Pi 5 (cortex-a76), so every aarch64 kernel level
# (scalar, neon) is checked against the scalar oracle on both CPU models. Emulated timings
# mean nothing; only results are checked.
#
# Non-interactive; as root on a fresh Debian it installs what is missing (Debian's cross gcc and
# libc, qemu-user-static, rustup's aarch64 std). The linker and runner come from
# .cargo/config.toml. Usage: cross/test-aarch64.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
export DEBIAN_FRONTEND=noninteractive

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "== rustup target add $TARGET"
    rustup target add "$TARGET"
fi

# Emulation is ~50x slower: the SIMD suite drops its largest shapes (every tail is still tested).
export VIMVQ_TEST_QUICK=1
# Build once (the same binaries serve both CPUs), then run per CPU.
cargo test -p vimvq-rt --target "$TARGET" --release --no-run "$@"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for cpu in cortex-a72 cortex-a76; do
    echo "== QEMU_CPU=$cpu"
    status=0
    QEMU_CPU=$cpu cargo test -p vimvq-rt --target "$TARGET" --release "$@" -- --nocapture \
        >"$log" 2>&1 || status=$?
    grep -E "SKIP|^test result|FAILED|panicked|^neon .*rel" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "FAILED under QEMU_CPU=$cpu"
        exit 1
    fi
done
echo "== aarch64 tests passed under cortex-a72 and cortex-a76"
