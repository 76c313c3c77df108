//! [`QuantOptions`]: the method, objective and settings of a quantization run.

use super::error::QuantError;
use super::method::Method;
use crate::vq::{bits_to_kd, default_ivq, VqConfig};

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
    /// Method. Default [`Method::VimVq`].
    pub method: Method,
    /// Objective of `vimvq` / `vq4dit`. Default [`Objective::Block`].
    pub objective: Objective,
    /// k, d, hull, steps, learning rates, λ_r, τ, T_h, schedule, seed.
    pub vq: VqConfig,
    /// Worker threads of the run's thread pool; 0 = all cores. Results do not depend on it.
    /// Default 0.
    pub threads: usize,
    /// Calibration images per optimiser step of the block objective. Default 8.
    pub batch: usize,
    /// Hull update ("adaptive replacement"); `false` = `--no-hull-update`. Default true.
    pub hull_update: bool,
    /// Incremental confirmation (threshold τ and schedule floor); `false` = `--no-ivq`: every
    /// sub-vector stays soft until one-shot argmax hardening after the last step. Default
    /// [`default_ivq`] of `d` (on at 3 and 2 bits, off at 1 bit).
    pub ivq: bool,
    /// Bits of the `rtn` baseline. Default 2.
    pub rtn_bits: u32,
    /// Store VQ codebooks as f16 (`--codebook f16`): each layer's codebook is rounded when the
    /// layer is final, before the next block calibrates on it. Default false (f32).
    pub codebook_f16: bool,
    /// Steps of global fine-tuning after the block-wise stage (`--finetune-steps`; every VQ
    /// method; none for `rtn`, which has no codebooks). Default 100.
    pub finetune_steps: usize,
    /// RMSprop learning rate of the fine-tuning stage (codebooks, norms, Δ biases;
    /// `--finetune-lr`). Default 1e-4.
    pub finetune_lr: f32,
}

impl Default for QuantOptions {
    fn default() -> Self {
        Self {
            method: Method::VimVq,
            objective: Objective::Block,
            vq: VqConfig::default(),
            threads: 0,
            batch: 8,
            hull_update: true,
            ivq: true,
            rtn_bits: 2,
            codebook_f16: false,
            finetune_steps: 100,
            finetune_lr: 1e-4,
        }
    }
}

impl QuantOptions {
    /// Defaults with `(k, d)` and the RTN bit width of a nominal bit width (3, 2 or 1).
    pub fn with_bits(bits: u32) -> Result<Self, QuantError> {
        let (k, d) = bits_to_kd(bits)
            .ok_or_else(|| QuantError::Options(format!("--bits {bits}: must be 1, 2 or 3")))?;
        Ok(Self::with_kd(k, d))
    }

    /// Defaults for `k` codewords of `d` weights: the `d`-dependent ones ([`VqConfig::with_kd`],
    /// [`default_ivq`]) and RTN at the same nominal width, `log2(k) / d` rounded, at least 1 bit.
    pub fn with_kd(k: usize, d: usize) -> Self {
        let vq = VqConfig::with_kd(k, d);
        Self {
            rtn_bits: vq.bits_per_weight().round().clamp(1.0, 16.0) as u32,
            vq,
            ivq: default_ivq(d),
            ..Self::default()
        }
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
            Method::Rtn | Method::KMeans => None,
            Method::Gptvq => Some(Objective::Layer),
            Method::VimVq | Method::Vq4dit => Some(self.objective),
        }
    }

    /// Fine-tuning steps that actually run (0 for `rtn`: no codebooks to tune).
    pub fn effective_finetune_steps(&self) -> usize {
        match self.method {
            Method::Rtn => 0,
            _ => self.finetune_steps,
        }
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), QuantError> {
        self.effective_vq().validate().map_err(QuantError::Vq)?;
        if !(self.finetune_lr.is_finite() && self.finetune_lr > 0.0) {
            return Err(QuantError::Options(format!(
                "--finetune-lr {}: must be finite and > 0",
                self.finetune_lr
            )));
        }
        if self.batch == 0 {
            return Err(QuantError::Options("--batch must be at least 1".into()));
        }
        if !self.method.is_vq() && !(1..=16).contains(&self.rtn_bits) {
            return Err(QuantError::Options(format!(
                "rtn bits {} out of range 1..=16",
                self.rtn_bits
            )));
        }
        Ok(())
    }
}
