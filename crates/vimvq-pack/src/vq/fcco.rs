//! Fast convex-combination optimisation (FCCO) state of one layer (docs/QUANTIZATION.md).
//!
//! Per sub-vector `j`: a hull `H_j` of `n` codeword indices (initially the `n` nearest), logits
//! `z_j` (init `z_jm = −ln(||w_j − C[h_jm]|| + 1e-5)`), ratios `r_j = softmax(z_j)` and the soft
//! reconstruction `ŵ_j = Σ_m r_jm C[h_jm]`. A confirmed sub-vector (see [`super::ivq`]) is exactly
//! `C[a_j]`, and its logits are frozen.
//!
//! Memory: O(N·n) for hulls, logits, ratios, their gradients and optimiser state, plus O(k·d) for
//! the codebook; never O(N·k) — the nearest-codeword searches run in blocks ([`super::search`]).
//!
//! Gradient contract (tested against f64 finite differences, relative error ≤ 1e-4): given
//! `G = dL/dŴ` (`rows × cols`; padding positions have zero gradient),
//! * `dL/dC[h_jm] += r_jm g_j`, and `dL/dC[a_j] += g_j` for a confirmed `j`;
//! * `dL/dz_jm = r_jm (q_jm − Σ_m' r_jm' q_jm')` with `q_jm = g_j · C[h_jm]` (softmax backward);
//! * regulariser `L_r = n · mean_{j unconfirmed} Σ_m r_jm (1 − r_jm)`, `∂L_r/∂r_jm = (n/U)(1 − 2 r_jm)`
//!   through the same softmax backward.
//!
//! Codebook gradients are summed in f64 in sub-vector order, so results are bit-identical for a
//! given input.

use super::search::{nearest_excluding, nearest_n, sq_dist};
use super::{check_buf, SubVectors, VqConfig, VqError, VqLayer};

/// RMSprop with PyTorch's update rule: `v ← α v + (1 − α) g²`, `p ← p − lr · g / (√v + eps)`.
/// One instance per parameter group (logits, codebook, a bias vector, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct RmsProp {
    /// Learning rate.
    pub lr: f32,
    /// Smoothing constant α.
    pub alpha: f32,
    /// Denominator epsilon.
    pub eps: f32,
    sq: Vec<f32>,
}

impl RmsProp {
    /// Optimiser state for `len` parameters, all squared averages zero.
    pub fn new(len: usize, lr: f32, alpha: f32, eps: f32) -> Self {
        Self {
            lr,
            alpha,
            eps,
            sq: vec![0.0; len],
        }
    }

    /// Optimiser of a bias vector of a quantized layer, at `cfg.lr_bias` (default 1e-4).
    pub fn for_bias(len: usize, cfg: &VqConfig) -> Self {
        Self::new(len, cfg.lr_bias, cfg.rms_alpha, cfg.rms_eps)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.sq.len()
    }

    /// True for an optimiser of no parameters.
    pub fn is_empty(&self) -> bool {
        self.sq.is_empty()
    }

    /// Updates every parameter (`params.len() == grads.len() == self.len()`).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            self.sq.len(),
            "RmsProp::step: parameter count"
        );
        self.step_range(0, params, grads);
    }

    /// Updates parameters `offset .. offset + params.len()` of the group.
    #[inline]
    pub fn step_range(&mut self, offset: usize, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "RmsProp::step_range: gradient count"
        );
        let (lr, a, eps) = (self.lr, self.alpha, self.eps);
        let sq = &mut self.sq[offset..offset + params.len()];
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(sq) {
            *v = a * *v + (1.0 - a) * g * g;
            *p -= lr * g / (v.sqrt() + eps);
        }
    }

    /// Forgets the squared average of parameter `i` (a replaced hull member starts afresh).
    pub fn reset(&mut self, i: usize) {
        self.sq[i] = 0.0;
    }

    /// Squared average of parameter `i`.
    pub fn state(&self, i: usize) -> f32 {
        self.sq[i]
    }
}

