//! aarch64 NEON kernels (the baseline of every aarch64 target, Pi 4 / Cortex-A72 and later).
//!
//! NEON is part of the aarch64 baseline, so the `neon_*` entry points are safe functions.
//! Numerical contracts vs the scalar oracle (tested in `tests/simd_conformance.rs`), identical
//! to the AVX2 ones:
//! * GEMM / GEMV / VQ GEMM / VQ GEMV: `|y − y_oracle| ≤ 1e-6 · Σ_c |a_c·w_c|` per output.
//! * RMSNorm, conv1d + SiLU, SiLU: 1e-6 relative (+1e-30 absolute).
//! * Scan: 5e-5 relative to the output scale.

use core::arch::aarch64::*;
use core::ops::Range;

use super::generic::{self, Simd};
use super::scan::{ScanInputs, ScanPlan, ScanWeights};
use super::scan_simd;
use super::{Direction, MatMut, MatRef, VqMatrix};

/// The NEON primitive set (4 f32 lanes, 4 vectors per 16-row panel).
#[derive(Clone, Copy)]
pub(crate) struct Neon;

impl Simd for Neon {
    const LANES: usize = 4;
    const NRV: usize = 4;
    /// 16 states in 16 of the 32 registers.
    const SCAN_TILE: usize = 16;
    type V = float32x4_t;
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable values at p.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees 4 writable values at p.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vminq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn add_shl23(p: float32x4_t, t: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64.
        unsafe {
            let k = vshlq_n_u32::<23>(vreinterpretq_u32_f32(t));
            vreinterpretq_f32_u32(vaddq_u32(vreinterpretq_u32_f32(p), k))
        }
    }
    #[inline(always)]
    unsafe fn hmax(v: float32x4_t) -> f32 {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vmaxvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn hsum(v: float32x4_t) -> f32 {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn pack_lines<const D: usize>(row: impl Fn(usize) -> *const f32, dst: *mut f32) {
        const { assert!(D == 2 || D == 4 || D == 8) };
        // SAFETY: the caller guarantees D readable values at every row(j) and D·16 writable
        // values at dst; every load below reads within row(j)[..D], every store writes
        // dst[i·16 + 4q ..][..4] with i < D.
        unsafe {
            // Rows 4q .. 4q + 4 fill dst[i·16 + 4q ..][..4] of the D lines.
            for q in 0..4 {
                let r = |j: usize| row(4 * q + j);
                let o = dst.add(4 * q);
                match D {
                    2 => {
                        let a = vcombine_f32(vld1_f32(r(0)), vld1_f32(r(1)));
                        let b = vcombine_f32(vld1_f32(r(2)), vld1_f32(r(3)));
                        vst1q_f32(o, vuzp1q_f32(a, b));
                        vst1q_f32(o.add(16), vuzp2q_f32(a, b));
                    }
                    _ => {
                        for c in (0..D).step_by(4) {
                            let t = transpose4(
                                vld1q_f32(r(0).add(c)),
                                vld1q_f32(r(1).add(c)),
                                vld1q_f32(r(2).add(c)),
                                vld1q_f32(r(3).add(c)),
                            );
                            for (i, v) in t.into_iter().enumerate() {
                                vst1q_f32(o.add((c + i) * 16), v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// 4×4 transpose: lane `i` of result `c` is lane `c` of argument `i`.
#[inline(always)]
unsafe fn transpose4(
    a0: float32x4_t,
    a1: float32x4_t,
    a2: float32x4_t,
    a3: float32x4_t,
) -> [float32x4_t; 4] {
    // SAFETY: NEON is baseline on aarch64.
    unsafe {
        let t0 = vreinterpretq_f64_f32(vtrn1q_f32(a0, a1));
        let t1 = vreinterpretq_f64_f32(vtrn2q_f32(a0, a1));
        let t2 = vreinterpretq_f64_f32(vtrn1q_f32(a2, a3));
        let t3 = vreinterpretq_f64_f32(vtrn2q_f32(a2, a3));
        [
            vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
            vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
            vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
            vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
        ]
    }
}

// SAFETY (every `unsafe` block in the entry points below): NEON is part of the aarch64
// baseline, so the generic bodies' primitives are always available.

/// Dense GEMM `out = a·wᵀ`, 6-token × 16-row register block (24 accumulators) over a packed
/// panel for every token count; with less than `16·k` scratch values, the dot-product form.
pub fn neon_gemm_f32_6x16(a: MatRef<'_>, w: &[f32], out: &mut MatMut<'_>, scratch: &mut [f32]) {
    // SAFETY: see above.
    unsafe { generic::gemm::<Neon>(a, w, out, scratch) }
}

/// VQ GEMM: 16-row panels decoded into `scratch` once, 6×16 micro-kernel over all tokens.
pub fn neon_vq_gemm_f32_6x16(
    a: MatRef<'_>,
    w: &VqMatrix<'_>,
    out: &mut MatMut<'_>,
    scratch: &mut [f32],
) {
    // SAFETY: see above.
    unsafe { generic::vq_gemm::<Neon>(a, w, out, scratch) }
}

/// Dense GEMV, four rows × 8 lanes per step.
pub fn neon_gemv_f32_4x8(x: &[f32], w: &[f32], out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { generic::gemv::<Neon>(x, w, out) }
}

/// VQ GEMV via a per-token lookup table ([`generic::lut_len`] scratch values, else
/// decode-and-dot per row) and scalar table loads (NEON has no gather).
pub fn neon_vq_gemv_f32_lut(x: &[f32], w: &VqMatrix<'_>, out: &mut [f32], scratch: &mut [f32]) {
    // SAFETY: see above.
    unsafe { generic::vq_gemv::<Neon>(x, w, out, scratch) }
}

/// Selective scan, 4 channels per vector, 16 states per register tile (see `kernels/scan_simd.rs`).
pub fn neon_scan_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    h: &mut [f32],
) {
    // SAFETY: see above.
    unsafe { scan_simd::scan::<Neon>(w, x, plan, acc, h) }
}

/// Selective scan over a channel range (threads).
pub fn neon_scan_channels_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    // SAFETY: see above.
    unsafe { scan_simd::scan_channels::<Neon>(w, x, plan, acc, acc_col0, h, ch) }
}

/// Depthwise conv1d + SiLU, 4 channels per vector.
pub fn neon_conv1d_silu_f32(
    dir: Direction,
    x: MatRef<'_>,
    w: &[f32],
    bias: &[f32],
    steps: Range<usize>,
    out: &mut MatMut<'_>,
) {
    // SAFETY: see above.
    unsafe { generic::conv1d_silu::<Neon>(dir, x, w, bias, steps, out) }
}

/// RMSNorm of one row.
pub fn neon_rmsnorm_f32(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { generic::rmsnorm::<Neon>(x, w, eps, out) }
}

/// Fused residual add + RMSNorm of one row.
pub fn neon_add_rmsnorm_f32(residual: &mut [f32], hidden: &mut [f32], w: &[f32], eps: f32) {
    // SAFETY: see above.
    unsafe { generic::add_rmsnorm::<Neon>(residual, hidden, w, eps) }
}

/// `out = −exp(a_log)` elementwise.
pub fn neon_neg_exp_f32(a_log: &[f32], out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { generic::neg_exp::<Neon>(a_log, out) }
}

/// `acc = acc·silu(z)·½` (the bimamba-v2 combine step).
pub fn neon_combine_gate_f32(acc: &mut [f32], z: &[f32]) {
    // SAFETY: see above.
    unsafe { generic::combine_gate::<Neon>(acc, z) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::eprintln;

    use super::{scan_simd, Neon};

    #[test]
    fn scan_exp2_is_accurate() {
        // SAFETY: NEON is baseline on aarch64.
        scan_simd::check_exp2("neon", unsafe { scan_simd::exp2_max_rel::<Neon>() });
    }

    #[test]
    fn exp_is_accurate() {
        // SAFETY: NEON is baseline on aarch64.
        let e = unsafe { super::generic::exp_max_rel::<Neon>() };
        eprintln!("neon exp max rel error {e:.2e}");
        assert!(e <= 3e-7, "{e}");
    }

    #[test]
    fn softplus_is_accurate() {
        // SAFETY: NEON is baseline on aarch64.
        let e = unsafe { super::generic::softplus_max_rel::<Neon>() };
        eprintln!("neon softplus max rel error {e:.2e}");
        assert!(e <= 5e-7, "{e}");
    }
}
