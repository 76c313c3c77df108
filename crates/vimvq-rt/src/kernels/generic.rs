//! One kernel body per operation, generic over a small SIMD primitive set ([`Simd`]).
//!
//! `kernels/avx2.rs` and `kernels/neon.rs` implement [`Simd`] with intrinsics and instantiate these
//! bodies inside `#[target_feature]` entry points (style rule 6: same primitives per ISA, one body).
//! Everything here is `#[inline(always)]` so that it is compiled with the entry point's features.
//!
//! The numerical contracts (vs the scalar oracle in [`super::scalar`]) are stated on the public
//! entry points of each ISA module; in short:
//! * GEMM/GEMV (dense and VQ): each output differs from the oracle's by at most
//!   `1e-6 · Σ_c |a_c·w_c|` (FMA and a different summation order; f32 accumulation).
//! * [`exp_k`]: max relative error 3e-7 vs `libm::expf` for `|x| ≤ 86.5`; below −86.5 it
//!   returns `exp(−86.5) ≈ 2.8e-38` instead of a smaller value (absolute error < 3e-38).
//! * [`silu_k`], [`softplus_k`]: max relative error 1e-6 vs the oracle's libm formulas.
//! * scan: in `kernels/scan_simd.rs` (5e-5 of the output scale).

// Only instantiated on targets with a SIMD level (x86-64, aarch64).
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use core::ops::Range;

use super::scan::Tile;
use super::{f16_to_f32, Codebook, Direction, IndexLayout, Indices, MatMut, MatRef, VqMatrix};

/// Rows of `W` per packed panel (`NRV · LANES` on every ISA).
pub const NR: usize = 16;
/// Tokens per micro-kernel call.
pub const MR: usize = 6;

/// The primitive set every ISA provides. All methods are `unsafe` because they are only sound
/// where the ISA's features are enabled (guaranteed by the callers' `#[target_feature]`) and
/// because `load`/`store` take raw pointers (valid for `LANES` values).
pub(crate) trait Simd: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    /// Vectors per packed-panel row block: `NRV · LANES == NR`.
    const NRV: usize;
    /// States per register tile of the scan (16, 8, 4 or 1): as many as fit in the register
    /// file beside the step's temporaries.
    const SCAN_TILE: usize;
    /// The vector type.
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` values.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` values.
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, one rounding.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// The bits of `p` plus the bits of `t` shifted left by 23 (integer add): `p·2ᵏ` when the
    /// low mantissa bits of `t` hold `k` (`t = 1.5·2²³ + k`) and the result stays normal.
    unsafe fn add_shl23(p: Self::V, t: Self::V) -> Self::V;
    /// Largest lane (a NaN lane may or may not be ignored).
    unsafe fn hmax(v: Self::V) -> f32;
    /// Sum of the lanes.
    unsafe fn hsum(v: Self::V) -> f32;

    /// Packs `D` panel lines from `NR` rows: `dst[i·NR + j] = *row(j).add(i)` for `i < D`,
    /// `j < NR` (a register transpose of `NR` runs of `D` values; `D` is 2, 4 or 8). The GEMM
    /// packs dense rows (`D = 8`) and VQ codewords (`D = d`) into its panel with it.
    ///
    /// # Safety
    /// Every `row(j)` is valid for `D` reads and `dst` for `D·NR` writes.
    unsafe fn pack_lines<const D: usize>(row: impl Fn(usize) -> *const f32, dst: *mut f32);

    /// `Σ_g lut[g·k + idx[g]]` over `idx.len()` groups (the VQ GEMV gather over a row-major
    /// index row, table stride `k`). The default is scalar with four partial sums; ISAs with a
    /// gather instruction override it.
    #[inline(always)]
    unsafe fn gather_sum_u8(lut: &[f32], idx: &[u8], k: usize) -> f32 {
        gather_sum_scalar(lut, idx, k)
    }
    /// Runs an 8-state scan tile without the argument clamp (`scan_simd::tile::<Self, 8,
    /// false>`'s contract, same results bit for bit) if this ISA has a dedicated kernel for it;
    /// returns `false` otherwise, and the generic tile runs.
    #[inline(always)]
    unsafe fn scan_tile8(t: &Tile) -> bool {
        let _ = t;
        false
    }
    /// [`Simd::gather_sum_u8`] with 16-bit indices.
    #[inline(always)]
    unsafe fn gather_sum_u16(lut: &[f32], idx: &[u16], k: usize) -> f32 {
        gather_sum_scalar(lut, idx, k)
    }
    /// `acc[j] += Σ_c lut[256·c + idx[16·c + j]]` over the `idx.len() / 16` groups of one
    /// [`IndexLayout::Rows16`] block of u8 indices (the VQ GEMV gather; the 256-value table
    /// stride makes every byte a valid index). `prefetch` is the byte distance from `idx` to
    /// the indices needed a few blocks later (a hint; any value is safe).
    #[inline(always)]
    unsafe fn lut_rows16_u8(lut: &[f32], idx: &[u8], acc: &mut [f32; 16], prefetch: usize) {
        let _ = prefetch;
        lut_rows16_u8_scalar(lut, idx, acc)
    }
}

/// Portable [`Simd::lut_rows16_u8`]: 8 rows at a time, 8 independent sums, no bounds checks
/// (each group's table is a `[f32; 256]`).
#[inline(always)]
pub(crate) fn lut_rows16_u8_scalar(lut: &[f32], idx: &[u8], acc: &mut [f32; 16]) {
    for (h, a) in acc.chunks_exact_mut(8).enumerate() {
        for (c, q) in idx.chunks_exact(16).enumerate() {
            let t: &[f32; 256] = lut[256 * c..256 * c + 256].try_into().unwrap();
            let q = u64::from_le_bytes(q[8 * h..8 * h + 8].try_into().unwrap());
            for (j, s) in a.iter_mut().enumerate() {
                *s += t[((q >> (8 * j)) & 0xff) as usize];
            }
        }
    }
}