/// `r = softmax(z)`, max-subtracted.
#[inline]
pub(crate) fn softmax(z: &[f32], r: &mut [f32]) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0f32;
    for (ri, &zi) in r.iter_mut().zip(z) {
        *ri = (zi - m).exp();
        s += *ri;
    }
    let inv = 1.0 / s;
    for ri in r.iter_mut() {
        *ri *= inv;
    }
}

/// Index of the first maximum.
#[inline]
pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// FCCO state of one quantized layer. See the module documentation for the maths.
#[derive(Clone, Debug)]
pub struct Fcco {
    rows: usize,
    cols: usize,
    d: usize,
    per_row: usize,
    k: usize,
    n: usize,
    codebook: Vec<f32>,
    hull: Vec<u32>,
    logits: Vec<f32>,
    ratios: Vec<f32>,
    pub(crate) confirmed: Vec<bool>,
    pub(crate) assign: Vec<u32>,
    pub(crate) n_confirmed: usize,
    grad_logits: Vec<f32>,
    grad_codebook: Vec<f64>,
    grad_scratch: Vec<f32>,
    opt_logits: RmsProp,
    opt_codebook: RmsProp,
    replaced_total: usize,
}

impl Fcco {
    /// Initial state for weight `w` (`rows × cols`) with the `cfg.k × cfg.d` `codebook` (usually
    /// from k-means) and hulls of `min(hull, k)` nearest codewords. Uses `cfg`'s learning rates,
    /// RMSprop constants and `logit_init_eps`.
    pub fn new(
        w: &[f32],
        rows: usize,
        cols: usize,
        codebook: Vec<f32>,
        hull: usize,
        cfg: &VqConfig,
    ) -> Result<Self, VqError> {
        cfg.validate()?;
        if hull == 0 {
            return Err(VqError::InvalidConfig {
                name: "hull",
                value: hull.to_string(),
                why: "must be at least 1",
            });
        }
        let (k, d) = (cfg.k, cfg.d);
        check_buf("codebook", &codebook, k * d)?;
        let sv = SubVectors::from_matrix(w, rows, cols, d)?;
        let n = hull.min(k);
        let nsv = sv.len();
        let hull = nearest_n(&sv.data, &codebook, d, n);
        let mut logits = vec![0.0f32; nsv * n];
        for j in 0..nsv {
            let x = sv.get(j);
            for m in 0..n {
                let c = hull[j * n + m] as usize;
                let dist = sq_dist(x, &codebook[c * d..(c + 1) * d]).sqrt();
                logits[j * n + m] = -(dist + cfg.logit_init_eps).ln();
            }
        }
        let mut ratios = vec![0.0f32; nsv * n];
        for (z, r) in logits.chunks_exact(n).zip(ratios.chunks_exact_mut(n)) {
            softmax(z, r);
        }
        Ok(Self {
            rows,
            cols,
            d,
            per_row: sv.per_row,
            k,
            n,
            codebook,
            hull,
            logits,
            ratios,
            confirmed: vec![false; nsv],
            assign: vec![0; nsv],
            n_confirmed: 0,
            grad_logits: vec![0.0; nsv * n],
            grad_codebook: vec![0.0; k * d],
            grad_scratch: vec![0.0; k * d],
            opt_logits: RmsProp::new(nsv * n, cfg.lr_logits, cfg.rms_alpha, cfg.rms_eps),
            opt_codebook: RmsProp::new(k * d, cfg.lr_codebook, cfg.rms_alpha, cfg.rms_eps),
            replaced_total: 0,
        })
    }

