//! Whole-block forward (with a [`Cache`] for the backward) and hand-written backward of one
//! bimamba-v2 mixer, batched over images on the current rayon pool; and the block loss
//! [`rel_mse`].

use rayon::prelude::*;

use super::cache::{Cache, DirCache, ImageCache};
use super::float::Float;
use super::grads::{DirGrads, Grads};
use super::ops::{
    conv_backward, conv_forward, gate_combine_backward, gate_combine_forward, linear_backward,
    linear_forward_t, scan_backward, scan_forward, silu_backward, silu_forward, softplus_backward,
    softplus_forward, transpose, ConvDims, Direction, LinearDims, LinearGrads, ScanDims, ScanGrads,
    ScanInputs,
};
use super::params::{BlockDims, BlockParams, DirParams};

/// `A = −exp(A_log)` of both branches.
fn neg_exp<T: Float>(a_log: &[T]) -> Vec<T> {
    a_log.iter().map(|v| -v.exp()).collect()
}

/// Block forward on a batch: `hn (B, L, D)` → mixer output `(B, L, D)`, recording into `cache`.
///
/// Computes exactly the flip-free formulation of docs/RUNTIME.md §Forward pass (causal conv and
/// left-to-right scan for the forward branch, anti-causal conv and right-to-left scan for the
/// backward branch, gate `silu(z)` at the same token, `(o_f + o_b)/2`, `out_proj`). In `f64` it
/// matches `mixer_direct` of `vim_numpy_ref.py` to ~1e-15 relative.
///
/// Images run in parallel on the current rayon pool; the result does not depend on its size.
///
/// # Panics
/// If `seq_len == 0` or `hn.len()` is not a multiple of `seq_len · D`.
pub fn forward<T: Float>(
    params: &BlockParams<T>,
    hn: &[T],
    seq_len: usize,
    cache: &mut Cache<T>,
) -> Vec<T> {
    let dims = params.dims;
    let row = seq_len * dims.d_model;
    assert!(
        seq_len > 0 && row > 0 && hn.len().is_multiple_of(row),
        "forward: hn is not (B, L, D)"
    );
    let batch = hn.len() / row;
    if cache.dims != Some(dims) {
        cache.grads.clear();
    }
    cache.images.resize_with(batch, ImageCache::default);
    cache.dims = Some(dims);
    cache.seq_len = seq_len;
    let prep = Prepared::new(params);
    let mut y = vec![T::ZERO; hn.len()];
    cache
        .images
        .par_iter_mut()
        .zip(hn.par_chunks_exact(row))
        .zip(y.par_chunks_exact_mut(row))
        .for_each(|((ic, h), o)| {
            ic.shape(dims, seq_len);
            image_forward(params, &prep, h, seq_len, ic, o);
        });
    y
}

/// Per-call derived tensors of the forward: transposed weights (for [`linear_forward_t`]) and `A`.
pub(crate) struct Prepared<T> {
    /// `in_proj` rows `0..E` (→ x), transposed `(D, E)`.
    in_x_t: Vec<T>,
    /// `in_proj` rows `E..2E` (→ z), transposed `(D, E)`.
    in_z_t: Vec<T>,
    /// `out_proj` transposed `(E, D)`.
    out_t: Vec<T>,
    /// Per branch: `x_proj` transposed `(E, R+2N)`.
    x_proj_t: [Vec<T>; 2],
    /// Per branch: `dt_proj.weight` transposed `(R, E)`.
    dt_t: [Vec<T>; 2],
    /// Per branch: `A = −exp(A_log)` `(E, N)`.
    a: [Vec<T>; 2],
}

