//! x86-64 AVX2 + FMA kernels: the [`Simd`] primitives on `__m256` and `#[target_feature]` entry
//! points instantiating the generic bodies of [`super::generic`].
//!
//! Every `avx2_*` function is `unsafe`: the caller must have checked
//! `is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")` (the dispatch table in
//! [`super::dispatch`] only exists after that check). Numerical contracts vs the scalar oracle
//! (tested in `tests/simd_conformance.rs`):
//! * GEMM / GEMV / VQ GEMM / VQ GEMV: `|y − y_oracle| ≤ 1e-6 · Σ_c |a_c·w_c|` per output.
//! * RMSNorm: 1e-6 relative; conv1d + SiLU, SiLU: 1e-6 relative (+1e-30 absolute).
//! * Scan: 5e-5 relative to the output scale (`2ˣ`/softplus 7e-6 / 5e-7 relative per step).
//!
//! Benchmarks behind these choices: `cargo bench --bench kernels` (groups `gemm_*`, `gemv_*`,
//! `scan`), see docs/RESULTS.md "Kernels".

use core::arch::x86_64::*;
use core::ops::Range;

use super::generic::{self, Simd};
use super::scan::{ScanInputs, ScanPlan, ScanWeights, Tile};
use super::scan_simd;
use super::{Direction, MatMut, MatRef, VqMatrix};

/// Phase A of the AVX2 scan tile for states `$a`, `$b` (register numbers, also their row
/// index): `ymm$a`, `ymm$b` ← `2^(δ·A′)` by `scan_simd::exp2_v`'s steps, the two chains
/// interleaved, except that `k` comes from `vroundps` (nearest-even: the value `t − MAGIC`
/// gives, one dependent step earlier; −3 to −6 % per scan call). In: `ymm8` = δ, `ymm9` =
/// MAGIC, `ymm10` = 1, `ymm11` = P3; temporaries `ymm12`–`ymm15`.
#[rustfmt::skip]
macro_rules! scan_exp_pair {
    ($a:literal, $b:literal) => {
        concat!(
            "vmulps ymm12, ymm8, ymmword ptr [{a2} + 32*", $a, "]\n",
            "vmulps ymm14, ymm8, ymmword ptr [{a2} + 32*", $b, "]\n",
            "vaddps ymm13, ymm12, ymm9\n",
            "vaddps ymm15, ymm14, ymm9\n",
            "vroundps ymm", $a, ", ymm12, 8\n",
            "vroundps ymm", $b, ", ymm14, 8\n",
            "vsubps ymm12, ymm12, ymm", $a, "\n",
            "vsubps ymm14, ymm14, ymm", $b, "\n",
            "vmovaps ymm", $a, ", ymm11\n",
            "vmovaps ymm", $b, ", ymm11\n",
            "vfmadd213ps ymm", $a, ", ymm12, ymmword ptr [{kc} + 64]\n",
            "vfmadd213ps ymm", $b, ", ymm14, ymmword ptr [{kc} + 64]\n",
            "vfmadd213ps ymm", $a, ", ymm12, ymmword ptr [{kc} + 96]\n",
            "vfmadd213ps ymm", $b, ", ymm14, ymmword ptr [{kc} + 96]\n",
            "vfmadd213ps ymm", $a, ", ymm12, ymmword ptr [{kc} + 128]\n",
            "vfmadd213ps ymm", $b, ", ymm14, ymmword ptr [{kc} + 128]\n",
            "vfmadd213ps ymm", $a, ", ymm12, ymm10\n",
            "vfmadd213ps ymm", $b, ", ymm14, ymm10\n",
            "vpslld ymm13, ymm13, 23\n",
            "vpslld ymm15, ymm15, 23\n",
            "vpaddd ymm", $a, ", ymm", $a, ", ymm13\n",
            "vpaddd ymm", $b, ", ymm", $b, ", ymm15\n",
        )
    };
}

/// Phase B of the AVX2 scan tile for state `$k` into partial sum `ymm$y`: `h ← e·h + B·(δu)`
/// (state row in memory), `y += h·C`. In: `ymm$k` = e, `ymm8` = δ·u; temporaries `ymm13`,
/// `ymm14`.
#[rustfmt::skip]
macro_rules! scan_update {
    ($k:literal, $y:literal) => {
        concat!(
            "vbroadcastss ymm13, dword ptr [{rb} + 4*", $k, "]\n",
            "vmulps ymm13, ymm13, ymm8\n",
            "vfmadd132ps ymm", $k, ", ymm13, ymmword ptr [{hs} + 32*", $k, "]\n",
            "vmovups ymmword ptr [{hs} + 32*", $k, "], ymm", $k, "\n",
            "vbroadcastss ymm14, dword ptr [{rb} + {nb} + 4*", $k, "]\n",
            "vfmadd231ps ymm", $y, ", ymm", $k, ", ymm14\n",
        )
    };
}

