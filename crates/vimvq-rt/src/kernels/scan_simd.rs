//! The vector selective scan, generic over [`Simd`] (instantiated by `kernels/avx2.rs` and
//! `kernels/neon.rs` inside their `#[target_feature]` entry points; everything is
//! `#[inline(always)]` so that it is compiled with those features).
//!
//! Layout: a block of `LANES` channels runs the whole sequence in chunks of [`CHUNK`] tokens.
//! Per chunk, a pre-pass writes `δ = softplus(Δ + bias)` and `δ·u` as `[CHUNK][LANES]` and the
//! largest `δ`; then the states run in tiles of [`Simd::SCAN_TILE`] (8 on AVX2, 16 on NEON) with
//! the tile's `h` in registers and `A′ = A·log₂e`, `B_t`, `C_t` read as memory operands; each tile
//! adds its part of `y = Σₙ hₙ·Cₙ` into a `[CHUNK][LANES]` buffer; the D skip, gate and
//! accumulator store follow per emitted token.
//!
//! `exp(δ·A) = 2^(δ·A′)` ([`exp2_v`]): `k = round(x)` by adding `1.5·2²³`, `f = x − k ∈ [−½, ½]`,
//! a degree-5 polynomial with `p(0) = 1` exactly, and `2ᵏ` applied by adding `k` to the float's
//! exponent bits. That is valid for `|x| ≤ 125` (`2ᵏ·p` stays normal and finite), which one
//! comparison per chunk establishes (`max δ · max|A′| ≤ 125`); otherwise the chunk runs the same
//! code with `x` clamped to `[−125, 125]` (identical bits where the clamp is inactive, so the
//! channel split never changes results).
//!
//! Error budget vs the oracle (`libm::expf(δ·A)`): `2ˣ` max relative error 2e-7 for
//! `|x| ≤ 125` (measured 1.7e-7; unit test `scan_exp2_is_accurate`) plus the rounding of `A′` and
//! of `δ·A′` (as the oracle rounds `δ·A`; both matter only where `exp(δ·A)` is small), softplus
//! 5e-7 (measured 3e-7); the scan output within `2e-5` of the output scale
//! (`tests/simd_conformance.rs`); end to end the golden parity tests measure ~1e-6 of 1e-4.
//! Below `2⁻¹²⁵` (clamped chunks) the result is `≈ 2⁻¹²⁵·p` instead of a smaller value or 0:
//! absolute error < 3e-38.

use core::ops::Range;

use crate::kernels::generic::{load_part, store_part, Simd};
use crate::kernels::scalar::selective_scan_channels_f32;
use crate::kernels::scan::{check, ScanInputs, ScanPlan, ScanWeights};
use crate::kernels::{Direction, MatMut};

/// Largest `N` kept on the stack; larger states use the oracle.
const MAX_N: usize = 64;
/// Tokens per chunk of the `δ`, `δ·u` and `y` buffers.
const CHUNK: usize = 64;
/// Channel blocks run together chunk by chunk: a block reads half of each 64-byte line of the
/// `L × E` inputs on AVX2, its neighbour the other half while the line is still in L1.
const GROUP: usize = 2;
/// Largest `|δ·A′|` for which `2ᵏ·p` is normal and finite without a clamp.
const ARG_MAX: f32 = 125.0;
/// `1.5·2²³`: `x + MAGIC` rounds `x` (|x| < 2²²) to an integer `k` and leaves `k` in the low
/// mantissa bits, so that the bits shifted left by 23 are `k` in the exponent field.
const MAGIC: f32 = 12_582_912.0;
/// `2^f ≈ 1 + f·(P0 + f·(P1 + f·(P2 + f·(P3 + f·P4))))` on `[−½, ½]`: minimax relative fit with
/// `p(0) = 1` fixed (the long-memory channels evaluate near 0), max relative error 1.7e-7 in f32.
#[allow(clippy::approx_constant)] // P0 is fitted, 3 ulps from ln 2.
const P: [f32; 5] = [
    0.693_147,
    0.240_222_42,
    0.055_507_336,
    0.009_671_513,
    0.001_326_472_7,
];

