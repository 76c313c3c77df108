#!/usr/bin/env bash
# Vim-Ti 224 (2-bit, random weights) in vimvq vs DeiT-Ti in ONNX Runtime, one thread each, in
# alternating rounds on this machine; prints each round and the ratio of the minimum latencies
# (vimvq / ONNX Runtime). docs/RESULTS.md holds the measured figure.
#
# usage: scripts/vs_onnxruntime.sh [ROUNDS=4] [RUNS=30]
# Needs: python3 with onnxruntime, numpy and safetensors (pip install onnxruntime numpy
# safetensors); the anchors directory ../shared/anchors beside the checkout (DeiT-Ti ONNX file and
# ort_deit.py), or VIMVQ_SHARED=/path/to/shared. The Vim-Ti files are made once (as in
# docs/RESULTS.md) and cached in target/vimti/ (VIMVQ_VIMTI_DIR to change).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-4}
RUNS=${2:-30}
SHARED=${VIMVQ_SHARED:-../shared}
ORT=$SHARED/anchors/ort_deit.py

die() { echo "vs_onnxruntime: $*" >&2; exit 1; }
[ -f "$ORT" ] || die "$ORT not found: put the shared directory beside the checkout or set VIMVQ_SHARED"
python3 -c 'import onnxruntime, numpy' 2>/dev/null ||
    die "python3 cannot import onnxruntime and numpy: pip install onnxruntime numpy"
python3 -c 'import safetensors' 2>/dev/null || die "python3 cannot import safetensors: pip install safetensors"

cargo build --release -q -p vimvq
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
VIMVQ=$TARGET_DIR/release/vimvq
DIR=${VIMVQ_VIMTI_DIR:-$TARGET_DIR/vimti}
mkdir -p "$DIR"
MODEL=$DIR/vimti24-2bit.vimvq
if [ ! -f "$MODEL" ]; then
    echo "== making $MODEL (once)"
    python3 scripts/vimti24.py "$DIR/vimti24.safetensors"
    "$VIMVQ" pack "$DIR/vimti24.safetensors" --method kmeans --bits 2 \
        --calib models/fashion-mnist/calib --calib-count 8 -o "$MODEL.tmp" >/dev/null
    mv "$MODEL.tmp" "$MODEL"
fi

field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)"; }
best_v=inf best_o=inf
for r in $(seq 1 "$ROUNDS"); do
    v=$("$VIMVQ" bench "$MODEL" --threads 1 --iters "$RUNS" --warmup 3 --json | field 'd["latency_ms"]["min"]')
    o=$(python3 "$ORT" 1 "$RUNS" | field 'd["min_ms"]')
    echo "round $r: vimvq Vim-Ti 2-bit $v ms, onnxruntime DeiT-Ti $o ms"
    best_v=$(python3 -c "print(min(float('$best_v'), $v))")
    best_o=$(python3 -c "print(min(float('$best_o'), $o))")
done
ver=$(python3 -c 'import onnxruntime; print(onnxruntime.__version__)')
python3 -c "print(f'min over $ROUNDS rounds: vimvq Vim-Ti 2-bit {$best_v:.2f} ms, onnxruntime $ver DeiT-Ti {$best_o:.2f} ms, ratio {$best_v / $best_o:.2f}x')"