/// Portable gather-accumulate (four independent sums, indices bound-checked).
#[inline(always)]
pub(crate) fn gather_sum_scalar<I: Copy + Into<u32>>(lut: &[f32], idx: &[I], k: usize) -> f32 {
    let mut s = [0f32; 4];
    let n4 = idx.len() / 4 * 4;
    for (g4, q) in idx[..n4].chunks_exact(4).enumerate() {
        for j in 0..4 {
            s[j] += lut[(g4 * 4 + j) * k + q[j].into() as usize];
        }
    }
    let mut r = (s[0] + s[2]) + (s[1] + s[3]);
    for (g, q) in idx.iter().enumerate().skip(n4) {
        r += lut[g * k + (*q).into() as usize];
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Transcendentals: `2ˣ` by an integer exponent and a polynomial on `[−½, ½]`.

/// `1.5·2²³`: `x + MAGIC` rounds `x` (|x| < 2²²) to an integer `k` and leaves `k` in the low
/// mantissa bits, so that the bits shifted left by 23 are `k` in the exponent field.
pub(crate) const MAGIC: f32 = 12_582_912.0;
/// `2^f ≈ 1 + f·(P0 + f·(P1 + f·(P2 + f·(P3 + f·P4))))` on `[−½, ½]`: minimax relative fit with
/// `p(0) = 1` fixed (the scan's long-memory channels evaluate near 0), max relative error
/// 1.7e-7 in f32.
#[allow(clippy::approx_constant)] // P0 is fitted, 3 ulps from ln 2.
pub(crate) const EXP2_P: [f32; 5] = [
    0.693_147,
    0.240_222_42,
    0.055_507_336,
    0.009_671_513,
    0.001_326_472_7,
];
/// `log₂e − f32(log₂e)`.
pub(crate) const LOG2_E_LO: f32 = 1.925_963e-8;
/// [`exp_k`] clamps its argument to `±EXP_MAX` (`|x·log₂e| ≤ 124.8`, so `2ᵏ·p` stays normal).
const EXP_MAX: f32 = 86.5;

/// `exp(x)` of `K` vectors for `|x| ≤ 86.5` as `2^(x·log₂e)`: `k = round(x·log₂e)` by an FMA
/// with `MAGIC`, the reduced argument `x·log₂e − k` by FMAs (exact product, `log₂e`'s f32 tail
/// included), [`EXP2_P`], and `k` added to the exponent bits. Max relative error 3e-7 against
/// `libm::expf`; outside `±86.5` the argument is clamped (`exp(−86.5) ≈ 2.8e-38` for smaller
/// arguments: absolute error < 3e-38).
///
/// Each step is applied to all `K` vectors before the next (`K` independent chains in program
/// order, so that their latency overlaps).
#[inline(always)]
pub(crate) unsafe fn exp_k<S: Simd, const K: usize>(x: [S::V; K]) -> [S::V; K] {
    // SAFETY: arithmetic primitives only; the caller guarantees the ISA.
    unsafe {
        let x = each::<S, K>(|i| S::min(S::max(x[i], S::splat(-EXP_MAX)), S::splat(EXP_MAX)));
        exp_in_range_k::<S, K>(x)
    }
}

/// [`exp_k`] for arguments already within `±86.5` (no clamp).
#[inline(always)]
unsafe fn exp_in_range_k<S: Simd, const K: usize>(x: [S::V; K]) -> [S::V; K] {
    // SAFETY (whole fn): arithmetic primitives only; the caller guarantees the ISA.
    unsafe {
        let l2e = S::splat(core::f32::consts::LOG2_E);
        let t = each::<S, K>(|i| S::fma(x[i], l2e, S::splat(MAGIC)));
        // −k = MAGIC − t (exact).
        let f = each::<S, K>(|i| S::fma(x[i], l2e, S::sub(S::splat(MAGIC), t[i])));
        let f = each::<S, K>(|i| S::fma(x[i], S::splat(LOG2_E_LO), f[i]));
        let mut p = each::<S, K>(|i| S::fma(f[i], S::splat(EXP2_P[4]), S::splat(EXP2_P[3])));
        for c in EXP2_P[..3].iter().rev() {
            p = each::<S, K>(|i| S::fma(f[i], p[i], S::splat(*c)));
        }
        let p = each::<S, K>(|i| S::fma(f[i], p[i], S::splat(1.0)));
        each::<S, K>(|i| S::add_shl23(p[i], t[i]))
    }
}

/// `[f(0), …, f(K − 1)]`: one step of a `*_k` function over its `K` chains.
#[inline(always)]
pub(crate) fn each<S: Simd, const K: usize>(f: impl Fn(usize) -> S::V) -> [S::V; K] {
    core::array::from_fn(f)
}

/// SiLU, `x / (1 + exp(−x))`.
#[inline(always)]
pub(crate) unsafe fn silu_v<S: Simd>(x: S::V) -> S::V {
    // SAFETY: see `silu_k`.
    unsafe { silu_k::<S, 1>([x])[0] }
}

/// [`silu_v`] of `K` vectors, interleaved as in [`exp_k`].
#[inline(always)]
pub(crate) unsafe fn silu_k<S: Simd, const K: usize>(x: [S::V; K]) -> [S::V; K] {
    // SAFETY (whole fn): arithmetic primitives only; the caller guarantees the ISA.
    unsafe {
        let e = exp_k::<S, K>(each::<S, K>(|i| S::sub(S::zero(), x[i])));
        each::<S, K>(|i| S::div(x[i], S::add(S::splat(1.0), e[i])))
    }
}

/// `log1p(z)/z ≈ Q0 + z·(Q1 + z·(… + z·Q7))` on `[0, 1]` (relative fit, max relative error
/// 3e-7 in f32).
const Q: [f32; 8] = [
    0.999_999_8,
    -0.499_974_04,
    0.332_754_4,
    -0.244_952_32,
    0.177_445_81,
    -0.107_672_02,
    0.044_082_582,
    -0.008_537_195,
];

/// `softplus(x) = max(x, 0) + log1p(exp(−|x|))` of `K` vectors (interleaved as in [`exp_k`]):
/// `exp(−|x|)` by [`exp_k`]'s steps (`|x|` clamped at 86.5) and `log1p` by [`Q`] in Estrin's
/// form. Max relative error 5e-7 against f64 for `x ≥ −80` (measured 4.5e-7, unit test
/// `softplus_is_accurate`); `x > 20` gives `x` as the oracle's threshold rule does (the
/// correction is below half an ulp).
#[inline(always)]
pub(crate) unsafe fn softplus_k<S: Simd, const K: usize>(x: [S::V; K]) -> [S::V; K] {
    // SAFETY (whole fn): arithmetic primitives only; the caller guarantees the ISA.
    unsafe {
        let nx =
            each::<S, K>(|i| S::max(S::min(x[i], S::sub(S::zero(), x[i])), S::splat(-EXP_MAX)));
        let z = exp_in_range_k::<S, K>(nx);
        let q = |j: usize| S::splat(Q[j]);
        let z2 = each::<S, K>(|i| S::mul(z[i], z[i]));
        let z4 = each::<S, K>(|i| S::mul(z2[i], z2[i]));
        let a0 = each::<S, K>(|i| S::fma(z[i], q(1), q(0)));
        let a1 = each::<S, K>(|i| S::fma(z[i], q(3), q(2)));
        let a2 = each::<S, K>(|i| S::fma(z[i], q(5), q(4)));
        let a3 = each::<S, K>(|i| S::fma(z[i], q(7), q(6)));
        let b0 = each::<S, K>(|i| S::fma(a1[i], z2[i], a0[i]));
        let b1 = each::<S, K>(|i| S::fma(a3[i], z2[i], a2[i]));
        let qv = each::<S, K>(|i| S::fma(b1[i], z4[i], b0[i]));
        each::<S, K>(|i| S::fma(z[i], qv[i], S::max(x[i], S::zero())))
    }
}

/// `out = −exp(a_log)` ([`exp_k`]'s accuracy, four vectors at a time); the tail goes through
/// zero-padded vectors.
#[inline(always)]
pub(crate) unsafe fn neg_exp<S: Simd>(a_log: &[f32], out: &mut [f32]) {
    assert_eq!(a_log.len(), out.len());
    const K: usize = 4;
    let l = S::LANES;
    let mut i = 0;
    while i + K * l <= a_log.len() {
        let (a, o) = (a_log[i..].as_ptr(), out[i..].as_mut_ptr());
        // SAFETY: i + K·LANES ≤ len for both slices; the caller guarantees the ISA.
        unsafe {
            let e = exp_k::<S, K>(each::<S, K>(|b| S::load(a.add(b * l))));
            for (b, e) in e.into_iter().enumerate() {
                S::store(o.add(b * l), S::sub(S::zero(), e));
            }
        }
        i += K * l;
    }
    for (a, o) in a_log[i..].chunks(l).zip(out[i..].chunks_mut(l)) {
        // SAFETY: `load_part`/`store_part` take ≤ LANES values; the caller guarantees the ISA.
        unsafe {
            let e = exp_k::<S, 1>([load_part::<S>(a)])[0];
            store_part::<S>(S::sub(S::zero(), e), o);
        }
    }
}

/// `a·g·½`, [`combine_gate`]'s step.
#[inline(always)]
unsafe fn gate_v<S: Simd>(a: S::V, g: S::V) -> S::V {
    // SAFETY: arithmetic primitives; the caller guarantees the ISA.
    unsafe { S::mul(S::mul(a, g), S::splat(0.5)) }
}

/// [`super::scalar::combine_gate_f32`]: eight vectors at a time (their SiLU chains side by side),
/// then one, then the tail through a zero-padded vector ([`load_part`]).
#[inline(always)]
pub(crate) unsafe fn combine_gate<S: Simd>(acc: &mut [f32], z: &[f32]) {
    assert_eq!(acc.len(), z.len(), "combine_gate_f32: lengths differ");
    let l = S::LANES;
    let n = acc.len() / l * l;
    let (a, zp) = (acc.as_mut_ptr(), z.as_ptr());
    let mut i = 0;
    while i + 8 * l <= n {
        // SAFETY: i + 8·LANES ≤ n ≤ len of both slices; the caller guarantees the ISA.
        unsafe {
            let g = silu_k::<S, 8>(each::<S, 8>(|b| S::load(zp.add(i + b * l))));
            for (b, g) in g.into_iter().enumerate() {
                let p = a.add(i + b * l);
                S::store(p, gate_v::<S>(S::load(p), g));
            }
        }
        i += 8 * l;
    }
    while i < n {
        // SAFETY: i + LANES ≤ n ≤ len of both slices; the caller guarantees the ISA.
        unsafe {
            let g = silu_v::<S>(S::load(zp.add(i)));
            S::store(a.add(i), gate_v::<S>(S::load(a.add(i)), g));
        }
        i += l;
    }
    if n < acc.len() {
        let (at, zt) = (&mut acc[n..], &z[n..]);
        // SAFETY: the tails are shorter than LANES; the caller guarantees the ISA.
        unsafe {
            let g = silu_v::<S>(load_part::<S>(zt));
            store_part::<S>(gate_v::<S>(load_part::<S>(at), g), at);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dense and VQ GEMM.

/// Packs rows `r0 .. r0 + nr` of a dense `n × k` matrix into `panel[c·NR + j]` (zero rows
/// beyond `nr`): full panels 8 columns at a time with [`Simd::pack_lines`].
#[inline(always)]
unsafe fn pack_dense<S: Simd>(w: &[f32], k: usize, r0: usize, nr: usize, panel: &mut [f32]) {
    let panel = &mut panel[..k * NR];
    let rows = &w[r0 * k..(r0 + nr) * k];
    let k8 = if nr == NR { k / 8 * 8 } else { 0 };
    if nr < NR {
        panel.fill(0.0);
    }
    let (rp, pp) = (rows.as_ptr(), panel.as_mut_ptr());
    for c in (0..k8).step_by(8) {
        // SAFETY: row j < NR reads rows[j·k + c ..][..8] (c + 8 ≤ k) and the 8 lines written
        // are panel[c·NR ..][..8·NR] (c + 8 ≤ k); the caller guarantees the ISA.
        unsafe { S::pack_lines::<8>(|j| rp.add(j * k + c), pp.add(c * NR)) };
    }
    for (j, row) in rows.chunks_exact(k).enumerate() {
        for (c, v) in row.iter().enumerate().skip(k8) {
            panel[c * NR + j] = *v;
        }
    }
}

/// Decodes rows `r0 .. r0 + nr` of a VQ matrix into the packed panel layout.
#[inline(always)]
unsafe fn pack_vq<S: Simd>(w: &VqMatrix<'_>, r0: usize, nr: usize, panel: &mut [f32]) {
    const { assert!(NR == IndexLayout::BLOCK) };
    assert!(
        r0.is_multiple_of(NR),
        "pack_vq: panel start {r0} not a multiple of {NR}"
    );
    let k = w.cols;
    let panel = &mut panel[..k * NR];
    if nr < NR {
        panel.fill(0.0);
    }
    // Full panels of an f32 codebook with d = 2, 4, 8 (what the packer writes): register
    // transposes of the codewords. The rest: one monomorphised scalar loop per (index width,
    // codebook type, common d), the codeword copy unrolled for d = 1, 2, 4, 8.
    macro_rules! by_d {
        ($ix:expr, $cb:expr, $conv:expr) => {
            match w.d {
                2 if nr == NR => decode_panel_lines::<S, _, 2>($ix, $cb, w, r0, panel),
                4 if nr == NR => decode_panel_lines::<S, _, 4>($ix, $cb, w, r0, panel),
                8 if nr == NR => decode_panel_lines::<S, _, 8>($ix, $cb, w, r0, panel),
                1 => decode_panel::<_, _, 1>($ix, $cb, $conv, w, r0, nr, panel),
                2 => decode_panel::<_, _, 2>($ix, $cb, $conv, w, r0, nr, panel),
                4 => decode_panel::<_, _, 4>($ix, $cb, $conv, w, r0, nr, panel),
                8 => decode_panel::<_, _, 8>($ix, $cb, $conv, w, r0, nr, panel),
                _ => decode_panel::<_, _, 0>($ix, $cb, $conv, w, r0, nr, panel),
            }
        };
        ($ix:expr, $cb:expr, $conv:expr, scalar) => {
            match w.d {
                1 => decode_panel::<_, _, 1>($ix, $cb, $conv, w, r0, nr, panel),
                2 => decode_panel::<_, _, 2>($ix, $cb, $conv, w, r0, nr, panel),
                4 => decode_panel::<_, _, 4>($ix, $cb, $conv, w, r0, nr, panel),
                8 => decode_panel::<_, _, 8>($ix, $cb, $conv, w, r0, nr, panel),
                _ => decode_panel::<_, _, 0>($ix, $cb, $conv, w, r0, nr, panel),
            }
        };
    }
    // SAFETY (decode_panel_lines): the caller guarantees the ISA.
    unsafe {
        match (w.indices, w.codebook) {
            (Indices::U8(ix), Codebook::F32(cb)) => by_d!(ix, cb, |v: f32| v),
            (Indices::U16(ix), Codebook::F32(cb)) => by_d!(ix, cb, |v: f32| v),
            (Indices::U8(ix), Codebook::F16(cb)) => by_d!(ix, cb, f16_to_f32, scalar),
            (Indices::U16(ix), Codebook::F16(cb)) => by_d!(ix, cb, f16_to_f32, scalar),
        }
    }
}

/// [`pack_vq`] of a full 16-row panel with an f32 codebook and `d = D` ∈ {2, 4, 8}: each
/// group's 16 codewords go through [`Simd::pack_lines`] (a truncated last group is copied by
/// scalar code). Out-of-range indices panic (the format reader rejects them first).
#[inline(always)]
unsafe fn decode_panel_lines<S: Simd, I: Copy + Ord + Into<usize>, const D: usize>(
    ix: &[I],
    cb: &[f32],
    w: &VqMatrix<'_>,
    r0: usize,
    panel: &mut [f32],
) {
    let k = w.cols;
    let g = w.groups_per_row();
    let (sg, sj) = match w.layout {
        IndexLayout::RowMajor => (1, g),
        IndexLayout::Rows16 => (IndexLayout::BLOCK, 1),
    };
    let rows = &ix[r0 * g..w.layout.len(r0 + NR, g)];
    // One check for the whole panel (a vectorised max) instead of one per codeword.
    let max: usize = rows.iter().copied().max().map_or(0, Into::into);
    assert!(
        max < w.k && cb.len() >= w.k * D && rows.len() == NR * g && panel.len() >= k * NR,
        "VQ index {max} out of range"
    );
    let full = k / D;
    let (rp, cp, pp) = (rows.as_ptr(), cb.as_ptr(), panel.as_mut_ptr());
    // SAFETY: the index read, gi·16 + j (Rows16) or gi + j·g (row-major), is below
    // NR·g = rows.len() for gi < g, j < NR; every
    // index is ≤ max < k, so its codeword cb[idx·D ..][..D] lies within cb (asserted above);
    // the D lines written, panel[gi·D·NR ..][..D·NR], lie within k·NR. The caller guarantees
    // the ISA.
    unsafe {
        match w.layout {
            // Constant strides: the 16 indices of a line are contiguous.
            IndexLayout::Rows16 => {
                for gi in 0..full {
                    let line = rp.add(gi * NR);
                    S::pack_lines::<D>(|j| cp.add((*line.add(j)).into() * D), pp.add(gi * D * NR));
                }
            }
            IndexLayout::RowMajor => {
                for gi in 0..full {
                    let line = rp.add(gi);
                    S::pack_lines::<D>(
                        |j| cp.add((*line.add(j * g)).into() * D),
                        pp.add(gi * D * NR),
                    );
                }
            }
        }
    }
    if full < g {
        let c0 = full * D;
        for j in 0..NR {
            let idx: usize = rows[full * sg + j * sj].into();
            for (i, v) in cb[idx * D..idx * D + k - c0].iter().enumerate() {
                panel[(c0 + i) * NR + j] = *v;
            }
        }
    }
}

/// [`pack_vq`] for one index/codebook type; `D` is the codeword length (0: read `w.d`).
/// Group-major: for each group the `nr` rows' codewords land in `d` contiguous panel lines.
/// Out-of-range indices panic on the codebook slice (the format reader rejects them first).
#[inline(always)]
fn decode_panel<I: Copy + Into<usize>, C: Copy, const D: usize>(
    ix: &[I],
    cb: &[C],
    conv: impl Fn(C) -> f32,
    w: &VqMatrix<'_>,
    r0: usize,
    nr: usize,
    panel: &mut [f32],
) {
    let k = w.cols;
    let d = if D == 0 { w.d } else { D };
    let g = w.groups_per_row();
    // Index (r0 + j, gi) sits at r0·g + gi·sg + j·sj in both layouts (r0 is a multiple of 16).
    let (sg, sj) = match w.layout {
        IndexLayout::RowMajor => (1, g),
        IndexLayout::Rows16 => (IndexLayout::BLOCK, 1),
    };
    let rows = &ix[r0 * g..w.layout.len(r0 + nr, g)];
    for gi in 0..g {
        let c0 = gi * d;
        let len = d.min(k - c0);
        let dst = &mut panel[c0 * NR..(c0 + len) * NR];
        let line = &rows[gi * sg..];
        for j in 0..nr {
            let idx: usize = line[j * sj].into();
            let cw = &cb[idx * d..idx * d + d];
            if len == d {
                for (i, v) in cw.iter().enumerate() {
                    dst[i * NR + j] = conv(*v);
                }
            } else {
                for (i, v) in cw[..len].iter().enumerate() {
                    dst[i * NR + j] = conv(*v);
                }
            }
        }
    }
}

/// `out[t0+i][r0 .. r0+nr] = a[t0+i] · panel` for `i < M`: the register-blocked micro-kernel
/// (`M` tokens × `NR` rows of accumulators, one broadcast per token and `NRV` panel loads per
/// input feature).
#[inline(always)]
unsafe fn micro<S: Simd, const M: usize>(
    a: &MatRef<'_>,
    t0: usize,
    panel: &[f32],
    out: &mut MatMut<'_>,
    r0: usize,
    nr: usize,
) {
    let k = a.cols();
    assert!(panel.len() >= k * NR && S::NRV * S::LANES == NR && S::NRV <= 4);
    // SAFETY (whole block): the panel holds k·NR values and every a-row k values (asserted
    // above / by MatRef::row), so every load below is in bounds; stores go to a 16-value stack
    // array or to out rows checked by MatMut::row_mut and the r0 + NR ≤ cols test.
    unsafe {
        let mut acc = [[S::zero(); 4]; M];
        let mut ap = [core::ptr::null::<f32>(); M];
        for (i, p) in ap.iter_mut().enumerate() {
            *p = a.row(t0 + i).as_ptr();
        }
        let pp = panel.as_ptr();
        for c in 0..k {
            let mut w = [S::zero(); 4];
            for (v, wv) in w.iter_mut().enumerate().take(S::NRV) {
                *wv = S::load(pp.add(c * NR + v * S::LANES));
            }
            for i in 0..M {
                let b = S::splat(*ap[i].add(c));
                for v in 0..S::NRV {
                    acc[i][v] = S::fma(b, w[v], acc[i][v]);
                }
            }
        }
        let full = nr == NR && r0 + NR <= out.cols();
        for (i, acc_i) in acc.iter().enumerate() {
            let o = out.row_mut(t0 + i);
            if full {
                let op = o.as_mut_ptr().add(r0);
                for (v, av) in acc_i.iter().enumerate().take(S::NRV) {
                    S::store(op.add(v * S::LANES), *av);
                }
            } else {
                let mut tmp = [0f32; NR];
                for (v, av) in acc_i.iter().enumerate().take(S::NRV) {
                    S::store(tmp.as_mut_ptr().add(v * S::LANES), *av);
                }
                o[r0..r0 + nr].copy_from_slice(&tmp[..nr]);
            }
        }
    }
}

/// Runs the micro-kernel over every token for one packed panel.
#[inline(always)]
unsafe fn panel_times_tokens<S: Simd>(
    a: &MatRef<'_>,
    panel: &[f32],
    out: &mut MatMut<'_>,
    r0: usize,
    nr: usize,
) {
    let m = a.rows();
    let mut t = 0;
    // SAFETY (whole block): the caller guarantees the ISA; `micro` checks its bounds.
    unsafe {
        while t + MR <= m {
            micro::<S, MR>(a, t, panel, out, r0, nr);
            t += MR;
        }
        match m - t {
            0 => {}
            1 => micro::<S, 1>(a, t, panel, out, r0, nr),
            2 => micro::<S, 2>(a, t, panel, out, r0, nr),
            3 => micro::<S, 3>(a, t, panel, out, r0, nr),
            4 => micro::<S, 4>(a, t, panel, out, r0, nr),
            _ => micro::<S, 5>(a, t, panel, out, r0, nr),
        }
    }
}

/// Dot products of one token with `n` dense rows (`out[r] = x · w[r]`), four rows at a time.
#[inline(always)]
unsafe fn gemv_rows<S: Simd>(x: &[f32], w: &[f32], out: &mut [f32]) {
    let k = x.len();
    let n = out.len();
    assert!(w.len() >= n * k);
    let l = S::LANES;
    let k2 = k / (2 * l) * (2 * l);
    let mut r = 0;
    // SAFETY (whole block): every load reads x[c..c+LANES] / w[row·k + c ..] with
    // c + LANES ≤ k2 ≤ k and row < n, inside the asserted lengths.
    unsafe {
        let xp = x.as_ptr();
        while r < n {
            let nr = (n - r).min(4);
            let mut acc = [[S::zero(); 2]; 4];
            let mut wp = [w.as_ptr(); 4];
            for (j, p) in wp.iter_mut().enumerate() {
                *p = w.as_ptr().add((r + j.min(nr - 1)) * k);
            }
            let mut c = 0;
            while c < k2 {
                let x0 = S::load(xp.add(c));
                let x1 = S::load(xp.add(c + l));
                for j in 0..4 {
                    acc[j][0] = S::fma(x0, S::load(wp[j].add(c)), acc[j][0]);
                    acc[j][1] = S::fma(x1, S::load(wp[j].add(c + l)), acc[j][1]);
                }
                c += 2 * l;
            }
            for j in 0..nr {
                let mut s = S::hsum(S::add(acc[j][0], acc[j][1]));
                for (cc, xv) in x.iter().enumerate().take(k).skip(k2) {
                    s += xv * *wp[j].add(cc);
                }
                out[r + j] = s;
            }
            r += nr;
        }
    }
}

/// Dense GEMM `out = a · wᵀ`; `scratch` (≥ [`panel_len`]`(k)` values) holds the packed panel.
///
/// Every output is one FMA chain over `c = 0, 1, …, k−1` in a vector lane, so with enough
/// scratch the result does not depend on the token count or blocking (the last-layer cls-only
/// shortcut stays bit-identical), and a VQ matrix (decoded into the same panel) gives exactly
/// the values of its decoded dense matrix. Without the scratch it falls back to the
/// dot-product form (different rounding).
#[inline(always)]
pub(crate) unsafe fn gemm<S: Simd>(
    a: MatRef<'_>,
    w: &[f32],
    out: &mut MatMut<'_>,
    scratch: &mut [f32],
) {
    let (m, k, n) = (a.rows(), a.cols(), out.cols());
    assert_eq!(w.len(), n * k, "gemm: weight is not {n}×{k}");
    assert_eq!(out.rows(), m, "gemm: token counts differ");
    // SAFETY (whole block): the caller guarantees the ISA.
    unsafe {
        if scratch.len() < panel_len(k) {
            for t in 0..m {
                gemv_rows::<S>(a.row(t), w, out.row_mut(t));
            }
            return;
        }
        let mut r0 = 0;
        while r0 < n {
            let nr = NR.min(n - r0);
            pack_dense::<S>(w, k, r0, nr, scratch);
            panel_times_tokens::<S>(&a, scratch, out, r0, nr);
            r0 += nr;
        }
    }
}

/// Scratch values the packed GEMM paths need for `k` input features.
pub const fn panel_len(k: usize) -> usize {
    NR.saturating_mul(k)
}

/// Scratch values the VQ GEMV needs: the lookup table (`ceil(cols / d)` groups of
/// [`lut_stride`] values) plus the transposed codebook (`k · d`).
pub fn lut_len(w: &VqMatrix<'_>) -> usize {
    lut_stride(w)
        .saturating_mul(w.groups_per_row())
        .saturating_add(w.k.saturating_mul(w.d))
}

/// Values per group in the VQ GEMV lookup table: 256 with u8 indices, so that any byte
/// indexes a group's table without a bounds check; `k` with u16 indices.
fn lut_stride(w: &VqMatrix<'_>) -> usize {
    match w.indices {
        Indices::U8(_) => 256,
        Indices::U16(_) => w.k,
    }
}

/// VQ GEMM: decode one `NR`-row panel at a time into `scratch`, micro-kernel over all tokens
/// (bit-identical to [`gemm`] on the decoded matrix; too little scratch → the scalar oracle).
#[inline(always)]
pub(crate) unsafe fn vq_gemm<S: Simd>(
    a: MatRef<'_>,
    w: &VqMatrix<'_>,
    out: &mut MatMut<'_>,
    scratch: &mut [f32],
) {
    let (m, k, n) = (a.rows(), a.cols(), out.cols());
    assert_eq!(w.cols, k, "vq_gemm: input width differs");
    assert_eq!(w.rows, n, "vq_gemm: output width differs");
    assert_eq!(out.rows(), m, "vq_gemm: token counts differ");
    // SAFETY (whole block): the caller guarantees the ISA.
    unsafe {
        if scratch.len() < panel_len(k) {
            return super::scalar::vq_gemm_f32(a, w, out, scratch);
        }
        let mut r0 = 0;
        while r0 < n {
            let nr = NR.min(n - r0);
            pack_vq::<S>(w, r0, nr, scratch);
            panel_times_tokens::<S>(&a, scratch, out, r0, nr);
            r0 += nr;
        }
    }
}

/// Builds the lookup table `lut[g·stride + j] = Σ_i x[g·d + i] · cb[j][i]` for
/// `j < min(k, stride)` (truncated last group), vectorised over codewords `j` via the
/// transposed codebook `cbt[i·k + j]`.
#[inline(always)]
unsafe fn build_lut<S: Simd>(
    x: &[f32],
    w: &VqMatrix<'_>,
    stride: usize,
    lut: &mut [f32],
    cbt: &mut [f32],
) {
    let (d, kk) = (w.d, w.k.min(stride));
    let cbt = &mut cbt[..kk * d];
    for j in 0..kk {
        for i in 0..d {
            cbt[i * kk + j] = match w.codebook {
                Codebook::F32(cb) => cb[j * d + i],
                Codebook::F16(cb) => f16_to_f32(cb[j * d + i]),
            };
        }
    }
    let l = S::LANES;
    let kv = kk / l * l;
    for (g, xg) in x.chunks(d).enumerate() {
        let row = &mut lut[g * stride..g * stride + kk];
        let mut j = 0;
        while j < kv {
            // SAFETY: j + LANES ≤ kk, so every load reads cbt[i·kk + j ..][..LANES] in bounds and
            // the store writes row[j..j + LANES]; the caller guarantees the ISA.
            unsafe {
                let mut acc = S::mul(S::splat(xg[0]), S::load(cbt.as_ptr().add(j)));
                for (i, xi) in xg.iter().enumerate().skip(1) {
                    acc = S::fma(S::splat(*xi), S::load(cbt.as_ptr().add(i * kk + j)), acc);
                }
                S::store(row.as_mut_ptr().add(j), acc);
            }
            j += l;
        }
        for (jj, o) in row.iter_mut().enumerate().skip(kv) {
            *o = xg
                .iter()
                .enumerate()
                .map(|(i, xi)| xi * cbt[i * kk + jj])
                .sum();
        }
    }
}

/// [`Simd::lut_rows16_u8`] for u16 indices (table stride `k`, indices bound-checked).
#[inline(always)]
fn lut_rows16_u16(lut: &[f32], k: usize, idx: &[u16], acc: &mut [f32; 16]) {
    for (c, q) in idx.chunks_exact(16).enumerate() {
        let t = &lut[c * k..(c + 1) * k];
        for (a, i) in acc.iter_mut().zip(q) {
            *a += t[*i as usize];
        }
    }
}

/// VQ GEMV of one token: lookup table of activation·codeword sums (`k` per group of `d`
/// inputs), then a gather-accumulate of the table over the indices ([`IndexLayout::Rows16`]:
/// 16 independent row sums per block of 16 rows, groups in L1-sized passes). Needs
/// [`lut_len`] scratch values; with less, decodes and multiplies row by row (slow, no scratch).
#[inline(always)]
pub(crate) unsafe fn vq_gemv<S: Simd>(
    x: &[f32],
    w: &VqMatrix<'_>,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        x.len() == w.cols && out.len() == w.rows,
        "vq_gemv: shape mismatch"
    );
    let g = w.groups_per_row();
    if scratch.len() < lut_len(w) {
        // No room for the table: decode-and-dot each row directly (needs no scratch).
        for (r, o) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (gi, xg) in x.chunks(w.d).enumerate() {
                let idx = w.index(r, gi);
                assert!(idx < w.k, "VQ index out of range");
                let cw = idx * w.d;
                match w.codebook {
                    Codebook::F32(cb) => {
                        for (a, b) in xg.iter().zip(&cb[cw..cw + xg.len()]) {
                            acc += a * b;
                        }
                    }
                    Codebook::F16(cb) => {
                        for (a, b) in xg.iter().zip(&cb[cw..cw + xg.len()]) {
                            acc += a * f16_to_f32(*b);
                        }
                    }
                }
            }
            *o = acc;
        }
        return;
    }
    let stride = lut_stride(w);
    let (lut, cbt) = scratch.split_at_mut(stride * g);
    // SAFETY: the caller guarantees the ISA.
    unsafe { build_lut::<S>(x, w, stride, lut, cbt) };
    match w.layout {
        // SAFETY: the caller guarantees the ISA; the gathers index lut within g·stride (indices
        // < k ≤ stride are checked by the ISA implementation or by the validated model).
        IndexLayout::RowMajor => unsafe {
            match w.indices {
                Indices::U8(ix) => {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = S::gather_sum_u8(lut, &ix[r * g..(r + 1) * g], stride);
                    }
                }
                Indices::U16(ix) => {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = S::gather_sum_u16(lut, &ix[r * g..(r + 1) * g], stride);
                    }
                }
            }
        },
        IndexLayout::Rows16 => {
            const B: usize = IndexLayout::BLOCK;
            out.fill(0.0);
            // Groups per pass: their tables fill 16 KB (half of a typical L1D), and every row
            // block is swept once per pass, the indices of the block 4 ahead prefetched.
            let gb = (4096 / stride).max(1);
            let mut g0 = 0;
            while g0 < g {
                let g1 = (g0 + gb).min(g);
                let lut_b = &lut[g0 * stride..g1 * stride];
                for (rb, o) in out.chunks_mut(B).enumerate() {
                    let ix = rb * B * g + g0 * B..rb * B * g + g1 * B;
                    let mut acc = [0f32; B];
                    acc[..o.len()].copy_from_slice(o);
                    match w.indices {
                        // SAFETY: the caller guarantees the ISA.
                        Indices::U8(i) => unsafe {
                            S::lut_rows16_u8(lut_b, &i[ix], &mut acc, 4 * B * g)
                        },
                        Indices::U16(i) => lut_rows16_u16(lut_b, stride, &i[ix], &mut acc),
                    }
                    o.copy_from_slice(&acc[..o.len()]);
                }
                g0 = g1;
            }
        }
    }
}

/// Dense GEMV of one token.
#[inline(always)]
pub(crate) unsafe fn gemv<S: Simd>(x: &[f32], w: &[f32], out: &mut [f32]) {
    assert_eq!(w.len(), x.len() * out.len(), "gemv: weight shape");
    // SAFETY: the caller guarantees the ISA.
    unsafe { gemv_rows::<S>(x, w, out) }
}

// ---------------------------------------------------------------------------------------------
// Norms, conv, scan.

/// `Σ x²` vectorised.
#[inline(always)]
unsafe fn sumsq<S: Simd>(x: &[f32]) -> f32 {
    // SAFETY: see `add_sumsq` (no `add`); the caller guarantees the ISA.
    unsafe { add_sumsq::<S>(x.as_ptr() as *mut f32, None, x.len()) }
}

/// `Σ x²` of the `n` values at `x`, after `x += add` when `add` is given (four accumulators,
/// so that the sum is not one chain of dependent FMAs).
///
/// # Safety
/// `x` (and `add`) hold `n` values; `x` is only written when `add` is given.
#[inline(always)]
unsafe fn add_sumsq<S: Simd>(x: *mut f32, add: Option<*const f32>, n: usize) -> f32 {
    let l = S::LANES;
    let nv = n / l * l;
    // SAFETY: loads and stores stay below nv ≤ n (or n for the scalar tail); the caller
    // guarantees the ISA.
    unsafe {
        let step = |i: usize| {
            let mut v = S::load(x.add(i));
            if let Some(a) = add {
                v = S::add(v, S::load(a.add(i)));
                S::store(x.add(i), v);
            }
            v
        };
        let mut acc = [S::zero(); 4];
        let mut i = 0;
        while i + 4 * l <= nv {
            for (b, a) in acc.iter_mut().enumerate() {
                let v = step(i + b * l);
                *a = S::fma(v, v, *a);
            }
            i += 4 * l;
        }
        while i < nv {
            let v = step(i);
            acc[0] = S::fma(v, v, acc[0]);
            i += l;
        }
        let mut s = S::hsum(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])));
        for i in nv..n {
            let mut v = *x.add(i);
            if let Some(a) = add {
                v += *a.add(i);
                *x.add(i) = v;
            }
            s += v * v;
        }
        s
    }
}