/// [`exp2_v`]'s constants as vectors: `MAGIC`, `P4 … P0`, `1`.
type Consts<S> = [<S as Simd>::V; 7];

#[inline(always)]
unsafe fn consts<S: Simd>() -> Consts<S> {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        [
            S::splat(MAGIC),
            S::splat(P[4]),
            S::splat(P[3]),
            S::splat(P[2]),
            S::splat(P[1]),
            S::splat(P[0]),
            S::splat(1.0),
        ]
    }
}

/// `2ˣ` for `|x| ≤ 125` (see the module doc); `k` points at [`Consts`].
#[inline(always)]
pub(crate) unsafe fn exp2_v<S: Simd>(x: S::V, k: *const S::V) -> S::V {
    // SAFETY (whole fn): `k` points at 7 vectors (caller); arithmetic primitives only; the
    // caller guarantees the ISA.
    unsafe {
        let t = S::add(x, *k);
        let f = S::sub(x, S::sub(t, *k));
        let mut p = S::fma(f, *k.add(1), *k.add(2));
        p = S::fma(f, p, *k.add(3));
        p = S::fma(f, p, *k.add(4));
        p = S::fma(f, p, *k.add(5));
        p = S::fma(f, p, *k.add(6));
        S::add_shl23(p, t)
    }
}

/// `log1p(z)/z ≈ Q0 + z·(Q1 + z·(… + z·Q8))` on `[0, 1]` (minimax relative fit, max relative
/// error 1.7e-7 in f32).
const Q: [f32; 9] = [
    0.999_999_94,
    -0.499_994_93,
    0.333_190_98,
    -0.248_429_82,
    0.191_060_08,
    -0.136_632_47,
    0.078_225_96,
    -0.029_505_244,
    0.005_232_695,
];

/// `log₂e − f32(log₂e)`.
const LOG2_E_LO: f32 = 1.925_963e-8;

/// `softplus(x) = max(x, 0) + log1p(exp(−|x|))`, with `exp(−|x|)` by [`exp2_v`] (argument
/// clamped at `−125`) and `log1p` by [`Q`]: max relative error 5e-7 against f64 for
/// `x ≥ −80` (unit test `scan_softplus_is_accurate`); `x > 20` gives `x` as the oracle's
/// threshold rule does (the correction is below half an ulp).
#[inline(always)]
pub(crate) unsafe fn softplus_v<S: Simd>(x: S::V, k: *const S::V) -> S::V {
    // SAFETY (whole fn): arithmetic primitives only; see `exp2_v`.
    unsafe {
        let ax = S::max(x, S::sub(S::zero(), x));
        // −|x|·log₂e = hi + lo: `lo` is the rounding error of the product (exact by FMA) plus
        // the part of log₂e below f32; 2^lo = 1 + lo·ln 2 (|lo| < 1e-5).
        let nl = S::splat(-core::f32::consts::LOG2_E);
        let hi = S::mul(ax, nl);
        let lo = S::fma(
            ax,
            S::splat(-LOG2_E_LO),
            S::fma(ax, nl, S::sub(S::zero(), hi)),
        );
        let z = exp2_v::<S>(S::max(hi, S::splat(-ARG_MAX)), k);
        let z = S::fma(z, S::mul(lo, S::splat(core::f32::consts::LN_2)), z);
        let mut q = S::splat(Q[8]);
        for c in Q[..8].iter().rev() {
            q = S::fma(q, z, S::splat(*c));
        }
        S::fma(z, q, S::max(x, S::zero()))
    }
}