/// The AVX2 scan tile's loop over the chunk's steps. `$yinit` completes the step's `y` in
/// `ymm12` (nothing for the first tile, `+ y` for later ones); `$fin` stores it, or the output
/// computed from it. `δ·u` and `y` sit at fixed offsets `{duo}`, `{yo}` from `δ` (`Chunk`).
macro_rules! scan_tile8_loop {
    ($yinit:expr, $fin:expr) => {
        concat!(
            "vmovaps ymm9, ymmword ptr [{kc}]\n",
            "vmovaps ymm11, ymmword ptr [{kc} + 32]\n",
            "vmovaps ymm10, ymmword ptr [{kc} + 160]\n",
            "2:\n",
            "mov {rb}, qword ptr [{bc}]\n",
            "add {rb}, {bc0}\n",
            "vmovups ymm8, ymmword ptr [{dt}]\n",
            scan_exp_pair!("0", "1"),
            scan_exp_pair!("2", "3"),
            scan_exp_pair!("4", "5"),
            scan_exp_pair!("6", "7"),
            "vmovups ymm8, ymmword ptr [{dt} + {duo}]\n",
            "vxorps ymm12, ymm12, ymm12\n",
            "vxorps ymm15, ymm15, ymm15\n",
            scan_update!("0", "12"),
            scan_update!("1", "15"),
            scan_update!("2", "12"),
            scan_update!("3", "15"),
            scan_update!("4", "12"),
            scan_update!("5", "15"),
            scan_update!("6", "12"),
            scan_update!("7", "15"),
            "vaddps ymm12, ymm12, ymm15\n",
            $yinit,
            $fin,
            "add {dt}, 32\n",
            "add {bc}, 8\n",
            "dec {cn}\n",
            "jnz 2b\n",
        )
    };
}

/// `$fin` of [`scan_tile8_loop`] for a tile that writes outputs: `o = y + D·u` from the
/// step's `OutRow` at `{orow}` (`u`, `o` pointers), `$acc` adds the old `o` (or nothing).
macro_rules! scan_tile8_out {
    ($acc:expr) => {
        concat!(
            "mov {rb}, qword ptr [{orow}]\n",
            "vmovups ymm13, ymmword ptr [{dsk}]\n",
            "vfmadd231ps ymm12, ymm13, ymmword ptr [{rb}]\n",
            "mov {rb}, qword ptr [{orow} + 8]\n",
            $acc,
            "vmovups ymmword ptr [{rb}], ymm12\n",
            "add {orow}, 16\n",
            "/* {yo} */\n",
        )
    };
}

