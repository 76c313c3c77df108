//! The vector selective scan, generic over [`Simd`] (instantiated by `kernels/avx2.rs` and
//! `kernels/neon.rs` inside their `#[target_feature]` entry points; everything is
//! `#[inline(always)]` so that it is compiled with those features).
//!
//! Layout: a block of `LANES` channels runs the whole sequence in chunks of [`CHUNK`] tokens.
//! Per chunk, the row starts of every step are looked up once for the [`GROUP`] blocks run
//! together, and one pass over the chunk's steps writes each block's `δ = softplus(Δ + bias)`
//! and `δ·u` as `[CHUNK][LANES]` and its largest `δ` (the blocks' softplus chains side by side,
//! their `Δ` and `u` one segment of each row); then each block's states run in tiles
//! of [`Simd::SCAN_TILE`] (8 on AVX2, 16 on NEON) with the tile's `h` in registers and
//! `A′ = A·log₂e`, `B_t`, `C_t` read as memory operands. The first tile stores its part of
//! `y = Σₙ hₙ·Cₙ` into a `[CHUNK][LANES]` buffer, later ones add theirs, and the last one also
//! does the output step (`y + D·u`, stored or added to the accumulator) when the block is
//! full and the chunk's steps are all emitted; otherwise a loop after the tiles does it.
//! An ISA may run 8-state tiles with a kernel of its own ([`Simd::scan_tile8`]: AVX2's
//! hand-scheduled two-phase loop in `kernels/avx2.rs`) that must give the generic tile's bits.
//!
//! `exp(δ·A) = 2^(δ·A′)` ([`exp2_v`]): `k = round(x)` by adding `1.5·2²³`, `f = x − k ∈ [−½, ½]`,
//! a degree-4 polynomial ([`SCAN_EXP2_P`]), and `2ᵏ` applied by adding `k` to the float's
//! exponent bits. That is valid for `|x| ≤ 125` (`2ᵏ·p` stays normal and finite), which one
//! comparison per chunk establishes (`max δ · max|A′| ≤ 125`); otherwise the chunk runs the same
//! code with `x` clamped to `[−125, 125]` (identical bits where the clamp is inactive, so the
//! channel split never changes results).
//!
//! Error budget vs the oracle (`libm::expf(δ·A)`), spent on purpose against the 1e-4 end-to-end
//! contract: degree 4 instead of 5 takes one FMA and one load out of each state update (−7 % per
//! scan call). `2ˣ` max relative error 7e-6 for `|x| ≤ 125` (measured 5.9e-6) but 1.5e-7 for
//! `|x| ≤ 1/32` (measured 1.0e-7; unit test `scan_exp2_is_accurate`): a step's error stays in
//! the state for about `e/(1 − e)` steps, so the fit keeps it smallest where the decay `e` is
//! close to 1. Plus the rounding of `A′` and of `δ·A′` (as the oracle rounds `δ·A`; both matter
//! only where `exp(δ·A)` is small) and softplus 5e-7 (measured 4.5e-7, [`softplus_k`]). The scan
//! output is within `5e-5` of the output scale (`tests/simd_conformance.rs`, measured 2.2e-5);
//! end to end the golden parity tests measure 9.7e-7 (Vim-Ti) and 3.5e-6 (Fashion-MNIST) of 1e-4.
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
use crate::kernels::generic::{load_part, softplus_k, store_part, Simd, MAGIC};
use crate::kernels::scalar::selective_scan_channels_f32;
use crate::kernels::scan::{check, OutRow, ScanInputs, ScanPlan, ScanWeights, Tile, TileOut};
use crate::kernels::{Direction, MatMut};

