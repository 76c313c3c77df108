//! What a [`forward`](super::forward) records for the [`backward`](super::backward): the
//! per-image activations ([`ImageCache`], [`DirCache`]) and the batch record ([`Cache`]).

use vimvq_rt::format::Role;

use super::float::Float;
use super::grads::Grads;
use super::params::BlockDims;

/// What one branch of one image keeps from the forward for the backward.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirCache<T> {
    /// Conv pre-activation `(L, E)`.
    pub(super) s: Vec<T>,
    /// `u = silu(s)` `(L, E)`.
    pub(super) u: Vec<T>,
    /// `x_proj` output `(L, R+2N)` (forward scratch).
    pub(super) xd: Vec<T>,
    /// Δ low-rank part `(L, R)`.
    pub(super) dtl: Vec<T>,
    /// `B` `(L, N)`.
    pub(super) bm: Vec<T>,
    /// `C` `(L, N)`.
    pub(super) cm: Vec<T>,
    /// Δ pre-activation incl. bias `(L, E)`.
    pub(super) pre: Vec<T>,
    /// `Δ = softplus(pre)` `(L, E)`.
    pub(super) delta: Vec<T>,
    /// Scan output incl. D-skip, before the gate `(L, E)`.
    pub(super) y: Vec<T>,
    /// `exp(Δ·A)` `(L, N, E)`.
    pub(super) da: Vec<T>,
}

/// Forward record of one image.
#[derive(Clone, Debug, Default)]
pub(crate) struct ImageCache<T> {
    pub(super) hn: Vec<T>,
    pub(super) x: Vec<T>,
    pub(super) z: Vec<T>,
    pub(super) fwd: DirCache<T>,
    pub(super) bwd: DirCache<T>,
    /// Combined, gated, halved branch outputs `(L, E)`: the input of `out_proj`.
    pub(super) m: Vec<T>,
}

impl<T> ImageCache<T> {
    /// The input of a quantized linear layer recorded by the last forward of this image
    /// (`L × cols`): `hn` for `in_proj`, `u` for `x_proj`, `Δ`'s low-rank part for `dt_proj`,
    /// the combined branch output for `out_proj`.
    pub(crate) fn tap(&self, role: Role) -> &[T] {
        match role {
            Role::InProj => &self.hn,
            Role::XProj => &self.fwd.u,
            Role::XProjBack => &self.bwd.u,
            Role::DtProjW => &self.fwd.dtl,
            Role::DtProjWBack => &self.bwd.dtl,
            Role::OutProj => &self.m,
            _ => unreachable!("no tap for {role:?}"),
        }
    }
}

/// Sizes a buffer the forward fully overwrites (no clearing when the size already matches).
fn resize<T: Float>(v: &mut Vec<T>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, T::ZERO);
    }
}

impl<T: Float> ImageCache<T> {
    /// Sizes every buffer for one image of `len` tokens.
    pub(crate) fn shape(&mut self, dims: BlockDims, len: usize) {
        let BlockDims {
            d_model: d,
            d_inner: e,
            dt_rank: r,
            d_state: n,
            ..
        } = dims;
        resize(&mut self.hn, len * d);
        resize(&mut self.x, len * e);
        resize(&mut self.z, len * e);
        resize(&mut self.m, len * e);
        for dc in [&mut self.fwd, &mut self.bwd] {
            resize(&mut dc.s, len * e);
            resize(&mut dc.u, len * e);
            resize(&mut dc.xd, len * dims.x_proj_rows());
            resize(&mut dc.dtl, len * r);
            resize(&mut dc.bm, len * n);
            resize(&mut dc.cm, len * n);
            resize(&mut dc.pre, len * e);
            resize(&mut dc.delta, len * e);
            resize(&mut dc.y, len * e);
            resize(&mut dc.da, len * e * n);
        }
    }

    fn bytes(&self) -> usize {
        let d = |c: &DirCache<T>| {
            c.s.len()
                + c.u.len()
                + c.xd.len()
                + c.dtl.len()
                + c.bm.len()
                + c.cm.len()
                + c.pre.len()
                + c.delta.len()
                + c.y.len()
                + c.da.len()
        };
        (self.hn.len() + self.x.len() + self.z.len() + self.m.len() + d(&self.fwd) + d(&self.bwd))
            * std::mem::size_of::<T>()
    }
}

/// Activations a [`forward`] stores for the following [`backward`]; reused across calls.
///
/// Size is `O(B·L·E·N)`: per image and branch one `(L, N, E)` tensor of `exp(Δ·A)` plus `O(L·E)`
/// vectors. For B = 8, L = 50, D = 128, E = 256, N = 16 in `f32` that is 13.1 MB of `exp(Δ·A)`
/// and 18.9 MB in all ([`Cache::bytes`]). The scan states are not stored: the backward rebuilds
/// them from `exp(Δ·A)` (multiply-adds only), one image at a time per thread.
#[derive(Clone, Debug, Default)]
pub struct Cache<T> {
    pub(super) dims: Option<BlockDims>,
    pub(super) seq_len: usize,
    pub(super) images: Vec<ImageCache<T>>,
    /// Per-image gradients, summed in image order (deterministic for any thread count).
    pub(super) grads: Vec<Grads<T>>,
}

impl<T: Float> Cache<T> {
    /// An empty cache; buffers are sized by the first [`forward`].
    pub fn new() -> Self {
        Cache {
            dims: None,
            seq_len: 0,
            images: Vec::new(),
            grads: Vec::new(),
        }
    }

    /// Images recorded by the last forward.
    pub fn batch(&self) -> usize {
        self.images.len()
    }

    /// Sequence length recorded by the last forward.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Bytes held by the forward record (excluding the per-image gradient buffers).
    pub fn bytes(&self) -> usize {
        self.images.iter().map(ImageCache::bytes).sum()
    }
}
