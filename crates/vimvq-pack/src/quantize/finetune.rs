//! Global fine-tuning after block-wise calibration (docs/QUANTIZATION.md, "The pipeline", step 5):
//! with every assignment fixed, the codebooks of all quantized layers, the RMSNorm weights and the
//! Δ biases are trained end to end on `KL(softmax(f32 logits) ‖ softmax(quantized logits))` over
//! minibatches of the calibration images, with the hand-written backward chained through all
//! blocks and the head ([`crate::calib::model`]).

use std::time::Instant;

use rayon::prelude::*;

use vimvq_rt::format::{PackedModel, Role, TensorData};
use vimvq_rt::VimConfig;

use super::block::{sample, set};
use super::error::QuantError;
use super::forward::embed_image;
use super::options::QuantOptions;
use super::progress::ProgressEvent;
use super::report::FinetuneStat;
use super::roles::{BIAS_ROLES, QUANT_ROLES};
use super::tensors::{find, replace};
use crate::calib::model::{codebook_grad, kl_loss, model_backward, model_forward, ModelParams};
use crate::calib::{BlockParams, Cache, MIXER_ROLES};
use crate::rng::SplitMix64;
use crate::vq::{RmsProp, VqLayer};

/// One quantized layer under training: where it sits, its hard layer and its optimiser.
struct Slot {
    block: usize,
    role: Role,
    layer: VqLayer,
    f16: bool,
    opt: RmsProp,
}

fn dense(model: &PackedModel, role: Role, layer: usize) -> Result<Vec<f32>, QuantError> {
    let t = find(model, role, layer)
        .ok_or_else(|| QuantError::Model(format!("tensor {role:?} of layer {layer} is missing")))?;
    Ok(match &t.data {
        TensorData::F32(v) => v.clone(),
        TensorData::Vq { .. } => VqLayer::from_tensor(t)
            .ok_or(QuantError::Internal("VQ tensor"))?
            .dequantize(),
    })
}

/// The end-to-end parameters of `model` (VQ tensors dequantized).
fn model_params(model: &PackedModel) -> Result<ModelParams<f32>, QuantError> {
    let cfg = model.config;
    let mut blocks = Vec::with_capacity(cfg.depth);
    let mut norms = Vec::with_capacity(cfg.depth);
    for b in 0..cfg.depth {
        let tensors = MIXER_ROLES
            .iter()
            .map(|&r| Ok((r, dense(model, r, b)?)))
            .collect::<Result<Vec<_>, QuantError>>()?;
        let p = BlockParams::<f32>::from_roles(&cfg, |role| {
            tensors
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, v)| v.as_slice())
        })
        .map_err(|source| QuantError::Block { block: b, source })?;
        blocks.push(p);
        norms.push(dense(model, Role::Norm, b)?);
    }
    Ok(ModelParams {
        blocks,
        norms,
        norm_f: dense(model, Role::NormF, 0)?,
        head_w: dense(model, Role::HeadWeight, 0)?,
        head_b: dense(model, Role::HeadBias, 0)?,
        eps: cfg.norm_eps as f64,
        seq_len: cfg.seq_len(),
        cls_pos: cfg.cls_pos(),
    })
}

/// The f32 prefix of every image of `images` (`r_0`, `(B, L, D)`).
struct Prefix {
    cfg: VimConfig,
    w_t: Vec<f32>,
    bias: Vec<f32>,
    cls: Vec<f32>,
    pos: Vec<f32>,
}

impl Prefix {
    fn new(model: &PackedModel) -> Result<Self, QuantError> {
        let cfg = model.config;
        let w = dense(model, Role::PatchWeight, 0)?;
        Ok(Prefix {
            cfg,
            w_t: crate::calib::ops::transpose(&w, cfg.embed_dim, cfg.patch_len()),
            bias: dense(model, Role::PatchBias, 0)?,
            cls: dense(model, Role::ClsToken, 0)?,
            pos: dense(model, Role::PosEmbed, 0)?,
        })
    }

    fn residual(&self, images: &[&Vec<f32>]) -> Vec<f32> {
        let row = self.cfg.seq_len() * self.cfg.embed_dim;
        let mut r = vec![0.0f32; images.len() * row];
        r.par_chunks_exact_mut(row)
            .zip(images.par_iter())
            .for_each(|(out, img)| {
                embed_image(
                    &self.cfg, &self.w_t, &self.bias, &self.cls, &self.pos, img, out,
                )
            });
        r
    }
}

