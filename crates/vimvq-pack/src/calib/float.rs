//! The float abstraction of the calibration code: one generic code path, two precisions.
//!
//! `f32` is what calibration runs in (speed); `f64` is what the gradient checks run in (finite
//! differences need the extra digits). Nothing else implements [`Float`].

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real scalar the block forward/backward is generic over (`f32` or `f64`).
///
/// `f64` forwards every function to the standard library. `f32` does too, except [`Float::exp`],
/// which is [`exp_f32`]: branch-free and inlined, so the scan's `exp(Δ·A)` loops vectorise
/// (max. relative error 1e-7, i.e. below 1 ulp, on normal results; see the unit tests).
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// 0.5.
    const HALF: Self;
    /// Machine epsilon of the type.
    const EPSILON: Self;
    /// Rounds an `f64` to this type (exact for `f64`).
    fn from_f64(v: f64) -> Self;
    /// Converts an `f32` (exact for both types).
    fn from_f32(v: f32) -> Self;
    /// Widens to `f64` (exact for both types).
    fn to_f64(self) -> f64;
    /// Rounds to `f32`.
    fn to_f32(self) -> f32;
    /// `e^self`.
    fn exp(self) -> Self;
    /// `ln(1 + self)`, accurate near 0.
    fn ln_1p(self) -> Self;
    /// `|self|`.
    fn abs(self) -> Self;
}

/// `e^x` in `f32`, branch-free (Cephes `expf` polynomial, range reduction by `ln 2`).
///
/// Numerical contract (tested exhaustively over a dense sweep of `[-87.3, 88.7]` against `f64`):
/// max relative error 1e-7 (measured 8.1e-8, < 1 ulp) where the result is a normal `f32`; `+∞` above 88.72;
/// `0` below −87.33 (the subnormal range is flushed, which also keeps the scan's `h·exp(Δ·A)`
/// products off the slow subnormal path); `NaN` for `NaN`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split so that `k·LN2_HI` is exact for |k| ≤ 2^9.
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to the nearest integer, which lands in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const LO: f32 = -87.33;
    let xc = x.clamp(LO, 88.8);
    let z = xc * LOG2E + MAGIC;
    let k = z - MAGIC;
    let ki = (z.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - k * LN2_HI - k * LN2_LO;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    // 2^k as two normal factors: k ∈ [−126, 129] needs neither subnormal nor overflowing exponents.
    let k1 = ki >> 1;
    let k2 = ki - k1;
    let s1 = f32::from_bits(((k1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k2 + 127) as u32) << 23);
    let v = p * s1 * s2;
    if x < LO {
        0.0
    } else {
        v
    }
}

macro_rules! impl_float {
    ($t:ident, $exp:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const HALF: Self = 0.5;
            const EPSILON: Self = $t::EPSILON;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $t::ln_1p(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
        }
    };
}

impl_float!(f32, exp_f32);
impl_float!(f64, f64::exp);
