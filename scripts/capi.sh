#!/usr/bin/env bash
# C API end to end: builds libvimvq_capi (static + shared), compiles examples/classify.c with gcc
# against each, classifies real photos (the bundled Fashion-MNIST samples, skimage's photographs)
# converted to raw RGB24 and I420 frames by ffmpeg, checks the top-1 against `vimvq run` /
# `vimvq stream`, and runs the example under valgrind (no leaks, no invalid accesses).
# Self-contained: installs gcc, valgrind, ffmpeg if missing. Exit status 0 = all good.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v valgrind >/dev/null || need+=(valgrind)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release -q -p vimvq-capi -p vimvq
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
LIB=$TARGET_DIR/release
VIMVQ=$LIB/vimvq
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

gcc -std=c99 -O2 -g -Wall -Wextra -Werror -I crates/vimvq-capi/include crates/vimvq-capi/examples/classify.c \
  "$LIB/libvimvq_capi.a" -lpthread -ldl -lm -o "$WORK/classify_static"
gcc -std=c99 -O2 -g -Wall -Wextra -Werror -I crates/vimvq-capi/include crates/vimvq-capi/examples/classify.c \
  -L "$LIB" -lvimvq_capi -Wl,-rpath,"$LIB" -o "$WORK/classify_shared"
echo "built classify (static: $(stat -c %s "$WORK/classify_static") bytes, shared lib: $(stat -c %s "$LIB/libvimvq_capi.so") bytes)"

if [ -f models/fashion-mnist/vim_fmnist.safetensors ]; then
  CK=models/fashion-mnist/vim_fmnist.safetensors
else
  echo "note: bundled model absent, using the tiny fixture checkpoint"
  CK=crates/vimvq-pack/tests/data/tiny.safetensors
fi
MODEL=$WORK/model.vimvq
"$VIMVQ" import "$CK" -o "$MODEL" >/dev/null

photos=()
for p in models/fashion-mnist/samples/*.png; do [ -f "$p" ] && photos+=("$p"); done
for n in astronaut chelsea coffee camera motorcycle_left horse; do
  p=/usr/lib/python3/dist-packages/skimage/data/$n.png
  [ -f "$p" ] && photos+=("$p")
done
[ ${#photos[@]} -gt 0 ] || { echo "no photos found" >&2; exit 1; }

fails=0
checked=0
for p in "${photos[@]}"; do
  size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$p")
  w=${size%x*}; h=${size#*x}
  base=$WORK/$(basename "$p" .png)
  ffmpeg -v error -y -i "$p" -f rawvideo -pix_fmt rgb24 "$base.rgb"
  ffmpeg -v error -y -i "$p" -f rawvideo -pix_fmt yuv420p "$base.yuv"
  want=$("$VIMVQ" run "$MODEL" "$p" --json --topk 1 | sed -n 's/.*"top":\[{"class":\([0-9]*\).*/\1/p')
  want420=$("$VIMVQ" stream "$MODEL" --size "$size" --format i420 --topk 1 <"$base.yuv" 2>/dev/null \
    | sed -n 's/.*"top":\[{"class":\([0-9]*\).*/\1/p')
  got=$("$WORK/classify_static" "$MODEL" rgb24 "$w" "$h" "$base.rgb" | cut -f2)
  got_mem=$("$WORK/classify_shared" --memory "$MODEL" rgb24 "$w" "$h" "$base.rgb" | cut -f2)
  got420=$("$WORK/classify_static" "$MODEL" i420 "$w" "$h" "$base.yuv" | cut -f2)
  status=ok
  [ -n "$want" ] && [ -n "$want420" ] || { echo "no top-1 from the CLI for $p" >&2; fails=$((fails + 1)); }
  if [ "$got" != "$want" ] || [ "$got_mem" != "$want" ] || [ "$got420" != "$want420" ]; then
    status=MISMATCH; fails=$((fails + 1))
  fi
  checked=$((checked + 1))
  printf '%-60s %9s  run %s  C %s (memory %s)  stream-i420 %s  C-i420 %s  %s\n' \
    "$p" "$size" "$want" "$got" "$got_mem" "$want420" "$got420" "$status"
done

# Valgrind: every path (file + memory open, RGB + I420, static + shared), on two photos.
vg=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1)
p=${photos[0]}; size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$p")
q=${photos[$((${#photos[@]} - 1))]}; qsize=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$q")
b=$WORK/$(basename "$p" .png); c=$WORK/$(basename "$q" .png)
"${vg[@]}" "$WORK/classify_static" "$MODEL" rgb24 "${size%x*}" "${size#*x}" "$b.rgb" >/dev/null
"${vg[@]}" "$WORK/classify_static" --memory "$MODEL" i420 "${size%x*}" "${size#*x}" "$b.yuv" >/dev/null
"${vg[@]}" "$WORK/classify_shared" "$MODEL" rgb24 "${qsize%x*}" "${qsize#*x}" "$c.rgb" >/dev/null
"${vg[@]}" "$WORK/classify_shared" --memory "$MODEL" i420 "${qsize%x*}" "${qsize#*x}" "$c.yuv" >/dev/null
# Error paths under valgrind too: a missing model, a wrong frame size.
if "${vg[@]}" "$WORK/classify_static" /nonexistent.vimvq rgb24 4 4 "$b.rgb" 2>"$WORK/err.txt"; then
  echo "missing model was not an error" >&2; fails=$((fails + 1))
fi
grep -q "cannot read the model file" "$WORK/err.txt" || { cat "$WORK/err.txt"; fails=$((fails + 1)); }
if "${vg[@]}" "$WORK/classify_static" "$MODEL" rgb24 5 5 "$b.rgb" 2>"$WORK/err.txt" >/dev/null; then
  echo "wrong frame size was not an error" >&2; fails=$((fails + 1))
fi
grep -q "frame holds" "$WORK/err.txt" || { cat "$WORK/err.txt"; fails=$((fails + 1)); }
echo "valgrind: clean"

if [ "$fails" -ne 0 ]; then
  echo "FAIL: $fails problem(s) over $checked photos" >&2
  exit 1
fi
echo "OK: C API top-1 equals the CLI on $checked photos (rgb24 and i420, static and shared, file and memory)"
