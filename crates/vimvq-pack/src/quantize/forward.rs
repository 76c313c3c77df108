//! The f32 pieces of the model the pipeline runs on calibration images: the prefix (patch
//! embedding, middle cls token, position embedding), the per-block RMSNorm, and a mixer forward
//! that also hands out the input of every quantized linear layer ("taps", for the Hessians).
//!
//! The mixer forward is the calibration's own per-image forward ([`crate::calib::pass`]), run
//! batch-wise (images in parallel on the current rayon pool) without the backward: it computes the f32 targets `y_ref`, the Hessians of the
//! layer objective and the report, and advances the quantized residual stream.

use vimvq_rt::format::Role;
use vimvq_rt::VimConfig;

use rayon::prelude::*;

use crate::calib::cache::ImageCache;
use crate::calib::ops::{linear_forward_t, LinearDims};
use crate::calib::pass::{image_forward, Prepared};
use crate::calib::BlockParams;

/// Patch embedding + cls token at `P/2` + position embedding of one normalised CHW image into
/// `out` (`L × D`). `w_t` is the patch weight transposed, `(C·p·p, D)`.
pub(crate) fn embed_image(
    cfg: &VimConfig,
    w_t: &[f32],
    bias: &[f32],
    cls: &[f32],
    pos_embed: &[f32],
    img: &[f32],
    out: &mut [f32],
) {
    let (d, g, p, stride, side) = (
        cfg.embed_dim,
        cfg.grid(),
        cfg.patch,
        cfg.stride,
        cfg.img_size,
    );
    let (np, pl, pos) = (cfg.num_patches(), cfg.patch_len(), cfg.cls_pos());
    // im2col: patch k is grid cell (k / g, k % g), flattened in (channel, row, col) order.
    let mut cols = vec![0.0f32; np * pl];
    for k in 0..np {
        let (gy, gx) = (k / g, k % g);
        let dst = &mut cols[k * pl..(k + 1) * pl];
        for ch in 0..cfg.channels {
            for py in 0..p {
                let src = ch * side * side + (gy * stride + py) * side + gx * stride;
                let o = (ch * p + py) * p;
                dst[o..o + p].copy_from_slice(&img[src..src + p]);
            }
        }
    }
    let mut tok = vec![0.0f32; np * d];
    linear_forward_t(
        &cols,
        w_t,
        Some(bias),
        LinearDims { m: np, k: pl, n: d },
        &mut tok,
    );
    out[..pos * d].copy_from_slice(&tok[..pos * d]);
    out[pos * d..(pos + 1) * d].copy_from_slice(cls);
    out[(pos + 1) * d..].copy_from_slice(&tok[pos * d..]);
    for (o, pe) in out.iter_mut().zip(pos_embed) {
        *o += pe;
    }
}

/// `out = x · rsqrt(mean(x²) + eps) · w`, row by row (`D` values per row; mean in f64).
pub(crate) fn rmsnorm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = xr.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / d as f64;
        let rstd = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for ((o, &v), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = v * rstd * wv;
        }
    }
}

/// Mixer outputs of a batch: `hn (B, L, D)` → `(B, L, D)`.
pub(crate) fn mixer_batch(p: &BlockParams<f32>, hn: &[f32], len: usize) -> Vec<f32> {
    let row = len * p.dims.d_model;
    let prep = Prepared::new(p);
    let mut y = vec![0.0f32; hn.len()];
    hn.par_chunks_exact(row)
        .zip(y.par_chunks_exact_mut(row))
        .for_each_init(ImageCache::default, |ic, (h, o)| {
            ic.shape(p.dims, len);
            image_forward(p, &prep, h, len, ic, o)
        });
    y
}

/// Mixer outputs of a batch plus the inputs of every quantized linear layer: for each role of
/// `roles`, a `(B·L) × cols` matrix.
pub(crate) fn mixer_batch_taps(
    p: &BlockParams<f32>,
    hn: &[f32],
    len: usize,
    roles: &[Role],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dims = p.dims;
    let row = len * dims.d_model;
    let batch = hn.len() / row;
    let cols = |role: Role| match role {
        Role::InProj => dims.d_model,
        Role::DtProjW | Role::DtProjWBack => dims.dt_rank,
        _ => dims.d_inner,
    };
    let prep = Prepared::new(p);
    let mut y = vec![0.0f32; hn.len()];
    let mut taps: Vec<Vec<f32>> = roles
        .iter()
        .map(|&r| vec![0.0f32; batch * len * cols(r)])
        .collect();
    {
        let mut per_image: Vec<Vec<&mut [f32]>> = (0..batch).map(|_| Vec::new()).collect();
        for (t, &role) in taps.iter_mut().zip(roles) {
            for (slot, chunk) in per_image
                .iter_mut()
                .zip(t.chunks_exact_mut(len * cols(role)))
            {
                slot.push(chunk);
            }
        }
        hn.par_chunks_exact(row)
            .zip(y.par_chunks_exact_mut(row))
            .zip(per_image)
            .for_each_init(ImageCache::default, |ic, ((h, o), mut outs)| {
                ic.shape(p.dims, len);
                image_forward(p, &prep, h, len, ic, o);
                for (dst, &role) in outs.iter_mut().zip(roles) {
                    dst.copy_from_slice(ic.tap(role));
                }
            });
    }
    (y, taps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::{forward, BlockDims, Cache};

    #[test]
    fn mixer_matches_the_calibration_forward_bit_for_bit() {
        let dims = BlockDims {
            d_model: 16,
            d_inner: 32,
            dt_rank: 3,
            d_state: 4,
            d_conv: 4,
        };
        let p = BlockParams::<f32>::random_vim_like(dims, 7);
        let (len, batch) = (9, 3);
        let hn: Vec<f32> = (0..batch * len * 16)
            .map(|i| (i as f32 * 0.173).sin())
            .collect();
        let want = forward(&p, &hn, len, &mut Cache::new());
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| mixer_batch(&p, &hn, len)), want);
            let roles = [Role::InProj, Role::DtProjWBack, Role::OutProj];
            let (y, taps) = pool.install(|| mixer_batch_taps(&p, &hn, len, &roles));
            assert_eq!(y, want);
            assert_eq!(taps[0], hn);
            assert_eq!(taps[1].len(), batch * len * 3);
            assert_eq!(taps[2].len(), batch * len * 32);
            // out_proj applied to its tap reproduces the output.
            let mut y2 = vec![0.0f32; len * 16];
            crate::calib::ops::linear_forward(
                &taps[2][..len * 32],
                &p.out_proj,
                None,
                LinearDims {
                    m: len,
                    k: 32,
                    n: 16,
                },
                &mut y2,
            );
            assert_eq!(&y2[..], &want[..len * 16]);
        }
    }

    #[test]
    fn rmsnorm_normalises_rows() {
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let mut out = [0.0f32; 4];
        rmsnorm_rows(&x, &[1.0, 2.0], 1e-5, &mut out);
        // rms of (3, 4) = sqrt(12.5)
        let s = 1.0 / 12.5f32.sqrt();
        assert!((out[0] - 3.0 * s).abs() < 1e-6 && (out[1] - 8.0 * s).abs() < 1e-6);
        assert_eq!(&out[2..], &[0.0, 0.0]);
    }
}