#[inline(always)]
unsafe fn scale_mul<S: Simd>(x: &[f32], rstd: f32, w: &[f32], out: &mut [f32]) {
    let l = S::LANES;
    let n = x.len() / l * l;
    // SAFETY: all three slices have x.len() values (checked by the callers).
    unsafe {
        let r = S::splat(rstd);
        let mut i = 0;
        while i < n {
            let v = S::mul(
                S::mul(S::load(x.as_ptr().add(i)), r),
                S::load(w.as_ptr().add(i)),
            );
            S::store(out.as_mut_ptr().add(i), v);
            i += l;
        }
    }
    for i in n..x.len() {
        out[i] = x[i] * rstd * w[i];
    }
}

#[inline(always)]
pub(crate) unsafe fn rmsnorm<S: Simd>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert!(x.len() == w.len() && x.len() == out.len());
    // SAFETY: lengths asserted; the caller guarantees the ISA.
    unsafe {
        let rstd = 1.0 / libm::sqrtf(sumsq::<S>(x) / x.len() as f32 + eps);
        scale_mul::<S>(x, rstd, w, out);
    }
}

#[inline(always)]
pub(crate) unsafe fn add_rmsnorm<S: Simd>(
    residual: &mut [f32],
    hidden: &mut [f32],
    w: &[f32],
    eps: f32,
) {
    assert!(residual.len() == hidden.len() && residual.len() == w.len());
    let n = residual.len();
    // SAFETY: lengths asserted; the caller guarantees the ISA.
    unsafe {
        let ss = add_sumsq::<S>(residual.as_mut_ptr(), Some(hidden.as_ptr()), n);
        let rstd = 1.0 / libm::sqrtf(ss / n as f32 + eps);
        scale_mul::<S>(residual, rstd, w, hidden);
    }
}