    /// Rows of the weight.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of the weight (unpadded).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Sub-vector length.
    pub fn d(&self) -> usize {
        self.d
    }
    /// Codewords.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Hull size actually used, `min(hull, k)`.
    pub fn hull_size(&self) -> usize {
        self.n
    }
    /// Number of sub-vectors N.
    pub fn len(&self) -> usize {
        self.confirmed.len()
    }
    /// True for a layer without sub-vectors (never after [`Self::new`]).
    pub fn is_empty(&self) -> bool {
        self.confirmed.is_empty()
    }
    /// `k × d` codebook.
    pub fn codebook(&self) -> &[f32] {
        &self.codebook
    }
    /// Mutable codebook (e.g. to load a checkpoint; gradients are unaffected).
    pub fn codebook_mut(&mut self) -> &mut [f32] {
        &mut self.codebook
    }
    /// `N × n` hull indices.
    pub fn hull(&self) -> &[u32] {
        &self.hull
    }
    /// `N × n` logits.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
    /// Mutable logits; call [`Self::refresh_ratios`] after changing them.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }
    /// `N × n` ratios (softmax of the logits; stale for confirmed sub-vectors' purposes).
    pub fn ratios(&self) -> &[f32] {
        &self.ratios
    }
    /// `N × n` logit gradient accumulated since the last [`Self::zero_grad`].
    pub fn grad_logits(&self) -> &[f32] {
        &self.grad_logits
    }
    /// `k × d` codebook gradient (f64) accumulated since the last [`Self::zero_grad`].
    pub fn grad_codebook(&self) -> &[f64] {
        &self.grad_codebook
    }
    /// Whether sub-vector `j` is confirmed.
    pub fn is_confirmed(&self, j: usize) -> bool {
        self.confirmed[j]
    }
    /// Confirmed sub-vectors.
    pub fn confirmed_count(&self) -> usize {
        self.n_confirmed
    }
    /// Confirmed fraction of the layer, in [0, 1].
    pub fn confirmed_fraction(&self) -> f64 {
        self.n_confirmed as f64 / self.len().max(1) as f64
    }
    /// Hull members replaced since construction.
    pub fn replaced_total(&self) -> usize {
        self.replaced_total
    }
    /// Logit optimiser (state inspection).
    pub fn logit_optimizer(&self) -> &RmsProp {
        &self.opt_logits
    }

    /// Recomputes the ratios of every unconfirmed sub-vector from its logits.
    pub fn refresh_ratios(&mut self) {
        let n = self.n;
        for j in 0..self.len() {
            if !self.confirmed[j] {
                softmax(
                    &self.logits[j * n..(j + 1) * n],
                    &mut self.ratios[j * n..(j + 1) * n],
                );
            }
        }
    }

    /// `ŵ_j` into `out` (`d` values, padding included).
    #[inline]
    pub fn subvector(&self, j: usize, out: &mut [f32]) {
        let d = self.d;
        if self.confirmed[j] {
            let a = self.assign[j] as usize;
            out.copy_from_slice(&self.codebook[a * d..(a + 1) * d]);
            return;
        }
        out.fill(0.0);
        let n = self.n;
        for m in 0..n {
            let r = self.ratios[j * n + m];
            let c = self.hull[j * n + m] as usize;
            for (o, &v) in out.iter_mut().zip(&self.codebook[c * d..(c + 1) * d]) {
                *o += r * v;
            }
        }
    }

