//! The Hessian-weighted relative reconstruction loss of one linear layer over its calibration
//! inputs X: with `H = XᵀX` and `E = W − Ŵ`,
//!
//! `L = tr(E H Eᵀ) / tr(W H Wᵀ)`,  `dL/dŴ = −2 E H / tr(W H Wᵀ)` (H symmetric),
//!
//! relative so that λ_r does not depend on the activation scale.
//!
//! Numerics: `E H` in f32 (row-parallel, each row alone, so thread-count independent), sums of
//! the loss in f64 in row order; `H` accumulated in f64.

use super::search::par_chunks_mut;
use super::{check_buf, VqError};

/// Accumulates `H = Σ XᵀX` (f64) over calibration batches of one layer's inputs.
#[derive(Clone, Debug)]
pub struct HessianAccumulator {
    cols: usize,
    h: Vec<f64>,
    rows_seen: usize,
}

impl HessianAccumulator {
    /// Empty accumulator for inputs of `cols` features.
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            h: vec![0.0; cols * cols],
            rows_seen: 0,
        }
    }

    /// Adds the rows of `x` (`n × cols`, row-major): `H += xᵀx`.
    pub fn add(&mut self, x: &[f32]) -> Result<(), VqError> {
        let cols = self.cols;
        let n = x.len().checked_div(cols).unwrap_or(0);
        check_buf("calibration inputs", x, n * cols)?;
        // Upper triangle, row a of H per work item; each item reads every input row in order.
        par_chunks_mut(&mut self.h, cols, 16, |first, hrows| {
            for (i, hrow) in hrows.chunks_exact_mut(cols).enumerate() {
                let a = first + i;
                for xr in x.chunks_exact(cols) {
                    let xa = xr[a] as f64;
                    if xa == 0.0 {
                        continue;
                    }
                    for (hv, &xb) in hrow[a..].iter_mut().zip(&xr[a..]) {
                        *hv += xa * xb as f64;
                    }
                }
            }
        });
        self.rows_seen += n;
        Ok(())
    }

    /// Input rows accumulated so far.
    pub fn rows_seen(&self) -> usize {
        self.rows_seen
    }

    /// The symmetric `cols × cols` H as f32.
    pub fn finish(&self) -> Vec<f32> {
        let c = self.cols;
        let mut out = vec![0.0f32; c * c];
        for a in 0..c {
            for b in a..c {
                let v = self.h[a * c + b] as f32;
                out[a * c + b] = v;
                out[b * c + a] = v;
            }
        }
        out
    }
}

/// The Hessian-weighted relative reconstruction loss of one layer.
#[derive(Clone, Debug)]
pub struct LayerObjective {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) w: Vec<f32>,
    h: Vec<f32>,
    norm: f64,
}

impl LayerObjective {
    /// The objective of weight `w` (`rows × cols`) under `h` (`cols × cols`, symmetrised here as
    /// `(H + Hᵀ)/2`). When `tr(W H Wᵀ)` is not positive (zero weight or zero H) the loss is left
    /// unnormalised.
    pub fn new(w: &[f32], rows: usize, cols: usize, h: &[f32]) -> Result<Self, VqError> {
        if rows == 0 || cols == 0 {
            return Err(VqError::Empty {
                what: "weight",
                rows,
                cols,
            });
        }
        check_buf("weight", w, rows * cols)?;
        check_buf("H", h, cols * cols)?;
        let mut hs = vec![0.0f32; cols * cols];
        for a in 0..cols {
            for b in 0..cols {
                hs[a * cols + b] = 0.5 * (h[a * cols + b] + h[b * cols + a]);
            }
        }
        let mut obj = Self {
            rows,
            cols,
            w: w.to_vec(),
            h: hs,
            norm: 1.0,
        };
        let mut eh = vec![0.0f32; rows * cols];
        let norm = obj.quad(w, &mut eh);
        if norm > 0.0 && norm.is_finite() {
            obj.norm = norm;
        }
        Ok(obj)
    }

    /// Rows of the weight.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of the weight.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The f32 weight.
    pub fn weight(&self) -> &[f32] {
        &self.w
    }
    /// The (symmetrised) H.
    pub fn hessian(&self) -> &[f32] {
        &self.h
    }
    /// The normaliser `tr(W H Wᵀ)` (1 when that is not positive).
    pub fn norm(&self) -> f64 {
        self.norm
    }

    /// `tr(E H Eᵀ)` with `E H` written to `eh`.
    fn quad(&self, e: &[f32], eh: &mut [f32]) -> f64 {
        let (cols, h) = (self.cols, &self.h);
        par_chunks_mut(eh, cols, 8, |first, out| {
            for (i, o) in out.chunks_exact_mut(cols).enumerate() {
                let er = &e[(first + i) * cols..(first + i + 1) * cols];
                o.fill(0.0);
                for (a, &ea) in er.iter().enumerate() {
                    if ea == 0.0 {
                        continue;
                    }
                    for (ov, &hv) in o.iter_mut().zip(&h[a * cols..(a + 1) * cols]) {
                        *ov += ea * hv;
                    }
                }
            }
        });
        e.iter()
            .zip(eh.iter())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    }

    /// `L(Ŵ)` for `w_hat` (`rows × cols`).
    pub fn loss(&self, w_hat: &[f32]) -> f64 {
        let mut g = vec![0.0f32; self.rows * self.cols];
        self.loss_and_grad(w_hat, &mut g)
    }

    /// `L(Ŵ)`, and `dL/dŴ` into `grad` (`rows × cols`).
    pub fn loss_and_grad(&self, w_hat: &[f32], grad: &mut [f32]) -> f64 {
        assert_eq!(w_hat.len(), self.w.len(), "loss_and_grad: W_hat length");
        assert_eq!(grad.len(), self.w.len(), "loss_and_grad: gradient length");
        let e: Vec<f32> = self.w.iter().zip(w_hat).map(|(a, b)| a - b).collect();
        let q = self.quad(&e, grad);
        let s = (-2.0 / self.norm) as f32;
        for g in grad.iter_mut() {
            *g *= s;
        }
        q / self.norm
    }
}
