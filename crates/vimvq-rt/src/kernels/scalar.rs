//! Portable scalar kernels: the reference implementation of every kernel (the "oracle").
//!
//! Written so that LLVM can auto-vectorise the hot loops for the baseline target, but with every
//! summation order fixed by the code (no fast-math, no FMA contraction in Rust), so results are
//! identical on every target and with or without `std`. Transcendentals come from `libm` (a port
//! of musl: `expf`, `log1pf` and `sqrtf` are accurate to < 1 ulp).
//!
//! # Numerical contract of the dot products
//! Every dot product `Σ_c a[c]·w[c]` of length `n` is evaluated as: eight lane sums
//! `s_j = Σ a[c]·w[c]` over `c ≡ j (mod 8)`, `c < n − n mod 8`, in increasing `c`; then
//! `((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7))`; then the `n mod 8` tail products added in increasing
//! `c`. Every output element of [`gemm_f32`], [`vq_gemm_f32`] and [`linear_f32`] is such a dot
//! product, independent of how rows and tokens are blocked, so a VQ matrix gives bit-identical
//! results to the same matrix decoded into dense f32, and computing a subset of rows gives the
//! same values as computing all of them.

use core::ops::Range;

use super::scan::{check, ScanInputs, ScanPlan, ScanWeights};
use super::{Codebook, Direction, MatMut, MatRef, VqMatrix, Weight};

/// Independent partial sums in every dot product (see the module's numerical contract).
pub const LANES: usize = 8;

/// Weight rows processed together by [`gemm_f32`] / [`vq_gemm_f32`] (one decoded VQ panel).
pub const PANEL_ROWS: usize = 4;

/// Scratch values [`vq_gemm_f32`] needs for a matrix of `cols` input features.
pub const fn vq_panel_len(cols: usize) -> usize {
    PANEL_ROWS * cols
}

#[inline(always)]
fn reduce(s: [f32; LANES]) -> f32 {
    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
}

/// Dot product of two equal-length slices, in the order of the module's numerical contract.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn dot_f32(a: &[f32], w: &[f32]) -> f32 {
    assert_eq!(a.len(), w.len());
    let n8 = a.len() - a.len() % LANES;
    let mut s = [0f32; LANES];
    for (ca, cw) in a[..n8].chunks_exact(LANES).zip(w[..n8].chunks_exact(LANES)) {
        for j in 0..LANES {
            s[j] += ca[j] * cw[j];
        }
    }
    let mut r = reduce(s);
    for (x, y) in a[n8..].iter().zip(&w[n8..]) {
        r += x * y;
    }
    r
}

/// Four dot products of `a` with `w[0..4]`, each bit-identical to [`dot_f32`].
#[inline(always)]
fn dot4_f32(a: &[f32], w: [&[f32]; PANEL_ROWS]) -> [f32; PANEL_ROWS] {
    let n = a.len();
    let n8 = n - n % LANES;
    let [w0, w1, w2, w3] = w;
    let (w0, w1, w2, w3) = (&w0[..n], &w1[..n], &w2[..n], &w3[..n]);
    let mut s = [[0f32; LANES]; PANEL_ROWS];
    let chunks = a[..n8]
        .chunks_exact(LANES)
        .zip(w0[..n8].chunks_exact(LANES))
        .zip(w1[..n8].chunks_exact(LANES))
        .zip(w2[..n8].chunks_exact(LANES))
        .zip(w3[..n8].chunks_exact(LANES));
    for ((((ca, c0), c1), c2), c3) in chunks {
        for j in 0..LANES {
            s[0][j] += ca[j] * c0[j];
            s[1][j] += ca[j] * c1[j];
            s[2][j] += ca[j] * c2[j];
            s[3][j] += ca[j] * c3[j];
        }
    }
    let mut r = [reduce(s[0]), reduce(s[1]), reduce(s[2]), reduce(s[3])];
    for c in n8..n {
        r[0] += a[c] * w0[c];
        r[1] += a[c] * w1[c];
        r[2] += a[c] * w2[c];
        r[3] += a[c] * w3[c];
    }
    r
}

/// `out[t][r0 + j] = a[t] · panel[j]` for `j < nrows`, every token `t`.
fn panel_times_tokens(
    a: &MatRef<'_>,
    panel: &[f32],
    nrows: usize,
    r0: usize,
    out: &mut MatMut<'_>,
) {
    let k = a.cols();
    if nrows == PANEL_ROWS {
        let w = [
            &panel[..k],
            &panel[k..2 * k],
            &panel[2 * k..3 * k],
            &panel[3 * k..4 * k],
        ];
        for t in 0..a.rows() {
            let r = dot4_f32(a.row(t), w);
            out.row_mut(t)[r0..r0 + PANEL_ROWS].copy_from_slice(&r);
        }
    } else {
        for t in 0..a.rows() {
            let at = a.row(t);
            let o = out.row_mut(t);
            for j in 0..nrows {
                o[r0 + j] = dot_f32(at, &panel[j * k..(j + 1) * k]);
            }
        }
    }
}

