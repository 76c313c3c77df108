//! One optimiser step of FCCO (+ IVQ) given `dL/dŴ`: the loop body shared by the layer objective
//! ([`super::layer_objective`]) and the block objective (the calibration module, which supplies
//! `dL/dŴ` from its hand-written block backward).
//!
//! Order within a step: zero gradients → accumulate `dL/dŴ` → add `λ_r ∂L_r/∂z` → RMSprop on
//! logits and codebook → (IVQ) confirm `max r > τ`, then the schedule floor → (every `T_h` steps)
//! hull update of the still unconfirmed sub-vectors.

use super::fcco::Fcco;
use super::ivq::schedule_floor;
use super::kmeans::{kmeans, KMeansConfig};
use super::{vq4dit, SubVectors, VqConfig, VqError, VqLayer};

/// What an FCCO trainer turns on; the quantization pipeline builds it per method
/// ([`Self::from_config`] for ViM-VQ, [`Self::VQ4DIT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FccoSettings {
    /// Hull size n (before clamping to k).
    pub hull: usize,
    /// Hull update period in steps; 0 = never.
    pub hull_every: usize,
    /// Incremental confirmation (threshold and schedule floor).
    pub ivq: bool,
}

impl FccoSettings {
    /// ViM-VQ: hull of `cfg.hull`, hull update every `cfg.hull_every` steps, IVQ.
    pub fn from_config(cfg: &VqConfig) -> Self {
        Self {
            hull: cfg.hull,
            hull_every: cfg.hull_every,
            ivq: true,
        }
    }

    /// VQ4DiT baseline: fixed hull of 2, no replacement, no IVQ (argmax hardening at the end).
    pub const VQ4DIT: Self = Self {
        hull: vq4dit::HULL,
        hull_every: vq4dit::HULL_EVERY,
        ivq: vq4dit::IVQ,
    };
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Steps done after this one.
    pub steps_done: usize,
    /// `λ_r · L_r` before the update.
    pub regulariser: f64,
    /// Sub-vectors confirmed by the threshold τ.
    pub confirmed_by_threshold: usize,
    /// Sub-vectors force-confirmed by the schedule floor.
    pub forced: usize,
    /// Hull members replaced (0 on steps without a hull update).
    pub replaced: usize,
    /// Confirmed fraction of the layer after the step.
    pub confirmed_fraction: f64,
}

/// The `kmeans` baseline and every trainer's initialisation: k-means (`cfg.kmeans_iters`,
/// `cfg.seed`) on the weight's sub-vectors, nearest assignment.
pub fn kmeans_layer(
    w: &[f32],
    rows: usize,
    cols: usize,
    cfg: &VqConfig,
) -> Result<VqLayer, VqError> {
    cfg.validate()?;
    let sv = SubVectors::from_matrix(w, rows, cols, cfg.d)?;
    let km = kmeans(&sv.data, cfg.d, &KMeansConfig::from_config(cfg))?;
    Ok(VqLayer {
        rows,
        cols,
        k: cfg.k,
        d: cfg.d,
        codebook: km.codebook,
        indices: km.assign,
    })
}

/// FCCO + IVQ for one quantized layer over a fixed step budget.
#[derive(Clone, Debug)]
pub struct FccoTrainer {
    /// The layer's FCCO state.
    pub fcco: Fcco,
    settings: FccoSettings,
    cfg: VqConfig,
    total_steps: usize,
    steps_done: usize,
}

impl FccoTrainer {
    /// A trainer from a given `cfg.k × cfg.d` codebook, for `total_steps` steps (the schedule floor
    /// is placed relative to it).
    pub fn new(
        w: &[f32],
        rows: usize,
        cols: usize,
        codebook: Vec<f32>,
        cfg: &VqConfig,
        settings: FccoSettings,
        total_steps: usize,
    ) -> Result<Self, VqError> {
        let fcco = Fcco::new(w, rows, cols, codebook, settings.hull, cfg)?;
        Ok(Self {
            fcco,
            settings,
            cfg: cfg.clone(),
            total_steps,
            steps_done: 0,
        })
    }

    /// A trainer whose codebook is k-means on the weight's sub-vectors (`cfg.kmeans_iters`,
    /// `cfg.seed`); also returns the k-means result (the `kmeans` baseline).
    pub fn from_kmeans(
        w: &[f32],
        rows: usize,
        cols: usize,
        cfg: &VqConfig,
        settings: FccoSettings,
        total_steps: usize,
    ) -> Result<(Self, VqLayer), VqError> {
        let base = kmeans_layer(w, rows, cols, cfg)?;
        let codebook = base.codebook.clone();
        Ok((
            Self::new(w, rows, cols, codebook, cfg, settings, total_steps)?,
            base,
        ))
    }

    /// The settings.
    pub fn settings(&self) -> FccoSettings {
        self.settings
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// The current soft reconstruction `Ŵ` (`rows × cols`) to run the forward pass with.
    pub fn w_hat(&self) -> Vec<f32> {
        self.fcco.reconstruct()
    }

    /// [`Self::w_hat`] into a caller buffer of `rows × cols` values (no allocation).
    pub fn w_hat_into(&self, out: &mut [f32]) {
        self.fcco.reconstruct_into(out);
    }

    /// One optimiser step with `dL/dŴ` (`rows × cols`) of the reconstruction loss at the current
    /// `Ŵ`.
    pub fn step(&mut self, d_w_hat: &[f32]) -> Result<StepReport, VqError> {
        let f = &mut self.fcco;
        f.zero_grad();
        f.accumulate(d_w_hat)?;
        let regulariser = f.accumulate_regulariser(self.cfg.lambda_r);
        f.step();
        self.steps_done += 1;
        let mut report = StepReport {
            steps_done: self.steps_done,
            regulariser,
            ..StepReport::default()
        };
        if self.settings.ivq {
            report.confirmed_by_threshold = f.confirm_above(self.cfg.confirm_threshold);
            report.forced =
                f.confirm_at_least(schedule_floor(&self.cfg, self.steps_done, self.total_steps));
        }
        if self.settings.hull_every > 0 && self.steps_done.is_multiple_of(self.settings.hull_every)
        {
            report.replaced = f.update_hulls();
        }
        report.confirmed_fraction = f.confirmed_fraction();
        Ok(report)
    }

    /// The hard layer: confirmed indices, argmax for any sub-vector still soft.
    pub fn finish(mut self) -> VqLayer {
        self.fcco.confirm_all();
        self.fcco.to_layer()
    }
}
