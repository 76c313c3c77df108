//! Vector quantization of weight matrices: k-means, FCCO, IVQ and the baselines of the results
//! table (docs/QUANTIZATION.md).
//!
//! The pieces, bottom up:
//! * [`SubVectors`]: a weight `W (rows × cols)` cut into runs of `d` consecutive input weights per
//!   row, each row zero-padded to a multiple of `d` (the layout of [`TensorData::Vq`]).
//! * [`search`]: blocked nearest-codeword search (memory O(k) per thread, never O(N·k)), with a
//!   scalar oracle kept beside the fast path.
//! * [`kmeans`]: k-means++ seeding and Lloyd iterations (codebook initialisation, and the `kmeans`
//!   baseline).
//! * [`fcco`]: the per-layer FCCO state (hulls, logits, ratios, codebook), its gradients, the ratio
//!   regulariser, RMSprop and the hull update.
//! * [`ivq`]: incremental confirmation and its schedule floor.
//! * [`train`]: [`train::FccoTrainer`], one optimiser step of FCCO + IVQ given `dL/dŴ`, shared by
//!   the layer and block objectives.
//! * [`layer_loss`]: the Hessian-weighted per-layer loss.
//! * [`layer_objective`]: one layer quantized under it (k-means, GPTVQ, or FCCO with given
//!   settings).
//! * [`rtn`], [`vq4dit`], [`gptvq`]: baselines.
//!
//! Parallel loops run on the current rayon pool (the caller's `ThreadPool::install` sets its
//! size). Determinism: every result depends only on the inputs and [`VqConfig::seed`]; the pool
//! only splits per-point work whose results do not depend on the split, and every reduction runs
//! in a fixed sequential order.

use vimvq_rt::format::{PackedTensor, TensorData};

pub mod fcco;
pub mod gptvq;
pub mod ivq;
pub mod kmeans;
pub mod layer_loss;
pub mod layer_objective;
pub mod rtn;
pub mod search;
pub mod train;
pub mod vq4dit;

pub use fcco::{Fcco, RmsProp};
pub use kmeans::{kmeans, KMeans, KMeansConfig};
pub use layer_loss::{HessianAccumulator, LayerObjective};
pub use layer_objective::{layer_fcco, layer_gptvq, layer_kmeans, LayerReport};
pub use rtn::{rtn, Rtn};
pub use train::{kmeans_layer, FccoSettings, FccoTrainer, StepReport};

/// Largest supported codebook size (`k`).
pub const MAX_K: usize = 65_536;
/// Largest supported sub-vector length (`d`).
pub const MAX_D: usize = 16;

/// Errors of the quantizer: every one is a caller mistake caught before any work is done.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VqError {
    /// A configuration value is out of its valid range.
    #[error("invalid quantizer setting {name} = {value}: {why}")]
    InvalidConfig {
        /// Field name, as the CLI option would spell it.
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// Valid range.
        why: &'static str,
    },
    /// A buffer does not have the length its dimensions imply.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Length implied by the dimensions.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// An input contains NaN or infinity.
    #[error("{what} contains a non-finite value at index {index}")]
    NonFinite {
        /// Which buffer.
        what: &'static str,
        /// First offending index.
        index: usize,
    },
    /// A matrix has zero rows or columns.
    #[error("{what} is empty ({rows} × {cols})")]
    Empty {
        /// Which matrix.
        what: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
}

/// Checks that `buf` holds exactly `expected` finite values.
pub(crate) fn check_buf(what: &'static str, buf: &[f32], expected: usize) -> Result<(), VqError> {
    if buf.len() != expected {
        return Err(VqError::Shape {
            what,
            expected,
            got: buf.len(),
        });
    }
    if let Some(index) = buf.iter().position(|v| !v.is_finite()) {
        return Err(VqError::NonFinite { what, index });
    }
    Ok(())
}

