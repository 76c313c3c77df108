//! `--objective layer` (docs/QUANTIZATION.md, fast mode): per linear layer minimise
//! `||X Wᵀ − X Ŵᵀ||²` over its calibration inputs X, i.e. with `H = XᵀX` and `E = W − Ŵ`,
//!
//! `L = tr(E H Eᵀ) / tr(W H Wᵀ)`,  `dL/dŴ = −2 E H / tr(W H Wᵀ)` (H symmetric),
//!
//! relative so that λ_r does not depend on the activation scale; no backprop through the scan.
//! [`quantize_layer`] is the complete optimiser loop for every VQ method of the results table.
//!
//! The loss and its Hessian accumulator are in [`super::layer_loss`].

use super::gptvq;
pub use super::layer_loss::{HessianAccumulator, LayerObjective};
use super::train::{FccoTrainer, Variant};
use super::{VqConfig, VqError, VqLayer};

/// VQ methods of the results table under the layer objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// k-means codebook + nearest assignment, no calibration.
    KMeans,
    /// Fixed hull of 2, no replacement, no IVQ, argmax at the end.
    Vq4dit,
    /// FCCO + hull update + IVQ (the paper's method).
    VimVq,
    /// Hessian-weighted assignment with GPTQ-style error feedback (see [`super::gptvq`]).
    Gptvq,
}

impl Method {
    /// Every method, in results-table order.
    pub const ALL: [Method; 4] = [Method::KMeans, Method::Gptvq, Method::Vq4dit, Method::VimVq];

    /// The CLI spelling: `kmeans`, `gptvq`, `vq4dit`, `vimvq`.
    pub fn name(self) -> &'static str {
        match self {
            Method::KMeans => "kmeans",
            Method::Gptvq => "gptvq",
            Method::Vq4dit => "vq4dit",
            Method::VimVq => "vimvq",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = VqError;

    /// Parses [`Method::name`] (case-insensitive; `vim-vq` is accepted too).
    fn from_str(s: &str) -> Result<Self, VqError> {
        let l = s.to_ascii_lowercase();
        let l = if l == "vim-vq" {
            "vimvq".to_string()
        } else {
            l
        };
        Method::ALL
            .into_iter()
            .find(|m| m.name() == l)
            .ok_or(VqError::InvalidConfig {
                name: "method",
                value: s.to_string(),
                why: "must be kmeans, gptvq, vq4dit or vimvq (rtn is separate: vq::rtn)",
            })
    }
}

/// Outcome of [`quantize_layer`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// Method run.
    pub method: Method,
    /// The hard-quantized layer.
    pub layer: VqLayer,
    /// Final loss of the hard layer.
    pub loss: f64,
    /// Loss of the k-means initialisation, hard (the `kmeans` baseline).
    pub kmeans_loss: f64,
    /// Soft reconstruction loss before each optimiser step (empty for one-shot methods).
    pub loss_history: Vec<f64>,
    /// Confirmed fraction after each step.
    pub confirmed_history: Vec<f64>,
    /// Hull members replaced over the run.
    pub replaced: usize,
    /// Sub-vectors confirmed by the threshold τ.
    pub confirmed_by_threshold: usize,
    /// Sub-vectors force-confirmed by the schedule floor.
    pub forced: usize,
    /// Sub-vectors hardened by argmax after the last step (no IVQ or an incomplete schedule).
    pub hardened_at_end: usize,
}

/// Quantizes the objective's weight with `method` under `cfg` (k, d, steps, rates, ...).
pub fn quantize_layer(
    obj: &LayerObjective,
    cfg: &VqConfig,
    method: Method,
) -> Result<LayerReport, VqError> {
    cfg.validate()?;
    let (rows, cols) = (obj.rows, obj.cols);
    let variant = match method {
        Method::KMeans | Method::Gptvq => None,
        Method::Vq4dit => Some(Variant::Vq4dit),
        Method::VimVq => Some(Variant::VimVq),
    };
    let (mut trainer, base) = FccoTrainer::from_kmeans(
        &obj.w,
        rows,
        cols,
        cfg,
        variant.unwrap_or(Variant::VimVq),
        cfg.steps,
    )?;
    let kmeans_loss = obj.loss(&base.dequantize());
    let mut report = LayerReport {
        method,
        layer: base,
        loss: kmeans_loss,
        kmeans_loss,
        loss_history: Vec::new(),
        confirmed_history: Vec::new(),
        replaced: 0,
        confirmed_by_threshold: 0,
        forced: 0,
        hardened_at_end: 0,
    };
    match method {
        Method::KMeans => return Ok(report),
        Method::Gptvq => {
            report.layer = gptvq::gptvq(obj, report.layer.codebook.clone(), cfg)?;
            report.loss = obj.loss(&report.layer.dequantize());
            return Ok(report);
        }
        Method::Vq4dit | Method::VimVq => {}
    }
    let mut grad = vec![0.0f32; rows * cols];
    let mut w_hat = vec![0.0f32; rows * cols];
    for _ in 0..cfg.steps {
        trainer.fcco.reconstruct_into(&mut w_hat);
        report
            .loss_history
            .push(obj.loss_and_grad(&w_hat, &mut grad));
        let s = trainer.step(&grad)?;
        report.confirmed_history.push(s.confirmed_fraction);
        report.replaced += s.replaced;
        report.confirmed_by_threshold += s.confirmed_by_threshold;
        report.forced += s.forced;
    }
    report.hardened_at_end = trainer.fcco.len() - trainer.fcco.confirmed_count();
    report.layer = trainer.finish();
    report.loss = obj.loss(&report.layer.dequantize());
    Ok(report)
}
