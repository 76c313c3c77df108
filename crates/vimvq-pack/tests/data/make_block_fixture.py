#!/usr/bin/env python3
"""Writes the block-forward parity fixture used by crates/vimvq-pack/tests/block_grad.rs.

One random Vim-like mixer (magnitudes of `random_state_dict` in vim_numpy_ref.py), a batch of
RMS-normalised inputs `hn`, and the float64 outputs of the reference `mixer_direct` (cross-checked
against the literal PyTorch transcription `mixer_flip`). Parameters and inputs are rounded to f32
first, so an f32 loader sees exactly the values the f64 reference used.

A few Δ biases are set above 20 so that the softplus threshold branch (identity) is exercised.

Output (next to this script):
  block_fixture.json  dims + list of {name, shape, offset, len} (offset/len in f64 elements)
  block_fixture.bin   all tensors concatenated, little-endian float64

Usage: python3 make_block_fixture.py   (numpy only; deterministic)
"""
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..', '..', '..'))
sys.path.insert(0, os.path.join(REPO, 'models', 'tools'))  # vendored copy of the shared reference
import vim_numpy_ref as ref  # noqa: E402

D, E, R, N, K = 24, 48, 2, 16, 4
L, B = 13, 2
PREFIX = 'layers.0.mixer.'


def f32(a):
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def delta_pre(h, sd, sfx, direction):
    """Δ pre-activation (L, E) of one branch, as in ref.mixer_direct."""
    W_in = sd[PREFIX + 'in_proj.weight']
    x = h @ W_in[:E].T
    w = sd[PREFIX + 'conv1d' + sfx + '.weight'][:, 0, :]
    u = np.empty((L, E))
    for t in range(L):
        s = sd[PREFIX + 'conv1d' + sfx + '.bias'].copy()
        for k in range(K):
            src = t - (K - 1 - k) if direction > 0 else t + (K - 1 - k)
            if 0 <= src < L:
                s = s + w[:, k] * x[src]
        u[t] = ref.silu(s)
    xd = u @ sd[PREFIX + 'x_proj' + sfx + '.weight'].T
    return xd[:, :R] @ sd[PREFIX + 'dt_proj' + sfx + '.weight'].T + sd[PREFIX + 'dt_proj' + sfx + '.bias']


def main():
    rng = np.random.default_rng(20250309)
    sd = {}
    for sfx in ('', '_b'):
        sd['conv1d' + sfx + '.weight'] = rng.normal(0, 0.3, (E, 1, K))
        sd['conv1d' + sfx + '.bias'] = rng.normal(0, 0.1, (E,))
        sd['x_proj' + sfx + '.weight'] = rng.normal(0, 0.05, (R + 2 * N, E))
        sd['dt_proj' + sfx + '.weight'] = rng.uniform(-R ** -0.5, R ** -0.5, (E, R))
        dt = np.exp(rng.uniform(math.log(1e-3), math.log(0.1), (E,)))
        sd['dt_proj' + sfx + '.bias'] = dt + np.log(-np.expm1(-dt))  # inverse softplus
        sd['D' + sfx] = 1 + rng.normal(0, 0.1, (E,))
    sd['A_log'] = np.log(np.tile(np.arange(1, N + 1), (E, 1))) + rng.normal(0, 0.1, (E, N))
    sd['A_b_log'] = np.log(np.tile(np.arange(1, N + 1), (E, 1))) + rng.normal(0, 0.1, (E, N))
    sd['in_proj.weight'] = rng.normal(0, 0.05, (2 * E, D))
    sd['out_proj.weight'] = rng.normal(0, 0.05, (D, E))
    # Softplus threshold branch: pre-activations well above 20 on a few channels.
    sd['dt_proj.bias'][[0, 7]] = [24.0, 31.5]
    sd['dt_proj_b.bias'][[3]] = [22.5]
    sd = {PREFIX + k: f32(v) for k, v in sd.items()}

    norm_w = 1 + rng.normal(0, 0.1, (D,))
    hn = f32(np.stack([ref.rmsnorm(rng.normal(0, 1, (L, D)) * 2.0, norm_w) for _ in range(B)]))
    y = np.stack([ref.mixer_direct(hn[b], sd, PREFIX) for b in range(B)])
    y_flip = np.stack([ref.mixer_flip(hn[b], sd, PREFIX) for b in range(B)])
    err = np.max(np.abs(y - y_flip)) / np.max(np.abs(y))
    assert err < 1e-13, err

    # Check the softplus branch really is taken (and that no pre-activation sits at the kink).
    n_above = 0
    for sfx, direction, ch in (('', +1, [0, 7]), ('_b', -1, [3])):
        for b in range(B):
            pre = delta_pre(hn[b], sd, sfx, direction)
            assert np.all(pre[:, ch] > 21.0), pre[:, ch].min()
            assert np.all(np.abs(pre - 20.0) > 0.5)
            n_above += int(np.sum(pre > 20.0))
    print(f'{n_above} delta pre-activations above the softplus threshold')

    tensors = [(k, v) for k, v in sorted(sd.items())] + [('hn', hn), ('y', y)]
    meta = {'dims': {'d_model': D, 'd_inner': E, 'dt_rank': R, 'd_state': N, 'd_conv': K,
                     'seq_len': L, 'batch': B},
            'flip_vs_direct_rel_err': float(err),
            'tensors': []}
    blob = []
    off = 0
    for name, v in tensors:
        flat = np.ascontiguousarray(v, dtype='<f8').reshape(-1)
        meta['tensors'].append({'name': name, 'shape': list(v.shape), 'offset': off, 'len': int(flat.size)})
        blob.append(flat)
        off += flat.size
    with open(os.path.join(HERE, 'block_fixture.bin'), 'wb') as f:
        f.write(np.concatenate(blob).tobytes())
    with open(os.path.join(HERE, 'block_fixture.json'), 'w') as f:
        json.dump(meta, f, indent=1)
        f.write('\n')
    print(f'wrote {off} f64 ({off * 8} bytes); flip vs direct rel err {err:.2e}; max|y| {np.max(np.abs(y)):.3f}')


if __name__ == '__main__':
    main()