/// Depthwise conv1d + SiLU (same contract as the oracle's `conv1d_silu_f32`; the taps are added
/// in the same order, only SiLU differs). Vectorised over channels, `K ≤ 8` taps.
#[inline(always)]
pub(crate) unsafe fn conv1d_silu<S: Simd>(
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
        "conv1d: weight is not E×K"
    );
    let kk = w.len() / e;
    assert!(bias.len() == e && out.cols() == e);
    assert!(steps.end <= x.rows() && steps.end <= out.rows());
    if kk > 8 {
        return super::scalar::conv1d_silu_f32(dir, x, w, bias, steps, out);
    }
    let l = x.rows();
    let lanes = S::LANES;
    // Channels per chunk: the chunk's transposed taps stay on the stack while every token row is
    // streamed once (row-major access; a block-at-a-time walk down the rows was 4× slower). A
    // whole Vim-Ti row (384 channels, 12 KB of taps) sets up each token's taps once instead of
    // three times (−15 % against 128).
    const CHUNK: usize = 384;
    let full = e / lanes * lanes;
    let mut c0 = 0;
    while c0 < full {
        let c1 = (c0 + CHUNK).min(full);
        // wt[k][j] = tap k of channel c0 + j.
        let mut wt = [[0f32; CHUNK]; 8];
        for (k, wk) in wt.iter_mut().enumerate().take(kk) {
            for (j, v) in wk[..c1 - c0].iter_mut().enumerate() {
                *v = w[(c0 + j) * kk + k];
            }
        }
        for t in steps.clone() {
            // Taps in range for this token (zero padding outside the sequence).
            let mut src = [0usize; 8];
            let mut tap = [0usize; 8];
            let mut nt = 0;
            for k in 0..kk {
                let s = match dir {
                    Direction::Forward => (t + k).checked_sub(kk - 1),
                    Direction::Backward => Some(t + (kk - 1 - k)).filter(|s| *s < l),
                };
                if let Some(s) = s {
                    src[nt] = s;
                    tap[nt] = k;
                    nt += 1;
                }
            }
            let xr: [*const f32; 8] = core::array::from_fn(|i| match i < nt {
                true => x.row(src[i]).as_ptr(),
                false => core::ptr::null(),
            });
            let o = out.row_mut(t).as_mut_ptr();
            // Blocks of `b` vectors (8, 4, then 1: the SiLU chains side by side): acc = bias +
            // Σ taps (the oracle's order), then SiLU.
            // SAFETY: e0 + b·LANES ≤ c1 ≤ e, so loads of the rows of `x` (e values), of `bias`
            // (e values), of `wt` (CHUNK values per tap, at e0 − c0 + b·LANES ≤ CHUNK) and the
            // stores into `o` (e values) stay in bounds; the caller guarantees the ISA.
            let block = |e0: usize, acc: &mut [S::V]| unsafe {
                for (b, a) in acc.iter_mut().enumerate() {
                    *a = S::load(bias.as_ptr().add(e0 + b * lanes));
                }
                for i in 0..nt {
                    for (b, a) in acc.iter_mut().enumerate() {
                        let xv = S::load(xr[i].add(e0 + b * lanes));
                        let wv = S::load(wt[tap[i]].as_ptr().add(e0 - c0 + b * lanes));
                        *a = S::add(*a, S::mul(wv, xv));
                    }
                }
            };
            let mut e0 = c0;
            // SAFETY (block): as for `block`; the caller guarantees the ISA.
            unsafe {
                // `K` blocks while they fit (c1 − c0 is a multiple of LANES, so K = 1 ends it).
                macro_rules! blocks {
                    ($($k:literal)*) => {$(
                        while e0 + $k * lanes <= c1 {
                            let mut acc = [S::zero(); $k];
                            block(e0, &mut acc);
                            for (b, y) in silu_k::<S, $k>(acc).into_iter().enumerate() {
                                S::store(o.add(e0 + b * lanes), y);
                            }
                            e0 += $k * lanes;
                        }
                    )*};
                }
                blocks!(8 4 1);
            }
        }
        c0 = c1;
    }
    let e0 = full;
    if e0 < e {
        // Channel tail: the oracle's loop on the remaining channels, then vector SiLU.
        for t in steps {
            let o = &mut out.row_mut(t)[e0..];
            o.copy_from_slice(&bias[e0..]);
            for k in 0..kk {
                let src = match dir {
                    Direction::Forward => (t + k).checked_sub(kk - 1),
                    Direction::Backward => Some(t + (kk - 1 - k)).filter(|s| *s < l),
                };
                let Some(src) = src else { continue };
                let xs = &x.row(src)[e0..];
                for (j, (oe, xe)) in o.iter_mut().zip(xs).enumerate() {
                    *oe += w[(e0 + j) * kk + k] * xe;
                }
            }
            // SAFETY: the tail is shorter than LANES (e0 = e / LANES · LANES); the caller
            // guarantees the ISA.
            unsafe { store_part::<S>(silu_v::<S>(load_part::<S>(o)), o) };
        }
    }
}

