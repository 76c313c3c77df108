//! The vector selective scan, generic over [`Simd`] (instantiated by `kernels/avx2.rs` and
//! `kernels/neon.rs` inside their `#[target_feature]` entry points; everything is
//! `#[inline(always)]` so that it is compiled with those features).
//!
//! Layout: a block of `LANES` channels runs the whole sequence in chunks of [`CHUNK`] tokens.
//! Per chunk, the row starts of every step are looked up once for the [`GROUP`] blocks run
//! together; per block a pre-pass writes `δ = softplus(Δ + bias)` (four steps' chains
//! interleaved) and `δ·u` as `[CHUNK][LANES]` and the largest `δ`; then the states run in tiles
//! of [`Simd::SCAN_TILE`] (8 on AVX2, 16 on NEON) with the tile's `h` in registers and
//! `A′ = A·log₂e`, `B_t`, `C_t` read as memory operands. The first tile stores its part of
//! `y = Σₙ hₙ·Cₙ` into a `[CHUNK][LANES]` buffer, later ones add theirs, and the last one also
//! does the output step (`(y + D·u)·gate`, stored or added to the accumulator) when the block is
//! full and the chunk's steps are all emitted; otherwise a loop after the tiles does it.
//! An ISA may run 8-state tiles with a kernel of its own ([`Simd::scan_tile8`]: AVX2's
//! hand-scheduled two-phase loop in `kernels/avx2.rs`) that must give the generic tile's bits.
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

// Only instantiated on targets with a SIMD level (x86-64, aarch64).
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use core::ops::Range;

#[cfg(test)]
use crate::kernels::generic::max_rel_err;
use crate::kernels::generic::{each, load_part, store_part, Simd, EXP2_P, LOG2_E_LO, MAGIC};
use crate::kernels::scalar::selective_scan_channels_f32;
use crate::kernels::scan::{check, OutRow, ScanInputs, ScanPlan, ScanWeights, Tile, TileOut};
use crate::kernels::{Direction, MatMut};

/// Largest `N` kept on the stack; larger states use the oracle.
const MAX_N: usize = 64;
/// Tokens per chunk of the `δ`, `δ·u` and `y` buffers.
pub(crate) const CHUNK: usize = 64;
/// Channel blocks run together chunk by chunk: a block reads half of each 64-byte line of the
/// `L × E` inputs on AVX2, its neighbour the other half while the line is still in L1.
const GROUP: usize = 2;
/// Largest `|δ·A′|` for which `2ᵏ·p` is normal and finite without a clamp.
const ARG_MAX: f32 = 125.0;
/// [`exp2_v`]'s constants as vectors: `MAGIC`, `P4 … P0`, `1`.
type Consts<S> = [<S as Simd>::V; 7];

