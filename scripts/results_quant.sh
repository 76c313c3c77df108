#!/usr/bin/env bash
# Regenerates the "Quantization" section of docs/RESULTS.md: packs the bundled Fashion-MNIST Vim
# with every method at 3/2/1 bits (plus the 2-bit ablation and tuning runs), evaluates each on the
# full test set against the f32 model, and rewrites the section. About 1.5 hours on 2 idle cores
# (each run reuses its results in the output folder unless --force).
# Arguments are passed to scripts/results_quant.py (--out DIR, --force, --only NAME...).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin vimvq
exec python3 scripts/results_quant.py "$@"
