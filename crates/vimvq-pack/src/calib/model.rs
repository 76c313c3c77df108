//! End-to-end forward and backward of the Vim body and head, from the residual stream `r_0` (after
//! patch embedding, cls token and position embedding) to the logits, for global fine-tuning.
//!
//! Per block `r_{b+1} = r_b + mixer_b(RMSNorm_b(r_b))`; then `logits = W · RMSNorm_f(r_depth[cls]) + c`
//! with `cls` the cls token's position. [`model_forward`] keeps only each block's input residual
//! (gradient checkpointing); [`model_backward`] recomputes one block's forward at a time and chains
//! the block backward ([`backward_with_input`]) through the norms and residual adds, so memory is
//! one block's record plus `depth + 1` residual streams of the batch.

use super::cache::Cache;
use super::float::Float;
use super::grads::Grads;
use super::params::BlockParams;
use super::pass::{backward_with_input, forward};

/// The parameters the end-to-end pass runs with (row-major, PyTorch layout).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelParams<T> {
    /// The mixers, in block order.
    pub blocks: Vec<BlockParams<T>>,
    /// Per block the RMSNorm weight `(D)` applied to the residual before the mixer.
    pub norms: Vec<Vec<T>>,
    /// Final RMSNorm weight `(D)`.
    pub norm_f: Vec<T>,
    /// Head weight `(classes, D)`.
    pub head_w: Vec<T>,
    /// Head bias `(classes)`.
    pub head_b: Vec<T>,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Tokens per image `L`.
    pub seq_len: usize,
    /// Position of the cls token (the one the head reads).
    pub cls_pos: usize,
}

/// Gradients of [`model_backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelGrads<T> {
    /// Per block: the mixer's trainable tensors.
    pub blocks: Vec<Grads<T>>,
    /// Per block: `dL/d norm weight`.
    pub norms: Vec<Vec<T>>,
    /// `dL/d norm_f`.
    pub norm_f: Vec<T>,
    /// `dL/d r_0` `(B, L, D)`.
    pub input: Vec<T>,
}

/// What [`model_forward`] keeps for [`model_backward`]: the residual stream entering every block
/// and the final one, each `(B, L, D)`.
#[derive(Clone, Debug, Default)]
pub struct Checkpoints<T> {
    residuals: Vec<Vec<T>>,
}

impl<T: Float> ModelParams<T> {
    /// `D`.
    pub fn d_model(&self) -> usize {
        self.norm_f.len()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.head_b.len()
    }
}

/// `out = x · rsqrt(mean(x²) + eps) · w` row by row (mean and rsqrt in f64; in `f32` identical
/// to the pipeline's f32 norm).
pub fn rmsnorm<T: Float>(x: &[T], w: &[T], eps: f64, out: &mut [T]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let rstd = T::from_f64(rstd(xr, eps));
        for ((o, &v), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = v * rstd * wv;
        }
    }
}

fn rstd<T: Float>(x: &[T], eps: f64) -> f64 {
    let ms = x.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / x.len() as f64;
    1.0 / (ms + eps).sqrt()
}

/// Backward of [`rmsnorm`]: `dx += dL/dx`, `dw += dL/dw` given `dy = dL/d out`.
pub fn rmsnorm_backward<T: Float>(
    x: &[T],
    w: &[T],
    eps: f64,
    dy: &[T],
    dx: &mut [T],
    dw: &mut [T],
) {
    let d = w.len();
    for ((xr, gr), dxr) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let r = rstd(xr, eps);
        // dL/dx_i = r·w_i·dy_i − x_i · r³ · Σ_j w_j dy_j x_j / D
        let s: f64 = xr
            .iter()
            .zip(gr)
            .zip(w)
            .map(|((x, g), w)| x.to_f64() * g.to_f64() * w.to_f64())
            .sum();
        let c = T::from_f64(r * r * r * s / d as f64);
        let rt = T::from_f64(r);
        for (i, dxv) in dxr.iter_mut().enumerate() {
            *dxv += rt * w[i] * gr[i] - xr[i] * c;
            dw[i] += gr[i] * xr[i] * rt;
        }
    }
}

