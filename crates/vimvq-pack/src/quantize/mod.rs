//! The quantization pipeline behind `vimvq pack`: an all-f32 [`PackedModel`] plus calibration
//! images in, a model whose mixer projections are vector-quantized (and a [`Report`]) out.
//!
//! ```no_run
//! # use vimvq_pack::{import, quantize::{quantize, QuantOptions}};
//! # let ck = import::load(std::path::Path::new("m.safetensors"), None).unwrap();
//! let f32_model = import::to_packed(&ck, &Default::default()).unwrap();
//! let calib: Vec<Vec<f32>> = vec![/* normalised CHW images */];
//! let opts = QuantOptions::with_bits(2).unwrap(); // ViM-VQ, block objective, documented defaults
//! let (q, report) = quantize(&f32_model, &calib, &opts, &mut |_| {}).unwrap();
//! ```
//!
//! # What runs (docs/QUANTIZATION.md)
//! Quantized layers: `in_proj`, `x_proj`, `x_proj_b`, `dt_proj`, `dt_proj_b`, `out_proj` of every
//! block ([`QUANT_ROLES`]); patch embedding, head, conv, `A_log`, `D`, norms, biases and the
//! position embedding stay f32.
//!
//! 1. The f32 prefix (patch embedding, cls token at `P/2`, position embedding) runs on every
//!    calibration image: the residual stream `r_0`.
//! 2. For each block `b` in order: `hn = RMSNorm_b(r_b)`, where `r_b` comes from the *already
//!    quantized* blocks `0..b` (errors propagate, as in the paper); the f32 mixer gives the
//!    target `y_ref` and the input `X` of each of the six layers, from which `H = XᵀX` is
//!    accumulated (layer objective, GPTVQ, and every layer's `rel_output_error` in the report).
//! 3. The block's layers are quantized with the chosen [`Method`] and [`Objective`]:
//!    * `vimvq` / `vq4dit`, block objective: k-means init, then `steps` optimiser steps of FCCO
//!      (+ hull update + IVQ for `vimvq`) on minibatches of `batch` images sampled from the seed,
//!      loss `rel_mse(mixer_q(hn), y_ref)`, Δ biases trained by RMSprop; then hard.
//!    * `vimvq` / `vq4dit`, layer objective: [`crate::vq::layer_fcco`] on each layer's
//!      Hessian-weighted loss (no backprop through the scan; biases stay f32 as trained).
//!    * `kmeans`: k-means codebook + nearest assignment (no calibration).
//!    * `gptvq`: Hessian-weighted assignment with GPTQ error feedback, then codebook fine-tuning
//!      on the layer loss (always layer-wise: it is defined by the Hessians).
//!    * `rtn`: per-row uniform scalar quantization at the nominal bit width, stored as the
//!      dequantized f32 weight (the file has no RTN storage); the report counts its ideal bits.
//! 4. `r_{b+1} = r_b + mixer_q(hn)` with the hard quantized block.
//!
//! [`quantize_resumable`] also saves the run's state after every block and, started again with
//! the same inputs, continues after the last finished block ([`StateFile`], `resume.rs`).
//!
//! # Determinism
//! The output depends only on the model, the images (and their order), and the options, never on
//! `threads`: [`quantize`] runs on a rayon pool of that size, every parallel loop splits
//! per-image or per-point work whose results do not depend on the split, and all reductions run
//! in a fixed sequential order.

mod block;
mod error;
mod finetune;
mod forward;
mod method;
mod options;
mod progress;
mod report;
mod resume;
mod roles;
mod tensors;

use std::time::Instant;

use vimvq_rt::format::{PackedModel, Role, TensorData};
use vimvq_rt::VimConfig;

use rayon::prelude::*;

use crate::calib::{rel_mse, BlockParams};
use crate::vq::{
    layer_fcco, layer_gptvq, layer_kmeans, rtn, FccoSettings, HessianAccumulator, LayerObjective,
    LayerReport, VqError, VqLayer,
};

pub use self::error::QuantError;
pub use self::method::Method;
pub use self::options::{Objective, QuantOptions};
pub use self::progress::{Eta, FinetuneCost, ProgressEvent};
pub use self::resume::StateFile;
pub use self::roles::QUANT_ROLES;
pub use report::{peak_rss_bytes, BlockStat, FinetuneStat, LayerStat, Report};

use self::block::{role_shape, set, BlockData, TrainSettings};
use self::forward::{embed_image, mixer_batch, mixer_batch_taps, rmsnorm_rows};
use self::resume::{Fingerprint, Snapshot};
use self::roles::BIAS_ROLES;
use self::tensors::{find, replace, tensor};

