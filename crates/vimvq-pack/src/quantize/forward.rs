//! The f32 pieces of the model the pipeline runs on calibration images: the prefix (patch
//! embedding, middle cls token, position embedding), the per-block RMSNorm, and a mixer forward
//! that also hands out the input of every quantized linear layer ("taps", for the Hessians).
//!
//! The mixer forward is the same sequence of [`crate::calib::ops`] calls as
//! [`crate::calib::forward`] (so its output is bit-identical to it, tested below), without the
//! backward record: it is what computes the f32 targets `y_ref`, the Hessians of the layer
//! objective and the report, and what advances the quantized residual stream.

use vimvq_rt::format::Role;
use vimvq_rt::VimConfig;

use crate::calib::ops::{
    conv_forward, gate_combine_forward, linear_forward_t, scan_forward, silu_forward,
    softplus_forward, transpose, ConvDims, Direction, LinearDims, ScanDims, ScanInputs,
};
use crate::calib::{BlockParams, Float};

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

/// Transposed weights and `A = −exp(A_log)` of one mixer, computed once per parameter set.
pub(crate) struct Prepared {
    in_x_t: Vec<f32>,
    in_z_t: Vec<f32>,
    out_t: Vec<f32>,
    x_proj_t: [Vec<f32>; 2],
    dt_t: [Vec<f32>; 2],
    a: [Vec<f32>; 2],
}

impl Prepared {
    /// Prepares `p` for [`image_forward`].
    pub(crate) fn new(p: &BlockParams<f32>) -> Self {
        let dims = p.dims;
        let (d, e, r) = (dims.d_model, dims.d_inner, dims.dt_rank);
        let rows = dims.x_proj_rows();
        // The same `exp` as the calibration forward (`Float::exp`, not the inherent `f32::exp`).
        let neg_exp = |v: &[f32]| v.iter().map(|&x| -Float::exp(x)).collect::<Vec<f32>>();
        Prepared {
            in_x_t: transpose(&p.in_proj[..e * d], e, d),
            in_z_t: transpose(&p.in_proj[e * d..], e, d),
            out_t: transpose(&p.out_proj, d, e),
            x_proj_t: [
                transpose(&p.fwd.x_proj, rows, e),
                transpose(&p.bwd.x_proj, rows, e),
            ],
            dt_t: [
                transpose(&p.fwd.dt_proj_w, e, r),
                transpose(&p.bwd.dt_proj_w, e, r),
            ],
            a: [neg_exp(&p.fwd.a_log), neg_exp(&p.bwd.a_log)],
        }
    }
}

/// Buffers of one branch for one image.
#[derive(Default)]
struct DirScratch {
    s: Vec<f32>,
    u: Vec<f32>,
    xd: Vec<f32>,
    dtl: Vec<f32>,
    bm: Vec<f32>,
    cm: Vec<f32>,
    pre: Vec<f32>,
    delta: Vec<f32>,
    y: Vec<f32>,
    da: Vec<f32>,
}

/// Per-thread buffers of [`image_forward`]; after a call they hold that image's taps.
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    z: Vec<f32>,
    m: Vec<f32>,
    dirs: [DirScratch; 2],
}

impl Scratch {
    fn shape(&mut self, p: &BlockParams<f32>, len: usize) {
        let dims = p.dims;
        let (e, r, n) = (dims.d_inner, dims.dt_rank, dims.d_state);
        let set = |v: &mut Vec<f32>, l: usize| v.resize(l, 0.0);
        set(&mut self.x, len * e);
        set(&mut self.z, len * e);
        set(&mut self.m, len * e);
        for c in &mut self.dirs {
            set(&mut c.s, len * e);
            set(&mut c.u, len * e);
            set(&mut c.xd, len * dims.x_proj_rows());
            set(&mut c.dtl, len * r);
            set(&mut c.bm, len * n);
            set(&mut c.cm, len * n);
            set(&mut c.pre, len * e);
            set(&mut c.delta, len * e);
            set(&mut c.y, len * e);
            set(&mut c.da, len * e * n);
        }
    }

    /// The input of a quantized linear layer recorded by the last forward (`L × cols`);
    /// `hn` is the block input (the input of `in_proj`).
    pub(crate) fn tap<'a>(&'a self, role: Role, hn: &'a [f32]) -> &'a [f32] {
        match role {
            Role::InProj => hn,
            Role::XProj => &self.dirs[0].u,
            Role::XProjBack => &self.dirs[1].u,
            Role::DtProjW => &self.dirs[0].dtl,
            Role::DtProjWBack => &self.dirs[1].dtl,
            Role::OutProj => &self.m,
            _ => unreachable!("no tap for {role:?}"),
        }
    }
}

