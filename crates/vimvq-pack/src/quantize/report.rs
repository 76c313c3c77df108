//! The `pack --report` JSON (fields in docs/CLI.md and docs/QUANTIZATION.md): what was run, how
//! big the result is, how long it took, and how far each layer and block moved from f32.

use serde_json::{json, Value};

use super::QuantOptions;
use crate::vq::VqConfig;

/// One quantized layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStat {
    /// PyTorch name, e.g. `layers.0.mixer.in_proj.weight`.
    pub name: String,
    /// Rows of the weight.
    pub rows: usize,
    /// Columns of the weight.
    pub cols: usize,
    /// `‖W − Ŵ‖² / ‖W‖²`.
    pub rel_weight_error: f64,
    /// `‖X Wᵀ − X Ŵᵀ‖² / ‖X Wᵀ‖²` over the layer's calibration inputs `X` (the f32 block run on
    /// the quantized prefix's normalised input), i.e. `tr(E H Eᵀ) / tr(W H Wᵀ)`.
    pub rel_output_error: f64,
}

/// One block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockStat {
    /// Block index.
    pub block: usize,
    /// Final block loss: `rel_mse(mixer_q(hn), mixer_f32(hn))` of the hard quantized block on all
    /// calibration images (the input `hn` from the quantized prefix).
    pub loss: f64,
    /// The same loss for the hard k-means initialisation (block objective only).
    pub kmeans_loss: Option<f64>,
    /// Mean minibatch (soft) loss over the first 10 % of the steps (block objective only).
    pub train_loss_first: Option<f64>,
    /// Mean minibatch loss over the last 10 % of the steps (block objective only).
    pub train_loss_last: Option<f64>,
    /// Minibatch loss before every step (block objective only).
    pub loss_history: Vec<f64>,
    /// Confirmed fraction of the block's sub-vectors after every step (block objective only).
    pub confirmed_history: Vec<f64>,
    /// Hull members replaced.
    pub replaced: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time of the optimiser loop.
    pub train_seconds: f64,
    /// Calibration throughput of the optimiser loop, images·steps per second.
    pub images_steps_per_second: f64,
    /// Wall time of the whole block (targets, Hessians, k-means, training, residual update).
    pub seconds: f64,
}

/// What [`super::quantize`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Options the run was given.
    pub options: QuantOptions,
    /// FCCO settings actually used (ablation switches applied).
    pub effective: VqConfig,
    /// Calibration images used.
    pub calib_images: usize,
    /// Worker threads.
    pub threads: usize,
    /// Weights in the quantized layers.
    pub quantized_weights: usize,
    /// Bits per weight of the quantized layers including codebooks as the file stores them (f32,
    /// or f16 with `--codebook f16`); RTN: `b` bits per weight plus an f16 min and step per row.
    pub true_bits_per_weight: f64,
    /// The same with f16 codebooks.
    pub true_bits_per_weight_f16: f64,
    /// Whole run, seconds.
    pub seconds: f64,
    /// Peak resident set size of the process (`VmHWM`), 0 where unknown.
    pub peak_rss_bytes: u64,
    /// Calibration throughput over all blocks, images·steps per second (0 without training).
    pub images_steps_per_second: f64,
    /// Per layer, in block then calibration order.
    pub layers: Vec<LayerStat>,
    /// Per block.
    pub blocks: Vec<BlockStat>,
    /// Blocks restored from a saved state instead of computed by this run.
    pub resumed_blocks: usize,
    /// The global fine-tuning stage, when it ran.
    pub finetune: Option<FinetuneStat>,
}

/// What the stage did, for the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinetuneStat {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Mean minibatch KL over the first 10 % of the steps.
    pub loss_first: f64,
    /// Mean minibatch KL over the last 10 % of the steps.
    pub loss_last: f64,
    /// Wall time of the stage (teacher logits included), seconds.
    pub seconds: f64,
}

