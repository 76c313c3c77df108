//! The kernel table: one [`Kernels`] of plain `fn` pointers per instruction-set level, the best
//! available one resolved once (runtime feature detection with `std`, compile-time target
//! features without) and cached in an atomic. No allocation, no `dyn`.
//!
//! * Force a level with the `VIMVQ_KERNELS` environment variable (`scalar`, `avx2`, `neon`;
//!   read once, on first use) or with [`force`] (tests, benches).
//! * [`table`] hands out the table of any level the CPU supports, so tests run every compiled
//!   variant by name, whatever dispatch picked.
//!
//! The scalar level is the oracle ([`super::scalar`], scan included); it stays forever.

use core::ops::Range;
use core::sync::atomic::{AtomicU8, Ordering};

use super::scan::{ScanInputs, ScanPlan, ScanWeights};
use super::{scalar, Direction, MatMut, MatRef, VqMatrix};

/// Instruction-set level of a kernel table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Portable Rust, the oracle.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// aarch64 NEON (Cortex-A72 and later).
    Neon,
}

impl Level {
    /// Every level, in order.
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Neon];

    /// Name used by `VIMVQ_KERNELS` (`scalar`, `avx2`, `neon`).
    pub const fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Neon => "neon",
        }
    }

    /// Parses a [`Level::name`] (ASCII case-insensitive).
    pub fn from_name(s: &[u8]) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().as_bytes().eq_ignore_ascii_case(s))
    }

    fn code(self) -> u8 {
        match self {
            Level::Scalar => 1,
            Level::Avx2 => 2,
            Level::Neon => 3,
        }
    }

    fn from_code(c: u8) -> Level {
        match c {
            2 => Level::Avx2,
            3 => Level::Neon,
            _ => Level::Scalar,
        }
    }
}

