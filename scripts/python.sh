#!/usr/bin/env bash
# The Python package from the checkout: builds and installs `vimvq` (crates/vimvq-py) into a fresh
# venv with pip (maturin from PyPI as the PEP 517 backend), runs its pytest suite against the CLI,
# runs the README and docs/DEPLOY.md OpenCV examples as written (on a short ffmpeg-made video of
# the sample images), and cross-builds the aarch64 abi3 wheel with the Debian cross toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
step() { printf '\n== python: %s (%s)\n' "$*" "$(date +%T)"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "CLI (the tests' reference)"
cargo build --release --bin vimvq
export VIMVQ_BIN=$root/target/release/vimvq

step "fresh venv: pip install ./crates/vimvq-py"
python3 -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q maturin pytest numpy opencv-python-headless
"$py" -m pip install -q ./crates/vimvq-py
"$py" -c 'import vimvq; print("vimvq", vimvq.__version__, vimvq.__file__)'

step "pytest"
rc=0
(cd "$work" && "$py" -m pytest -q -p no:cacheprovider "$root/crates/vimvq-py/tests") || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "python: pytest failed (exit $rc)" >&2
  exit "$rc"
fi

# The first ```python block after a marker line in a Markdown file.
snippet() { awk -v m="$2" 'index($0, m) {f=1} f && /^```python/ {p=1; next} p && /^```/ {exit} p' "$1"; }

step "README example"
(cd "$work" && mkdir -p models && ln -s "$root/models/fashion-mnist" models/fashion-mnist &&
  "$VIMVQ_BIN" pack models/fashion-mnist/vim_fmnist.safetensors --calib models/fashion-mnist/calib \
    --bits 2 --method kmeans -o fmnist-2bit.vimvq >/dev/null &&
  snippet "$root/README.md" '<!-- python-example -->' > readme.py &&
  "$py" readme.py | tee readme.out && grep -q "Ankle boot" readme.out)

step "DEPLOY OpenCV example on an ffmpeg-made video"
ffmpeg -loglevel error -y -framerate 4 -pattern_type glob -i "$root/models/fashion-mnist/samples/*.png" \
  -vf scale=112:112 -c:v mjpeg -q:v 2 "$work/samples.avi"
snippet docs/DEPLOY.md '<!-- opencv-example -->' > "$work/opencv_video.py"
"$py" "$work/opencv_video.py" "$work/fmnist-2bit.vimvq" "$work/samples.avi" | tee "$work/video.out"
frames=$(grep -c . "$work/video.out")
[ "$frames" -eq "$(ls "$root"/models/fashion-mnist/samples/*.png | wc -l)" ] ||
  { echo "python: OpenCV example printed $frames lines" >&2; exit 1; }

step "aarch64 wheel (cross)"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
"$work/venv/bin/maturin" build --release --target aarch64-unknown-linux-gnu \
  -m crates/vimvq-py/Cargo.toml -o "$work/wheels"
ls "$work"/wheels/*aarch64*.whl
