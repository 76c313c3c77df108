//! The block objective (docs/QUANTIZATION.md, "The pipeline"): one Vim block's six linear layers
//! trained together with FCCO (+ IVQ) on `rel_mse(mixer_q(hn), mixer_f32(hn))`, gradients from the
//! hand-written block backward ([`crate::calib::backward`]), the two Δ biases by RMSprop.

use std::time::Instant;

use vimvq_rt::format::Role;

use super::error::QuantError;
use super::forward::mixer_batch;
use super::progress::ProgressEvent;
use super::roles::{BIAS_ROLES, QUANT_ROLES};
use crate::calib::{backward, forward, rel_mse, BlockParams, Cache};
use crate::rng::SplitMix64;
use crate::vq::{FccoSettings, FccoTrainer, RmsProp, VqConfig, VqLayer};

/// Calibration data of one block: the normalised inputs `hn` and the f32 mixer outputs `y_ref`,
/// both `(images, L, D)`.
pub(super) struct BlockData<'a> {
    /// `RMSNorm_b(residual_q)` of every calibration image.
    pub hn: &'a [f32],
    /// f32 mixer output on `hn`.
    pub y_ref: &'a [f32],
    /// Sequence length `L`.
    pub len: usize,
}

/// Settings of one block's training run.
pub(super) struct TrainSettings<'a> {
    /// FCCO/IVQ settings (ablation switches already applied).
    pub vq: &'a VqConfig,
    /// ViM-VQ or VQ4DiT settings of the trainers.
    pub fcco: FccoSettings,
    /// Images per optimiser step.
    pub batch: usize,
    /// Block index (part of the minibatch seed).
    pub block: usize,
}

/// Outcome of [`train_block`].
pub(super) struct Trained {
    /// Hard layers, in [`QUANT_ROLES`] order.
    pub layers: Vec<VqLayer>,
    /// Trained Δ biases, in [`BIAS_ROLES`] order.
    pub biases: Vec<Vec<f32>>,
    /// Block loss of the hard k-means initialisation on all calibration images.
    pub kmeans_loss: f64,
    /// Minibatch reconstruction loss (soft weights) before each step.
    pub loss_history: Vec<f64>,
    /// Confirmed fraction of the block's sub-vectors after each step.
    pub confirmed_history: Vec<f64>,
    /// Hull members replaced over the run.
    pub replaced: usize,
    /// Wall time of the optimiser loop, seconds.
    pub train_seconds: f64,
}

/// `batch` distinct image indices for step `step`, drawn from a generator seeded by the run seed
/// and the block (partial Fisher–Yates over a persistent permutation).
pub(super) fn sample(rng: &mut SplitMix64, perm: &mut [usize], batch: usize) -> Vec<usize> {
    let n = perm.len();
    let b = batch.min(n);
    for i in 0..b {
        let j = i + rng.below(n - i);
        perm.swap(i, j);
    }
    let mut out = perm[..b].to_vec();
    out.sort_unstable();
    out
}

