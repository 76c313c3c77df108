//! `rtn` baseline (docs/QUANTIZATION.md): per-output-channel uniform scalar quantization, b
//! bits, min/max range, round to nearest.
//!
//! Row `r`: `step_r = (max_r − min_r) / (2^b − 1)`, `q = round((w − min_r) / step_r)` clamped to
//! `[0, 2^b − 1]`, `ŵ = min_r + q · step_r` (computed in f64, stored as f32).
//! Contract: `|w − ŵ| ≤ step_r / 2` up to one f32 rounding of `ŵ`; a constant row is exact.
//! The file format stores VQ or f32, so the result is the dequantised f32 weight plus the ideal
//! size an RTN format would need ([`Rtn::ideal_bits`]).

use super::{check_buf, VqError};

/// Result of [`rtn`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rtn {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Bits per weight.
    pub bits: u32,
    /// Dequantised weight, `rows × cols`.
    pub w_hat: Vec<f32>,
    /// Per-row minimum (the zero point).
    pub mins: Vec<f32>,
    /// Per-row step.
    pub steps: Vec<f32>,
}

impl Rtn {
    /// Ideal stored size in bits: `b` per weight plus an f16 minimum and step per row.
    pub fn ideal_bits(&self) -> u64 {
        (self.rows * self.cols) as u64 * self.bits as u64 + self.rows as u64 * 32
    }

    /// [`Self::ideal_bits`] per weight.
    pub fn true_bits_per_weight(&self) -> f64 {
        self.ideal_bits() as f64 / (self.rows * self.cols) as f64
    }
}

/// Round-to-nearest `bits`-bit quantization (1..=16) of a `rows × cols` weight, per row.
pub fn rtn(w: &[f32], rows: usize, cols: usize, bits: u32) -> Result<Rtn, VqError> {
    if !(1..=16).contains(&bits) {
        return Err(VqError::InvalidConfig {
            name: "bits",
            value: bits.to_string(),
            why: "RTN supports 1..=16 bits",
        });
    }
    if rows == 0 || cols == 0 {
        return Err(VqError::Empty {
            what: "weight",
            rows,
            cols,
        });
    }
    check_buf("weight", w, rows * cols)?;
    let levels = ((1u32 << bits) - 1) as f64;
    let mut w_hat = vec![0.0f32; rows * cols];
    let mut mins = Vec::with_capacity(rows);
    let mut steps = Vec::with_capacity(rows);
    for (src, dst) in w.chunks_exact(cols).zip(w_hat.chunks_exact_mut(cols)) {
        let lo = src.iter().copied().fold(f32::INFINITY, f32::min) as f64;
        let hi = src.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let step = (hi - lo) / levels;
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = if step > 0.0 {
                let q = ((v as f64 - lo) / step).round().clamp(0.0, levels);
                (lo + q * step) as f32
            } else {
                lo as f32
            };
        }
        mins.push(lo as f32);
        steps.push(step as f32);
    }
    Ok(Rtn {
        rows,
        cols,
        bits,
        w_hat,
        mins,
        steps,
    })
}