/// Every ViM-VQ setting, with its default (docs/QUANTIZATION.md §Options and defaults).
/// The CLI exposes each field as an option of the same name (`lr_logits` → `--lr-logits`).
#[derive(Clone, Debug, PartialEq)]
pub struct VqConfig {
    /// Codewords per layer codebook (`--k`, 1..=65536). Default 256 (2-bit).
    pub k: usize,
    /// Sub-vector length (`--d`, 1..=16). Default 4 (2-bit).
    pub d: usize,
    /// FCCO hull size n (`--hull`). Default 2 (the paper: 4). Clamped to `k` at run time.
    pub hull: usize,
    /// Optimiser steps per layer (layer objective) or per block (block objective). Default 300.
    pub steps: usize,
    /// Lloyd iterations of the codebook initialisation. Default 100.
    pub kmeans_iters: usize,
    /// RMSprop learning rate of the logits. Default 5e-2.
    pub lr_logits: f32,
    /// RMSprop learning rate of the codebooks. Default 3e-4 (the paper: 1e-3).
    pub lr_codebook: f32,
    /// RMSprop learning rate of the biases of quantized layers. Default 1e-4.
    pub lr_bias: f32,
    /// RMSprop smoothing constant. Default 0.9.
    pub rms_alpha: f32,
    /// RMSprop denominator epsilon. Default 1e-8.
    pub rms_eps: f32,
    /// Weight λ_r of the ratio regulariser. Default 0.01 (the paper: 0.1).
    pub lambda_r: f32,
    /// Confirmation threshold τ on `max_m r_jm` (`--confirm-threshold`). Default 0.99.
    pub confirm_threshold: f32,
    /// Hull update period T_h in steps (`--hull-every`). Default [`default_hull_every`] of `d`
    /// (10 up to `d = 4`; the paper: 10). 0 disables the hull update.
    pub hull_every: usize,
    /// Schedule points as fractions of the step budget. Default 0.2/0.4/0.6/0.8.
    pub schedule_at: [f32; 4],
    /// Minimum confirmed fraction from each schedule point on. Default 0.25/0.5/0.75/1.0.
    pub schedule_floor: [f32; 4],
    /// Epsilon of the logit initialisation `z = -log(dist + eps)`. Default 1e-5.
    pub logit_init_eps: f32,
    /// Seed of every random choice (k-means++). Default 0.
    pub seed: u64,
}

impl Default for VqConfig {
    fn default() -> Self {
        Self {
            k: 256,
            d: 4,
            hull: 2,
            steps: 300,
            kmeans_iters: 100,
            lr_logits: 5e-2,
            lr_codebook: 3e-4,
            lr_bias: 1e-4,
            rms_alpha: 0.9,
            rms_eps: 1e-8,
            lambda_r: 0.01,
            confirm_threshold: 0.99,
            hull_every: 10,
            schedule_at: [0.2, 0.4, 0.6, 0.8],
            schedule_floor: [0.25, 0.5, 0.75, 1.0],
            logit_init_eps: 1e-5,
            seed: 0,
        }
    }
}

/// The default hull update period for sub-vectors of `d` weights, chosen by the three-seed runs
/// of docs/QUANTIZATION.md "How the defaults were chosen": every 10 steps up to `d = 4` (3 and
/// 2 bits), never from `d = 8` (1 bit), where replacing hull members costs fidelity.
pub fn default_hull_every(d: usize) -> usize {
    if d >= 8 {
        0
    } else {
        10
    }
}

/// Whether ViM-VQ confirms incrementally (IVQ) by default for sub-vectors of `d` weights, chosen
/// by the seed runs of docs/QUANTIZATION.md "How the defaults were chosen": yes up to `d = 4`
/// (3 and 2 bits); not from `d = 8` (1 bit), where one-shot hardening after the last step does
/// better once the model is fine-tuned.
pub fn default_ivq(d: usize) -> bool {
    d < 8
}

/// `(k, d)` for a nominal bit width (`--bits`): 3 → (64, 2), 2 → (256, 4), 1 → (256, 8).
pub fn bits_to_kd(bits: u32) -> Option<(usize, usize)> {
    match bits {
        3 => Some((64, 2)),
        2 => Some((256, 4)),
        1 => Some((256, 8)),
        _ => None,
    }
}

impl VqConfig {
    /// The default configuration with `(k, d)` set from a nominal bit width (see [`bits_to_kd`]).
    pub fn with_bits(bits: u32) -> Result<Self, VqError> {
        let (k, d) = bits_to_kd(bits).ok_or(VqError::InvalidConfig {
            name: "bits",
            value: bits.to_string(),
            why: "must be 1, 2 or 3",
        })?;
        Ok(Self::with_kd(k, d))
    }

    /// The default configuration for `k` codewords of `d` weights, with the defaults that depend
    /// on `d` ([`default_hull_every`]).
    pub fn with_kd(k: usize, d: usize) -> Self {
        Self {
            k,
            d,
            hull_every: default_hull_every(d),
            ..Self::default()
        }
    }