/// Calibrates one block. `params` are the block's f32 weights; the result's layers replace its
/// six linear weights and `biases` its two Δ biases.
pub(super) fn train_block(
    params: &BlockParams<f32>,
    data: &BlockData<'_>,
    s: &TrainSettings<'_>,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<Trained, QuantError> {
    let cfg = s.vq;
    let steps = cfg.steps;
    let row = data.len * params.dims.d_model;
    let images = data.hn.len() / row;

    // k-means initialisation of every layer; the k-means block loss for the report.
    let mut trainers = Vec::with_capacity(QUANT_ROLES.len());
    let mut params_q = params.clone();
    for role in QUANT_ROLES {
        let w = params
            .tensor(role)
            .ok_or(QuantError::Internal("mixer role"))?;
        let (rows, cols) = role_shape(params, role);
        let (t, base) = FccoTrainer::from_kmeans(w, rows, cols, cfg, s.fcco, steps)
            .map_err(|e| QuantError::layer(s.block, role, e))?;
        set(&mut params_q, role, &base.dequantize());
        trainers.push(t);
    }
    let y_km = mixer_batch(&params_q, data.hn, data.len);
    let kmeans_loss = rel_mse(&y_km, data.y_ref, None);
    drop(y_km);

    let mut bias_opt: Vec<RmsProp> = BIAS_ROLES
        .iter()
        .map(|&(_, b)| RmsProp::for_bias(params.tensor(b).map_or(0, <[f32]>::len), cfg))
        .collect();
    let mut rng = SplitMix64::new(
        cfg.seed ^ 0x5eed_b10c_0000_0000 ^ (s.block as u64 + 1).wrapping_mul(0x9E37_79B9),
    );
    let mut perm: Vec<usize> = (0..images).collect();
    let b = s.batch.min(images).max(1);
    let mut hb = vec![0.0f32; b * row];
    let mut yb = vec![0.0f32; b * row];
    let mut dy = vec![0.0f32; b * row];
    let mut cache = Cache::new();
    let total_sv: usize = trainers.iter().map(|t| t.fcco.len()).sum();
    let mut loss_history = Vec::with_capacity(steps);
    let mut confirmed_history = Vec::with_capacity(steps);
    let mut replaced = 0;
    let start = Instant::now();
    for step in 0..steps {
        for (t, role) in trainers.iter().zip(QUANT_ROLES) {
            let dst = params_q
                .tensor_mut(role)
                .ok_or(QuantError::Internal("mixer role"))?;
            t.w_hat_into(dst);
        }
        for (slot, &i) in sample(&mut rng, &mut perm, b).iter().enumerate() {
            hb[slot * row..(slot + 1) * row].copy_from_slice(&data.hn[i * row..(i + 1) * row]);
            yb[slot * row..(slot + 1) * row].copy_from_slice(&data.y_ref[i * row..(i + 1) * row]);
        }
        let y = forward(&params_q, &hb, data.len, &mut cache);
        let loss = rel_mse(&y, &yb, Some(&mut dy));
        if !loss.is_finite() {
            return Err(QuantError::Diverged {
                block: s.block,
                step,
            });
        }
        let grads = backward(&params_q, &mut cache, &dy);
        let mut confirmed = 0;
        for (t, role) in trainers.iter_mut().zip(QUANT_ROLES) {
            let g = grads
                .tensor(role)
                .ok_or(QuantError::Internal("gradient role"))?;
            let rep = t.step(g).map_err(|e| QuantError::layer(s.block, role, e))?;
            replaced += rep.replaced;
            confirmed += t.fcco.confirmed_count();
        }
        for (opt, &(_, brole)) in bias_opt.iter_mut().zip(&BIAS_ROLES) {
            let g = grads
                .tensor(brole)
                .ok_or(QuantError::Internal("bias gradient"))?;
            let p = params_q
                .tensor_mut(brole)
                .ok_or(QuantError::Internal("bias role"))?;
            opt.step(p, g);
        }
        let frac = confirmed as f64 / total_sv.max(1) as f64;
        loss_history.push(loss);
        confirmed_history.push(frac);
        progress(ProgressEvent::Step {
            step: step + 1,
            steps,
            loss,
            confirmed: frac,
        });
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let layers: Vec<VqLayer> = trainers.into_iter().map(FccoTrainer::finish).collect();
    let biases = BIAS_ROLES
        .iter()
        .map(|&(_, b)| params_q.tensor(b).map(<[f32]>::to_vec).unwrap_or_default())
        .collect();
    Ok(Trained {
        layers,
        biases,
        kmeans_loss,
        loss_history,
        confirmed_history,
        replaced,
        train_seconds,
    })
}

/// `(rows, cols)` of a mixer weight.
pub(super) fn role_shape(p: &BlockParams<f32>, role: Role) -> (usize, usize) {
    let d = p.dims;
    match role {
        Role::InProj => (2 * d.d_inner, d.d_model),
        Role::XProj | Role::XProjBack => (d.x_proj_rows(), d.d_inner),
        Role::DtProjW | Role::DtProjWBack => (d.d_inner, d.dt_rank),
        Role::OutProj => (d.d_model, d.d_inner),
        _ => (1, p.tensor(role).map_or(0, <[f32]>::len)),
    }
}

/// Overwrites a mixer tensor.
pub(super) fn set(p: &mut BlockParams<f32>, role: Role, v: &[f32]) {
    if let Some(dst) = p.tensor_mut(role) {
        dst.copy_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minibatches_are_distinct_sorted_and_seeded() {
        let mut perm: Vec<usize> = (0..20).collect();
        let mut rng = SplitMix64::new(3);
        let a = sample(&mut rng, &mut perm, 8);
        assert_eq!(a.len(), 8);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&i| i < 20));
        let mut perm2: Vec<usize> = (0..20).collect();
        assert_eq!(sample(&mut SplitMix64::new(3), &mut perm2, 8), a);
        assert_eq!(sample(&mut rng, &mut perm, 50).len(), 20);
    }
}