/// The AVX2 + FMA primitive set (8 f32 lanes).
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    const LANES: usize = 8;
    const NRV: usize = 2;
    /// 8 states in 8 of the 16 registers; the other 8 hold the step's temporaries.
    const SCAN_TILE: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values at p.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable values at p.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: FMA is enabled by the caller.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the caller.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add_shl23(p: __m256, t: __m256) -> __m256 {
        // SAFETY: AVX2 is enabled by the caller.
        unsafe {
            let k = _mm256_slli_epi32::<23>(_mm256_castps_si256(t));
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), k))
        }
    }
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        // SAFETY: AVX is enabled by the caller.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: AVX is enabled by the caller.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn pack_lines<const D: usize>(row: impl Fn(usize) -> *const f32, dst: *mut f32) {
        const { assert!(D == 2 || D == 4 || D == 8) };
        // SAFETY: the caller guarantees D readable values at every row(j), D·16 writable
        // values at dst, and AVX; every load below reads within row(j)[..D], every store
        // writes dst[i·16 + 8h ..][..8] with i < D.
        unsafe {
            // Rows 8h .. 8h + 8 fill the halves dst[i·16 + 8h ..][..8] of the D lines.
            for h in 0..2 {
                let r = |j: usize| row(8 * h + j);
                let o = dst.add(8 * h);
                // [row j, values c..c+4 | row j+4, values c..c+4]
                let quad = |j: usize, c: usize| {
                    let lo = _mm256_castps128_ps256(_mm_loadu_ps(r(j).add(c)));
                    _mm256_insertf128_ps::<1>(lo, _mm_loadu_ps(r(j + 4).add(c)))
                };
                match D {
                    2 => {
                        // [row j, row j+1] as two 64-bit halves.
                        let pair = |j: usize| {
                            let lo = _mm_load_sd(r(j) as *const f64);
                            _mm_castpd_ps(_mm_loadh_pd(lo, r(j + 1) as *const f64))
                        };
                        let a = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(pair(0)), pair(4));
                        let b = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(pair(2)), pair(6));
                        _mm256_storeu_ps(o, _mm256_shuffle_ps::<0x88>(a, b));
                        _mm256_storeu_ps(o.add(16), _mm256_shuffle_ps::<0xdd>(a, b));
                    }
                    _ => {
                        for c in (0..D).step_by(4) {
                            let t = transpose4(quad(0, c), quad(1, c), quad(2, c), quad(3, c));
                            for (i, v) in t.into_iter().enumerate() {
                                _mm256_storeu_ps(o.add((c + i) * 16), v);
                            }
                        }
                    }
                }
            }
        }
    }
    /// Two phases per step: the 8 exponentials into registers (two chains interleaved, so that
    /// out-of-order execution overlaps their latency), then the 8 state updates with the state
    /// rows in L1. Scheduled by hand: LLVM's version of the generic tile spills the state tile
    /// and keeps broadcasts on the stack, and its state-by-state order leaves each step's
    /// 40-cycle `exp` chains to out-of-order execution, whose window they overflow
    /// (docs/RESULTS.md "Scan and conv1d").
    #[inline(always)]
    unsafe fn scan_tile8(t: &Tile) -> bool {
        debug_assert!(t.cn >= 1 && t.bc0 + 8 <= t.n);
        debug_assert!(core::ptr::eq(t.du, t.dt.wrapping_add(DU_OFF / 4)));
        debug_assert!(core::ptr::eq(t.y, t.dt.wrapping_add(Y_OFF / 4)));
        const DU_OFF: usize = scan_simd::MAX_LANES * scan_simd::CHUNK * 4;
        const Y_OFF: usize = 2 * DU_OFF;
        macro_rules! run {
            ($yinit:expr, $fin:expr $(, $name:ident = $val:expr)*) => {
                core::arch::asm!(
                    scan_tile8_loop!($yinit, $fin),
                    a2 = in(reg) t.a2,
                    hs = in(reg) t.hs,
                    kc = in(reg) t.kc,
                    bc0 = in(reg) t.bc0 * 4,
                    nb = in(reg) t.n * 4,
                    dt = inout(reg) t.dt => _,
                    bc = inout(reg) t.bc => _,
                    cn = inout(reg) t.cn => _,
                    rb = out(reg) _,
                    duo = const DU_OFF,
                    yo = const Y_OFF,
                    $($name = in(reg) $val,)*
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                    options(nostack),
                )
            };
        }
        macro_rules! acc {
            () => {
                "vaddps ymm12, ymm12, ymmword ptr [{rb}]\n"
            };
        }
        macro_rules! add_y {
            () => {
                "vaddps ymm12, ymm12, ymmword ptr [{dt} + {yo}]\n"
            };
        }
        macro_rules! store_y {
            () => {
                "vmovups ymmword ptr [{dt} + {yo}], ymm12\n"
            };
        }
        // SAFETY: AVX2 and FMA are enabled by the caller. The loop reads 8 rows of `a2` and
        // reads/writes 8 rows of `hs` (8 floats each), `cn ≥ 1` steps of `dt`, `du`, `y` (8
        // floats each, `du`/`y` at their `Chunk` offsets from `dt`) and of `bc`, whose row
        // pointers are valid for 2N floats with bc0 + 8 ≤ N, and with `out`, `cn` `OutRow`s of
        // 8-float rows and 8 floats of `D` (the `Tile` contract); `kc` points at the 6
        // 32-byte-aligned vectors of `Consts`. No stack use; flags are clobbered (default).
        unsafe {
            match (t.first, t.out) {
                (true, None) => run!("", store_y!()),
                (false, None) => run!(add_y!(), store_y!()),
                (first, Some(o)) => {
                    let (r, d) = (o.rows, o.d_skip);
                    match (first, o.accumulate) {
                        (true, false) => run!("", scan_tile8_out!(""), orow = r, dsk = d),
                        (false, false) => run!(add_y!(), scan_tile8_out!(""), orow = r, dsk = d),
                        (true, true) => run!("", scan_tile8_out!(acc!()), orow = r, dsk = d),
                        (false, true) => run!(add_y!(), scan_tile8_out!(acc!()), orow = r, dsk = d),
                    }
                }
            }
        }
        true
    }
    #[inline(always)]
    unsafe fn gather_sum_u8(lut: &[f32], idx: &[u8], k: usize) -> f32 {
        let g = idx.len();
        assert!(k >= 1 && lut.len() >= g * k && g * k <= i32::MAX as usize);
        let g8 = g / 8 * 8;
        // SAFETY: AVX2 is enabled by the caller; every index is clamped to k − 1 (a validated
        // model never needs it), so each gathered offset (g0+j)·k + q < g·k ≤ lut.len().
        let mut s = unsafe {
            let kv = _mm256_set1_epi32(k as i32);
            let kmax = _mm256_set1_epi32(k as i32 - 1);
            let mut off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), kv);
            let step = _mm256_set1_epi32((8 * k) as i32);
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut g0 = 0;
            while g0 < g8 {
                let q = _mm_loadl_epi64(idx.as_ptr().add(g0) as *const __m128i);
                let q = _mm256_min_epu32(_mm256_cvtepu8_epi32(q), kmax);
                debug_assert!(idx[g0..g0 + 8].iter().all(|i| (*i as usize) < k));
                let v = _mm256_i32gather_ps::<4>(lut.as_ptr(), _mm256_add_epi32(off, q));
                if g0 & 8 == 0 {
                    a0 = _mm256_add_ps(a0, v);
                } else {
                    a1 = _mm256_add_ps(a1, v);
                }
                off = _mm256_add_epi32(off, step);
                g0 += 8;
            }
            Self::hsum(_mm256_add_ps(a0, a1))
        };
        for (gi, q) in idx.iter().enumerate().skip(g8) {
            s += lut[gi * k + *q as usize];
        }
        s
    }
    #[inline(always)]
    unsafe fn gather_sum_u16(lut: &[f32], idx: &[u16], k: usize) -> f32 {
        let g = idx.len();
        assert!(k >= 1 && lut.len() >= g * k && g * k <= i32::MAX as usize);
        let g8 = g / 8 * 8;
        // SAFETY: as gather_sum_u8: indices clamped to k − 1, offsets < g·k ≤ lut.len().
        let mut s = unsafe {
            let kv = _mm256_set1_epi32(k as i32);
            let kmax = _mm256_set1_epi32(k as i32 - 1);
            let mut off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), kv);
            let step = _mm256_set1_epi32((8 * k) as i32);
            let mut a0 = _mm256_setzero_ps();
            let mut g0 = 0;
            while g0 < g8 {
                let q = _mm_loadu_si128(idx.as_ptr().add(g0) as *const __m128i);
                let q = _mm256_min_epu32(_mm256_cvtepu16_epi32(q), kmax);
                debug_assert!(idx[g0..g0 + 8].iter().all(|i| (*i as usize) < k));
                let v = _mm256_i32gather_ps::<4>(lut.as_ptr(), _mm256_add_epi32(off, q));
                a0 = _mm256_add_ps(a0, v);
                off = _mm256_add_epi32(off, step);
                g0 += 8;
            }
            Self::hsum(a0)
        };
        for (gi, q) in idx.iter().enumerate().skip(g8) {
            s += lut[gi * k + *q as usize];
        }
        s
    }
    #[inline(always)]
    unsafe fn lut_rows16_u8(lut: &[f32], idx: &[u8], acc: &mut [f32; 16], prefetch: usize) {
        // Scalar loads and adds, 16 independent sums: on Zen 4 vgatherdps costs ~2 cycles per
        // index, this loop ~1. Written in asm because LLVM re-vectorises scalar adds of this
        // shape into insertps chains (slower than the gather).
        let n = idx.len() / 16;
        assert!(lut.len() >= n * 256);
        if n == 0 {
            return;
        }
        let mut a = *acc;
        // SAFETY: iteration c < n reads the 16 bytes idx[16c ..][..16] (within idx) and
        // lut[256c + b] for bytes b < 256 (within lut, asserted above); prefetcht0 never
        // faults, whatever its address. No stack use; flags are clobbered (default).
        unsafe {
            core::arch::asm!(
                "2:",
                "prefetcht0 byte ptr [{ip} + {pf}]",
                "mov {q}, qword ptr [{ip} + 0]",
                "movzx {t:e}, {q:l}",
                "vaddss {a0}, {a0}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a1}, {a1}, dword ptr [{lp} + 4*{t}]",
                "shr {q}, 16",
                "movzx {t:e}, {q:l}",
                "vaddss {a2}, {a2}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a3}, {a3}, dword ptr [{lp} + 4*{t}]",
                "shr {q}, 16",
                "movzx {t:e}, {q:l}",
                "vaddss {a4}, {a4}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a5}, {a5}, dword ptr [{lp} + 4*{t}]",
                "shr {q}, 16",
                "movzx {t:e}, {q:l}",
                "vaddss {a6}, {a6}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a7}, {a7}, dword ptr [{lp} + 4*{t}]",
                "mov {q}, qword ptr [{ip} + 8]",
                "movzx {t:e}, {q:l}",
                "vaddss {a8}, {a8}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a9}, {a9}, dword ptr [{lp} + 4*{t}]",
                "shr {q}, 16",
                "movzx {t:e}, {q:l}",
                "vaddss {a10}, {a10}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a11}, {a11}, dword ptr [{lp} + 4*{t}]",
                "shr {q}, 16",
                "movzx {t:e}, {q:l}",
                "vaddss {a12}, {a12}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a13}, {a13}, dword ptr [{lp} + 4*{t}]",
                "shr {q}, 16",
                "movzx {t:e}, {q:l}",
                "vaddss {a14}, {a14}, dword ptr [{lp} + 4*{t}]",
                "movzx {t:e}, {q:h}",
                "vaddss {a15}, {a15}, dword ptr [{lp} + 4*{t}]",
                "add {ip}, 16",
                "add {lp}, 1024",
                "dec {n}",
                "jnz 2b",
                ip = inout(reg) idx.as_ptr() => _,
                lp = inout(reg) lut.as_ptr() => _,
                n = inout(reg) n => _,
                pf = in(reg) prefetch,
                q = out(reg_abcd) _,
                t = out(reg_abcd) _,
                a0 = inout(xmm_reg) a[0], a1 = inout(xmm_reg) a[1],
                a2 = inout(xmm_reg) a[2], a3 = inout(xmm_reg) a[3],
                a4 = inout(xmm_reg) a[4], a5 = inout(xmm_reg) a[5],
                a6 = inout(xmm_reg) a[6], a7 = inout(xmm_reg) a[7],
                a8 = inout(xmm_reg) a[8], a9 = inout(xmm_reg) a[9],
                a10 = inout(xmm_reg) a[10], a11 = inout(xmm_reg) a[11],
                a12 = inout(xmm_reg) a[12], a13 = inout(xmm_reg) a[13],
                a14 = inout(xmm_reg) a[14], a15 = inout(xmm_reg) a[15],
                options(nostack, readonly),
            );
        }
        *acc = a;
    }
}