/// Dense GEMM over tokens: `out[t][r] = Σ_c a[t][c] · w[r][c]` for `t < a.rows()`,
/// `r < out.cols()`; `w` is `out.cols() × a.cols()` row-major (PyTorch `(out, in)`).
///
/// Each output is one dot product in the order of the module's contract (max relative error vs
/// an f64 evaluation ≈ `n · 2⁻²⁴ · Σ|a·w| / |Σ a·w|`).
///
/// # Panics
/// If `w.len() != out.cols() · a.cols()` or `out.rows() != a.rows()`.
pub fn gemm_f32(a: MatRef<'_>, w: &[f32], out: &mut MatMut<'_>) {
    let (k, n) = (a.cols(), out.cols());
    assert_eq!(w.len(), n * k, "gemm_f32: weight is not {n}×{k}");
    assert_eq!(out.rows(), a.rows(), "gemm_f32: token counts differ");
    let mut r0 = 0;
    while r0 < n {
        let nrows = PANEL_ROWS.min(n - r0);
        panel_times_tokens(&a, &w[r0 * k..(r0 + nrows) * k], nrows, r0, out);
        r0 += nrows;
    }
}

/// Decodes rows `r0 .. r0 + nrows` of a VQ matrix into `out` (`nrows × cols`, row-major).
///
/// Exact: every value is a codeword element (f16 codewords widened exactly).
///
/// # Panics
/// If the rows are out of range, `out` is too short, or an index/codebook slice is inconsistent
/// with `rows`, `cols`, `k`, `d` (a validated [`crate::model::Model`] never yields one).
pub fn vq_decode_rows_f32(w: &VqMatrix<'_>, r0: usize, nrows: usize, out: &mut [f32]) {
    assert!(
        r0 + nrows <= w.rows,
        "vq_decode_rows_f32: rows out of range"
    );
    let (cols, d) = (w.cols, w.d);
    for j in 0..nrows {
        let row = &mut out[j * cols..(j + 1) * cols];
        for (c, dst) in row.chunks_mut(d).enumerate() {
            let idx = w.index(r0 + j, c);
            assert!(idx < w.k, "vq_decode_rows_f32: index {idx} >= k {}", w.k);
            let len = dst.len();
            match w.codebook {
                Codebook::F32(cb) => dst.copy_from_slice(&cb[idx * d..idx * d + len]),
                Codebook::F16(cb) => {
                    for (o, h) in dst.iter_mut().zip(&cb[idx * d..idx * d + len]) {
                        *o = super::f16_to_f32(*h);
                    }
                }
            }
        }
    }
}

/// VQ GEMM over tokens: like [`gemm_f32`] with `W` given as a [`VqMatrix`]. Decodes
/// [`PANEL_ROWS`] weight rows at a time into `panel` ([`vq_panel_len`]`(cols)` values), then runs
/// the dense panel loop, so the result is bit-identical to [`gemm_f32`] on the decoded matrix.
///
/// # Panics
/// On shape mismatches (`w.cols != a.cols()`, `w.rows != out.cols()`, token counts) or a short
/// `panel`.
pub fn vq_gemm_f32(a: MatRef<'_>, w: &VqMatrix<'_>, out: &mut MatMut<'_>, panel: &mut [f32]) {
    let (k, n) = (a.cols(), out.cols());
    assert_eq!(w.cols, k, "vq_gemm_f32: input width differs");
    assert_eq!(w.rows, n, "vq_gemm_f32: output width differs");
    assert_eq!(out.rows(), a.rows(), "vq_gemm_f32: token counts differ");
    assert!(
        panel.len() >= vq_panel_len(k),
        "vq_gemm_f32: panel too small"
    );
    let mut r0 = 0;
    while r0 < n {
        let nrows = PANEL_ROWS.min(n - r0);
        vq_decode_rows_f32(w, r0, nrows, panel);
        panel_times_tokens(&a, &panel[..nrows * k], nrows, r0, out);
        r0 += nrows;
    }
}