    /// Nominal bits per weight, `log2(k) / d` (codebook excluded).
    pub fn bits_per_weight(&self) -> f64 {
        (self.k as f64).log2() / self.d as f64
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), VqError> {
        fn bad(name: &'static str, value: impl ToString, why: &'static str) -> VqError {
            VqError::InvalidConfig {
                name,
                value: value.to_string(),
                why,
            }
        }
        let pos = |v: f32| v.is_finite() && v > 0.0;
        if self.k == 0 || self.k > MAX_K {
            return Err(bad("k", self.k, "must be in 1..=65536"));
        }
        if self.d == 0 || self.d > MAX_D {
            return Err(bad("d", self.d, "must be in 1..=16"));
        }
        if self.hull == 0 {
            return Err(bad("hull", self.hull, "must be at least 1"));
        }
        if !pos(self.lr_logits) {
            return Err(bad("lr_logits", self.lr_logits, "must be finite and > 0"));
        }
        if !pos(self.lr_codebook) && self.lr_codebook != 0.0 {
            return Err(bad(
                "lr_codebook",
                self.lr_codebook,
                "must be finite and >= 0",
            ));
        }
        if !pos(self.lr_bias) && self.lr_bias != 0.0 {
            return Err(bad("lr_bias", self.lr_bias, "must be finite and >= 0"));
        }
        if !(self.rms_alpha.is_finite() && (0.0..1.0).contains(&self.rms_alpha)) {
            return Err(bad("rms_alpha", self.rms_alpha, "must be in [0, 1)"));
        }
        if !pos(self.rms_eps) {
            return Err(bad("rms_eps", self.rms_eps, "must be finite and > 0"));
        }
        if !(self.lambda_r.is_finite() && self.lambda_r >= 0.0) {
            return Err(bad("lambda_r", self.lambda_r, "must be finite and >= 0"));
        }
        if !(self.confirm_threshold.is_finite() && self.confirm_threshold > 0.0)
            || self.confirm_threshold > 1.0
        {
            return Err(bad(
                "confirm_threshold",
                self.confirm_threshold,
                "must be in (0, 1] (1 disables threshold confirmation)",
            ));
        }
        for (i, (&at, &floor)) in self
            .schedule_at
            .iter()
            .zip(&self.schedule_floor)
            .enumerate()
        {
            if !(0.0..=1.0).contains(&at) || !(0.0..=1.0).contains(&floor) {
                return Err(bad(
                    "schedule",
                    format!("{at}:{floor}"),
                    "points and floors must be in [0, 1]",
                ));
            }
            if i > 0 && (at < self.schedule_at[i - 1] || floor < self.schedule_floor[i - 1]) {
                return Err(bad(
                    "schedule",
                    format!("{:?} / {:?}", self.schedule_at, self.schedule_floor),
                    "points and floors must be non-decreasing",
                ));
            }
        }
        if !pos(self.logit_init_eps) {
            return Err(bad(
                "logit_init_eps",
                self.logit_init_eps,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }
}

/// A weight matrix cut into sub-vectors: `W[r, c·d .. (c+1)·d]`, each row zero-padded to a
/// multiple of `d`. Sub-vector `j = r · per_row + c`, stored contiguously (`len() × d`).
#[derive(Clone, Debug, PartialEq)]
pub struct SubVectors {
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns of the matrix (unpadded).
    pub cols: usize,
    /// Sub-vector length.
    pub d: usize,
    /// Sub-vectors per row, `ceil(cols / d)`.
    pub per_row: usize,
    /// `len() × d` values, row-major; padding positions are 0.
    pub data: Vec<f32>,
}

impl SubVectors {
    /// Cuts a row-major `rows × cols` matrix into sub-vectors of length `d`.
    pub fn from_matrix(w: &[f32], rows: usize, cols: usize, d: usize) -> Result<Self, VqError> {
        if rows == 0 || cols == 0 {
            return Err(VqError::Empty {
                what: "weight",
                rows,
                cols,
            });
        }
        if d == 0 || d > MAX_D {
            return Err(VqError::InvalidConfig {
                name: "d",
                value: d.to_string(),
                why: "must be in 1..=16",
            });
        }
        let n = rows.checked_mul(cols).ok_or(VqError::Shape {
            what: "weight",
            expected: usize::MAX,
            got: w.len(),
        })?;
        check_buf("weight", w, n)?;
        let per_row = cols.div_ceil(d);
        let mut data = vec![0.0f32; rows * per_row * d];
        for (src, dst) in w.chunks_exact(cols).zip(data.chunks_exact_mut(per_row * d)) {
            dst[..cols].copy_from_slice(src);
        }
        Ok(Self {
            rows,
            cols,
            d,
            per_row,
            data,
        })
    }

    /// Number of sub-vectors, `rows · per_row`.
    pub fn len(&self) -> usize {
        self.rows * self.per_row
    }

    /// True when there are no sub-vectors (never for a value built by [`Self::from_matrix`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sub-vector `j` (`d` values, padding included).
    pub fn get(&self, j: usize) -> &[f32] {
        &self.data[j * self.d..(j + 1) * self.d]
    }

    /// The `rows × cols` matrix, padding dropped.
    pub fn to_matrix(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        scatter_rows(&self.data, self.per_row * self.d, &mut out, self.cols);
        out
    }
}

/// Copies the first `cols` values of each `padded`-long row of `src` into the `cols`-long rows of
/// `dst` (both row-major, same row count).
pub(crate) fn scatter_rows(src: &[f32], padded: usize, dst: &mut [f32], cols: usize) {
    for (s, o) in src.chunks_exact(padded).zip(dst.chunks_exact_mut(cols)) {
        o.copy_from_slice(&s[..cols]);
    }
}

/// A hard-quantized weight: one codebook and one index per sub-vector, exactly what
/// [`TensorData::Vq`] stores.
#[derive(Clone, Debug, PartialEq)]
pub struct VqLayer {
    /// Rows of the weight.
    pub rows: usize,
    /// Columns of the weight (unpadded).
    pub cols: usize,
    /// Codewords.
    pub k: usize,
    /// Sub-vector length.
    pub d: usize,
    /// `k × d` codewords, row-major.
    pub codebook: Vec<f32>,
    /// `rows × ceil(cols / d)` indices, row-major, each `< k`.
    pub indices: Vec<u32>,
}

impl VqLayer {
    /// The dense `rows × cols` weight the indices select (padding dropped).
    pub fn dequantize(&self) -> Vec<f32> {
        let per_row = self.cols.div_ceil(self.d);
        let mut padded = vec![0.0f32; self.rows * per_row * self.d];
        for (dst, &a) in padded.chunks_exact_mut(self.d).zip(&self.indices) {
            let a = a as usize;
            dst.copy_from_slice(&self.codebook[a * self.d..(a + 1) * self.d]);
        }
        let mut out = vec![0.0f32; self.rows * self.cols];
        scatter_rows(&padded, per_row * self.d, &mut out, self.cols);
        out
    }

    /// Rounds every codeword value to the nearest IEEE binary16 value (kept as f32), so that an
    /// f16 file stores exactly this layer.
    pub fn round_codebook_f16(&mut self) {
        for v in &mut self.codebook {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }

    /// The layer a VQ tensor of a model holds (its codebook already as f32), or `None` for a
    /// dense tensor: the inverse of [`VqLayer::into_tensor_data`].
    pub fn from_tensor(t: &PackedTensor) -> Option<Self> {
        match &t.data {
            TensorData::Vq {
                codebook,
                k,
                d,
                indices,
                ..
            } => Some(VqLayer {
                rows: t.rows,
                cols: t.cols,
                k: *k,
                d: *d,
                codebook: codebook.clone(),
                indices: indices.clone(),
            }),
            TensorData::F32(_) => None,
        }
    }

    /// The file representation, with an f16 or f32 codebook.
    pub fn into_tensor_data(self, codebook_f16: bool) -> TensorData {
        TensorData::Vq {
            codebook: self.codebook,
            k: self.k,
            d: self.d,
            indices: self.indices,
            codebook_f16,
        }
    }

    /// Nominal bits per weight, `log2(k) / d` (codebook excluded).
    pub fn bits_per_weight(&self) -> f64 {
        (self.k as f64).log2() / self.d as f64
    }

    /// True bits per weight including an f16 codebook, over the unpadded `rows · cols` weights.
    pub fn true_bits_per_weight_f16(&self) -> f64 {
        let index_bits = (self.k as f64).log2() * self.indices.len() as f64;
        let codebook_bits = 16.0 * (self.k * self.d) as f64;
        (index_bits + codebook_bits) / (self.rows * self.cols) as f64
    }
}
