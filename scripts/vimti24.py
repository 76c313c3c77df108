"""Writes a 24-layer Vim-Ti checkpoint with random weights (hustvl names) for speed runs:
layers 0/1 of tests/golden/vimti_random.safetensors repeated. Usage:
    python3 scripts/vimti24.py /tmp/vimti24.safetensors
"""
import sys

from safetensors.numpy import load_file, save_file

src = load_file('tests/golden/vimti_random.safetensors')
out = {}
for name, value in src.items():
    if name.startswith('layers.'):
        _, i, rest = name.split('.', 2)
        for j in range(int(i), 24, 2):
            out[f'layers.{j}.{rest}'] = value.copy()
    else:
        out[name] = value
save_file(out, sys.argv[1])