/// Transposes the 4×4 blocks in each 128-bit half: lane `i` of result `c` is lane `c` of
/// argument `i`.
#[inline(always)]
unsafe fn transpose4(a0: __m256, a1: __m256, a2: __m256, a3: __m256) -> [__m256; 4] {
    // SAFETY: AVX is enabled by the caller.
    unsafe {
        let t0 = _mm256_unpacklo_ps(a0, a1);
        let t1 = _mm256_unpackhi_ps(a0, a1);
        let t2 = _mm256_unpacklo_ps(a2, a3);
        let t3 = _mm256_unpackhi_ps(a2, a3);
        [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xee>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xee>(t1, t3),
        ]
    }
}

/// Dense GEMM `out = a·wᵀ`, 6-token × 16-row register block over a packed panel for every token
/// count; with less than `16·k` scratch values, the dot-product form (other rounding).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_gemm_f32_6x16(
    a: MatRef<'_>,
    w: &[f32],
    out: &mut MatMut<'_>,
    scratch: &mut [f32],
) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::gemm::<Avx2>(a, w, out, scratch) }
}

/// VQ GEMM: decodes 16-row panels into `scratch` (≥ 16·k values) once, then the 6×16
/// micro-kernel over all tokens, a single token included, so the result is bit-identical to the
/// dense GEMM on the decoded matrix (with less scratch, the scalar oracle). The lookup-table
/// GEMV [`avx2_vq_gemv_f32_lut`] is the separate streaming kernel.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_vq_gemm_f32_6x16(
    a: MatRef<'_>,
    w: &VqMatrix<'_>,
    out: &mut MatMut<'_>,
    scratch: &mut [f32],
) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::vq_gemm::<Avx2>(a, w, out, scratch) }
}

