#!/usr/bin/env python3
"""Fits the scan's `2^f` polynomial (`SCAN_EXP2_P` in crates/vimvq-rt/src/kernels/scan_simd.rs).

`2^f ≈ 1 + f·(ln 2 + f·(P1 + f·(P2 + f·P3)))` on `[−½, ½]`: degree 4 with `p(0) = 1` and
`p'(0) = ln 2` fixed, so the error near `f = 0` is O(f²). The remaining three coefficients
minimise the largest relative error weighted by how far an error compounds in the scan: a step's
decay `e = 2^x` with `k = 0` (`x = f ∈ [−½, 0]`) carries a relative error into the state for
about `e/(1 − e)` steps (capped at 197, Vim-Ti's sequence), any other `x` for at most
`2^−½/(1 − 2^−½) ≈ 2.4`. Lawson's iteration of weighted least squares gives the minimax
coefficients. Prints them and their errors when evaluated in f32 by FMA Horner, as the kernels
do. Needs numpy.

usage: python3 scripts/fit_scan_exp2.py
"""
import numpy as np

LN2 = np.log(2.0)
CAP = 197.0


def weight(f):
    e = 2.0**f
    w = np.where(f < 0, e / np.maximum(1.0 - e, 1e-300), 0.0)
    return np.clip(w, 2.0**-0.5 / (1.0 - 2.0**-0.5), CAP)


def fit():
    f = np.cos(np.linspace(0.0, np.pi, 8001)) * 0.5
    f = f[np.abs(f) > 1e-9]
    scale = weight(f) / 2.0**f
    a = np.stack([f**k for k in (2, 3, 4)], 1) * scale[:, None]
    b = (2.0**f - 1.0 - LN2 * f) * scale
    w = np.full(len(f), 1.0 / len(f))
    for _ in range(3000):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
        err = np.abs(a @ c - b)
        w = w * err
        w /= w.sum()
    return [np.float32(v) for v in c]


def eval_f32(p, x):
    """`1 + x·(ln 2 + x·(P1 + x·(P2 + x·P3)))` by f32 FMAs (an FMA is exact in f64, then rounded)."""
    coefs = [np.float32(1.0), np.float32(LN2)] + list(p)
    x64 = x.astype(np.float64)
    acc = np.full_like(x, coefs[-1])
    for c in coefs[-2::-1]:
        acc = (acc.astype(np.float64) * x64 + np.float64(c)).astype(np.float32)
    return acc


def main():
    p = fit()
    x = np.linspace(-0.5, 0.5, 2_000_001).astype(np.float32)
    rel = np.abs(eval_f32(p, x).astype(np.float64) / 2.0 ** x.astype(np.float64) - 1.0)
    near = np.abs(x) <= 1.0 / 32
    print("SCAN_EXP2_P (P1, P2, P3):", ", ".join(repr(float(v)) for v in p))
    print(f"max relative error on [-1/2, 1/2]: {rel.max():.2e}")
    print(f"max relative error on [-1/32, 1/32]: {rel[near].max():.2e}")
    print(f"max error x compounding weight: {(rel * weight(x.astype(np.float64))).max():.2e}")


if __name__ == "__main__":
    main()