/// A compiler barrier for memory whose address escaped (the constants): they are re-read after
/// it, as memory operands, instead of being held in registers the state tile needs.
#[inline(always)]
fn reload_barrier() {
    // SAFETY: an empty asm block; it touches no registers, stack or flags.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// Per-chunk buffers of one channel block, `[CHUNK][LANES]` each (`LANES ≤ 16`).
struct Chunk {
    /// `δ` per step.
    dt: [f32; 16 * CHUNK],
    /// `δ·u` per step.
    du: [f32; 16 * CHUNK],
    /// `y` per step (the tiles add into it).
    y: [f32; 16 * CHUNK],
    /// `B_t | C_t` of each step (`2N` values of the `x_dbl` row).
    bc: [*const f32; CHUNK],
}

/// States `0 .. TS` of `a2`/`hs` (each `TS × LANES`, the tile's rows) over the chunk's first `cn`
/// steps; `bc0` is the tile's first state index into every `B_t | C_t` row.
#[inline(always)]
unsafe fn tile<S: Simd, const TS: usize, const CLAMP: bool>(
    a2: *const f32,
    hs: *mut f32,
    c: &mut Chunk,
    bc0: usize,
    kc: *const S::V,
    n: usize,
    cn: usize,
) {
    let lanes = S::LANES;
    // SAFETY (whole fn): `a2`/`hs` hold TS·LANES values (caller); the chunk buffers hold
    // CHUNK·LANES ≥ cn·LANES; `c.bc[j]` points at 2N readable values and bc0 + TS ≤ N; the ISA is
    // guaranteed by the caller.
    unsafe {
        let mut h = [S::zero(); TS];
        for (k, hk) in h.iter_mut().enumerate() {
            *hk = S::load(hs.add(k * lanes));
        }
        for j in 0..cn {
            let d = S::load(c.dt.as_ptr().add(j * lanes));
            let dx = S::load(c.du.as_ptr().add(j * lanes));
            let b = c.bc[j].add(bc0);
            // Two partial sums of y: one chain of TS FMAs would be the step's critical path.
            let mut ys = [S::zero(); 2];
            // Unrolled by hand (LLVM keeps a loop over `k` rolled and `h` in memory).
            macro_rules! state {
                ($($k:literal)*) => {$(
                    if $k < TS {
                        let mut x = S::mul(d, S::load(a2.add($k * lanes)));
                        if CLAMP {
                            x = S::max(S::min(x, S::splat(ARG_MAX)), S::splat(-ARG_MAX));
                        }
                        reload_barrier();
                        let e = exp2_v::<S>(x, kc);
                        h[$k] = S::fma(e, h[$k], S::mul(dx, S::splat(*b.add($k))));
                        ys[$k % 2] = S::fma(h[$k], S::splat(*b.add(n + $k)), ys[$k % 2]);
                    }
                )*};
            }
            state!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            let yp = c.y.as_mut_ptr().add(j * lanes);
            S::store(yp, S::add(S::load(yp), S::add(ys[0], ys[1])));
        }
        for (k, hk) in h.iter().enumerate() {
            S::store(hs.add(k * lanes), *hk);
        }
    }
}

/// Runs all states of one chunk in tiles of `SCAN_TILE`, then 4, then 1 (a fixed sequence per
/// `N`, so every channel split sums `y` in the same order).
#[inline(always)]
unsafe fn tiles<S: Simd, const CLAMP: bool>(
    a2: &[f32],
    hs: &mut [f32],
    c: &mut Chunk,
    kc: *const S::V,
    n: usize,
    cn: usize,
) {
    let lanes = S::LANES;
    let mut i = 0;
    while i < n {
        let ts = if n - i >= S::SCAN_TILE {
            S::SCAN_TILE
        } else if n - i >= 4 {
            4
        } else {
            1
        };
        let (ap, hp) = (a2[i * lanes..].as_ptr(), hs[i * lanes..].as_mut_ptr());
        // SAFETY: a2/hs hold N·LANES values, so rows i .. i + ts are in bounds; see `tile`.
        unsafe {
            match ts {
                16 => tile::<S, 16, CLAMP>(ap, hp, c, i, kc, n, cn),
                8 => tile::<S, 8, CLAMP>(ap, hp, c, i, kc, n, cn),
                4 => tile::<S, 4, CLAMP>(ap, hp, c, i, kc, n, cn),
                _ => tile::<S, 1, CLAMP>(ap, hp, c, i, kc, n, cn),
            }
        }
        i += ts;
    }
}

/// Position of the `s`-th step of `plan`.
#[inline(always)]
fn position(plan: &ScanPlan, s: usize) -> usize {
    match plan.dir {
        Direction::Forward => plan.steps.start + s,
        Direction::Backward => plan.steps.end - 1 - s,
    }
}

/// Selective scan of one direction over channels `ch` (same contract as
/// [`selective_scan_channels_f32`], within the module's error budget); `h` receives the
/// final state of those channels, `ch.len() · N`. Outputs go to `acc[t][ch.start − acc_col0 ..]`.
#[inline(always)]
pub(crate) unsafe fn scan_channels<S: Simd>(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    let n = w.d_state;
    assert!(h.len() >= ch.len() * n && ch.end <= x.u.cols());
    assert!(ch.start >= acc_col0 && ch.end - acc_col0 <= acc.cols());
    assert!(w.a.len() >= ch.end * n && w.d_skip.len() >= ch.end && w.dt_bias.len() >= ch.end);
    assert!(x.x_dbl.cols() >= w.dt_rank + 2 * n);
    if n > MAX_N {
        return selective_scan_channels_f32(w, x, plan, acc, acc_col0, h, ch);
    }
    let lanes = S::LANES;
    let nsteps = plan.steps.len();
    // A′ᵀ and the state of each block of the group, [N][LANES] each.
    let mut a2 = [[0f32; 16 * MAX_N]; GROUP];
    let mut hs = [[0f32; 16 * MAX_N]; GROUP];
    let mut amax = [0f32; GROUP];
    let mut c = Chunk {
        dt: [0.0; 16 * CHUNK],
        du: [0.0; 16 * CHUNK],
        y: [0.0; 16 * CHUNK],
        bc: [core::ptr::null(); CHUNK],
    };
    // SAFETY: the caller guarantees the ISA.
    let kv = unsafe { consts::<S>() };
    let kc = core::hint::black_box(kv.as_ptr());
    let mut g0 = ch.start;
    while g0 < ch.end {
        let g1 = (g0 + GROUP * lanes).min(ch.end);
        let nb = (g1 - g0).div_ceil(lanes);
        for b in 0..nb {
            let e0 = g0 + b * lanes;
            let m = lanes.min(g1 - e0);
            amax[b] = 0.0;
            for i in 0..n {
                for j in 0..lanes {
                    let a = if j < m {
                        w.a[(e0 + j) * n + i] * core::f32::consts::LOG2_E
                    } else {
                        0.0
                    };
                    amax[b] = amax[b].max(a.abs());
                    a2[b][i * lanes + j] = a;
                    hs[b][i * lanes + j] = 0.0;
                }
            }
        }
        let mut s0 = 0;
        while s0 < nsteps {
            let cn = CHUNK.min(nsteps - s0);
            for b in 0..nb {
                let e0 = g0 + b * lanes;
                let m = lanes.min(g1 - e0);
                let cols = e0..e0 + m;
                let out_cols = e0 - acc_col0..e0 - acc_col0 + m;
                let (a2, hs) = (&a2[b][..n * lanes], &mut hs[b][..n * lanes]);
                // SAFETY (block): vector accesses of the chunk buffers are at j·LANES with
                // j < cn ≤ CHUNK; rows come from bounds-checked slices; the ISA is guaranteed by
                // the caller.
                unsafe {
                    let bias = load_part::<S>(&w.dt_bias[cols.clone()]);
                    let mut dmax = S::zero();
                    for j in 0..cn {
                        let t = position(plan, s0 + j);
                        let delta = load_part::<S>(&x.delta.row(t)[cols.clone()]);
                        let d = softplus_v::<S>(S::add(delta, bias), kc);
                        let u = load_part::<S>(&x.u.row(t)[cols.clone()]);
                        S::store(c.dt.as_mut_ptr().add(j * lanes), d);
                        S::store(c.du.as_mut_ptr().add(j * lanes), S::mul(d, u));
                        S::store(c.y.as_mut_ptr().add(j * lanes), S::zero());
                        dmax = S::max(dmax, d);
                        c.bc[j] = x.x_dbl.row(t)[w.dt_rank..w.dt_rank + 2 * n].as_ptr();
                    }
                    // δ ≥ 0, so x = δ·A′ stays within ±(max δ)·(max|A′|); a NaN δ fails the
                    // test.
                    if S::hmax(dmax) * amax[b] <= ARG_MAX {
                        tiles::<S, false>(a2, hs, &mut c, kc, n, cn);
                    } else {
                        tiles::<S, true>(a2, hs, &mut c, kc, n, cn);
                    }
                    let dskip = load_part::<S>(&w.d_skip[cols.clone()]);
                    for j in 0..cn {
                        let t = position(plan, s0 + j);
                        if !plan.emit.contains(&t) {
                            continue;
                        }
                        let u = load_part::<S>(&x.u.row(t)[cols.clone()]);
                        let g = load_part::<S>(&x.gate.row(t)[cols.clone()]);
                        let y = S::load(c.y.as_ptr().add(j * lanes));
                        let mut o = S::mul(S::fma(dskip, u, y), g);
                        let out = &mut acc.row_mut(t)[out_cols.clone()];
                        if plan.accumulate {
                            o = S::add(load_part::<S>(out), o);
                        }
                        store_part::<S>(o, out);
                    }
                }
            }
            s0 += cn;
        }
        for (b, hb) in hs.iter().enumerate().take(nb) {
            let e0 = g0 + b * lanes;
            let m = lanes.min(g1 - e0);
            let hc = &mut h[(e0 - ch.start) * n..];
            for j in 0..m {
                for i in 0..n {
                    hc[j * n + i] = hb[i * lanes + j];
                }
            }
        }
        g0 = g1;
    }
}

/// Whole-width scan with the oracle's checks.
#[inline(always)]
pub(crate) unsafe fn scan<S: Simd>(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    h: &mut [f32],
) {
    check(w, x, plan, acc, h);
    // SAFETY: the caller guarantees the ISA.
    unsafe { scan_channels::<S>(w, x, plan, acc, 0, h, 0..x.u.cols()) }
}

#[cfg(test)]
/// Max relative error of [`exp2_v`] over `x ∈ [−125, 125]` against f64, on level `S`.
pub(crate) unsafe fn exp2_max_rel<S: Simd>() -> f64 {
    let mut worst = 0f64;
    let n = 1_000_003;
    let mut buf = [0f32; 16];
    // SAFETY: the caller checked the ISA.
    let k = unsafe { consts::<S>() };
    for i in 0..n {
        let x0 = -ARG_MAX + 2.0 * ARG_MAX * (i as f32 / (n - 1) as f32);
        for x in [x0, x0 * 1e-3, x0 * 1e-6] {
            // SAFETY: the caller checked the ISA; buf holds 16 ≥ LANES values.
            unsafe { S::store(buf.as_mut_ptr(), exp2_v::<S>(S::splat(x), k.as_ptr())) };
            let want = (x as f64).exp2();
            worst = worst.max((buf[0] as f64 - want).abs() / want);
        }
    }
    worst
}

#[cfg(test)]
/// Max relative error of [`softplus_v`] over `x ∈ [−80, 40]` against f64, on level `S`.
pub(crate) unsafe fn softplus_max_rel<S: Simd>() -> f64 {
    let mut worst = 0f64;
    let n = 1_000_003;
    let mut buf = [0f32; 16];
    // SAFETY: the caller checked the ISA.
    let k = unsafe { consts::<S>() };
    for i in 0..n {
        let x = -80.0 + 120.0 * (i as f32 / (n - 1) as f32);
        // SAFETY: the caller checked the ISA; buf holds 16 ≥ LANES values.
        unsafe { S::store(buf.as_mut_ptr(), softplus_v::<S>(S::splat(x), k.as_ptr())) };
        let want = (x as f64).exp().ln_1p();
        worst = worst.max((buf[0] as f64 - want).abs() / want);
    }
    worst
}
