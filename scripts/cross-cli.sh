#!/usr/bin/env bash
# Cross-compiles the release `vimvq` for aarch64-unknown-linux-gnu with Debian's cross toolchain
# (no Docker), then runs `import`, `run`, `stream` (rgb24 and i420) and `bench` under
# qemu-aarch64-static as a Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5), checking that every top-1
# equals the x86-64 build's. Emulated timings mean nothing; results must match.
# Self-contained: installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user-static,
# ffmpeg and the rustup target if missing. Exit status 0 = all good.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=aarch64-unknown-linux-gnu

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE" || rustup target add "$TRIPLE"

# .cargo/config.toml sets linker = aarch64-linux-gnu-gcc for this target; export it as well so
# the script also works from a checkout without that file.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
cargo build --release -q -p vimvq
cargo build --release -q -p vimvq --target "$TRIPLE"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
X86=$TARGET_DIR/release/vimvq
ARM=$TARGET_DIR/$TRIPLE/release/vimvq
file "$ARM" | grep -q "ARM aarch64" || { echo "$ARM is not an aarch64 binary" >&2; exit 1; }
echo "aarch64 binary: $ARM ($(stat -c %s "$ARM") bytes)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -f models/fashion-mnist/vim_fmnist.safetensors ]; then
  CK=models/fashion-mnist/vim_fmnist.safetensors
else
  echo "note: bundled model absent, using the tiny fixture checkpoint"
  CK=crates/vimvq-pack/tests/data/tiny.safetensors
fi

photos=()
for p in models/fashion-mnist/samples/*.png; do [ -f "$p" ] && photos+=("$p"); done
for n in astronaut chelsea coffee camera horse; do
  p=/usr/lib/python3/dist-packages/skimage/data/$n.png
  [ -f "$p" ] && photos+=("$p")
done
[ ${#photos[@]} -gt 0 ] || { echo "no photos found" >&2; exit 1; }
# A 160x120 raw stream of all photos, both formats.
i=0
for p in "${photos[@]}"; do
  ffmpeg -v error -y -i "$p" -vf scale=160:120 -pix_fmt rgb24 -frames:v 1 "$WORK/f_$(printf %03d $i).png"
  i=$((i + 1))
done
ffmpeg -v error -i "$WORK/f_%03d.png" -f rawvideo -pix_fmt rgb24 "$WORK/all.rgb"
ffmpeg -v error -i "$WORK/f_%03d.png" -f rawvideo -pix_fmt yuv420p "$WORK/all.yuv"

top1() { sed -n 's/.*"top":\[{"class":\([0-9]*\).*/\1/p'; }
# `run --json` prints one object for all images: one top-1 per output.
run_top1() { grep -o '"top":\[{"class":[0-9]*' | sed 's/.*://'; }

"$X86" import "$CK" -o "$WORK/x86.vimvq" >/dev/null
"$X86" run "$WORK/x86.vimvq" "${photos[@]}" --json | run_top1 >"$WORK/x86.run"
"$X86" stream "$WORK/x86.vimvq" --size 160x120 --format rgb24 <"$WORK/all.rgb" 2>/dev/null | top1 >"$WORK/x86.rgb"
"$X86" stream "$WORK/x86.vimvq" --size 160x120 --format i420 <"$WORK/all.yuv" 2>/dev/null | top1 >"$WORK/x86.i420"

fails=0
for cpu in cortex-a72 cortex-a76; do
  export QEMU_CPU=$cpu
  q=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$ARM")
  "${q[@]}" import "$CK" -o "$WORK/arm.vimvq" >/dev/null
  cmp -s "$WORK/x86.vimvq" "$WORK/arm.vimvq" || { echo "$cpu: import output differs from x86" >&2; fails=$((fails + 1)); }
  "${q[@]}" run "$WORK/arm.vimvq" "${photos[@]}" --json | run_top1 >"$WORK/$cpu.run"
  "${q[@]}" stream "$WORK/arm.vimvq" --size 160x120 --format rgb24 <"$WORK/all.rgb" 2>"$WORK/$cpu.err" | top1 >"$WORK/$cpu.rgb"
  "${q[@]}" stream "$WORK/arm.vimvq" --size 160x120 --format i420 <"$WORK/all.yuv" 2>>"$WORK/$cpu.err" | top1 >"$WORK/$cpu.i420"
  "${q[@]}" bench "$WORK/arm.vimvq" --iters 5 --warmup 1 --json >"$WORK/$cpu.bench"
  for kind in run rgb i420; do
    n=$(wc -l <"$WORK/$cpu.$kind")
    if [ "$n" -ne ${#photos[@]} ] || ! cmp -s "$WORK/x86.$kind" "$WORK/$cpu.$kind"; then
      echo "$cpu $kind: top-1 differs from x86 (or wrong count $n)" >&2
      paste "$WORK/x86.$kind" "$WORK/$cpu.$kind" >&2
      fails=$((fails + 1))
    fi
  done
  grep -q '"ops_ms":{"patch_embed"' "$WORK/$cpu.bench" || { echo "$cpu: bad bench JSON" >&2; fails=$((fails + 1)); }
  echo "$cpu: run/stream(rgb24, i420) top-1 = x86 on ${#photos[@]} photos; $(head -1 "$WORK/$cpu.err")"
  echo "$cpu: bench (emulated, timings meaningless): $(cat "$WORK/$cpu.bench")"
done

if [ "$fails" -ne 0 ]; then
  echo "FAIL: $fails problem(s)" >&2
  exit 1
fi
echo "OK: aarch64 vimvq (run, stream, bench) matches x86 under qemu cortex-a72 and cortex-a76"