/// `out = a·wᵀ` for a dense `w` (`out.cols() × a.cols()`); `scratch` holds a packed panel
/// ([`scratch_len`] values; less makes SIMD levels use slower paths).
pub type GemmFn = fn(MatRef<'_>, &[f32], &mut MatMut<'_>, &mut [f32]);
/// `out = a·Wᵀ` for a VQ `W`; `scratch` as [`GemmFn`].
pub type VqGemmFn = fn(MatRef<'_>, &VqMatrix<'_>, &mut MatMut<'_>, &mut [f32]);
/// One-token dense GEMV `out[r] = x·w[r]`.
pub type GemvFn = fn(&[f32], &[f32], &mut [f32]);
/// One-token VQ GEMV; `scratch` holds the lookup table ([`vq_gemv_scratch_len`] values) on SIMD
/// levels.
pub type VqGemvFn = fn(&[f32], &VqMatrix<'_>, &mut [f32], &mut [f32]);
/// The selective scan of one direction ([`super::scalar::selective_scan_f32`]'s contract).
pub type ScanFn = fn(&ScanWeights<'_>, &ScanInputs<'_>, &ScanPlan, &mut MatMut<'_>, &mut [f32]);
/// The scan over the channel range `ch`, outputs at `acc[t][e − acc_col0]`, state `ch.len()·N`.
pub type ScanChannelsFn = fn(
    &ScanWeights<'_>,
    &ScanInputs<'_>,
    &ScanPlan,
    &mut MatMut<'_>,
    usize,
    &mut [f32],
    Range<usize>,
);
/// Depthwise conv1d + SiLU ([`scalar::conv1d_silu_f32`]'s contract).
pub type ConvFn = fn(Direction, MatRef<'_>, &[f32], &[f32], Range<usize>, &mut MatMut<'_>);
/// RMSNorm of one row.
pub type RmsNormFn = fn(&[f32], &[f32], f32, &mut [f32]);
/// Fused residual add + RMSNorm of one row.
pub type AddRmsNormFn = fn(&mut [f32], &mut [f32], &[f32], f32);
/// `acc = acc·silu(z)·½` ([`scalar::combine_gate_f32`]'s contract).
pub type GateFn = fn(&mut [f32], &[f32]);
/// `out = −exp(a_log)` elementwise.
pub type NegExpFn = fn(&[f32], &mut [f32]);

/// One level's kernels. Every entry of every level computes the scalar entry's function within
/// the tolerance documented on the level's module (`kernels/avx2.rs`, `kernels/neon.rs`).
#[derive(Debug)]
pub struct Kernels {
    /// Which level this is.
    pub level: Level,
    /// Dense GEMM over tokens.
    pub gemm_f32: GemmFn,
    /// VQ GEMM over tokens.
    pub vq_gemm_f32: VqGemmFn,
    /// Dense GEMV.
    pub gemv_f32: GemvFn,
    /// VQ GEMV (lookup table on SIMD levels).
    pub vq_gemv_f32: VqGemvFn,
    /// Selective scan, whole width.
    pub scan_f32: ScanFn,
    /// Selective scan over a channel range.
    pub scan_channels_f32: ScanChannelsFn,
    /// Conv1d + SiLU.
    pub conv1d_silu_f32: ConvFn,
    /// RMSNorm.
    pub rmsnorm_f32: RmsNormFn,
    /// Add + RMSNorm.
    pub add_rmsnorm_f32: AddRmsNormFn,
    /// The bimamba-v2 combine step (gate and average of the two directions).
    pub combine_gate_f32: GateFn,
    /// `A = −exp(A_log)`.
    pub neg_exp_f32: NegExpFn,
}

/// Scratch values every level's GEMM / VQ GEMM needs for `k` input features (a 16-row
/// packed panel; ≥ the scalar oracle's 4-row panel).
pub const fn scratch_len(k: usize) -> usize {
    super::generic::panel_len(k)
}

/// Scratch values the SIMD levels' VQ GEMV needs for `w` (lookup table + transposed codebook;
/// less makes them decode row by row).
pub fn vq_gemv_scratch_len(w: &VqMatrix<'_>) -> usize {
    super::generic::lut_len(w)
}

// ---- scalar level (the oracle) ----

fn scalar_gemm(a: MatRef<'_>, w: &[f32], out: &mut MatMut<'_>, _scratch: &mut [f32]) {
    scalar::gemm_f32(a, w, out)
}
fn scalar_gemv(x: &[f32], w: &[f32], out: &mut [f32]) {
    let n = out.len();
    scalar::gemm_f32(
        MatRef::new(x, 1, x.len(), x.len()),
        w,
        &mut MatMut::new(out, 1, n, n),
    )
}
fn scalar_vq_gemv(x: &[f32], w: &VqMatrix<'_>, out: &mut [f32], scratch: &mut [f32]) {
    let n = out.len();
    scalar::vq_gemm_f32(
        MatRef::new(x, 1, x.len(), x.len()),
        w,
        &mut MatMut::new(out, 1, n, n),
        scratch,
    )
}
fn scalar_scan_channels(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    super::scalar::selective_scan_channels_f32(w, x, plan, acc, acc_col0, h, ch)
}
static SCALAR: Kernels = Kernels {
    level: Level::Scalar,
    gemm_f32: scalar_gemm,
    vq_gemm_f32: scalar::vq_gemm_f32,
    gemv_f32: scalar_gemv,
    vq_gemv_f32: scalar_vq_gemv,
    scan_f32: super::scalar::selective_scan_f32,
    scan_channels_f32: scalar_scan_channels,
    conv1d_silu_f32: scalar::conv1d_silu_f32,
    rmsnorm_f32: scalar::rmsnorm_f32,
    add_rmsnorm_f32: scalar::add_rmsnorm_f32,
    combine_gate_f32: scalar::combine_gate_f32,
    neg_exp_f32: scalar::neg_exp_f32,
};

// ---- x86-64 AVX2 + FMA ----

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::kernels::avx2::*;

    // SAFETY (every wrapper): `AVX2` is only returned by `table()` after `avx2_available()`
    // confirmed AVX2 and FMA on this CPU.
    fn gemm(a: MatRef<'_>, w: &[f32], out: &mut MatMut<'_>, s: &mut [f32]) {
        // SAFETY: see above.
        unsafe { avx2_gemm_f32_6x16(a, w, out, s) }
    }
    fn vq_gemm(a: MatRef<'_>, w: &VqMatrix<'_>, out: &mut MatMut<'_>, s: &mut [f32]) {
        // SAFETY: see above.
        unsafe { avx2_vq_gemm_f32_6x16(a, w, out, s) }
    }
    fn gemv(x: &[f32], w: &[f32], out: &mut [f32]) {
        // SAFETY: see above.
        unsafe { avx2_gemv_f32_4x16(x, w, out) }
    }
    fn vq_gemv(x: &[f32], w: &VqMatrix<'_>, out: &mut [f32], s: &mut [f32]) {
        // SAFETY: see above.
        unsafe { avx2_vq_gemv_f32_lut(x, w, out, s) }
    }
    fn scan(
        w: &ScanWeights<'_>,
        x: &ScanInputs<'_>,
        p: &ScanPlan,
        acc: &mut MatMut<'_>,
        h: &mut [f32],
    ) {
        // SAFETY: see above.
        unsafe { avx2_scan_f32(w, x, p, acc, h) }
    }
    fn scan_ch(
        w: &ScanWeights<'_>,
        x: &ScanInputs<'_>,
        p: &ScanPlan,
        acc: &mut MatMut<'_>,
        c0: usize,
        h: &mut [f32],
        ch: Range<usize>,
    ) {
        // SAFETY: see above.
        unsafe { avx2_scan_channels_f32(w, x, p, acc, c0, h, ch) }
    }
    fn conv(
        d: Direction,
        x: MatRef<'_>,
        w: &[f32],
        b: &[f32],
        st: Range<usize>,
        o: &mut MatMut<'_>,
    ) {
        // SAFETY: see above.
        unsafe { avx2_conv1d_silu_f32(d, x, w, b, st, o) }
    }
    fn rms(x: &[f32], w: &[f32], eps: f32, o: &mut [f32]) {
        // SAFETY: see above.
        unsafe { avx2_rmsnorm_f32(x, w, eps, o) }
    }
    fn add_rms(r: &mut [f32], h: &mut [f32], w: &[f32], eps: f32) {
        // SAFETY: see above.
        unsafe { avx2_add_rmsnorm_f32(r, h, w, eps) }
    }
    fn gate(acc: &mut [f32], z: &[f32]) {
        // SAFETY: see above.
        unsafe { avx2_combine_gate_f32(acc, z) }
    }
    fn neg_exp(a: &[f32], o: &mut [f32]) {
        // SAFETY: see above.
        unsafe { avx2_neg_exp_f32(a, o) }
    }

    pub(super) static AVX2: Kernels = Kernels {
        level: Level::Avx2,
        gemm_f32: gemm,
        vq_gemm_f32: vq_gemm,
        gemv_f32: gemv,
        vq_gemv_f32: vq_gemv,
        scan_f32: scan,
        scan_channels_f32: scan_ch,
        conv1d_silu_f32: conv,
        rmsnorm_f32: rms,
        add_rmsnorm_f32: add_rms,
        combine_gate_f32: gate,
        neg_exp_f32: neg_exp,
    };

    /// AVX2 + FMA usable: CPUID bits and OS support for the YMM state (XGETBV). Done with
    /// `cpuid` directly rather than `is_x86_feature_detected!`, whose first call allocates (it
    /// reads an environment variable) and would break the zero-allocation guarantee of `infer`.
    pub(super) fn avx2_available() -> bool {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        let (max, l1) = (__cpuid(0).eax, __cpuid(1));
        let (fma, osxsave, avx) = (
            l1.ecx & (1 << 12) != 0,
            l1.ecx & (1 << 27) != 0,
            l1.ecx & (1 << 28) != 0,
        );
        if max < 7 || !(fma && osxsave && avx) {
            return false;
        }
        // Leaf 7 exists (max ≥ 7).
        let avx2 = __cpuid_count(7, 0).ebx & (1 << 5) != 0;
        let xcr0: u32;
        // SAFETY: OSXSAVE is set, so XGETBV is available; it only reads XCR0 into eax/edx.
        unsafe {
            core::arch::asm!(
                "xgetbv",
                in("ecx") 0u32,
                out("eax") xcr0,
                out("edx") _,
                options(nomem, nostack, preserves_flags),
            );
        }
        avx2 && xcr0 & 0b110 == 0b110
    }
}

// ---- aarch64 NEON ----

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::*;
    use crate::kernels::neon::*;

    pub(super) static NEON: Kernels = Kernels {
        level: Level::Neon,
        gemm_f32: neon_gemm_f32_6x16,
        vq_gemm_f32: neon_vq_gemm_f32_6x16,
        gemv_f32: neon_gemv_f32_4x8,
        vq_gemv_f32: neon_vq_gemv_f32_lut,
        scan_f32: neon_scan_f32,
        scan_channels_f32: neon_scan_channels_f32,
        conv1d_silu_f32: neon_conv1d_silu_f32,
        rmsnorm_f32: neon_rmsnorm_f32,
        add_rmsnorm_f32: neon_add_rmsnorm_f32,
        combine_gate_f32: neon_combine_gate_f32,
        neg_exp_f32: neon_neg_exp_f32,
    };
}

/// Whether this CPU (and build) can run `level`.
pub fn is_available(level: Level) -> bool {
    match level {
        Level::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86::avx2_available(),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// The kernel table of `level`, or `None` if this CPU cannot run it.
pub fn table(level: Level) -> Option<&'static Kernels> {
    if !is_available(level) {
        return None;
    }
    compiled(level)
}

/// The table of `level` if this build has it, without asking the CPU (`cpuid` is slow, and
/// very slow in a VM: it must stay out of the per-kernel path).
fn compiled(level: Level) -> Option<&'static Kernels> {
    match level {
        Level::Scalar => Some(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => Some(&x86::AVX2),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => Some(&arm::NEON),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The best level this CPU supports.
pub fn detect() -> Level {
    [Level::Neon, Level::Avx2]
        .into_iter()
        .find(|l| is_available(*l))
        .unwrap_or(Level::Scalar)
}

/// 0 = not resolved yet, else `Level::code`.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Reads `VIMVQ_KERNELS` without allocating (unix `getenv`; elsewhere `std::env`).
#[cfg(feature = "std")]
fn env_level() -> Option<Level> {
    #[cfg(unix)]
    {
        extern "C" {
            fn getenv(name: *const core::ffi::c_char) -> *const core::ffi::c_char;
        }
        // SAFETY: the name is NUL-terminated; getenv returns NULL or a NUL-terminated string
        // that stays valid while the environment is not modified (we copy out immediately).
        let p = unsafe { getenv(c"VIMVQ_KERNELS".as_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated (see above).
        let s = unsafe { core::ffi::CStr::from_ptr(p) };
        Level::from_name(s.to_bytes())
    }
    #[cfg(not(unix))]
    {
        let v = std::env::var_os("VIMVQ_KERNELS")?;
        Level::from_name(v.to_str()?.as_bytes())
    }
}

fn resolve() -> Level {
    #[cfg(feature = "std")]
    if let Some(l) = env_level() {
        if is_available(l) {
            return l;
        }
    }
    detect()
}

/// The active kernel table: resolved on first call (`VIMVQ_KERNELS` if set and supported, else
/// [`detect`]), then one atomic load per call (the stored level was checked when stored).
#[inline]
pub fn kernels() -> &'static Kernels {
    let mut c = ACTIVE.load(Ordering::Relaxed);
    if c == 0 {
        c = resolve().code();
        ACTIVE.store(c, Ordering::Relaxed);
    }
    compiled(Level::from_code(c)).unwrap_or(&SCALAR)
}

/// The active level (see [`kernels`]).
pub fn active() -> Level {
    kernels().level
}

/// Error of [`force`]: the CPU cannot run that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported(pub Level);

impl core::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "this CPU cannot run the {} kernels", self.0.name())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Unsupported {}

/// Forces every later [`kernels`] call (all threads) to use `level`.
pub fn force(level: Level) -> Result<(), Unsupported> {
    if !is_available(level) {
        return Err(Unsupported(level));
    }
    ACTIVE.store(level.code(), Ordering::Relaxed);
    Ok(())
}

// ---- the forward pass's entry points: the oracle's signatures, dispatched ----

/// [`scalar::linear_f32`] through the active table (`panel`: [`scratch_len`]`(a.cols())`).
#[inline]
pub fn linear_f32(a: MatRef<'_>, w: &super::Weight<'_>, out: &mut MatMut<'_>, panel: &mut [f32]) {
    let k = kernels();
    match w {
        super::Weight::Dense(w) => (k.gemm_f32)(a, w, out, panel),
        super::Weight::Vq(v) => (k.vq_gemm_f32)(a, v, out, panel),
    }
}

/// [`scalar::gemv_f32`] through the active table: the one-token case of [`linear_f32`], so a
/// VQ head stays bit-identical to its decoded dense matrix (the head is tiny; the standalone
/// [`Kernels::gemv_f32`] / [`Kernels::vq_gemv_f32`] are the streaming GEMV kernels).
#[inline]
pub fn gemv_f32(x: &[f32], w: &super::Weight<'_>, out: &mut [f32], panel: &mut [f32]) {
    let n = out.len();
    linear_f32(
        MatRef::new(x, 1, x.len(), x.len()),
        w,
        &mut MatMut::new(out, 1, n, n),
        panel,
    )
}

/// [`scalar::rmsnorm_f32`] through the active table.
#[inline]
pub fn rmsnorm_f32(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    (kernels().rmsnorm_f32)(x, w, eps, out)
}

/// [`scalar::add_rmsnorm_f32`] through the active table.
#[inline]
pub fn add_rmsnorm_f32(residual: &mut [f32], hidden: &mut [f32], w: &[f32], eps: f32) {
    (kernels().add_rmsnorm_f32)(residual, hidden, w, eps)
}

/// [`scalar::combine_gate_f32`] through the active table.
#[inline]
pub fn combine_gate_f32(acc: &mut [f32], z: &[f32]) {
    (kernels().combine_gate_f32)(acc, z)
}

/// [`scalar::neg_exp_f32`] through the active table.
#[inline]
pub fn neg_exp_f32(a_log: &[f32], out: &mut [f32]) {
    (kernels().neg_exp_f32)(a_log, out)
}

/// [`scalar::conv1d_silu_f32`] through the active table.
#[inline]
pub fn conv1d_silu_f32(
    dir: Direction,
    x: MatRef<'_>,
    w: &[f32],
    bias: &[f32],
    steps: Range<usize>,
    out: &mut MatMut<'_>,
) {
    (kernels().conv1d_silu_f32)(dir, x, w, bias, steps, out)
}

/// [`super::scalar::selective_scan_f32`] through the active table.
#[inline]
pub fn selective_scan_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    h: &mut [f32],
) {
    (kernels().scan_f32)(w, x, plan, acc, h)
}

/// [`super::scalar::selective_scan_channels_f32`] through the active table.
#[inline]
pub fn selective_scan_channels_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    (kernels().scan_channels_f32)(w, x, plan, acc, acc_col0, h, ch)
}