/// Dense GEMV, four rows × 16 lanes per step.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_gemv_f32_4x16(x: &[f32], w: &[f32], out: &mut [f32]) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::gemv::<Avx2>(x, w, out) }
}

/// VQ GEMV via a per-token lookup table ([`generic::lut_len`] scratch values, else
/// decode-and-dot per row), summed over the indices with scalar loads for the Rows16 layout
/// the packer writes and with `vpgatherdps` for row-major indices.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_vq_gemv_f32_lut(
    x: &[f32],
    w: &VqMatrix<'_>,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::vq_gemv::<Avx2>(x, w, out, scratch) }
}

/// Selective scan (whole width), 8 channels per vector, 8 states per register tile (see
/// `kernels/scan_simd.rs`).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_scan_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    h: &mut [f32],
) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { scan_simd::scan::<Avx2>(w, x, plan, acc, h) }
}

/// Selective scan over a channel range (threads).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_scan_channels_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { scan_simd::scan_channels::<Avx2>(w, x, plan, acc, acc_col0, h, ch) }
}

/// Depthwise conv1d + SiLU, 8 channels per vector.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_conv1d_silu_f32(
    dir: Direction,
    x: MatRef<'_>,
    w: &[f32],
    bias: &[f32],
    steps: Range<usize>,
    out: &mut MatMut<'_>,
) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::conv1d_silu::<Avx2>(dir, x, w, bias, steps, out) }
}