/// Largest `N` kept on the stack; larger states use the oracle.
const MAX_N: usize = 64;
/// Tokens per chunk of the `δ`, `δ·u` and `y` buffers (32: the [`GROUP`] blocks' buffers, 15 KB
/// on AVX2, stay in L1 between the pass that writes them and the tiles; 64 was 2–4 % slower).
pub(crate) const CHUNK: usize = 32;
/// Channel blocks run together chunk by chunk: per step, their `Δ` and `u` values are one
/// `GROUP·LANES`-value segment of the row (two 64-byte lines on AVX2, one on NEON) and their
/// softplus chains run side by side.
const GROUP: usize = 4;
/// Widest vector (lanes) the chunk buffers hold.
pub(crate) const MAX_LANES: usize = 8;
/// Largest `|δ·A′|` for which `2ᵏ·p` is normal and finite without a clamp.
const ARG_MAX: f32 = 125.0;
/// `2^f ≈ 1 + f·(ln 2 + f·(P1 + f·(P2 + f·P3)))` on `[−½, ½]`, `[P1, P2, P3]`: `p(0) = 1` and
/// `p'(0) = ln 2` fixed (error O(f²) near 0), the rest a minimax fit of the relative error
/// weighted by how long it stays in the state (`scripts/fit_scan_exp2.py`).
const SCAN_EXP2_P: [f32; 3] = [0.240_264_65, 0.055_789_117, 0.009_471_261];
/// [`exp2_v`]'s constants as vectors: `MAGIC`, `P3, P2, P1`, `ln 2`, `1`.
type Consts<S> = [<S as Simd>::V; 6];

#[inline(always)]
unsafe fn consts<S: Simd>() -> Consts<S> {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        [
            S::splat(MAGIC),
            S::splat(SCAN_EXP2_P[2]),
            S::splat(SCAN_EXP2_P[1]),
            S::splat(SCAN_EXP2_P[0]),
            S::splat(core::f32::consts::LN_2),
            S::splat(1.0),
        ]
    }
}

/// `2ˣ` for `|x| ≤ 125` (see the module doc); `k` points at [`Consts`].
#[inline(always)]
pub(crate) unsafe fn exp2_v<S: Simd>(x: S::V, k: *const S::V) -> S::V {
    // SAFETY (whole fn): `k` points at 6 vectors (caller); arithmetic primitives only; the
    // caller guarantees the ISA.
    unsafe {
        let t = S::add(x, *k);
        let f = S::sub(x, S::sub(t, *k));
        let mut p = S::fma(f, *k.add(1), *k.add(2));
        p = S::fma(f, p, *k.add(3));
        p = S::fma(f, p, *k.add(4));
        p = S::fma(f, p, *k.add(5));
        S::add_shl23(p, t)
    }
}