/// Logits of a batch `r_0 (B, L, D)` → `(B, classes)`, and the checkpoints for the backward.
///
/// Blocks run with [`forward`] on the current rayon pool (`cache` is reused); the result does
/// not depend on its size.
///
/// # Panics
/// If `r0.len()` is not a multiple of `L · D`.
pub fn model_forward<T: Float>(
    p: &ModelParams<T>,
    r0: &[T],
    cache: &mut Cache<T>,
) -> (Vec<T>, Checkpoints<T>) {
    let (len, d) = (p.seq_len, p.d_model());
    let row = len * d;
    assert!(
        row > 0 && r0.len().is_multiple_of(row),
        "model_forward: r0 is not (B, L, D)"
    );
    let mut r = r0.to_vec();
    let mut hn = vec![T::ZERO; r.len()];
    let mut residuals = Vec::with_capacity(p.blocks.len() + 1);
    for (bp, norm) in p.blocks.iter().zip(&p.norms) {
        residuals.push(r.clone());
        rmsnorm(&r, norm, p.eps, &mut hn);
        let y = forward(bp, &hn, len, cache);
        for (a, b) in r.iter_mut().zip(&y) {
            *a += *b;
        }
    }
    let logits = head_forward(p, &r);
    residuals.push(r);
    (logits, Checkpoints { residuals })
}

fn head_forward<T: Float>(p: &ModelParams<T>, r: &[T]) -> Vec<T> {
    let (d, classes) = (p.d_model(), p.classes());
    let row = p.seq_len * d;
    let mut feat = vec![T::ZERO; d];
    let mut out = Vec::with_capacity(r.len() / row * classes);
    for res in r.chunks_exact(row) {
        let cls = &res[p.cls_pos * d..(p.cls_pos + 1) * d];
        rmsnorm(cls, &p.norm_f, p.eps, &mut feat);
        for (w, &b) in p.head_w.chunks_exact(d).zip(&p.head_b) {
            let mut s = b;
            for (a, x) in w.iter().zip(&feat) {
                s += *a * *x;
            }
            out.push(s);
        }
    }
    out
}

/// Gradients given `dlogits = dL/d logits` `(B, classes)` of the [`model_forward`] that produced
/// `ck` with the same `p`. Recomputes each block's forward (into `cache`) before its backward.
/// Bit-identical for every rayon pool size.
///
/// # Panics
/// If `dlogits` does not match the batch of `ck`.
pub fn model_backward<T: Float>(
    p: &ModelParams<T>,
    ck: &Checkpoints<T>,
    dlogits: &[T],
    cache: &mut Cache<T>,
) -> ModelGrads<T> {
    let (len, d, classes) = (p.seq_len, p.d_model(), p.classes());
    let row = len * d;
    let last = &ck.residuals[p.blocks.len()];
    let batch = last.len() / row;
    assert_eq!(dlogits.len(), batch * classes, "model_backward: dlogits");
    let mut dr = vec![T::ZERO; last.len()];
    let mut norm_f = vec![T::ZERO; d];
    let mut dfeat = vec![T::ZERO; d];
    for ((res, dres), dl) in last
        .chunks_exact(row)
        .zip(dr.chunks_exact_mut(row))
        .zip(dlogits.chunks_exact(classes))
    {
        dfeat.fill(T::ZERO);
        for (w, &g) in p.head_w.chunks_exact(d).zip(dl) {
            for (f, &a) in dfeat.iter_mut().zip(w) {
                *f += g * a;
            }
        }
        let at = p.cls_pos * d..(p.cls_pos + 1) * d;
        rmsnorm_backward(
            &res[at.clone()],
            &p.norm_f,
            p.eps,
            &dfeat,
            &mut dres[at],
            &mut norm_f,
        );
    }
    let depth = p.blocks.len();
    let mut blocks = Vec::with_capacity(depth);
    let mut norms = Vec::with_capacity(depth);
    let mut hn = vec![T::ZERO; last.len()];
    let mut dhn = vec![T::ZERO; last.len()];
    for b in (0..depth).rev() {
        let (bp, norm, r) = (&p.blocks[b], &p.norms[b], &ck.residuals[b]);
        rmsnorm(r, norm, p.eps, &mut hn);
        forward(bp, &hn, len, cache);
        // dr holds dL/dr_{b+1}: it flows to r_b directly (residual add) and through the mixer.
        let g = backward_with_input(bp, cache, &dr, &mut dhn);
        let mut gn = vec![T::ZERO; d];
        rmsnorm_backward(r, norm, p.eps, &dhn, &mut dr, &mut gn);
        blocks.push(g);
        norms.push(gn);
    }
    blocks.reverse();
    norms.reverse();
    ModelGrads {
        blocks,
        norms,
        norm_f,
        input: dr,
    }
}