/// A linear layer without bias, `out = a · Wᵀ`, dispatching on the weight's storage.
///
/// `panel` is only used for VQ weights and must then hold [`vq_panel_len`]`(a.cols())` values.
///
/// # Panics
/// As [`gemm_f32`] / [`vq_gemm_f32`].
pub fn linear_f32(a: MatRef<'_>, w: &Weight<'_>, out: &mut MatMut<'_>, panel: &mut [f32]) {
    match w {
        Weight::Dense(w) => gemm_f32(a, w, out),
        Weight::Vq(vq) => vq_gemm_f32(a, vq, out, panel),
    }
}

/// GEMV, one token: `out[r] = Σ_c x[c] · W[r][c]` (the classifier head, single-row read-outs),
/// dispatching on the weight's storage. Bit-identical to [`linear_f32`] on a one-row matrix (the
/// SIMD path, `dispatch::gemv_f32`, is the same one-token GEMM).
///
/// # Panics
/// As [`linear_f32`].
pub fn gemv_f32(x: &[f32], w: &Weight<'_>, out: &mut [f32], panel: &mut [f32]) {
    let n = out.len();
    linear_f32(
        MatRef::new(x, 1, x.len(), x.len()),
        w,
        &mut MatMut::new(out, 1, n, n),
        panel,
    );
}

/// Adds `bias` to every row of `out`.
///
/// # Panics
/// If `bias.len() != out.cols()`.
pub fn add_bias_f32(out: &mut MatMut<'_>, bias: &[f32]) {
    assert_eq!(bias.len(), out.cols());
    for t in 0..out.rows() {
        for (o, b) in out.row_mut(t).iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// `x · w` scaled by `1 / sqrt(mean(x²) + eps)`: RMSNorm of one row, `out[i] = (x[i]·rstd)·w[i]`.
///
/// `Σx²` uses the dot-product order of the module's contract, `mean = Σx² / n` (f32).
///
/// # Panics
/// If the lengths differ.
pub fn rmsnorm_f32(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert!(x.len() == w.len() && x.len() == out.len());
    let rstd = rstd_f32(x, eps);
    for ((o, xi), wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * rstd * wi;
    }
}

#[inline]
fn rstd_f32(x: &[f32], eps: f32) -> f32 {
    let ms = dot_f32(x, x) / x.len() as f32;
    1.0 / libm::sqrtf(ms + eps)
}

/// Fused residual add + RMSNorm of one row (Mamba's `rms_norm_fn(prenorm=True)`):
/// `residual += hidden`, then `hidden = RMSNorm(residual) · w`.
///
/// # Panics
/// If the lengths differ.
pub fn add_rmsnorm_f32(residual: &mut [f32], hidden: &mut [f32], w: &[f32], eps: f32) {
    assert!(residual.len() == hidden.len() && residual.len() == w.len());
    for (r, h) in residual.iter_mut().zip(hidden.iter()) {
        *r += h;
    }
    let rstd = rstd_f32(residual, eps);
    for ((h, r), wi) in hidden.iter_mut().zip(residual.iter()).zip(w) {
        *h = r * rstd * wi;
    }
}

/// SiLU, `x / (1 + exp(−x))`.
#[inline]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// Applies [`silu_f32`] to every element.
pub fn silu_inplace_f32(xs: &mut [f32]) {
    for x in xs {
        *x = silu_f32(*x);
    }
}

/// The bimamba-v2 combine step at one position: `acc[i] = acc[i]·silu(z[i])·½`, where `acc`
/// holds the sum of the two directions' scan outputs and `z` the gate half of `in_proj`'s output
/// (both directions are gated by the same `silu(z)`, then averaged).
///
/// # Panics
/// If the lengths differ.
pub fn combine_gate_f32(acc: &mut [f32], z: &[f32]) {
    assert_eq!(acc.len(), z.len(), "combine_gate_f32: lengths differ");
    for (a, z) in acc.iter_mut().zip(z) {
        *a = *a * silu_f32(*z) * 0.5;
    }
}

/// Softplus with PyTorch's threshold rule: `x` if `x > 20`, else `log1p(exp(x))`.
#[inline]
pub fn softplus_f32(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        libm::log1pf(libm::expf(x))
    }
}

/// `out[i] = −exp(a_log[i])`: the SSM state matrix `A` from its stored logarithm.
///
/// # Panics
/// If the lengths differ.
pub fn neg_exp_f32(a_log: &[f32], out: &mut [f32]) {
    assert_eq!(a_log.len(), out.len());
    for (o, a) in out.iter_mut().zip(a_log) {
        *o = -libm::expf(*a);
    }
}

/// Depthwise conv1d (`K` taps, zero padding) over the token axis followed by SiLU, for the tokens
/// in `steps`:
///
/// * [`Direction::Forward`] (causal): `out[t][e] = silu(b[e] + Σ_{k<K} w[e][k]·x[t−K+1+k][e])`;
/// * [`Direction::Backward`] (anti-causal): `out[t][e] = silu(b[e] + Σ_{k<K} w[e][k]·x[t+K−1−k][e])`,
///
/// with `x[s] = 0` outside `0 .. x.rows()`. The sum starts from the bias and adds the taps in
/// increasing `k` (the order of the CUDA `causal_conv1d_fwd` kernel). `w` is `E × K` row-major.
///
/// # Panics
/// If `steps` exceeds `x.rows()`, `out` has fewer rows than `steps.end`, or widths differ.
pub fn conv1d_silu_f32(
    dir: Direction,
    x: MatRef<'_>,
    w: &[f32],
    bias: &[f32],
    steps: Range<usize>,
    out: &mut MatMut<'_>,
) {
    let e = x.cols();
    assert!(
        e > 0 && w.len().is_multiple_of(e),
        "conv1d_silu_f32: weight is not E×K"
    );
    let kk = w.len() / e;
    assert!(bias.len() == e && out.cols() == e);
    assert!(steps.end <= x.rows() && steps.end <= out.rows());
    let l = x.rows();
    for t in steps {
        let o = out.row_mut(t);
        o.copy_from_slice(bias);
        for k in 0..kk {
            let src = match dir {
                Direction::Forward => (t + k).checked_sub(kk - 1),
                Direction::Backward => Some(t + (kk - 1 - k)).filter(|s| *s < l),
            };
            let Some(src) = src else { continue };
            let xs = x.row(src);
            for ((oe, xe), we) in o.iter_mut().zip(xs).zip(w.chunks_exact(kk)) {
                *oe += we[k] * xe;
            }
        }
        silu_inplace_f32(o);
    }
}

/// The selective scan oracle: runs one direction ([`super::scan`] states the recurrence); `h` is
/// the `E × N` state (overwritten). `exp` is `libm::expf(δ·A)`.
///
/// Every output is computed by the same sequence of f32 operations whatever `steps`/`emit` are,
/// so restricting them (the last-layer shortcut) leaves the emitted values bit-identical.
///
/// # Panics
/// If shapes are inconsistent or the plan violates the rules on [`ScanPlan`].
pub fn selective_scan_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    h: &mut [f32],
) {
    check(w, x, plan, acc, h);
    selective_scan_channels_f32(w, x, plan, acc, 0, h, 0..x.u.cols());
}