/// A compiler barrier for memory whose address escaped (the constants): they are re-read after
/// it, as memory operands, instead of being held in registers the state tile needs.
#[inline(always)]
fn reload_barrier() {
    // SAFETY: an empty asm block; it touches no registers, stack or flags.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// Per-chunk buffers of one channel block, `[CHUNK][LANES]` each (`LANES ≤ MAX_LANES`).
#[derive(Clone)]
#[repr(C)]
struct Chunk {
    /// `δ` per step.
    dt: [f32; MAX_LANES * CHUNK],
    /// `δ·u` per step.
    du: [f32; MAX_LANES * CHUNK],
    /// `y` per step (the tiles add into it).
    y: [f32; MAX_LANES * CHUNK],
    /// Where each step's output comes from and goes (when the last tile writes it).
    out: [OutRow; CHUNK],
}

impl Chunk {
    const ZERO: Chunk = Chunk {
        dt: [0.0; MAX_LANES * CHUNK],
        du: [0.0; MAX_LANES * CHUNK],
        y: [0.0; MAX_LANES * CHUNK],
        out: [OutRow::NULL; CHUNK],
    };
}

/// A step's position and the starts of its rows of `Δ`, `u` and the accumulator.
#[derive(Clone, Copy)]
struct Rows {
    t: usize,
    delta: *const f32,
    u: *const f32,
    o: *mut f32,
}

impl Rows {
    const NULL: Rows = Rows {
        t: 0,
        delta: core::ptr::null(),
        u: core::ptr::null(),
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
                    let mut v = S::fma(S::load(o.d_skip), S::load(r.u), y);
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

/// Runs all states of one chunk (`B_t | C_t` rows in `bc`) in tiles of `SCAN_TILE`, then 4,
/// then 1 (a fixed sequence per `N`, so every channel split sums `y` in the same order).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<S: Simd, const CLAMP: bool>(
    a2: &[f32],
    hs: &mut [f32],
    c: &mut Chunk,
    bc: &[*const f32; CHUNK],
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
            bc: bc.as_ptr(),
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

/// [`load_part`] of the `m ≤ LANES` values at `p` (a row start plus a block's column).
#[inline(always)]
unsafe fn ld<S: Simd>(p: *const f32, m: usize) -> S::V {
    // SAFETY: the caller guarantees `m` readable values at `p` and the ISA.
    unsafe { load_part::<S>(core::slice::from_raw_parts(p, m)) }
}

/// The chunk's `δ = softplus(Δ + bias)` and `δ·u` of the [`GROUP`] blocks at columns `eb[b]`
/// (`mb[b]` channels each; `FULL`: all `LANES`) into their buffers, the blocks' softplus chains
/// side by side; returns each block's largest `δ`.
#[inline(always)]
unsafe fn deltas<S: Simd, const FULL: bool>(
    rows: &[Rows],
    eb: &[usize; GROUP],
    mb: &[usize; GROUP],
    bias: &[S::V; GROUP],
    c: &mut [Chunk; GROUP],
) -> [f32; GROUP] {
    let lanes = S::LANES;
    let ld = |p: *const f32, m: usize| match FULL {
        // SAFETY (closure): the caller guarantees `m` values at `p` (all LANES when FULL)
        // and the ISA.
        true => unsafe { S::load(p) },
        false => unsafe { ld::<S>(p, m) },
    };
    // SAFETY (whole fn): chunk-buffer accesses are at j·LANES with j < rows.len() ≤ CHUNK; row
    // accesses as `ld`'s; the ISA is guaranteed by the caller.
    unsafe {
        let mut dm = [S::zero(); GROUP];
        for (j, r) in rows.iter().enumerate() {
            let v = core::array::from_fn(|b| S::add(ld(r.delta.add(eb[b]), mb[b]), bias[b]));
            let d = softplus_k::<S, GROUP>(v);
            for b in 0..GROUP {
                S::store(c[b].dt.as_mut_ptr().add(j * lanes), d[b]);
                let du = S::mul(d[b], ld(r.u.add(eb[b]), mb[b]));
                S::store(c[b].du.as_mut_ptr().add(j * lanes), du);
                dm[b] = S::max(dm[b], d[b]);
            }
        }
        core::array::from_fn(|b| S::hmax(dm[b]))
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
    debug_assert!(lanes <= MAX_LANES);
    let nsteps = plan.steps.len();
    // Per block of the group: A′ᵀ and the state, [N][LANES] each, and the chunk buffers.
    let mut a2 = [[0f32; MAX_LANES * MAX_N]; GROUP];
    let mut hs = [[0f32; MAX_LANES * MAX_N]; GROUP];
    let mut amax = [0f32; GROUP];
    let mut c = [Chunk::ZERO; GROUP];
    // Per step of the chunk: `B_t | C_t` (2N values of the `x_dbl` row) and the row starts.
    let mut bc = [core::ptr::null(); CHUNK];
    let mut rows = [Rows::NULL; CHUNK];
    // SAFETY: the caller guarantees the ISA.
    let kv = unsafe { consts::<S>() };
    let kc = core::hint::black_box(kv.as_ptr());
    let mut g0 = ch.start;
    while g0 < ch.end {
        let g1 = (g0 + GROUP * lanes).min(ch.end);
        let nb = (g1 - g0).div_ceil(lanes);
        // Channels of block b (< nb): e0(b) .. e0(b) + m(b).
        let e0 = |b: usize| g0 + b * lanes;
        let m = |b: usize| lanes.min(g1 - e0(b));
        for b in 0..nb {
            amax[b] = 0.0;
            for i in 0..n {
                for j in 0..lanes {
                    let a = if j < m(b) {
                        w.a[(e0(b) + j) * n + i] * core::f32::consts::LOG2_E
                    } else {
                        0.0
                    };
                    amax[b] = amax[b].max(a.abs());
                    a2[b][i * lanes + j] = a;
                    hs[b][i * lanes + j] = 0.0;
                }
            }
        }
        // SAFETY: the ISA is guaranteed by the caller.
        let mut bias = [unsafe { S::zero() }; GROUP];
        for (b, v) in bias.iter_mut().enumerate().take(nb) {
            // SAFETY: as above; load_part takes ≤ LANES values.
            *v = unsafe { load_part::<S>(&w.dt_bias[e0(b)..e0(b) + m(b)]) };
        }
        let mut s0 = 0;
        while s0 < nsteps {
            let cn = CHUNK.min(nsteps - s0);
            // Row starts of every step of the chunk, shared by the group's blocks.
            for j in 0..cn {
                let t = position(plan, s0 + j);
                rows[j] = Rows {
                    t,
                    delta: x.delta.row(t).as_ptr(),
                    u: x.u.row(t).as_ptr(),
                    o: match plan.emit.contains(&t) {
                        true => acc.row_mut(t).as_mut_ptr(),
                        false => core::ptr::null_mut(),
                    },
                };
                bc[j] = x.x_dbl.row(t)[w.dt_rank..w.dt_rank + 2 * n].as_ptr();
            }
            // The last tile writes the outputs when a block is full and every step of the
            // chunk is emitted; otherwise the loop below does, from `y`.
            let (first, last) = (rows[0].t, rows[cn - 1].t);
            let all_emitted =
                plan.emit.contains(&first.min(last)) && plan.emit.contains(&first.max(last));
            let fused = |b: usize| m(b) == lanes && n > 0 && all_emitted;
            // δ = softplus(Δ + bias) and δ·u of the group's blocks, and the largest δ of each
            // block (blocks past `nb` read no values and compute softplus(0) into their unused
            // buffers, so that the GROUP chains stay unconditional).
            let eb: [usize; GROUP] = core::array::from_fn(|b| if b < nb { e0(b) } else { g0 });
            let mb: [usize; GROUP] = core::array::from_fn(|b| if b < nb { m(b) } else { 0 });
            // SAFETY: the rows of `x`'s matrices hold E ≥ eb[b] + mb[b] values from column 0;
            // the ISA is guaranteed by the caller.
            let dmax = unsafe {
                match mb == [lanes; GROUP] {
                    true => deltas::<S, true>(&rows[..cn], &eb, &mb, &bias, &mut c),
                    false => deltas::<S, false>(&rows[..cn], &eb, &mb, &bias, &mut c),
                }
            };
            for b in 0..nb {
                let (a2, hs, cb) = (&a2[b][..n * lanes], &mut hs[b][..n * lanes], &mut c[b]);
                if fused(b) {
                    for (o, r) in cb.out.iter_mut().zip(&rows[..cn]) {
                        // SAFETY: as above; `o` is an `acc` row (all steps are emitted) with
                        // e0(b) − acc_col0 + LANES ≤ acc.cols().
                        *o = unsafe {
                            OutRow {
                                u: r.u.add(e0(b)),
                                o: r.o.add(e0(b) - acc_col0),
                            }
                        };
                    }
                }
                let out = fused(b).then(|| TileOut {
                    rows: cb.out.as_ptr(),
                    d_skip: w.d_skip[e0(b)..].as_ptr(),
                    accumulate: plan.accumulate,
                });
                // SAFETY: see `tiles`; the ISA is guaranteed by the caller.
                unsafe {
                    // δ ≥ 0, so x = δ·A′ stays within ±(max δ)·(max|A′|); a NaN δ fails the
                    // test.
                    if dmax[b] * amax[b] <= ARG_MAX {
                        tiles::<S, false>(a2, hs, cb, &bc, kc, n, cn, out);
                    } else {
                        tiles::<S, true>(a2, hs, cb, &bc, kc, n, cn, out);
                    }
                }
                if fused(b) {
                    continue;
                }
                // SAFETY (block): `y` holds cn ≤ CHUNK steps; row accesses as above, `acc` rows
                // at column e0(b) − acc_col0 with that + m(b) ≤ acc.cols() (asserted); the ISA
                // is guaranteed by the caller.
                unsafe {
                    let dskip = load_part::<S>(&w.d_skip[e0(b)..e0(b) + m(b)]);
                    for (j, r) in rows[..cn].iter().enumerate() {
                        if !plan.emit.contains(&r.t) {
                            continue;
                        }
                        let y = S::load(cb.y.as_ptr().add(j * lanes));
                        let u = ld::<S>(r.u.add(e0(b)), m(b));
                        let mut o = S::fma(dskip, u, y);
                        let out = core::slice::from_raw_parts_mut(r.o.add(e0(b) - acc_col0), m(b));
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
            let hc = &mut h[(e0(b) - ch.start) * n..];
            for j in 0..m(b) {
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
/// Max relative error of [`exp2_v`] against f64 on level `S`, over `x ∈ [−125, 125]` and over
/// `|x| ≤ 1/32` (long-memory decays).
pub(crate) unsafe fn exp2_max_rel<S: Simd>() -> (f64, f64) {
    // SAFETY: the caller checked the ISA.
    unsafe {
        let k = consts::<S>();
        let e = |x| exp2_v::<S>(x, k.as_ptr());
        (
            max_rel_err::<S>(-ARG_MAX, ARG_MAX, &[1.0, 1e-3, 1e-6], e, f64::exp2),
            max_rel_err::<S>(-1.0 / 32.0, 1.0 / 32.0, &[1.0, 1e-3], e, f64::exp2),
        )
    }
}

#[cfg(test)]
/// Asserts [`exp2_max_rel`]'s bounds (module doc) for level `name`.
pub(crate) fn check_exp2(name: &str, (all, near0): (f64, f64)) {
    extern crate std;
    std::eprintln!("{name} scan exp2 max rel error {all:.2e}, {near0:.2e} for |x| <= 1/32");
    assert!(all <= 7e-6 && near0 <= 1.5e-7, "{all} {near0}");
}

#[cfg(test)]
/// Runs [`Simd::scan_tile8`] and the generic 8-state tile on the same pseudo-random chunk
/// (first and later tile, `y` left or outputs stored or added; `N = 24`, tile at state 8) and
/// returns whether the ISA has a tile kernel and both left bit-identical states and outputs.
pub(crate) unsafe fn tile8_matches_generic<S: Simd>() -> (bool, bool) {
    extern crate std;
    use std::{boxed::Box, vec::Vec};
    let lanes = S::LANES;
    let (n, cn) = (24, CHUNK - 5);
    let mut seed = 1u32;
    let mut r = |lo: f32, hi: f32| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        lo + (hi - lo) * (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    let a2: Vec<f32> = (0..8 * lanes).map(|_| -r(0.01, 20.0)).collect();
    let h0: Vec<f32> = (0..8 * lanes).map(|_| r(-1.0, 1.0)).collect();
    let rows: Vec<f32> = (0..CHUNK * 2 * n).map(|_| r(-1.0, 1.0)).collect();
    let us: Vec<f32> = (0..CHUNK * lanes).map(|_| r(-2.0, 2.0)).collect();
    let o0: Vec<f32> = (0..CHUNK * lanes).map(|_| r(-1.0, 1.0)).collect();
    let d_skip: Vec<f32> = (0..lanes).map(|_| r(-1.0, 1.0)).collect();
    let c0 = Box::new(Chunk {
        dt: core::array::from_fn(|_| r(0.0, 2.0)),
        du: core::array::from_fn(|_| r(-2.0, 2.0)),
        y: core::array::from_fn(|_| r(-1.0, 1.0)),
        out: [OutRow::NULL; CHUNK],
    });
    let bc: [*const f32; CHUNK] = core::array::from_fn(|j| rows[j * 2 * n..].as_ptr());
    // SAFETY: the caller checked the ISA.
    let k = unsafe { consts::<S>() };
    let (mut has, mut same) = (true, true);
    for first in [true, false] {
        for out in [None, Some(false), Some(true)] {
            let run = |kernel: bool| {
                let (mut c, mut h, mut o) = (c0.clone(), h0.clone(), o0.clone());
                for j in 0..CHUNK {
                    c.out[j] = OutRow {
                        u: us[j * lanes..].as_ptr(),
                        o: o[j * lanes..].as_mut_ptr(),
                    };
                }
                let t = Tile {
                    a2: a2.as_ptr(),
                    hs: h.as_mut_ptr(),
                    dt: c.dt.as_ptr(),
                    du: c.du.as_ptr(),
                    y: c.y.as_mut_ptr(),
                    bc: bc.as_ptr(),
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
