"""Writes a 24-layer Vim-Ti checkpoint with random weights (hustvl names) for speed runs:
layers 0/1 of tests/golden/vimti_random.safetensors repeated. Usage:
    python3 scripts/vimti24.py /tmp/vimti24.safetensors [DEPTH=24]
(a shorter DEPTH gives the same layer shapes: scripts/predict_pi.py traces a 3-layer copy).
"""
import sys

from safetensors.numpy import load_file, save_file

depth = int(sys.argv[2]) if len(sys.argv) > 2 else 24
src = load_file('tests/golden/vimti_random.safetensors')
out = {}
for name, value in src.items():
    if name.startswith('layers.'):
        _, i, rest = name.split('.', 2)
        for j in range(int(i), depth, 2):
            out[f'layers.{j}.{rest}'] = value.copy()
    else:
        out[name] = value
save_file(out, sys.argv[1])