/// Fine-tunes `out` (the block-wise quantized model) towards `teacher` (the f32 model) for
/// `opts.finetune_steps` steps of `opts.batch` images from `calib`, in place: the codebooks of
/// every VQ tensor (rounded to f16 at the end if they are stored as f16), the block norms, the
/// final norm and the Δ biases. Indices and every other tensor stay as they are.
pub(super) fn finetune(
    teacher: &PackedModel,
    out: &mut PackedModel,
    calib: &[Vec<f32>],
    opts: &QuantOptions,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<FinetuneStat, QuantError> {
    let start = Instant::now();
    let steps = opts.finetune_steps;
    let rms = |len: usize| RmsProp::new(len, opts.finetune_lr, 0.9, 1e-8);
    let cfg = out.config;
    let classes = cfg.num_classes;
    let prefix = Prefix::new(teacher)?;
    let batch = opts.batch.min(calib.len()).max(1);
    let mut cache = Cache::new();

    // f32 teacher logits of every calibration image, once.
    let teacher_params = model_params(teacher)?;
    let mut t_logits = Vec::with_capacity(calib.len() * classes);
    for chunk in calib.chunks(batch) {
        let imgs: Vec<&Vec<f32>> = chunk.iter().collect();
        let r0 = prefix.residual(&imgs);
        t_logits.extend(model_forward(&teacher_params, &r0, &mut cache).0);
    }
    drop(teacher_params);

    let mut params = model_params(out)?;
    let mut slots = Vec::new();
    for t in &out.tensors {
        let Some(layer) = VqLayer::from_tensor(t) else {
            continue;
        };
        if !QUANT_ROLES.contains(&t.role) {
            return Err(QuantError::Internal("VQ tensor outside the mixer"));
        }
        let opt = rms(layer.codebook.len());
        slots.push(Slot {
            block: t.layer,
            role: t.role,
            layer,
            f16: matches!(
                t.data,
                TensorData::Vq {
                    codebook_f16: true,
                    ..
                }
            ),
            opt,
        });
    }
    let d_model = cfg.embed_dim;
    let mut norm_opt: Vec<RmsProp> = (0..cfg.depth).map(|_| rms(d_model)).collect();
    let mut norm_f_opt = rms(d_model);
    let mut bias_opt: Vec<[RmsProp; 2]> = (0..cfg.depth)
        .map(|_| [rms(cfg.d_inner), rms(cfg.d_inner)])
        .collect();

    let mut rng = SplitMix64::new(opts.vq.seed ^ 0xf1e7_7a11_0000_0000);
    let mut perm: Vec<usize> = (0..calib.len()).collect();
    let mut dl = vec![0.0f32; batch * classes];
    let mut tb = vec![0.0f32; batch * classes];
    let mut history = Vec::with_capacity(steps);
    for step in 0..steps {
        for s in &slots {
            set(&mut params.blocks[s.block], s.role, &s.layer.dequantize());
        }
        let idx = sample(&mut rng, &mut perm, batch);
        let imgs: Vec<&Vec<f32>> = idx.iter().map(|&i| &calib[i]).collect();
        for (slot, &i) in idx.iter().enumerate() {
            tb[slot * classes..(slot + 1) * classes]
                .copy_from_slice(&t_logits[i * classes..(i + 1) * classes]);
        }
        let r0 = prefix.residual(&imgs);
        let (logits, ck) = model_forward(&params, &r0, &mut cache);
        let loss = kl_loss(&tb, &logits, classes, Some(&mut dl));
        if !loss.is_finite() {
            return Err(QuantError::FinetuneDiverged { step });
        }
        let g = model_backward(&params, &ck, &dl, &mut cache);
        for s in &mut slots {
            let dw = g.blocks[s.block]
                .tensor(s.role)
                .ok_or(QuantError::Internal("gradient role"))?;
            let l = &s.layer;
            let cg = codebook_grad(l.rows, l.cols, l.k, l.d, &l.indices, dw);
            s.opt.step(&mut s.layer.codebook, &cg);
        }
        for b in 0..cfg.depth {
            norm_opt[b].step(&mut params.norms[b], &g.norms[b]);
            for (opt, &(_, brole)) in bias_opt[b].iter_mut().zip(&BIAS_ROLES) {
                let gb = g.blocks[b]
                    .tensor(brole)
                    .ok_or(QuantError::Internal("bias gradient"))?;
                let p = params.blocks[b]
                    .tensor_mut(brole)
                    .ok_or(QuantError::Internal("bias role"))?;
                opt.step(p, gb);
            }
        }
        norm_f_opt.step(&mut params.norm_f, &g.norm_f);
        history.push(loss);
        progress(ProgressEvent::FinetuneStep {
            step: step + 1,
            steps,
            loss,
        });
    }

    // Write back: codebooks (as stored), norms, Δ biases.
    for mut s in slots {
        if s.f16 {
            s.layer.round_codebook_f16();
        }
        let f16 = s.f16;
        replace(out, s.role, s.block, s.layer.into_tensor_data(f16))?;
    }
    for b in 0..cfg.depth {
        replace(out, Role::Norm, b, TensorData::F32(params.norms[b].clone()))?;
        for (_, brole) in BIAS_ROLES {
            let v = params.blocks[b]
                .tensor(brole)
                .ok_or(QuantError::Internal("bias role"))?;
            replace(out, brole, b, TensorData::F32(v.to_vec()))?;
        }
    }
    replace(out, Role::NormF, 0, TensorData::F32(params.norm_f.clone()))?;

    let n = history.len();
    let w = (n / 10).max(1).min(n.max(1));
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    Ok(FinetuneStat {
        steps: n,
        loss_first: mean(&history[..w.min(n)]),
        loss_last: mean(&history[n - w.min(n)..]),
        seconds: start.elapsed().as_secs_f64(),
    })
}
