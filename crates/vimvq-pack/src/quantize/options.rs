//! [`QuantOptions`]: the method, objective and settings of a quantization run.

use std::str::FromStr;

use super::error::QuantError;
use crate::vq::{bits_to_kd, VqConfig};

/// Quantization method (`--method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantMethod {
    /// ViM-VQ: FCCO with hull update and IVQ (the default).
    VimVq,
    /// Per-row uniform scalar round-to-nearest at the nominal bit width.
    Rtn,
    /// k-means codebook + nearest assignment, no calibration ("basic VQ").
    KMeans,
    /// VQ4DiT: fixed hull of 2, no replacement, argmax at the end; same objective and budget.
    Vq4dit,
    /// GPTVQ-style Hessian-weighted assignment with error feedback, then codebook fine-tuning.
    Gptvq,
}

impl QuantMethod {
    /// Every method, as the results table lists them.
    pub const ALL: [QuantMethod; 5] = [
        QuantMethod::VimVq,
        QuantMethod::Rtn,
        QuantMethod::KMeans,
        QuantMethod::Vq4dit,
        QuantMethod::Gptvq,
    ];

    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::VimVq => "vimvq",
            QuantMethod::Rtn => "rtn",
            QuantMethod::KMeans => "kmeans",
            QuantMethod::Vq4dit => "vq4dit",
            QuantMethod::Gptvq => "gptvq",
        }
    }
}

impl FromStr for QuantMethod {
    type Err = QuantError;

    /// Parses [`QuantMethod::name`] (case-insensitive).
    fn from_str(s: &str) -> Result<Self, QuantError> {
        let l = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|m| m.name() == l)
            .ok_or_else(|| QuantError::Options(format!("unknown method {s:?}")))
    }
}

/// Reconstruction objective (`--objective`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Block outputs (the paper's setting; default).
    Block,
    /// Per-layer Hessian-weighted output error (fast mode).
    Layer,
}

impl Objective {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Objective::Block => "block",
            Objective::Layer => "layer",
        }
    }
}

/// Everything [`quantize`](super::quantize) can be told: every setting of docs/QUANTIZATION.md
/// §Options and defaults has its field here or in [`VqConfig`], with that default.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantOptions {
    /// Method. Default [`QuantMethod::VimVq`].
    pub method: QuantMethod,
    /// Objective of `vimvq` / `vq4dit`. Default [`Objective::Block`].
    pub objective: Objective,
    /// k, d, hull, steps, learning rates, λ_r, τ, T_h, schedule, seed, threads.
    pub vq: VqConfig,
    /// Calibration images per optimiser step of the block objective. Default 8.
    pub batch: usize,
    /// Hull update ("adaptive replacement"); `false` = `--no-hull-update`. Default true.
    pub hull_update: bool,
    /// Incremental confirmation (threshold τ and schedule floor); `false` = `--no-ivq`: every
    /// sub-vector stays soft until one-shot argmax hardening after the last step. Default true.
    pub ivq: bool,
    /// Bits of the `rtn` baseline. Default 2.
    pub rtn_bits: u32,
    /// Store VQ codebooks as f16 (`--codebook f16`): each layer's codebook is rounded when the
    /// layer is final, before the next block calibrates on it. Default false (f32).
    pub codebook_f16: bool,
    /// Steps of global fine-tuning after the block-wise stage (`--finetune-steps`; every VQ
    /// method; none for `rtn`, which has no codebooks). Default 0.
    pub finetune_steps: usize,
}

impl Default for QuantOptions {
    fn default() -> Self {
        Self {
            method: QuantMethod::VimVq,
            objective: Objective::Block,
            vq: VqConfig::default(),
            batch: 8,
            hull_update: true,
            ivq: true,
            rtn_bits: 2,
            codebook_f16: false,
            finetune_steps: 0,
        }
    }
}

impl QuantOptions {
    /// Defaults with `(k, d)` and the RTN bit width of a nominal bit width (3, 2 or 1).
    pub fn with_bits(bits: u32) -> Result<Self, QuantError> {
        let (k, d) = bits_to_kd(bits)
            .ok_or_else(|| QuantError::Options(format!("--bits {bits}: must be 1, 2 or 3")))?;
        Ok(Self {
            vq: VqConfig {
                k,
                d,
                ..VqConfig::default()
            },
            rtn_bits: bits,
            ..Self::default()
        })
    }

    /// The FCCO settings actually used: `--no-hull-update` sets `hull_every = 0`; `--no-ivq`
    /// sets τ = 1 (never reached) and the schedule floors to 0.
    pub fn effective_vq(&self) -> VqConfig {
        let mut c = self.vq.clone();
        if !self.hull_update {
            c.hull_every = 0;
        }
        if !self.ivq {
            c.confirm_threshold = 1.0;
            c.schedule_floor = [0.0; 4];
        }
        c
    }

    /// The objective that actually runs for this method (`None` for `kmeans` and `rtn`, which
    /// use no calibration; `gptvq` is always layer-wise).
    pub fn effective_objective(&self) -> Option<Objective> {
        match self.method {
            QuantMethod::Rtn | QuantMethod::KMeans => None,
            QuantMethod::Gptvq => Some(Objective::Layer),
            QuantMethod::VimVq | QuantMethod::Vq4dit => Some(self.objective),
        }
    }

    /// Fine-tuning steps that actually run (0 for `rtn`: no codebooks to tune).
    pub fn effective_finetune_steps(&self) -> usize {
        match self.method {
            QuantMethod::Rtn => 0,
            _ => self.finetune_steps,
        }
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), QuantError> {
        self.effective_vq().validate().map_err(QuantError::Vq)?;
        if self.batch == 0 {
            return Err(QuantError::Options("--batch must be at least 1".into()));
        }
        if self.method == QuantMethod::Rtn && !(1..=16).contains(&self.rtn_bits) {
            return Err(QuantError::Options(format!(
                "rtn bits {} out of range 1..=16",
                self.rtn_bits
            )));
        }
        Ok(())
    }
}