/// The first `src.len() ≤ LANES` values of a vector, zero-padded.
#[inline(always)]
pub(crate) unsafe fn load_part<S: Simd>(src: &[f32]) -> S::V {
    if src.len() == S::LANES {
        // SAFETY: LANES values are readable.
        return unsafe { S::load(src.as_ptr()) };
    }
    let mut t = [0f32; 16];
    t[..src.len()].copy_from_slice(src);
    // SAFETY: t holds 16 ≥ LANES values.
    unsafe { S::load(t.as_ptr()) }
}

/// Stores the first `dst.len() ≤ LANES` lanes of `v`.
#[inline(always)]
pub(crate) unsafe fn store_part<S: Simd>(v: S::V, dst: &mut [f32]) {
    if dst.len() == S::LANES {
        // SAFETY: LANES values are writable.
        return unsafe { S::store(dst.as_mut_ptr(), v) };
    }
    let mut t = [0f32; 16];
    // SAFETY: t holds 16 ≥ LANES values.
    unsafe { S::store(t.as_mut_ptr(), v) };
    let m = dst.len();
    dst.copy_from_slice(&t[..m]);
}

#[cfg(test)]
/// Max relative error of `f` (lane 0) against `want` (f64) over 1,000,003 evenly spaced `x` in
/// `[lo, hi]`, each point also taken times every factor of `scales`, on level `S`.
pub(crate) unsafe fn max_rel_err<S: Simd>(
    lo: f32,
    hi: f32,
    scales: &[f32],
    f: impl Fn(S::V) -> S::V,
    want: impl Fn(f64) -> f64,
) -> f64 {
    let mut worst = 0f64;
    let n = 1_000_003;
    let mut buf = [0f32; 16];
    for i in 0..n {
        let x0 = lo + (hi - lo) * (i as f32 / (n - 1) as f32);
        for x in scales.iter().map(|s| x0 * s) {
            // SAFETY: the caller checked the ISA; buf holds 16 ≥ LANES values.
            unsafe { S::store(buf.as_mut_ptr(), f(S::splat(x))) };
            let w = want(x as f64);
            worst = worst.max((buf[0] as f64 - w).abs() / w);
        }
    }
    worst
}

#[cfg(test)]
/// Max relative error of [`softplus_k`] over `x ∈ [−80, 40]` against f64, on level `S`.
pub(crate) unsafe fn softplus_max_rel<S: Simd>() -> f64 {
    // SAFETY: the caller checked the ISA.
    unsafe {
        let sp = |x| softplus_k::<S, 1>([x])[0];
        max_rel_err::<S>(-80.0, 40.0, &[1.0], sp, |x| x.exp().ln_1p())
    }
}

#[cfg(test)]
/// Max relative error of [`exp_k`] over `x ∈ [−86.5, 86.5]` against f64, on level `S`.
pub(crate) unsafe fn exp_max_rel<S: Simd>() -> f64 {
    // SAFETY: the caller checked the ISA.
    unsafe {
        max_rel_err::<S>(
            -EXP_MAX,
            EXP_MAX,
            &[1.0],
            |x| exp_k::<S, 1>([x])[0],
            f64::exp,
        )
    }
}