/// RMSNorm of one row.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_rmsnorm_f32(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::rmsnorm::<Avx2>(x, w, eps, out) }
}

/// `out = −exp(a_log)` elementwise.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_neg_exp_f32(a_log: &[f32], out: &mut [f32]) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::neg_exp::<Avx2>(a_log, out) }
}

/// Fused residual add + RMSNorm of one row.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_add_rmsnorm_f32(residual: &mut [f32], hidden: &mut [f32], w: &[f32], eps: f32) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::add_rmsnorm::<Avx2>(residual, hidden, w, eps) }
}

/// `acc = acc·silu(z)·½` (the bimamba-v2 combine step).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn avx2_combine_gate_f32(acc: &mut [f32], z: &[f32]) {
    // SAFETY: features enabled by this function's attribute.
    unsafe { generic::combine_gate::<Avx2>(acc, z) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::eprintln;

    use super::{scan_simd, Avx2};

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp2_max_rel() -> (f64, f64) {
        // SAFETY: features enabled by this function's attribute.
        unsafe { scan_simd::exp2_max_rel::<Avx2>() }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn softplus_max_rel() -> f64 {
        // SAFETY: features enabled by this function's attribute.
        unsafe { super::generic::softplus_max_rel::<Avx2>() }
    }

    #[test]
    fn scan_exp2_is_accurate() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected.
            scan_simd::check_exp2("avx2", unsafe { exp2_max_rel() });
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_max_rel() -> f64 {
        // SAFETY: features enabled by this function's attribute.
        unsafe { super::generic::exp_max_rel::<Avx2>() }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile8_matches_generic() -> (bool, bool) {
        // SAFETY: features enabled by this function's attribute.
        unsafe { scan_simd::tile8_matches_generic::<Avx2>() }
    }

    #[test]
    fn exp_is_accurate() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected.
            let e = unsafe { exp_max_rel() };
            eprintln!("avx2 exp max rel error {e:.2e}");
            assert!(e <= 3e-7, "{e}");
        }
    }

    #[test]
    fn scan_tile_kernel_is_the_generic_tile() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected.
            let (has, same) = unsafe { tile8_matches_generic() };
            assert!(has, "the AVX2 level has a scan tile kernel");
            assert!(same, "asm tile and generic tile differ");
        }
    }

    #[test]
    fn softplus_is_accurate() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected.
            let e = unsafe { softplus_max_rel() };
            eprintln!("avx2 softplus max rel error {e:.2e}");
            assert!(e <= 5e-7, "{e}");
        }
    }
}