/// [`selective_scan_f32`] restricted to the channels `ch` (the scan is independent per
/// channel; threads split it this way): `h` holds at least `ch.len() · N` values (the state of
/// those channels), and the output of channel `e` goes to column `e − acc_col0` of `acc`.
/// Bit-identical to the corresponding columns of the whole-width scan.
///
/// # Panics
/// If shapes are inconsistent or the plan violates the rules on [`ScanPlan`].
pub fn selective_scan_channels_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    let n = w.d_state;
    let nc = ch.len();
    assert!(h.len() >= nc * n && ch.end <= x.u.cols() && w.a.len() >= ch.end * n);
    assert!(ch.start >= acc_col0 && ch.end - acc_col0 <= acc.cols());
    let h = &mut h[..nc * n];
    h.fill(0.0);
    let ch0 = ch.start;
    let mut step = |t: usize| {
        let xd = x.x_dbl.row(t);
        let b = &xd[w.dt_rank..w.dt_rank + n];
        let c = &xd[w.dt_rank + n..w.dt_rank + 2 * n];
        let (u, delta) = (x.u.row(t), x.delta.row(t));
        let emit = plan.emit.contains(&t);
        let out = acc.row_mut(t);
        for ch in ch.clone() {
            let dt = softplus_f32(delta[ch] + w.dt_bias[ch]);
            let uu = u[ch];
            let du = dt * uu;
            let hs = &mut h[(ch - ch0) * n..(ch - ch0 + 1) * n];
            let ar = &w.a[ch * n..(ch + 1) * n];
            if !emit {
                for i in 0..n {
                    hs[i] = libm::expf(dt * ar[i]) * hs[i] + du * b[i];
                }
            } else {
                let mut y = 0f32;
                for i in 0..n {
                    let hn = libm::expf(dt * ar[i]) * hs[i] + du * b[i];
                    hs[i] = hn;
                    y += hn * c[i];
                }
                let o = y + w.d_skip[ch] * uu;
                if plan.accumulate {
                    out[ch - acc_col0] += o;
                } else {
                    out[ch - acc_col0] = o;
                }
            }
        }
    };
    match plan.dir {
        Direction::Forward => plan.steps.clone().for_each(&mut step),
        Direction::Backward => plan.steps.clone().rev().for_each(&mut step),
    }
}
