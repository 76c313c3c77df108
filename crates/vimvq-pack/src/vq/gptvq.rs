//! `gptvq` baseline (docs/QUANTIZATION.md): Hessian-weighted assignment with GPTQ-style error
//! feedback over column groups, then codebook fine-tuning under the fixed assignment.
//!
//! With `H_d = H + damp · mean(diag H) · I` and `U` the upper Cholesky factor of `H_d⁻¹`
//! (`H_d⁻¹ = UᵀU`), columns are processed in groups `S` of `d` (the sub-vector columns):
//! 1. assignment: for each row, the codeword minimising the exact OBS cost of fixing `w_S` at `q`,
//!    `||U_SS⁻ᵀ (w_S − q)||²` — a Euclidean nearest-codeword search after the linear map `U_SS⁻ᵀ`
//!    of points and codebook;
//! 2. feedback, column by column within the group: `err_i = (w_i − q_i) / U_ii`,
//!    `W[:, i+1..] −= err_i · U[i, i+1..]` (equivalent to the joint OBS update of the group).
//!
//! A padded last group uses only its real columns. Afterwards the codebook trains for
//! `cfg.steps` RMSprop steps on the layer loss with every assignment fixed (same budget and rate
//! as ViM-VQ's codebook). f64 throughout the elimination.

use super::fcco::Fcco;
use super::layer_loss::LayerObjective;
use super::search::nearest;
use super::{VqConfig, VqError, VqLayer};

/// Relative diagonal damping of H (GPTQ's default).
pub const DAMP: f64 = 0.01;

/// Lower Cholesky factor of a symmetric positive definite `n × n` matrix (row-major), or `None`
/// if a pivot is not positive.
fn cholesky_lower(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for t in 0..j {
                s -= l[i * n + t] * l[j * n + t];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular `n × n` matrix (lower-triangular).
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0f64; n * n];
    for col in 0..n {
        inv[col * n + col] = 1.0 / l[col * n + col];
        for i in col + 1..n {
            let mut s = 0.0;
            for t in col..i {
                s += l[i * n + t] * inv[t * n + col];
            }
            inv[i * n + col] = -s / l[i * n + i];
        }
    }
    inv
}

/// Upper Cholesky factor `U` of `H_d⁻¹` (`H_d⁻¹ = UᵀU`), with damping growing ×10 until H_d is
/// positive definite.
fn inverse_cholesky_upper(h: &[f32], n: usize, damp: f64) -> Vec<f64> {
    let mean_diag = (0..n).map(|i| h[i * n + i] as f64).sum::<f64>() / n as f64;
    let base = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let mut damp = damp.max(1e-12);
    loop {
        let mut a: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        for i in 0..n {
            a[i * n + i] += damp * base;
        }
        if let Some(l) = cholesky_lower(&a, n) {
            // H⁻¹ = L⁻ᵀ L⁻¹.
            let li = invert_lower(&l, n);
            let mut hinv = vec![0.0f64; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let mut s = 0.0;
                    for t in i..n {
                        s += li[t * n + i] * li[t * n + j];
                    }
                    hinv[i * n + j] = s;
                    hinv[j * n + i] = s;
                }
            }
            if let Some(lc) = cholesky_lower(&hinv, n) {
                let mut u = vec![0.0f64; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        u[j * n + i] = lc[i * n + j];
                    }
                }
                return u;
            }
        }
        damp *= 10.0;
    }
}

/// GPTVQ with the given `cfg.k × cfg.d` codebook (usually k-means).
pub fn gptvq(obj: &LayerObjective, codebook: Vec<f32>, cfg: &VqConfig) -> Result<VqLayer, VqError> {
    cfg.validate()?;
    let (rows, cols, d, k) = (obj.rows(), obj.cols(), cfg.d, cfg.k);
    super::check_buf("codebook", &codebook, k * d)?;
    let per_row = cols.div_ceil(d);
    let u = inverse_cholesky_upper(obj.hessian(), cols, DAMP);
    let mut w: Vec<f64> = obj.weight().iter().map(|&v| v as f64).collect();
    let mut indices = vec![0u32; rows * per_row];
    let mut pts = vec![0.0f32; rows * d];
    let mut cbt = vec![0.0f32; k * d];
    for g in 0..per_row {
        let c0 = g * d;
        let len = d.min(cols - c0);
        // M = U_SS⁻ᵀ (lower triangular, len × len).
        let mut ut = vec![0.0f64; len * len];
        for i in 0..len {
            for j in 0..=i {
                ut[i * len + j] = u[(c0 + j) * cols + c0 + i];
            }
        }
        let m = invert_lower(&ut, len);
        let map = |x: &[f64], out: &mut [f32]| {
            for i in 0..len {
                out[i] = (0..=i).map(|j| m[i * len + j] * x[j]).sum::<f64>() as f32;
            }
        };
        let mut tmp = vec![0.0f64; len];
        for c in 0..k {
            for (t, v) in tmp.iter_mut().enumerate() {
                *v = codebook[c * d + t] as f64;
            }
            map(&tmp, &mut cbt[c * len..(c + 1) * len]);
        }
        for r in 0..rows {
            map(
                &w[r * cols + c0..r * cols + c0 + len],
                &mut pts[r * len..(r + 1) * len],
            );
        }
        let (assign, _) = nearest(&pts[..rows * len], &cbt[..k * len], len);
        for r in 0..rows {
            let a = assign[r] as usize;
            indices[r * per_row + g] = a as u32;
            let wr = &mut w[r * cols..(r + 1) * cols];
            for i in 0..len {
                let col = c0 + i;
                let err = (wr[col] - codebook[a * d + i] as f64) / u[col * cols + col];
                wr[col] = codebook[a * d + i] as f64;
                let urow = &u[col * cols..(col + 1) * cols];
                for (wv, &uv) in wr[col + 1..].iter_mut().zip(&urow[col + 1..]) {
                    *wv -= err * uv;
                }
            }
        }
    }
    if cfg.steps == 0 || cfg.lr_codebook == 0.0 {
        return Ok(VqLayer {
            rows,
            cols,
            k,
            d,
            codebook,
            indices,
        });
    }
    // Codebook fine-tuning under the fixed assignment.
    let mut f = Fcco::new(obj.weight(), rows, cols, codebook, 1, cfg)?;
    for (j, &a) in indices.iter().enumerate() {
        f.confirm_to(j, a);
    }
    let mut grad = vec![0.0f32; rows * cols];
    let mut w_hat = vec![0.0f32; rows * cols];
    for _ in 0..cfg.steps {
        f.reconstruct_into(&mut w_hat);
        obj.loss_and_grad(&w_hat, &mut grad);
        f.zero_grad();
        f.accumulate(&grad)?;
        f.step();
    }
    Ok(f.to_layer())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_cholesky_reconstructs_the_inverse() {
        let n = 5;
        // SPD: A = B Bᵀ + I.
        let b: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut h = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|t| b[i * n + t] * b[j * n + t]).sum::<f32>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_cholesky_upper(&h, n, 0.0);
        // (UᵀU) H ≈ I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0f64;
                for t in 0..n {
                    let hinv_it: f64 = (0..n).map(|q| u[q * n + i] * u[q * n + t]).sum();
                    s += hinv_it * h[t * n + j] as f64;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-6, "({i},{j}) = {s}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U not upper");
            }
        }
    }
}