impl<T: Float> Prepared<T> {
    /// Transposes the weights of `p` and computes `A` for both branches.
    pub(crate) fn new(p: &BlockParams<T>) -> Self {
        let BlockDims {
            d_model: d,
            d_inner: e,
            dt_rank: r,
            ..
        } = p.dims;
        let rows = p.dims.x_proj_rows();
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

/// Mixer forward of one image `hn (L, D)` → `y (L, D)`, recording into `ic` (sized by
/// [`ImageCache::shape`]).
pub(crate) fn image_forward<T: Float>(
    p: &BlockParams<T>,
    prep: &Prepared<T>,
    hn: &[T],
    len: usize,
    ic: &mut ImageCache<T>,
    y: &mut [T],
) {
    let dims = p.dims;
    let (d, e) = (dims.d_model, dims.d_inner);
    ic.hn.copy_from_slice(hn);
    let lin = LinearDims { m: len, k: d, n: e };
    linear_forward_t(hn, &prep.in_x_t, None, lin, &mut ic.x);
    linear_forward_t(hn, &prep.in_z_t, None, lin, &mut ic.z);
    let ImageCache { x, fwd, bwd, .. } = ic;
    branch_forward(dims, len, Direction::Forward, &p.fwd, prep, x, fwd);
    branch_forward(dims, len, Direction::Backward, &p.bwd, prep, x, bwd);
    gate_combine_forward(&ic.fwd.y, &ic.bwd.y, &ic.z, &mut ic.m);
    linear_forward_t(
        &ic.m,
        &prep.out_t,
        None,
        LinearDims { m: len, k: e, n: d },
        y,
    );
}

fn branch_forward<T: Float>(
    dims: BlockDims,
    len: usize,
    dir: Direction,
    p: &DirParams<T>,
    prep: &Prepared<T>,
    x: &[T],
    c: &mut DirCache<T>,
) {
    let BlockDims {
        d_inner: e,
        dt_rank: r,
        d_state: n,
        d_conv: k,
        ..
    } = dims;
    let rows = dims.x_proj_rows();
    let which = usize::from(dir == Direction::Backward);
    conv_forward(
        x,
        &p.conv_w,
        &p.conv_b,
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
        Some(&p.dt_proj_b),
        LinearDims { m: len, k: r, n: e },
        &mut c.pre,
    );
    softplus_forward(&c.pre, &mut c.delta);
    let inp = ScanInputs {
        u: &c.u,
        delta: &c.delta,
        a: &prep.a[which],
        b: &c.bm,
        c: &c.cm,
        d: &p.d_skip,
    };
    scan_forward(
        inp,
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

/// Per-worker scratch of the backward (sized for one image).
struct Scratch<T> {
    dm: Vec<T>,
    dy: [Vec<T>; 2],
    dz: Vec<T>,
    dx: Vec<T>,
    du: Vec<T>,
    ddelta: Vec<T>,
    dpre: Vec<T>,
    ds: Vec<T>,
    dbm: Vec<T>,
    dcm: Vec<T>,
    ddtl: Vec<T>,
    dxd: Vec<T>,
    h: Vec<T>,
}

impl<T: Float> Scratch<T> {
    fn new(dims: BlockDims, len: usize) -> Self {
        let BlockDims {
            d_inner: e,
            dt_rank: r,
            d_state: n,
            ..
        } = dims;
        let z = |l: usize| vec![T::ZERO; l];
        Scratch {
            dm: z(len * e),
            dy: [z(len * e), z(len * e)],
            dz: z(len * e),
            dx: z(len * e),
            du: z(len * e),
            ddelta: z(len * e),
            dpre: z(len * e),
            ds: z(len * e),
            dbm: z(len * n),
            dcm: z(len * n),
            ddtl: z(len * r),
            dxd: z(len * dims.x_proj_rows()),
            h: z(len * e * n),
        }
    }
}

/// Block backward: gradients of the 8 trainable tensors given `dy = dL/d(output)` `(B, L, D)`.
///
/// `params` must be the ones the preceding [`forward`] on `cache` ran with. Per-image gradients
/// are computed in parallel on the current rayon pool and summed in image order, so the result
/// is bit-identical for every thread count. Frozen tensors and `dL/d hn` are not computed
/// ([`backward_with_input`] adds the latter).
///
/// # Panics
/// If `cache` holds no forward for these dims or `dy` does not have the forward output's shape.
pub fn backward<T: Float>(params: &BlockParams<T>, cache: &mut Cache<T>, dy: &[T]) -> Grads<T> {
    backward_impl(params, cache, dy, None)
}

/// [`backward`] that also overwrites `dhn` `(B, L, D)` with `dL/d hn`, the gradient of the mixer
/// input (through `in_proj`, both the `x` and the `z` rows), for chaining blocks end to end.
///
/// # Panics
/// As [`backward`], or if `dhn` does not have `dy`'s length.
pub fn backward_with_input<T: Float>(
    params: &BlockParams<T>,
    cache: &mut Cache<T>,
    dy: &[T],
    dhn: &mut [T],
) -> Grads<T> {
    assert_eq!(dhn.len(), dy.len(), "backward: dhn is not (B, L, D)");
    backward_impl(params, cache, dy, Some(dhn))
}

fn backward_impl<T: Float>(
    params: &BlockParams<T>,
    cache: &mut Cache<T>,
    dy: &[T],
    dhn: Option<&mut [T]>,
) -> Grads<T> {
    let dims = params.dims;
    assert_eq!(
        cache.dims,
        Some(dims),
        "backward: cache holds no forward of these dims"
    );
    let len = cache.seq_len;
    let row = len * dims.d_model;
    let batch = cache.images.len();
    assert_eq!(dy.len(), batch * row, "backward: dy is not (B, L, D)");
    cache.grads.resize_with(batch, || Grads::zeros(dims));
    let a = [neg_exp(&params.fwd.a_log), neg_exp(&params.bwd.a_log)];
    let mut dhn_rows: Vec<Option<&mut [T]>> = match dhn {
        Some(v) => v.chunks_exact_mut(row).map(Some).collect(),
        None => (0..batch).map(|_| None).collect(),
    };
    cache
        .images
        .par_iter()
        .zip(dy.par_chunks_exact(row))
        .zip(cache.grads.par_iter_mut())
        .zip(dhn_rows.par_iter_mut())
        .for_each_init(
            || Scratch::new(dims, len),
            |ws, (((ic, g), gr), dh)| {
                gr.fill_zero();
                image_backward(params, &a, len, ic, g, gr, dh.as_deref_mut(), ws);
            },
        );
    let mut total = Grads::zeros(dims);
    for g in &cache.grads[..batch] {
        total.add_assign(g);
    }
    total
}

#[allow(clippy::too_many_arguments)]
fn image_backward<T: Float>(
    p: &BlockParams<T>,
    a: &[Vec<T>; 2],
    len: usize,
    ic: &ImageCache<T>,
    dy: &[T],
    g: &mut Grads<T>,
    mut dhn: Option<&mut [T]>,
    ws: &mut Scratch<T>,
) {
    let dims = p.dims;
    let (d, e) = (dims.d_model, dims.d_inner);
    let [dyf, dyb] = &mut ws.dy;
    for v in [&mut ws.dm, dyf, dyb, &mut ws.dz, &mut ws.dx] {
        v.fill(T::ZERO);
    }
    linear_backward(
        &ic.m,
        &p.out_proj,
        dy,
        LinearDims { m: len, k: e, n: d },
        LinearGrads {
            dx: Some(&mut ws.dm),
            dw: Some(&mut g.out_proj),
            db: None,
        },
    );
    {
        let [dyf, dyb] = &mut ws.dy;
        gate_combine_backward(&ic.fwd.y, &ic.bwd.y, &ic.z, &ws.dm, dyf, dyb, &mut ws.dz);
    }
    branch_backward(
        dims,
        len,
        Direction::Forward,
        &p.fwd,
        &a[0],
        &ic.x,
        &ic.fwd,
        0,
        &mut g.fwd,
        ws,
    );
    branch_backward(
        dims,
        len,
        Direction::Backward,
        &p.bwd,
        &a[1],
        &ic.x,
        &ic.bwd,
        1,
        &mut g.bwd,
        ws,
    );
    let lin = LinearDims { m: len, k: d, n: e };
    let (gx, gz) = g.in_proj.split_at_mut(e * d);
    if let Some(dh) = dhn.as_deref_mut() {
        dh.fill(T::ZERO);
    }
    linear_backward(
        &ic.hn,
        &p.in_proj[..e * d],
        &ws.dx,
        lin,
        LinearGrads {
            dx: dhn.as_deref_mut(),
            dw: Some(gx),
            db: None,
        },
    );
    linear_backward(
        &ic.hn,
        &p.in_proj[e * d..],
        &ws.dz,
        lin,
        LinearGrads {
            dx: dhn,
            dw: Some(gz),
            db: None,
        },
    );
}

/// Backward of one branch from `ws.dy[which]` (gated-branch gradient) down to `ws.dx` (accumulated).
#[allow(clippy::too_many_arguments)]
fn branch_backward<T: Float>(
    dims: BlockDims,
    len: usize,
    dir: Direction,
    p: &DirParams<T>,
    a: &[T],
    x: &[T],
    c: &DirCache<T>,
    which: usize,
    g: &mut DirGrads<T>,
    ws: &mut Scratch<T>,
) {
    let BlockDims {
        d_inner: e,
        dt_rank: r,
        d_state: n,
        d_conv: k,
        ..
    } = dims;
    let rows = dims.x_proj_rows();
    for v in [
        &mut ws.du,
        &mut ws.ddelta,
        &mut ws.dpre,
        &mut ws.ds,
        &mut ws.dbm,
        &mut ws.dcm,
        &mut ws.ddtl,
        &mut ws.dxd,
    ] {
        v.fill(T::ZERO);
    }
    let inp = ScanInputs {
        u: &c.u,
        delta: &c.delta,
        a,
        b: &c.bm,
        c: &c.cm,
        d: &p.d_skip,
    };
    scan_backward(
        inp,
        ScanDims {
            len,
            channels: e,
            state: n,
            dir,
        },
        &c.da,
        &ws.dy[which],
        &mut ws.h,
        ScanGrads {
            du: &mut ws.du,
            ddelta: &mut ws.ddelta,
            db: &mut ws.dbm,
            dc: &mut ws.dcm,
        },
    );
    softplus_backward(&c.pre, &ws.ddelta, &mut ws.dpre);
    linear_backward(
        &c.dtl,
        &p.dt_proj_w,
        &ws.dpre,
        LinearDims { m: len, k: r, n: e },
        LinearGrads {
            dx: Some(&mut ws.ddtl),
            dw: Some(&mut g.dt_proj_w),
            db: Some(&mut g.dt_proj_b),
        },
    );
    for t in 0..len {
        let dr = &mut ws.dxd[t * rows..(t + 1) * rows];
        dr[..r].copy_from_slice(&ws.ddtl[t * r..(t + 1) * r]);
        dr[r..r + n].copy_from_slice(&ws.dbm[t * n..(t + 1) * n]);
        dr[r + n..].copy_from_slice(&ws.dcm[t * n..(t + 1) * n]);
    }
    linear_backward(
        &c.u,
        &p.x_proj,
        &ws.dxd,
        LinearDims {
            m: len,
            k: e,
            n: rows,
        },
        LinearGrads {
            dx: Some(&mut ws.du),
            dw: Some(&mut g.x_proj),
            db: None,
        },
    );
    silu_backward(&c.s, &ws.du, &mut ws.ds);
    conv_backward(
        x,
        &p.conv_w,
        &ws.ds,
        ConvDims {
            len,
            channels: e,
            taps: k,
            dir,
        },
        Some(&mut ws.dx),
        None,
        None,
    );
}

/// The block objective `L = mean((y − y_ref)²) / mean(y_ref²)` (= `Σ(y − y_ref)² / Σ y_ref²`).
///
/// Sums run in `f64`. When `dy` is given it is overwritten with `dL/dy = 2 (y − y_ref) / Σ y_ref²`.
/// An all-zero `y_ref` makes the denominator `f64::MIN_POSITIVE` instead of 0.
///
/// # Panics
/// If the lengths differ.
pub fn rel_mse<T: Float>(y: &[T], y_ref: &[T], dy: Option<&mut [T]>) -> f64 {
    assert_eq!(y.len(), y_ref.len(), "rel_mse: lengths");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (a, b) in y.iter().zip(y_ref) {
        let r = b.to_f64();
        let e = a.to_f64() - r;
        num += e * e;
        den += r * r;
    }
    let den = den.max(f64::MIN_POSITIVE);
    if let Some(dy) = dy {
        assert_eq!(dy.len(), y.len(), "rel_mse: dy");
        let s = 2.0 / den;
        for ((g, a), b) in dy.iter_mut().zip(y).zip(y_ref) {
            *g = T::from_f64(s * (a.to_f64() - b.to_f64()));
        }
    }
    num / den
}