/// Images per chunk of the f32 target / Hessian pass (bounds its memory).
const TAP_CHUNK: usize = 32;

/// Looks up f32 tensors of the input model.
struct Tensors<'a> {
    model: &'a PackedModel,
}

impl<'a> Tensors<'a> {
    fn get(&self, role: Role, layer: usize) -> Result<&'a [f32], QuantError> {
        let t = find(self.model, role, layer).ok_or_else(|| {
            QuantError::Model(format!("tensor {role:?} of layer {layer} is missing"))
        })?;
        match &t.data {
            TensorData::F32(v) => Ok(v),
            TensorData::Vq { .. } => Err(QuantError::Model(format!(
                "tensor {role:?} of layer {layer} is already quantized; start from an f32 model"
            ))),
        }
    }

    fn block(&self, cfg: &VimConfig, b: usize) -> Result<BlockParams<f32>, QuantError> {
        for role in crate::calib::MIXER_ROLES {
            self.get(role, b)?;
        }
        BlockParams::from_roles(cfg, |role| self.get(role, b).ok())
            .map_err(|source| QuantError::Block { block: b, source })
    }
}

/// One quantized layer: role, stored data, dequantized weight, bits (see [`vq_bits`]).
type Quantized = (Role, TensorData, Vec<f32>, (f64, f64, f64));

/// A final VQ layer as the file stores it (codebook rounded to f16 when `f16`), its dequantized
/// weight and its [`vq_bits`].
fn stored_layer(mut layer: VqLayer, f16: bool) -> (TensorData, Vec<f32>, (f64, f64, f64)) {
    if f16 {
        layer.round_codebook_f16();
    }
    let w_hat = layer.dequantize();
    let bits = vq_bits(&layer);
    (layer.into_tensor_data(f16), w_hat, bits)
}

/// Bits of a stored layer: `(index bits, codebook bits with f32, codebook bits with f16)`.
fn vq_bits(l: &VqLayer) -> (f64, f64, f64) {
    let idx = (l.k as f64).log2() * l.indices.len() as f64;
    let cb = (l.k * l.d) as f64;
    (idx, 32.0 * cb, 16.0 * cb)
}

fn rel_weight_error(w: &[f32], w_hat: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in w.iter().zip(w_hat) {
        let e = a as f64 - b as f64;
        num += e * e;
        den += a as f64 * a as f64;
    }
    num / den.max(f64::MIN_POSITIVE)
}

/// A rayon pool of `threads` workers (0 = all cores).
fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, QuantError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| QuantError::Threads {
            threads,
            msg: e.to_string(),
        })
}

/// Quantizes every layer of a block on its own objective with `f` (one of [`layer_kmeans`],
/// [`layer_gptvq`], [`layer_fcco`]).
fn per_layer(
    block: usize,
    objectives: &[LayerObjective],
    f16: bool,
    f: impl Fn(&LayerObjective) -> Result<LayerReport, VqError>,
) -> Result<Vec<Quantized>, QuantError> {
    let mut out = Vec::with_capacity(objectives.len());
    for (role, obj) in QUANT_ROLES.iter().zip(objectives) {
        let lr = f(obj).map_err(|e| QuantError::layer(block, *role, e))?;
        let (data, w_hat, bits) = stored_layer(lr.layer, f16);
        out.push((*role, data, w_hat, bits));
    }
    Ok(out)
}

/// The `rtn` baseline on every layer of a block: the dequantized weight, stored as f32, and its
/// ideal bits.
fn rtn_layers(
    block: usize,
    objectives: &[LayerObjective],
    bits: u32,
) -> Result<Vec<Quantized>, QuantError> {
    let mut out = Vec::with_capacity(objectives.len());
    for (role, obj) in QUANT_ROLES.iter().zip(objectives) {
        let r = rtn(obj.weight(), obj.rows(), obj.cols(), bits)
            .map_err(|e| QuantError::layer(block, *role, e))?;
        let bits = (r.ideal_bits() as f64, 0.0, 0.0);
        out.push((*role, TensorData::F32(r.w_hat.clone()), r.w_hat, bits));
    }
    Ok(out)
}