#[inline(always)]
unsafe fn consts<S: Simd>() -> Consts<S> {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        [
            S::splat(MAGIC),
            S::splat(EXP2_P[4]),
            S::splat(EXP2_P[3]),
            S::splat(EXP2_P[2]),
            S::splat(EXP2_P[1]),
            S::splat(EXP2_P[0]),
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

/// `softplus(x) = max(x, 0) + log1p(exp(−|x|))`, with `exp(−|x|)` by [`exp2_v`] (argument
/// clamped at `−125`) and `log1p` by [`Q`]: max relative error 5e-7 against f64 for
/// `x ≥ −80` (unit test `scan_softplus_is_accurate`); `x > 20` gives `x` as the oracle's
/// threshold rule does (the correction is below half an ulp). Computed for `K` vectors, each
/// step applied to all of them before the next (independent chains in program order, so that
/// their latency overlaps).
#[inline(always)]
unsafe fn softplus_k<S: Simd, const K: usize>(x: [S::V; K], k: *const S::V) -> [S::V; K] {
    // SAFETY (whole fn): arithmetic primitives only; `k` points at 7 vectors (caller); the
    // caller guarantees the ISA.
    unsafe {
        let ax = each::<S, K>(|i| S::max(x[i], S::sub(S::zero(), x[i])));
        // −|x|·log₂e = hi + lo: `lo` is the rounding error of the product (exact by FMA) plus
        // the part of log₂e below f32; 2^lo = 1 + lo·ln 2 (|lo| < 1e-5).
        let nl = S::splat(-core::f32::consts::LOG2_E);
        let hi = each::<S, K>(|i| S::mul(ax[i], nl));
        let lo = each::<S, K>(|i| {
            S::fma(
                ax[i],
                S::splat(-LOG2_E_LO),
                S::fma(ax[i], nl, S::sub(S::zero(), hi[i])),
            )
        });
        // 2^hi by `exp2_v`'s steps.
        let h = each::<S, K>(|i| S::max(hi[i], S::splat(-ARG_MAX)));
        let t = each::<S, K>(|i| S::add(h[i], *k));
        let f = each::<S, K>(|i| S::sub(h[i], S::sub(t[i], *k)));
        let mut p = each::<S, K>(|i| S::fma(f[i], *k.add(1), *k.add(2)));
        for c in 3..7 {
            p = each::<S, K>(|i| S::fma(f[i], p[i], *k.add(c)));
        }
        let z = each::<S, K>(|i| S::add_shl23(p[i], t[i]));
        let z =
            each::<S, K>(|i| S::fma(z[i], S::mul(lo[i], S::splat(core::f32::consts::LN_2)), z[i]));
        let mut q = [S::splat(Q[8]); K];
        for c in Q[..8].iter().rev() {
            q = each::<S, K>(|i| S::fma(q[i], z[i], S::splat(*c)));
        }
        each::<S, K>(|i| S::fma(z[i], q[i], S::max(x[i], S::zero())))
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
#[derive(Clone)]
#[repr(C)]
struct Chunk {
    /// `δ` per step.
    dt: [f32; 16 * CHUNK],
    /// `δ·u` per step.
    du: [f32; 16 * CHUNK],
    /// `y` per step (the tiles add into it).
    y: [f32; 16 * CHUNK],
    /// `B_t | C_t` of each step (`2N` values of the `x_dbl` row).
    bc: [*const f32; CHUNK],
    /// Where each step's output comes from and goes (when the last tile writes it).
    out: [OutRow; CHUNK],
    /// Position and row starts (column 0) of each step; the accumulator row only where emitted.
    rows: [Rows; CHUNK],
}

/// A step's position and the starts of its rows of `Δ`, `u`, the gate and the accumulator.
#[derive(Clone, Copy)]
struct Rows {
    t: usize,
    delta: *const f32,
    u: *const f32,
    g: *const f32,
    o: *mut f32,
}

impl Rows {
    const NULL: Rows = Rows {
        t: 0,
        delta: core::ptr::null(),
        u: core::ptr::null(),
        g: core::ptr::null(),
        o: core::ptr::null_mut(),
    };
}

/// States `0 .. TS` of a [`Tile`]. Per step, `y` gets `(y_even + y_odd)` added (or stored, for
/// the first tile): two partial sums over the tile's even and odd states, each in state order
/// (the order every ISA's tile kernel keeps, so that results never depend on which one ran).
#[inline(always)]
unsafe fn tile<S: Simd, const TS: usize, const CLAMP: bool>(t: &Tile) {
    let lanes = S::LANES;
    let (a2, hs, bc0, n) = (t.a2, t.hs, t.bc0, t.n);
    let kc = t.kc as *const S::V;
    // SAFETY (whole fn): `a2`/`hs` hold TS·LANES values, the chunk buffers cn·LANES, every
    // `bc[j]` 2N values with bc0 + TS ≤ N (caller, `tiles`); the ISA is guaranteed by the
    // caller.
    unsafe {
        let mut h = [S::zero(); TS];
        for (k, hk) in h.iter_mut().enumerate() {
            *hk = S::load(hs.add(k * lanes));
        }
        for j in 0..t.cn {
            let d = S::load(t.dt.add(j * lanes));
            let dx = S::load(t.du.add(j * lanes));
            let b = (*t.bc.add(j)).add(bc0);
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
            let yp = t.y.add(j * lanes);
            let ys = S::add(ys[0], ys[1]);
            let y = if t.first { ys } else { S::add(S::load(yp), ys) };
            match t.out {
                None => S::store(yp, y),
                Some(o) => {
                    let r = *o.rows.add(j);
                    let mut v = S::mul(S::fma(S::load(o.d_skip), S::load(r.u), y), S::load(r.g));
                    if o.accumulate {
                        v = S::add(S::load(r.o), v);
                    }
                    S::store(r.o, v);
                }
            }
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
    out: Option<TileOut>,
) {
    let lanes = S::LANES;
    if n == 0 {
        c.y[..cn * lanes].fill(0.0);
        debug_assert!(out.is_none(), "a fused output needs a tile");
    }
    let mut i = 0;
    while i < n {
        let ts = if n - i >= S::SCAN_TILE {
            S::SCAN_TILE
        } else if n - i >= 4 {
            4
        } else {
            1
        };
        let t = Tile {
            a2: a2[i * lanes..].as_ptr(),
            hs: hs[i * lanes..].as_mut_ptr(),
            dt: c.dt.as_ptr(),
            du: c.du.as_ptr(),
            y: c.y.as_mut_ptr(),
            bc: c.bc.as_ptr(),
            bc0: i,
            n,
            cn,
            first: i == 0,
            kc: kc as *const f32,
            out: if i + ts == n { out } else { None },
        };
        // SAFETY: a2/hs hold N·LANES values, so rows i .. i + ts are in bounds; the chunk
        // buffers hold CHUNK ≥ cn steps and bc[..cn] is set; see `tile`.
        unsafe {
            match ts {
                8 if !CLAMP && S::scan_tile8(&t) => {}
                16 => tile::<S, 16, CLAMP>(&t),
                8 => tile::<S, 8, CLAMP>(&t),
                4 => tile::<S, 4, CLAMP>(&t),
                _ => tile::<S, 1, CLAMP>(&t),
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
        out: [OutRow::NULL; CHUNK],
        rows: [Rows::NULL; CHUNK],
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
            // Row starts of every step of the chunk, shared by the group's blocks.
            for j in 0..cn {
                let t = position(plan, s0 + j);
                c.rows[j] = Rows {
                    t,
                    delta: x.delta.row(t).as_ptr(),
                    u: x.u.row(t).as_ptr(),
                    g: x.gate.row(t).as_ptr(),
                    o: match plan.emit.contains(&t) {
                        true => acc.row_mut(t).as_mut_ptr(),
                        false => core::ptr::null_mut(),
                    },
                };
                c.bc[j] = x.x_dbl.row(t)[w.dt_rank..w.dt_rank + 2 * n].as_ptr();
            }
            // The last tile writes the outputs when a block is full and every step of the
            // chunk is emitted; otherwise the loop below does, from `y`.
            let (first, last) = (c.rows[0].t, c.rows[cn - 1].t);
            let all_emitted =
                plan.emit.contains(&first.min(last)) && plan.emit.contains(&first.max(last));
            for b in 0..nb {
                let e0 = g0 + b * lanes;
                let m = lanes.min(g1 - e0);
                let (a2, hs) = (&a2[b][..n * lanes], &mut hs[b][..n * lanes]);
                let fused = m == lanes && n > 0 && all_emitted;
                let oc = e0 - acc_col0;
                // `m` values at `p` (a row start plus the block's column): a vector load for
                // a full block, zero-padded otherwise.
                // SAFETY (closure): the callers pass rows of `x`'s matrices at column e0 with
                // e0 + m ≤ E, or `acc` rows at column oc with oc + m ≤ acc.cols() (asserted
                // above); the ISA is guaranteed by the caller.
                let ld = |p: *const f32| unsafe {
                    match m == lanes {
                        true => S::load(p),
                        false => load_part::<S>(core::slice::from_raw_parts(p, m)),
                    }
                };
                // SAFETY (block): vector accesses of the chunk buffers are at j·LANES with
                // j < cn ≤ CHUNK; row accesses as for `ld`; the ISA is guaranteed by the caller.
                unsafe {
                    let bias = load_part::<S>(&w.dt_bias[e0..e0 + m]);
                    let mut dmax = S::zero();
                    // Softplus of SP steps at a time (independent chains); a short last group
                    // computes softplus(0) in its unused slots.
                    const SP: usize = 4;
                    for j0 in (0..cn).step_by(SP) {
                        let q = SP.min(cn - j0);
                        let mut v = [S::zero(); SP];
                        for (i, vi) in v.iter_mut().enumerate().take(q) {
                            *vi = S::add(ld(c.rows[j0 + i].delta.add(e0)), bias);
                        }
                        let d = softplus_k::<S, SP>(v, kc);
                        for (i, &d) in d.iter().enumerate().take(q) {
                            let (j, r) = (j0 + i, c.rows[j0 + i]);
                            S::store(c.dt.as_mut_ptr().add(j * lanes), d);
                            S::store(c.du.as_mut_ptr().add(j * lanes), S::mul(d, ld(r.u.add(e0))));
                            dmax = S::max(dmax, d);
                            if fused {
                                c.out[j] = OutRow {
                                    u: r.u.add(e0),
                                    g: r.g.add(e0),
                                    o: r.o.add(oc),
                                };
                            }
                        }
                    }
                    let out = fused.then(|| TileOut {
                        rows: c.out.as_ptr(),
                        d_skip: w.d_skip[e0..e0 + m].as_ptr(),
                        accumulate: plan.accumulate,
                    });
                    // δ ≥ 0, so x = δ·A′ stays within ±(max δ)·(max|A′|); a NaN δ fails the
                    // test.
                    if S::hmax(dmax) * amax[b] <= ARG_MAX {
                        tiles::<S, false>(a2, hs, &mut c, kc, n, cn, out);
                    } else {
                        tiles::<S, true>(a2, hs, &mut c, kc, n, cn, out);
                    }
                    if fused {
                        continue;
                    }
                    let dskip = load_part::<S>(&w.d_skip[e0..e0 + m]);
                    for j in 0..cn {
                        let r = c.rows[j];
                        if !plan.emit.contains(&r.t) {
                            continue;
                        }
                        let y = S::load(c.y.as_ptr().add(j * lanes));
                        let mut o = S::mul(S::fma(dskip, ld(r.u.add(e0)), y), ld(r.g.add(e0)));
                        let out = core::slice::from_raw_parts_mut(r.o.add(oc), m);
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
    // SAFETY: the caller checked the ISA.
    unsafe {
        let k = consts::<S>();
        let e = |x| exp2_v::<S>(x, k.as_ptr());
        max_rel_err::<S>(-ARG_MAX, ARG_MAX, &[1.0, 1e-3, 1e-6], e, f64::exp2)
    }
}

#[cfg(test)]
/// Max relative error of [`softplus_k`] over `x ∈ [−80, 40]` against f64, on level `S`.
pub(crate) unsafe fn softplus_max_rel<S: Simd>() -> f64 {
    // SAFETY: the caller checked the ISA.
    unsafe {
        let k = consts::<S>();
        let sp = |x| softplus_k::<S, 1>([x], k.as_ptr())[0];
        max_rel_err::<S>(-80.0, 40.0, &[1.0], sp, |x| x.exp().ln_1p())
    }
}

#[cfg(test)]
/// Runs [`Simd::scan_tile8`] and the generic 8-state tile on the same pseudo-random chunk
/// (first and later tile, `y` left or outputs stored or added; `N = 24`, tile at state 8) and
/// returns whether the ISA has a tile kernel and both left bit-identical states and outputs.
pub(crate) unsafe fn tile8_matches_generic<S: Simd>() -> (bool, bool) {
    extern crate std;
    use std::{boxed::Box, vec::Vec};
    let lanes = S::LANES;
    let (n, cn) = (24, 37);
    let mut seed = 1u32;
    let mut r = |lo: f32, hi: f32| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        lo + (hi - lo) * (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    let a2: Vec<f32> = (0..8 * lanes).map(|_| -r(0.01, 20.0)).collect();
    let h0: Vec<f32> = (0..8 * lanes).map(|_| r(-1.0, 1.0)).collect();
    let rows: Vec<f32> = (0..CHUNK * 2 * n).map(|_| r(-1.0, 1.0)).collect();
    let ug: Vec<f32> = (0..CHUNK * 2 * lanes).map(|_| r(-2.0, 2.0)).collect();
    let o0: Vec<f32> = (0..CHUNK * lanes).map(|_| r(-1.0, 1.0)).collect();
    let d_skip: Vec<f32> = (0..lanes).map(|_| r(-1.0, 1.0)).collect();
    let c0 = Box::new(Chunk {
        dt: core::array::from_fn(|_| r(0.0, 2.0)),
        du: core::array::from_fn(|_| r(-2.0, 2.0)),
        y: core::array::from_fn(|_| r(-1.0, 1.0)),
        bc: core::array::from_fn(|j| rows[j * 2 * n..].as_ptr()),
        out: [OutRow::NULL; CHUNK],
        rows: [Rows::NULL; CHUNK],
    });
    // SAFETY: the caller checked the ISA.
    let k = unsafe { consts::<S>() };
    let (mut has, mut same) = (true, true);
    for first in [true, false] {
        for out in [None, Some(false), Some(true)] {
            let run = |kernel: bool| {
                let (mut c, mut h, mut o) = (c0.clone(), h0.clone(), o0.clone());
                for j in 0..CHUNK {
                    c.out[j] = OutRow {
                        u: ug[2 * j * lanes..].as_ptr(),
                        g: ug[(2 * j + 1) * lanes..].as_ptr(),
                        o: o[j * lanes..].as_mut_ptr(),
                    };
                }
                let t = Tile {
                    a2: a2.as_ptr(),
                    hs: h.as_mut_ptr(),
                    dt: c.dt.as_ptr(),
                    du: c.du.as_ptr(),
                    y: c.y.as_mut_ptr(),
                    bc: c.bc.as_ptr(),
                    bc0: 8,
                    n,
                    cn,
                    first,
                    kc: k.as_ptr() as *const f32,
                    out: out.map(|accumulate| TileOut {
                        rows: c.out.as_ptr(),
                        d_skip: d_skip.as_ptr(),
                        accumulate,
                    }),
                };
                // SAFETY: 8 state rows of LANES values, cn ≤ CHUNK steps, rows of 2N values,
                // output rows of LANES values; the caller checked the ISA.
                let ran = unsafe {
                    if kernel {
                        S::scan_tile8(&t)
                    } else {
                        tile::<S, 8, false>(&t);
                        true
                    }
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                (ran, bits(&h), bits(&c.y[..cn * lanes]), bits(&o))
            };
            let (ran, ha, ya, oa) = run(true);
            let (_, hb, yb, ob) = run(false);
            has &= ran;
            same &= ha == hb && ya == yb && oa == ob;
        }
    }
    (has, same)
}