    /// All `ŵ_j`, `N × d` (padding included).
    pub fn soft_subvectors(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.len() * self.d];
        for (j, o) in out.chunks_exact_mut(self.d).enumerate() {
            self.subvector(j, o);
        }
        out
    }

    /// The soft reconstruction `Ŵ`, `rows × cols`.
    pub fn reconstruct(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        self.reconstruct_into(&mut out);
        out
    }

    /// [`Self::reconstruct`] into a caller buffer of `rows × cols` values.
    pub fn reconstruct_into(&self, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.rows * self.cols,
            "reconstruct_into: buffer length"
        );
        let mut buf = vec![0.0f32; self.d];
        for j in 0..self.len() {
            self.subvector(j, &mut buf);
            let (r, c0) = (j / self.per_row, (j % self.per_row) * self.d);
            let len = self.d.min(self.cols - c0);
            out[r * self.cols + c0..r * self.cols + c0 + len].copy_from_slice(&buf[..len]);
        }
    }

    /// Clears the accumulated gradients.
    pub fn zero_grad(&mut self) {
        self.grad_logits.fill(0.0);
        self.grad_codebook.fill(0.0);
    }

    /// Accumulates the gradients of logits and codebook for `dL/dŴ` (`rows × cols`).
    pub fn accumulate(&mut self, d_w_hat: &[f32]) -> Result<(), VqError> {
        if d_w_hat.len() != self.rows * self.cols {
            return Err(VqError::Shape {
                what: "dL/dW_hat",
                expected: self.rows * self.cols,
                got: d_w_hat.len(),
            });
        }
        let (d, n) = (self.d, self.n);
        let mut g = vec![0.0f32; d];
        let mut q = vec![0.0f32; n];
        for j in 0..self.len() {
            let (r, c0) = (j / self.per_row, (j % self.per_row) * self.d);
            let len = d.min(self.cols - c0);
            g[..len].copy_from_slice(&d_w_hat[r * self.cols + c0..r * self.cols + c0 + len]);
            g[len..].fill(0.0);
            if self.confirmed[j] {
                let a = self.assign[j] as usize;
                for (gc, &v) in self.grad_codebook[a * d..(a + 1) * d].iter_mut().zip(&g) {
                    *gc += v as f64;
                }
                continue;
            }
            let rj = &self.ratios[j * n..(j + 1) * n];
            let mut s = 0.0f32;
            for m in 0..n {
                let c = self.hull[j * n + m] as usize;
                let cw = &self.codebook[c * d..(c + 1) * d];
                q[m] = g.iter().zip(cw).map(|(a, b)| a * b).sum();
                s += rj[m] * q[m];
                let rm = rj[m] as f64;
                for (gc, &v) in self.grad_codebook[c * d..(c + 1) * d].iter_mut().zip(&g) {
                    *gc += rm * v as f64;
                }
            }
            for m in 0..n {
                self.grad_logits[j * n + m] += rj[m] * (q[m] - s);
            }
        }
        Ok(())
    }

    /// Ratio regulariser `L_r = n · mean_{j unconfirmed} Σ_m r_jm (1 − r_jm)` (0 when every
    /// sub-vector is confirmed).
    pub fn regulariser(&self) -> f64 {
        let n = self.n;
        let u = self.len() - self.n_confirmed;
        if u == 0 {
            return 0.0;
        }
        let mut sum = 0.0f64;
        for j in 0..self.len() {
            if !self.confirmed[j] {
                sum += self.ratios[j * n..(j + 1) * n]
                    .iter()
                    .map(|&r| (r * (1.0 - r)) as f64)
                    .sum::<f64>();
            }
        }
        n as f64 * sum / u as f64
    }

    /// Accumulates `lambda · ∂L_r/∂z` into the logit gradient; returns `lambda · L_r`.
    pub fn accumulate_regulariser(&mut self, lambda: f32) -> f64 {
        let n = self.n;
        let u = self.len() - self.n_confirmed;
        if u == 0 || lambda == 0.0 {
            return 0.0;
        }
        let scale = lambda * n as f32 / u as f32;
        let mut q = vec![0.0f32; n];
        for j in 0..self.len() {
            if self.confirmed[j] {
                continue;
            }
            let rj = &self.ratios[j * n..(j + 1) * n];
            let mut s = 0.0f32;
            for m in 0..n {
                q[m] = scale * (1.0 - 2.0 * rj[m]);
                s += rj[m] * q[m];
            }
            for m in 0..n {
                self.grad_logits[j * n + m] += rj[m] * (q[m] - s);
            }
        }
        lambda as f64 * self.regulariser()
    }

    /// One RMSprop step: logits of unconfirmed sub-vectors and the codebook, then the ratios are
    /// refreshed. Confirmed logits stay frozen.
    pub fn step(&mut self) {
        let n = self.n;
        for j in 0..self.len() {
            if self.confirmed[j] {
                continue;
            }
            let r = j * n..(j + 1) * n;
            self.opt_logits
                .step_range(j * n, &mut self.logits[r.clone()], &self.grad_logits[r]);
        }
        if self.opt_codebook.lr != 0.0 {
            for (s, &g) in self.grad_scratch.iter_mut().zip(&self.grad_codebook) {
                *s = g as f32;
            }
            self.opt_codebook
                .step(&mut self.codebook, &self.grad_scratch);
        }
        self.refresh_ratios();
    }

    /// Hull update ("adaptive replacement") for every unconfirmed sub-vector: with `p_j = ŵ_j`,
    /// `c*` the nearest codeword outside the hull and `m⁻` the lowest-ratio member, replace
    /// `h_jm⁻ ← c*` when `||p_j − c*|| < ||p_j − C[h_jm⁻]||`, keeping the logit and resetting its
    /// optimiser state. Returns the number of replacements.
    pub fn update_hulls(&mut self) -> usize {
        let (d, n) = (self.d, self.n);
        if n >= self.k {
            return 0; // the hull already holds every codeword
        }
        let unconfirmed: Vec<usize> = (0..self.len()).filter(|&j| !self.confirmed[j]).collect();
        if unconfirmed.is_empty() {
            return 0;
        }
        let mut p = vec![0.0f32; unconfirmed.len() * d];
        let mut excl = vec![0u32; unconfirmed.len() * n];
        for (u, &j) in unconfirmed.iter().enumerate() {
            self.subvector(j, &mut p[u * d..(u + 1) * d]);
            excl[u * n..(u + 1) * n].copy_from_slice(&self.hull[j * n..(j + 1) * n]);
        }
        let cstar = nearest_excluding(&p, &self.codebook, d, &excl, n);
        let mut replaced = 0;
        for (u, &j) in unconfirmed.iter().enumerate() {
            let c = cstar[u];
            if c == u32::MAX {
                continue;
            }
            let rj = &self.ratios[j * n..(j + 1) * n];
            let mut m_min = 0;
            for m in 1..n {
                if rj[m] < rj[m_min] {
                    m_min = m;
                }
            }
            let pj = &p[u * d..(u + 1) * d];
            let cw = |i: usize| &self.codebook[i * d..(i + 1) * d];
            let old = self.hull[j * n + m_min] as usize;
            if sq_dist(pj, cw(c as usize)) < sq_dist(pj, cw(old)) {
                self.hull[j * n + m_min] = c;
                self.opt_logits.reset(j * n + m_min);
                replaced += 1;
            }
        }
        self.replaced_total += replaced;
        replaced
    }

    /// Largest ratio of sub-vector `j`.
    pub fn max_ratio(&self, j: usize) -> f32 {
        let rj = &self.ratios[j * self.n..(j + 1) * self.n];
        rj[argmax(rj)]
    }

    /// Hard indices: `a_j` for confirmed sub-vectors, the argmax hull member otherwise (one-shot
    /// hardening). `rows × ceil(cols/d)`, each `< k`.
    pub fn hard_indices(&self) -> Vec<u32> {
        let n = self.n;
        (0..self.len())
            .map(|j| {
                if self.confirmed[j] {
                    self.assign[j]
                } else {
                    self.hull[j * n + argmax(&self.ratios[j * n..(j + 1) * n])]
                }
            })
            .collect()
    }

    /// The hard-quantized layer ([`Self::hard_indices`] with the current codebook).
    pub fn to_layer(&self) -> VqLayer {
        VqLayer {
            rows: self.rows,
            cols: self.cols,
            k: self.k,
            d: self.d,
            codebook: self.codebook.clone(),
            indices: self.hard_indices(),
        }
    }
}