/// Mixer forward of one image: `hn (L, D)` → `y (L, D)`; `sc` keeps the intermediates.
pub(crate) fn image_forward(
    p: &BlockParams<f32>,
    prep: &Prepared,
    hn: &[f32],
    len: usize,
    sc: &mut Scratch,
    y: &mut [f32],
) {
    let dims = p.dims;
    let (d, e, r, n, k) = (
        dims.d_model,
        dims.d_inner,
        dims.dt_rank,
        dims.d_state,
        dims.d_conv,
    );
    let rows = dims.x_proj_rows();
    sc.shape(p, len);
    let lin = LinearDims { m: len, k: d, n: e };
    linear_forward_t(hn, &prep.in_x_t, None, lin, &mut sc.x);
    linear_forward_t(hn, &prep.in_z_t, None, lin, &mut sc.z);
    for (which, dir) in [Direction::Forward, Direction::Backward]
        .into_iter()
        .enumerate()
    {
        let dp = if which == 0 { &p.fwd } else { &p.bwd };
        let c = &mut sc.dirs[which];
        conv_forward(
            &sc.x,
            &dp.conv_w,
            &dp.conv_b,
            ConvDims {
                len,
                channels: e,
                taps: k,
                dir,
            },
            &mut c.s,
        );
        silu_forward(&c.s, &mut c.u);
        linear_forward_t(
            &c.u,
            &prep.x_proj_t[which],
            None,
            LinearDims {
                m: len,
                k: e,
                n: rows,
            },
            &mut c.xd,
        );
        for t in 0..len {
            let xr = &c.xd[t * rows..(t + 1) * rows];
            c.dtl[t * r..(t + 1) * r].copy_from_slice(&xr[..r]);
            c.bm[t * n..(t + 1) * n].copy_from_slice(&xr[r..r + n]);
            c.cm[t * n..(t + 1) * n].copy_from_slice(&xr[r + n..]);
        }
        linear_forward_t(
            &c.dtl,
            &prep.dt_t[which],
            Some(&dp.dt_proj_b),
            LinearDims { m: len, k: r, n: e },
            &mut c.pre,
        );
        softplus_forward(&c.pre, &mut c.delta);
        scan_forward(
            ScanInputs {
                u: &c.u,
                delta: &c.delta,
                a: &prep.a[which],
                b: &c.bm,
                c: &c.cm,
                d: &dp.d_skip,
            },
            ScanDims {
                len,
                channels: e,
                state: n,
                dir,
            },
            &mut c.y,
            &mut c.da,
        );
    }
    gate_combine_forward(&sc.dirs[0].y, &sc.dirs[1].y, &sc.z, &mut sc.m);
    linear_forward_t(
        &sc.m,
        &prep.out_t,
        None,
        LinearDims { m: len, k: e, n: d },
        y,
    );
}

/// Runs `f(scratch, item)` over `items` split into at most `threads` contiguous chunks, one scoped
/// thread each (the caller takes the first), each with its own scratch from `mk`.
pub(crate) fn parallel_for<I: Send, W>(
    items: &mut [I],
    threads: usize,
    mk: impl Fn() -> W + Sync,
    f: impl Fn(&mut W, &mut I) + Sync,
) {
    let threads = threads.clamp(1, items.len().max(1));
    let per = items.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        let mut chunks = items.chunks_mut(per);
        let first = chunks.next();
        for chunk in chunks {
            let (mk, f) = (&mk, &f);
            sc.spawn(move || {
                let mut w = mk();
                for it in chunk {
                    f(&mut w, it);
                }
            });
        }
        if let Some(chunk) = first {
            let mut w = mk();
            for it in chunk {
                f(&mut w, it);
            }
        }
    });
}

/// Mixer outputs of a batch: `hn (B, L, D)` → `(B, L, D)`, images spread over `threads`.
pub(crate) fn mixer_batch(
    p: &BlockParams<f32>,
    hn: &[f32],
    len: usize,
    threads: usize,
) -> Vec<f32> {
    let row = len * p.dims.d_model;
    let prep = Prepared::new(p);
    let mut y = vec![0.0f32; hn.len()];
    let mut items: Vec<(&[f32], &mut [f32])> =
        hn.chunks_exact(row).zip(y.chunks_exact_mut(row)).collect();
    parallel_for(&mut items, threads, Scratch::default, |sc, (h, o)| {
        image_forward(p, &prep, h, len, sc, o)
    });
    y
}

/// One image of [`mixer_batch_taps`]: `((hn, y), per-role tap outputs)`.
type TapItem<'a> = ((&'a [f32], &'a mut [f32]), Vec<&'a mut [f32]>);

/// Mixer outputs of a batch plus the inputs of every quantized linear layer: for each role of
/// `roles`, a `(B·L) × cols` matrix.
pub(crate) fn mixer_batch_taps(
    p: &BlockParams<f32>,
    hn: &[f32],
    len: usize,
    roles: &[Role],
    threads: usize,
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
        let mut items: Vec<TapItem<'_>> = hn
            .chunks_exact(row)
            .zip(y.chunks_exact_mut(row))
            .zip(per_image)
            .collect();
        parallel_for(
            &mut items,
            threads,
            Scratch::default,
            |sc, ((h, o), outs)| {
                image_forward(p, &prep, h, len, sc, o);
                for (dst, &role) in outs.iter_mut().zip(roles) {
                    dst.copy_from_slice(sc.tap(role, h));
                }
            },
        );
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
        let want = forward(&p, &hn, len, &mut Cache::new(), 2);
        for threads in [1, 2, 3] {
            assert_eq!(mixer_batch(&p, &hn, len, threads), want);
            let roles = [Role::InProj, Role::DtProjWBack, Role::OutProj];
            let (y, taps) = mixer_batch_taps(&p, &hn, len, &roles, threads);
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