impl Report {
    pub(super) fn new(
        opts: &QuantOptions,
        vq: &VqConfig,
        calib_images: usize,
        threads: usize,
    ) -> Self {
        Self {
            options: opts.clone(),
            effective: vq.clone(),
            calib_images,
            threads,
            quantized_weights: 0,
            true_bits_per_weight: 0.0,
            true_bits_per_weight_f16: 0.0,
            seconds: 0.0,
            peak_rss_bytes: 0,
            images_steps_per_second: 0.0,
            layers: Vec::new(),
            blocks: Vec::new(),
            resumed_blocks: 0,
            finetune: None,
        }
    }

    /// `(k, d)` as reported: the codebook shape, or `(2^b, 1)` for RTN.
    pub fn k_d(&self) -> (usize, usize) {
        if self.options.method.is_vq() {
            (self.effective.k, self.effective.d)
        } else {
            (1usize << self.options.rtn_bits.min(16), 1)
        }
    }

    /// Nominal bits per weight: `log2(k)/d`, or `b` for RTN.
    pub fn bits_per_weight(&self) -> f64 {
        if self.options.method.is_vq() {
            self.effective.bits_per_weight()
        } else {
            self.options.rtn_bits as f64
        }
    }

    /// The report object (fields in docs/CLI.md and docs/QUANTIZATION.md).
    pub fn to_json(&self) -> Value {
        let (k, d) = self.k_d();
        let o = &self.options;
        let e = &self.effective;
        let calibrated = o.effective_objective().is_some();
        let every = |h: &[f64]| -> Vec<f64> { h.iter().step_by(10).copied().collect() };
        json!({
            "method": o.method.name(),
            "objective": o.effective_objective().map_or("none", |x| x.name()),
            "k": k,
            "d": d,
            "bits_per_weight": self.bits_per_weight(),
            "true_bits_per_weight": self.true_bits_per_weight,
            "true_bits_per_weight_f16": self.true_bits_per_weight_f16,
            "codebook_dtype": match (o.method.is_vq(), o.codebook_f16) {
                (false, _) => "none",
                (true, true) => "f16",
                (true, false) => "f32",
            },
            "quantized_weights": self.quantized_weights,
            "calib_images": self.calib_images,
            "seconds": self.seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "threads": self.threads,
            "images_steps_per_second": self.images_steps_per_second,
            "resumed_blocks": self.resumed_blocks,
            "finetune_steps": self.finetune.as_ref().map_or(0, |f| f.steps),
            "finetune_loss_first": self.finetune.as_ref().map(|f| f.loss_first),
            "finetune_loss_last": self.finetune.as_ref().map(|f| f.loss_last),
            "finetune_seconds": self.finetune.as_ref().map_or(0.0, |f| f.seconds),
            "settings": {
                "steps": if calibrated { e.steps } else { 0 },
                "batch": o.batch,
                "hull": e.hull,
                "hull_every": e.hull_every,
                "hull_update": o.hull_update,
                "ivq": o.ivq,
                "lambda_r": e.lambda_r,
                "confirm_threshold": e.confirm_threshold,
                "lr_logits": e.lr_logits,
                "lr_codebook": e.lr_codebook,
                "lr_bias": e.lr_bias,
                "kmeans_iters": e.kmeans_iters,
                "finetune_lr": o.finetune_lr,
                "seed": e.seed,
            },
            "layers": self.layers.iter().map(|l| json!({
                "name": l.name,
                "rows": l.rows,
                "cols": l.cols,
                "rel_weight_error": l.rel_weight_error,
                "rel_output_error": l.rel_output_error,
            })).collect::<Vec<_>>(),
            "blocks": self.blocks.iter().map(|b| json!({
                "block": b.block,
                "loss": b.loss,
                "kmeans_loss": b.kmeans_loss,
                "train_loss_first": b.train_loss_first,
                "train_loss_last": b.train_loss_last,
                "steps": b.steps,
                "replaced": b.replaced,
                "train_seconds": b.train_seconds,
                "images_steps_per_second": b.images_steps_per_second,
                "seconds": b.seconds,
                "loss_every_10_steps": every(&b.loss_history),
                "confirmed_every_10_steps": every(&b.confirmed_history),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Peak resident set size of this process (`VmHWM` of `/proc/self/status`), 0 where unavailable.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