/// The block objective ([`block::train_block`]): the block's layers, its trained Δ biases
/// written to `params_q`, and the training figures in `stat`.
#[allow(clippy::too_many_arguments)]
fn block_layers(
    params: &BlockParams<f32>,
    data: &BlockData<'_>,
    settings: &TrainSettings<'_>,
    f16: bool,
    stat: &mut BlockStat,
    params_q: &mut BlockParams<f32>,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<Vec<Quantized>, QuantError> {
    let n_img = data.hn.len() / (data.len * params.dims.d_model).max(1);
    let trained = block::train_block(params, data, settings, progress)?;
    let mut out = Vec::with_capacity(trained.layers.len());
    for (role, layer) in QUANT_ROLES.iter().zip(trained.layers) {
        let (data, w_hat, bits) = stored_layer(layer, f16);
        out.push((*role, data, w_hat, bits));
    }
    for (&(_, brole), v) in BIAS_ROLES.iter().zip(&trained.biases) {
        set(params_q, brole, v);
    }
    let n = trained.loss_history.len();
    let w = (n / 10).max(1).min(n);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    stat.kmeans_loss = Some(trained.kmeans_loss);
    if n > 0 {
        stat.train_loss_first = Some(mean(&trained.loss_history[..w]));
        stat.train_loss_last = Some(mean(&trained.loss_history[n - w..]));
    }
    stat.replaced = trained.replaced;
    stat.train_seconds = trained.train_seconds;
    stat.steps = n;
    stat.images_steps_per_second = if trained.train_seconds > 0.0 {
        (settings.batch.min(n_img) * n) as f64 / trained.train_seconds
    } else {
        0.0
    };
    stat.loss_history = trained.loss_history;
    stat.confirmed_history = trained.confirmed_history;
    Ok(out)
}

/// Quantizes `model` (all f32, as [`crate::import::to_packed`] makes it) with `opts`, calibrating
/// on `calib` (normalised CHW images of [`VimConfig::input_len`] values, in a fixed order).
///
/// The run uses a rayon pool of `opts.threads` workers; `progress` receives [`ProgressEvent`]s in
/// order, from one thread of that pool. Returns the quantized model (preprocessing, labels and
/// every other tensor copied) and the report.
pub fn quantize(
    model: &PackedModel,
    calib: &[Vec<f32>],
    opts: &QuantOptions,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<(PackedModel, Report), QuantError> {
    run(model, calib, opts, None, progress)
}

/// [`quantize`], saving the run's state to `state` after every block. If `state.path` already
/// holds the state of a run with the same model, calibration images (names and content) and
/// options (any `threads`), the run continues after its last finished block, and the result is
/// identical to an uninterrupted run's; a state from another run, or a damaged one, is a
/// [`QuantError::Resume`] naming the file. The caller removes the file once the output is
/// written.
pub fn quantize_resumable(
    model: &PackedModel,
    calib: &[Vec<f32>],
    opts: &QuantOptions,
    state: &StateFile,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<(PackedModel, Report), QuantError> {
    run(model, calib, opts, Some(state), progress)
}

/// Validates the options and runs on a pool of `opts.threads` workers.
fn run(
    model: &PackedModel,
    calib: &[Vec<f32>],
    opts: &QuantOptions,
    state: Option<&StateFile>,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<(PackedModel, Report), QuantError> {
    opts.validate()?;
    let pool = thread_pool(opts.threads)?;
    pool.install(|| quantize_on_pool(model, calib, opts, state, progress))
}

/// [`quantize`] / [`quantize_resumable`] on the current rayon pool.
fn quantize_on_pool(
    model: &PackedModel,
    calib: &[Vec<f32>],
    opts: &QuantOptions,
    state: Option<&StateFile>,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<(PackedModel, Report), QuantError> {
    let start = Instant::now();
    let vq = opts.effective_vq();
    let cfg = model.config;
    cfg.check()
        .map_err(|e| QuantError::Model(format!("invalid config: {e}")))?;
    if calib.is_empty() {
        return Err(QuantError::NoCalibration);
    }
    for (index, img) in calib.iter().enumerate() {
        if img.len() != cfg.input_len() {
            return Err(QuantError::BadImage {
                index,
                msg: format!("{} values, the model takes {}", img.len(), cfg.input_len()),
            });
        }
        if img.iter().any(|v| !v.is_finite()) {
            return Err(QuantError::BadImage {
                index,
                msg: "non-finite value".into(),
            });
        }
    }
    let threads = rayon::current_num_threads();
    let tensors = Tensors { model };
    let (len, d) = (cfg.seq_len(), cfg.embed_dim);
    let row = len * d;
    let n_img = calib.len();

    let mut out = model.clone();
    let mut report = Report::new(opts, &vq, n_img, threads);
    let (mut bits_idx, mut bits_cb32, mut bits_cb16, mut n_weights) = (0.0, 0.0, 0.0, 0usize);
    let saving = match state {
        Some(file) => Some((
            file,
            Fingerprint::new(model, calib, &file.image_names, opts)?,
        )),
        None => None,
    };
    let restored = match &saving {
        Some((file, fp)) => resume::load(file, fp, model, n_img)?,
        None => None,
    };
    let mut residual;
    if let Some(st) = restored {
        // Continue after the saved blocks: their tensors, report entries and residual stream.
        let roles = QUANT_ROLES.iter().chain(BIAS_ROLES.iter().map(|(_, b)| b));
        for (i, (data, &role)) in st.tensors.into_iter().zip(roles.cycle()).enumerate() {
            replace(
                &mut out,
                role,
                i / (QUANT_ROLES.len() + BIAS_ROLES.len()),
                data,
            )?;
        }
        residual = st.residual;
        report.layers = st.layers;
        report.blocks = st.blocks;
        report.resumed_blocks = report.blocks.len();
        [bits_idx, bits_cb32, bits_cb16] = st.bits;
        n_weights = usize::try_from(st.weights).map_err(|_| QuantError::Internal("weights"))?;
        progress(ProgressEvent::Resumed {
            done: report.blocks.len(),
            count: cfg.depth,
        });
    } else {
        // 1. The f32 prefix: residual stream r_0 of every image.
        residual = vec![0.0f32; n_img * row];
        let w = tensors.get(Role::PatchWeight, 0)?;
        let w_t = crate::calib::ops::transpose(w, d, cfg.patch_len());
        let bias = tensors.get(Role::PatchBias, 0)?;
        let cls = tensors.get(Role::ClsToken, 0)?;
        let pos = tensors.get(Role::PosEmbed, 0)?;
        calib
            .par_iter()
            .zip(residual.par_chunks_exact_mut(row))
            .for_each(|(img, out)| embed_image(&cfg, &w_t, bias, cls, pos, img, out));
    }

    let mut hn = vec![0.0f32; n_img * row];
    let block_steps = match opts.effective_objective() {
        Some(Objective::Block) => vq.steps,
        _ => 0,
    };
    for b in report.blocks.len()..cfg.depth {
        let block_start = Instant::now();
        let params = tensors.block(&cfg, b)?;
        let unit = format!("block {b}");
        progress(ProgressEvent::Start {
            unit: unit.clone(),
            index: b,
            count: cfg.depth,
            steps: block_steps,
        });
        // 2. hn from the quantized prefix; f32 targets and the layers' Hessians.
        rmsnorm_rows(
            &residual,
            tensors.get(Role::Norm, b)?,
            cfg.norm_eps,
            &mut hn,
        );
        let mut y_ref = vec![0.0f32; n_img * row];
        let mut hess: Vec<HessianAccumulator> = QUANT_ROLES
            .iter()
            .map(|&r| HessianAccumulator::new(role_shape(&params, r).1))
            .collect();
        for (h, y) in hn
            .chunks(TAP_CHUNK * row)
            .zip(y_ref.chunks_mut(TAP_CHUNK * row))
        {
            let (yc, taps) = mixer_batch_taps(&params, h, len, &QUANT_ROLES);
            y.copy_from_slice(&yc);
            for (acc, x) in hess.iter_mut().zip(&taps) {
                acc.add(x).map_err(QuantError::Vq)?;
            }
        }
        let mut objectives = Vec::with_capacity(QUANT_ROLES.len());
        for (role, acc) in QUANT_ROLES.iter().zip(&hess) {
            let (rows, cols) = role_shape(&params, *role);
            let w = params.tensor(*role).ok_or(QuantError::Internal("role"))?;
            objectives.push(
                LayerObjective::new(w, rows, cols, &acc.finish())
                    .map_err(|e| QuantError::layer(b, *role, e))?,
            );
        }
        drop(hess);

        // 3. Quantize the block's layers.
        let mut params_q = params.clone();
        let mut stat = BlockStat {
            block: b,
            ..BlockStat::default()
        };
        let f16 = opts.codebook_f16;
        let mut fcco_layers = |settings: FccoSettings| match opts.objective {
            Objective::Layer => per_layer(b, &objectives, f16, |o| layer_fcco(o, &vq, settings)),
            Objective::Block => block_layers(
                &params,
                &BlockData {
                    hn: &hn,
                    y_ref: &y_ref,
                    len,
                },
                &TrainSettings {
                    vq: &vq,
                    fcco: settings,
                    batch: opts.batch,
                    block: b,
                },
                f16,
                &mut stat,
                &mut params_q,
                progress,
            ),
        };
        // The one dispatch on the method.
        let results = match opts.method {
            Method::Rtn => rtn_layers(b, &objectives, opts.rtn_bits)?,
            Method::KMeans => per_layer(b, &objectives, f16, |o| layer_kmeans(o, &vq))?,
            Method::Gptvq => per_layer(b, &objectives, f16, |o| layer_gptvq(o, &vq))?,
            Method::VimVq => fcco_layers(FccoSettings::from_config(&vq))?,
            Method::Vq4dit => fcco_layers(FccoSettings::VQ4DIT)?,
        };

        // Per-layer report, the hard block's loss, and the tensors of the output model.
        for ((role, data, w_hat, bits), obj) in results.into_iter().zip(&objectives) {
            set(&mut params_q, role, &w_hat);
            report.layers.push(LayerStat {
                name: format!("layers.{b}.{}", role.torch_name()),
                rows: obj.rows(),
                cols: obj.cols(),
                rel_weight_error: rel_weight_error(obj.weight(), &w_hat),
                rel_output_error: obj.loss(&w_hat),
            });
            bits_idx += bits.0;
            bits_cb32 += bits.1;
            bits_cb16 += bits.2;
            n_weights += obj.rows() * obj.cols();
            replace(&mut out, role, b, data)?;
        }
        for (_, brole) in BIAS_ROLES {
            let v = params_q.tensor(brole).ok_or(QuantError::Internal("bias"))?;
            replace(&mut out, brole, b, TensorData::F32(v.to_vec()))?;
        }
        // 4. Advance the quantized residual stream.
        let yq = mixer_batch(&params_q, &hn, len);
        stat.loss = rel_mse(&yq, &y_ref, None);
        for (r, y) in residual.iter_mut().zip(&yq) {
            *r += y;
        }
        stat.seconds = block_start.elapsed().as_secs_f64();
        let (loss, seconds) = (stat.loss, stat.seconds);
        report.blocks.push(stat);
        if let Some((file, fp)) = &saving {
            let roles = QUANT_ROLES.iter().chain(BIAS_ROLES.iter().map(|(_, b)| b));
            let mut tensors = Vec::new();
            for layer in 0..=b {
                for &role in roles.clone() {
                    tensors.push(tensor(&out, role, layer)?);
                }
            }
            let snapshot = Snapshot {
                residual: &residual,
                tensors,
                layers: &report.layers,
                blocks: &report.blocks,
                bits: [bits_idx, bits_cb32, bits_cb16],
                weights: n_weights as u64,
            };
            resume::save(file, fp, &snapshot)?;
        }
        let times: Vec<f64> = report.blocks.iter().map(|s| s.seconds).collect();
        let eta = Eta::after_blocks(
            &times,
            cfg.depth,
            start.elapsed().as_secs_f64(),
            finetune_cost(opts, &report.blocks),
        );
        progress(ProgressEvent::Done {
            unit,
            loss,
            seconds,
            eta,
        });
    }
    // 5. Global fine-tuning of codebooks, norms and Δ biases, assignments fixed.
    if opts.effective_finetune_steps() > 0 {
        report.finetune = Some(finetune::finetune(model, &mut out, calib, opts, progress)?);
    }
    let nw = n_weights.max(1) as f64;
    report.quantized_weights = n_weights;
    // As stored: f16 or f32 codebooks.
    let bits_cb = if opts.codebook_f16 {
        bits_cb16
    } else {
        bits_cb32
    };
    report.true_bits_per_weight = (bits_idx + bits_cb) / nw;
    report.true_bits_per_weight_f16 = (bits_idx + bits_cb16) / nw;
    let train: f64 = report.blocks.iter().map(|s| s.train_seconds).sum();
    let img_steps: usize = report
        .blocks
        .iter()
        .map(|s| s.steps * opts.batch.min(n_img))
        .sum();
    report.images_steps_per_second = if train > 0.0 {
        img_steps as f64 / train
    } else {
        0.0
    };
    report.seconds = start.elapsed().as_secs_f64();
    report.peak_rss_bytes = peak_rss_bytes();
    Ok((out, report))
}

/// The fine-tuning stage's cost for the ETA: its steps, and the block objective's measured
/// seconds per optimiser step (0, i.e. not estimated, for methods without block steps).
fn finetune_cost(opts: &QuantOptions, blocks: &[BlockStat]) -> FinetuneCost {
    let block_objective = opts.effective_objective() == Some(Objective::Block);
    let (secs, steps) = blocks
        .iter()
        .fold((0.0, 0), |(t, n), b| (t + b.train_seconds, n + b.steps));
    FinetuneCost {
        steps: opts.effective_finetune_steps(),
        block_step_seconds: if block_objective && steps > 0 {
            secs / steps as f64
        } else {
            0.0
        },
    }
}
