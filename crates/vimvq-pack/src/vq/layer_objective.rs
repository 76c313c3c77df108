//! `--objective layer` (docs/QUANTIZATION.md, fast mode): per linear layer minimise
//! `||X Wᵀ − X Ŵᵀ||²` over its calibration inputs X, i.e. with `H = XᵀX` and `E = W − Ŵ`,
//!
//! `L = tr(E H Eᵀ) / tr(W H Wᵀ)`,  `dL/dŴ = −2 E H / tr(W H Wᵀ)` (H symmetric),
//!
//! relative so that λ_r does not depend on the activation scale; no backprop through the scan.
//! [`layer_kmeans`], [`layer_gptvq`] and [`layer_fcco`] (ViM-VQ or VQ4DiT by its
//! [`FccoSettings`]) quantize one layer under it; the pipeline picks one per method.
//!
//! The loss and its Hessian accumulator are in [`super::layer_loss`].

use super::gptvq;
pub use super::layer_loss::{HessianAccumulator, LayerObjective};
use super::train::{kmeans_layer, FccoSettings, FccoTrainer};
use super::{VqConfig, VqError, VqLayer};

/// Outcome of [`layer_kmeans`], [`layer_gptvq`] and [`layer_fcco`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
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

impl LayerReport {
    /// The report of a one-shot layer whose k-means initialisation had loss `kmeans_loss`.
    fn one_shot(obj: &LayerObjective, layer: VqLayer, kmeans_loss: f64) -> Self {
        Self {
            loss: obj.loss(&layer.dequantize()),
            layer,
            kmeans_loss,
            loss_history: Vec::new(),
            confirmed_history: Vec::new(),
            replaced: 0,
            confirmed_by_threshold: 0,
            forced: 0,
            hardened_at_end: 0,
        }
    }
}

/// `kmeans` baseline: k-means codebook + nearest assignment of the objective's weight.
pub fn layer_kmeans(obj: &LayerObjective, cfg: &VqConfig) -> Result<LayerReport, VqError> {
    let base = kmeans_layer(&obj.w, obj.rows, obj.cols, cfg)?;
    let kmeans_loss = obj.loss(&base.dequantize());
    Ok(LayerReport::one_shot(obj, base, kmeans_loss))
}

/// `gptvq` baseline: the k-means codebook, then Hessian-weighted assignment with error feedback
/// and codebook fine-tuning ([`gptvq::gptvq`]).
pub fn layer_gptvq(obj: &LayerObjective, cfg: &VqConfig) -> Result<LayerReport, VqError> {
    let base = kmeans_layer(&obj.w, obj.rows, obj.cols, cfg)?;
    let kmeans_loss = obj.loss(&base.dequantize());
    let layer = gptvq::gptvq(obj, base.codebook, cfg)?;
    Ok(LayerReport::one_shot(obj, layer, kmeans_loss))
}

/// FCCO (+ IVQ and hull update as `settings` say) from the k-means initialisation, `cfg.steps`
/// optimiser steps on the layer loss, then hard.
pub fn layer_fcco(
    obj: &LayerObjective,
    cfg: &VqConfig,
    settings: FccoSettings,
) -> Result<LayerReport, VqError> {
    cfg.validate()?;
    let (rows, cols) = (obj.rows, obj.cols);
    let (mut trainer, base) =
        FccoTrainer::from_kmeans(&obj.w, rows, cols, cfg, settings, cfg.steps)?;
    let kmeans_loss = obj.loss(&base.dequantize());
    let mut report = LayerReport::one_shot(obj, base, kmeans_loss);
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