/// Mean over the batch of `KL(softmax(teacher) ‖ softmax(student))` (rows of `classes` logits;
/// sums in f64). With `dlogits`, overwrites it with the gradient w.r.t. the student logits,
/// `(softmax(student) − softmax(teacher)) / B`.
///
/// # Panics
/// If the lengths differ or are not a multiple of `classes`.
pub fn kl_loss<T: Float>(
    teacher: &[T],
    student: &[T],
    classes: usize,
    mut dlogits: Option<&mut [T]>,
) -> f64 {
    assert_eq!(teacher.len(), student.len(), "kl_loss: lengths");
    assert!(
        classes > 0 && student.len().is_multiple_of(classes),
        "kl_loss: not (B, classes)"
    );
    let batch = student.len() / classes;
    let log_softmax = |z: &[T]| -> Vec<f64> {
        let m = z
            .iter()
            .map(|v| v.to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let s = z.iter().map(|v| (v.to_f64() - m).exp()).sum::<f64>().ln();
        z.iter().map(|v| v.to_f64() - m - s).collect()
    };
    let mut total = 0.0;
    for (i, (t, s)) in teacher
        .chunks_exact(classes)
        .zip(student.chunks_exact(classes))
        .enumerate()
    {
        let (lp, lq) = (log_softmax(t), log_softmax(s));
        total += lp
            .iter()
            .zip(&lq)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        if let Some(g) = dlogits.as_deref_mut() {
            for ((gv, a), b) in g[i * classes..(i + 1) * classes]
                .iter_mut()
                .zip(&lp)
                .zip(&lq)
            {
                *gv = T::from_f64((b.exp() - a.exp()) / batch as f64);
            }
        }
    }
    total / batch.max(1) as f64
}

/// `dL/d codebook` `(k × d)` of a VQ layer from `dL/dŴ` `(rows × cols)`: each sub-vector's
/// gradient (`d` consecutive weights of a row; the zero padding of the last one carries none) is
/// added to the codeword its index selects.
///
/// # Panics
/// If `indices` is not `rows × ceil(cols / d)` or `dw` not `rows × cols`, or an index is `≥ k`.
pub fn codebook_grad<T: Float>(
    rows: usize,
    cols: usize,
    k: usize,
    d: usize,
    indices: &[u32],
    dw: &[T],
) -> Vec<T> {
    let per_row = cols.div_ceil(d);
    assert_eq!(indices.len(), rows * per_row, "codebook_grad: indices");
    assert_eq!(dw.len(), rows * cols, "codebook_grad: dw");
    let mut g = vec![T::ZERO; k * d];
    for (idx, dwr) in indices
        .chunks_exact(per_row.max(1))
        .zip(dw.chunks_exact(cols.max(1)))
    {
        for (j, &a) in idx.iter().enumerate() {
            let a = a as usize;
            let src = &dwr[j * d..((j + 1) * d).min(cols)];
            for (gv, &v) in g[a * d..a * d + src.len()].iter_mut().zip(src) {
                *gv += v;
            }
        }
    }
    g
}
