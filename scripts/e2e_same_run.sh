#!/usr/bin/env bash
# End-to-end same-run comparison on the 24-layer Vim-Ti files (docs/RESULTS.md "End to end"):
# per round, `vimvq bench` of a baseline binary and of this build on the f32 and 2-bit files
# (1 and 2 threads, and the 2-bit file with VIMVQ_KERNELS=avx2), then ONNX Runtime's DeiT-Ti
# (../shared/anchors/ort_deit.py, 1 thread); peak FMA (scripts/peak_fma.c) before and after.
# Prints the minimum latency (ms) of every run; take the minimum over the rounds.
#
# usage: scripts/e2e_same_run.sh BASELINE_VIMVQ F32.vimvq 2BIT.vimvq [ROUNDS=4] [ITERS=30]
# (files as made in docs/RESULTS.md "End to end"; VIMVQ_SHARED as in vs_onnxruntime.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,10p "$0"; exit 2; }
OLD=$1 F32=$2 Q2=$3 ROUNDS=${4:-4} IT=${5:-30}
ORT=${VIMVQ_SHARED:-../shared}/anchors/ort_deit.py
cargo build --release -q -p vimvq
NEW=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/vimvq
gcc -O2 -mavx2 -mfma scripts/peak_fma.c -o /tmp/vimvq_peak_fma
min() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["latency_ms"]["min"] if "latency_ms" in d else d["min_ms"])'; }
b() { "$1" bench "$2" --threads "$3" --iters "$IT" --warmup 3 --json | min; }
echo "peak before: $(/tmp/vimvq_peak_fma | tail -1)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: base_f32_1t $(b "$OLD" "$F32" 1) new_f32_1t $(b "$NEW" "$F32" 1)" \
       "base_2bit_1t $(b "$OLD" "$Q2" 1) new_2bit_1t $(b "$NEW" "$Q2" 1)" \
       "new_2bit_2t $(b "$NEW" "$Q2" 2) base_2bit_2t $(b "$OLD" "$Q2" 2) new_f32_2t $(b "$NEW" "$F32" 2)" \
       "ort_deit_1t $(python3 "$ORT" 1 "$IT" | min) new_2bit_1t_avx2 $(VIMVQ_KERNELS=avx2 b "$NEW" "$Q2" 1)"
done
echo "peak after: $(/tmp/vimvq_peak_fma | tail -1)"
