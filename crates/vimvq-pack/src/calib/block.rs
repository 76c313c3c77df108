//! Whole-block forward (with a cache for the backward) and hand-written backward of one
//! bimamba-v2 mixer, batched over images and threaded with `std::thread::scope`.

use std::fmt;

use vimvq_rt::format::Role;
use vimvq_rt::VimConfig;

use super::float::Float;
use super::ops::{
    conv_backward, conv_forward, gate_combine_backward, gate_combine_forward, linear_backward,
    linear_forward_t, scan_backward, scan_forward, silu_backward, silu_forward, softplus_backward,
    softplus_forward, transpose, ConvDims, Direction, LinearDims, LinearGrads, ScanDims, ScanGrads,
    ScanInputs,
};

/// The dimensions of one mixer: `D`, `E`, `R`, `N`, `K` (the `VimConfig` fields of those
/// names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDims {
    /// `D`, model width (mixer input and output features).
    pub d_model: usize,
    /// `E`, inner width.
    pub d_inner: usize,
    /// `R`, rank of the Δ projection.
    pub dt_rank: usize,
    /// `N`, SSM state per channel.
    pub d_state: usize,
    /// `K`, depthwise conv taps.
    pub d_conv: usize,
}

impl BlockDims {
    /// The mixer dimensions of a model.
    pub fn from_config(cfg: &VimConfig) -> Self {
        BlockDims {
            d_model: cfg.embed_dim,
            d_inner: cfg.d_inner,
            dt_rank: cfg.dt_rank,
            d_state: cfg.d_state,
            d_conv: cfg.d_conv,
        }
    }

    /// Rows of `x_proj`: `R + 2N`.
    pub fn x_proj_rows(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }

    /// Element count of a per-layer mixer tensor (`None` for roles outside the mixer).
    ///
    /// Agrees with `Role::shape` (checked in the unit tests).
    pub fn numel(&self, role: Role) -> Option<usize> {
        let (d, e, r, n, k) = (
            self.d_model,
            self.d_inner,
            self.dt_rank,
            self.d_state,
            self.d_conv,
        );
        Some(match role {
            Role::InProj => 2 * e * d,
            Role::ConvW | Role::ConvWBack => e * k,
            Role::XProj | Role::XProjBack => self.x_proj_rows() * e,
            Role::DtProjW | Role::DtProjWBack => e * r,
            Role::ALog | Role::ALogBack => e * n,
            Role::ConvB
            | Role::ConvBBack
            | Role::DtProjB
            | Role::DtProjBBack
            | Role::DSkip
            | Role::DSkipBack => e,
            Role::OutProj => d * e,
            _ => return None,
        })
    }
}

/// The tensors of one mixer branch (forward branch: `conv1d`, `x_proj`, …; backward: the `_b` ones).
#[derive(Clone, Debug, PartialEq)]
pub struct DirParams<T> {
    /// Conv weight `(E, K)` (PyTorch `(E, 1, K)`). Frozen.
    pub conv_w: Vec<T>,
    /// Conv bias `(E)`. Frozen.
    pub conv_b: Vec<T>,
    /// `x_proj.weight` `(R+2N, E)`. Trainable.
    pub x_proj: Vec<T>,
    /// `dt_proj.weight` `(E, R)`. Trainable.
    pub dt_proj_w: Vec<T>,
    /// `dt_proj.bias` `(E)`, added before softplus. Trainable.
    pub dt_proj_b: Vec<T>,
    /// `A_log` `(E, N)`; `A = −exp(A_log)`. Frozen.
    pub a_log: Vec<T>,
    /// `D` skip `(E)`. Frozen.
    pub d_skip: Vec<T>,
}

/// All 16 tensors of one bimamba-v2 mixer (`layers.{i}.mixer.*`), row-major in PyTorch layout.
///
/// The block's RMSNorm weight is not here: the calibration input is the already normalised `hn`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParams<T> {
    /// Dimensions every tensor length agrees with.
    pub dims: BlockDims,
    /// `in_proj.weight` `(2E, D)`: rows `0..E` produce `x`, rows `E..2E` produce `z`. Trainable.
    pub in_proj: Vec<T>,
    /// Forward-branch tensors.
    pub fwd: DirParams<T>,
    /// Backward-branch tensors (`_b`).
    pub bwd: DirParams<T>,
    /// `out_proj.weight` `(D, E)`. Trainable.
    pub out_proj: Vec<T>,
}

/// Why mixer tensors could not be assembled into a [`BlockParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalibError {
    /// The accessor returned nothing for this tensor.
    Missing(String),
    /// The tensor has the wrong number of elements.
    Shape {
        /// Torch name (without the `layers.{i}.` prefix).
        name: &'static str,
        /// Elements expected from the config.
        expected: usize,
        /// Elements found.
        got: usize,
    },
}

impl fmt::Display for CalibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalibError::Missing(n) => write!(f, "mixer tensor `{n}` is missing"),
            CalibError::Shape {
                name,
                expected,
                got,
            } => {
                write!(
                    f,
                    "mixer tensor `{name}` has {got} elements, expected {expected}"
                )
            }
        }
    }
}

impl std::error::Error for CalibError {}

/// The 16 mixer roles, in canonical file order.
pub const MIXER_ROLES: [Role; 16] = [
    Role::InProj,
    Role::ConvW,
    Role::ConvB,
    Role::XProj,
    Role::DtProjW,
    Role::DtProjB,
    Role::ALog,
    Role::DSkip,
    Role::ConvWBack,
    Role::ConvBBack,
    Role::XProjBack,
    Role::DtProjWBack,
    Role::DtProjBBack,
    Role::ALogBack,
    Role::DSkipBack,
    Role::OutProj,
];

/// The 8 tensors the block objective trains (the six linear weights and the two Δ biases).
pub const TRAINABLE_ROLES: [Role; 8] = [
    Role::InProj,
    Role::XProj,
    Role::XProjBack,
    Role::DtProjW,
    Role::DtProjWBack,
    Role::DtProjB,
    Role::DtProjBBack,
    Role::OutProj,
];

impl<T: Float> BlockParams<T> {
    /// Builds the mixer from an accessor returning each role's `f32` data (row-major, PyTorch order).
    ///
    /// Only element counts are checked (`(E, 1, K)` and `(E, K)` conv weights are the same data).
    pub fn from_roles<'a>(
        cfg: &VimConfig,
        mut get: impl FnMut(Role) -> Option<&'a [f32]>,
    ) -> Result<Self, CalibError> {
        let dims = BlockDims::from_config(cfg);
        let mut take = |role: Role| -> Result<Vec<T>, CalibError> {
            let data =
                get(role).ok_or_else(|| CalibError::Missing(role.torch_name().to_string()))?;
            let (rows, cols) = role.shape(cfg);
            if data.len() != rows * cols {
                return Err(CalibError::Shape {
                    name: role.torch_name(),
                    expected: rows * cols,
                    got: data.len(),
                });
            }
            Ok(data.iter().map(|v| T::from_f32(*v)).collect())
        };
        let mut dir = |back: bool| -> Result<DirParams<T>, CalibError> {
            let r = |f: Role, b: Role| if back { b } else { f };
            Ok(DirParams {
                conv_w: take(r(Role::ConvW, Role::ConvWBack))?,
                conv_b: take(r(Role::ConvB, Role::ConvBBack))?,
                x_proj: take(r(Role::XProj, Role::XProjBack))?,
                dt_proj_w: take(r(Role::DtProjW, Role::DtProjWBack))?,
                dt_proj_b: take(r(Role::DtProjB, Role::DtProjBBack))?,
                a_log: take(r(Role::ALog, Role::ALogBack))?,
                d_skip: take(r(Role::DSkip, Role::DSkipBack))?,
            })
        };
        let fwd = dir(false)?;
        let bwd = dir(true)?;
        Ok(BlockParams {
            dims,
            in_proj: take(Role::InProj)?,
            fwd,
            bwd,
            out_proj: take(Role::OutProj)?,
        })
    }

    /// Builds the mixer of block `layer` from an accessor by full PyTorch name
    /// (`layers.{layer}.mixer.in_proj.weight`, …), e.g.
    /// `|n| map.get(n).map(|t| t.data.as_slice())` over a `BTreeMap<String, HostTensor>`.
    pub fn from_torch<'a>(
        cfg: &VimConfig,
        layer: usize,
        mut get: impl FnMut(&str) -> Option<&'a [f32]>,
    ) -> Result<Self, CalibError> {
        Self::from_roles(cfg, |role| {
            get(&format!("layers.{layer}.{}", role.torch_name()))
        })
    }

    /// The tensor of a mixer role (`None` for roles outside the mixer).
    pub fn tensor(&self, role: Role) -> Option<&[T]> {
        Some(match role {
            Role::InProj => &self.in_proj,
            Role::OutProj => &self.out_proj,
            Role::ConvW => &self.fwd.conv_w,
            Role::ConvB => &self.fwd.conv_b,
            Role::XProj => &self.fwd.x_proj,
            Role::DtProjW => &self.fwd.dt_proj_w,
            Role::DtProjB => &self.fwd.dt_proj_b,
            Role::ALog => &self.fwd.a_log,
            Role::DSkip => &self.fwd.d_skip,
            Role::ConvWBack => &self.bwd.conv_w,
            Role::ConvBBack => &self.bwd.conv_b,
            Role::XProjBack => &self.bwd.x_proj,
            Role::DtProjWBack => &self.bwd.dt_proj_w,
            Role::DtProjBBack => &self.bwd.dt_proj_b,
            Role::ALogBack => &self.bwd.a_log,
            Role::DSkipBack => &self.bwd.d_skip,
            _ => return None,
        })
    }

    /// Mutable access to the tensor of a mixer role, e.g. to write the current quantized weights.
    pub fn tensor_mut(&mut self, role: Role) -> Option<&mut [T]> {
        Some(match role {
            Role::InProj => &mut self.in_proj,
            Role::OutProj => &mut self.out_proj,
            Role::ConvW => &mut self.fwd.conv_w,
            Role::ConvB => &mut self.fwd.conv_b,
            Role::XProj => &mut self.fwd.x_proj,
            Role::DtProjW => &mut self.fwd.dt_proj_w,
            Role::DtProjB => &mut self.fwd.dt_proj_b,
            Role::ALog => &mut self.fwd.a_log,
            Role::DSkip => &mut self.fwd.d_skip,
            Role::ConvWBack => &mut self.bwd.conv_w,
            Role::ConvBBack => &mut self.bwd.conv_b,
            Role::XProjBack => &mut self.bwd.x_proj,
            Role::DtProjWBack => &mut self.bwd.dt_proj_w,
            Role::DtProjBBack => &mut self.bwd.dt_proj_b,
            Role::ALogBack => &mut self.bwd.a_log,
            Role::DSkipBack => &mut self.bwd.d_skip,
            _ => return None,
        })
    }

    /// The same parameters in another precision (`f32` → `f64` is exact).
    pub fn cast<U: Float>(&self) -> BlockParams<U> {
        let c = |v: &Vec<T>| {
            v.iter()
                .map(|x| U::from_f64(x.to_f64()))
                .collect::<Vec<U>>()
        };
        let d = |p: &DirParams<T>| DirParams {
            conv_w: c(&p.conv_w),
            conv_b: c(&p.conv_b),
            x_proj: c(&p.x_proj),
            dt_proj_w: c(&p.dt_proj_w),
            dt_proj_b: c(&p.dt_proj_b),
            a_log: c(&p.a_log),
            d_skip: c(&p.d_skip),
        };
        BlockParams {
            dims: self.dims,
            in_proj: c(&self.in_proj),
            fwd: d(&self.fwd),
            bwd: d(&self.bwd),
            out_proj: c(&self.out_proj),
        }
    }

    /// Random weights with the magnitudes of a trained Vim block, for tests and benchmarks.
    ///
    /// Same distributions as `random_state_dict` of `vim_numpy_ref.py`: conv `N(0, 0.3)`, conv bias
    /// `N(0, 0.1)`, `x_proj` `N(0, 0.05)`, `dt_proj` `U(±R^-½)`, Δ biases `softplus⁻¹(dt)` with
    /// `dt` log-uniform in `[1e-3, 0.1]`, `A_log = log(1..=N) + N(0, 0.1)`, `D = 1 + N(0, 0.1)`,
    /// `in_proj`/`out_proj` `N(0, 0.05)`. Deterministic in `seed`.
    pub fn random_vim_like(dims: BlockDims, seed: u64) -> Self {
        let mut rng = SplitMix64(seed ^ 0x5eed_cafe_f00d_d00d);
        let BlockDims {
            d_model: d,
            d_inner: e,
            dt_rank: r,
            d_state: n,
            d_conv: k,
        } = dims;
        let mut normal = |len: usize, mean: f64, std: f64| -> Vec<T> {
            (0..len)
                .map(|_| T::from_f64(mean + std * rng.normal()))
                .collect()
        };
        let in_proj = normal(2 * e * d, 0.0, 0.05);
        let out_proj = normal(d * e, 0.0, 0.05);
        let dir = |rng: &mut SplitMix64| {
            let mut nrm = |len: usize, mean: f64, std: f64| -> Vec<T> {
                (0..len)
                    .map(|_| T::from_f64(mean + std * rng.normal()))
                    .collect()
            };
            let conv_w = nrm(e * k, 0.0, 0.3);
            let conv_b = nrm(e, 0.0, 0.1);
            let x_proj = nrm((r + 2 * n) * e, 0.0, 0.05);
            let d_skip = nrm(e, 1.0, 0.1);
            let a_noise = nrm(e * n, 0.0, 0.1);
            let a_log = (0..e * n)
                .map(|i| T::from_f64(((i % n + 1) as f64).ln()) + a_noise[i])
                .collect();
            let bound = (r as f64).powf(-0.5);
            let dt_proj_w = (0..e * r)
                .map(|_| T::from_f64(bound * (2.0 * rng.uniform() - 1.0)))
                .collect();
            let dt_proj_b = (0..e)
                .map(|_| {
                    let dt = (1e-3f64.ln() + rng.uniform() * (0.1f64.ln() - 1e-3f64.ln())).exp();
                    T::from_f64(dt + (-(-dt).exp_m1()).ln())
                })
                .collect();
            DirParams {
                conv_w,
                conv_b,
                x_proj,
                dt_proj_w,
                dt_proj_b,
                a_log,
                d_skip,
            }
        };
        let fwd = dir(&mut rng);
        let bwd = dir(&mut rng);
        BlockParams {
            dims,
            in_proj,
            fwd,
            bwd,
            out_proj,
        }
    }
}

/// Small deterministic generator for [`BlockParams::random_vim_like`] (SplitMix64 + Box–Muller).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

// ---------------------------------------------------------------------------------------------
// Gradients

/// Gradients of one branch's trainable tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct DirGrads<T> {
    /// `dL/d x_proj.weight`, `(R+2N, E)`.
    pub x_proj: Vec<T>,
    /// `dL/d dt_proj.weight`, `(E, R)`.
    pub dt_proj_w: Vec<T>,
    /// `dL/d dt_proj.bias`, `(E)`.
    pub dt_proj_b: Vec<T>,
}

/// Gradients of the block loss w.r.t. the 8 trainable tensors ([`TRAINABLE_ROLES`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Grads<T> {
    /// `dL/d in_proj.weight`, `(2E, D)`.
    pub in_proj: Vec<T>,
    /// Forward-branch gradients.
    pub fwd: DirGrads<T>,
    /// Backward-branch gradients (`_b` tensors).
    pub bwd: DirGrads<T>,
    /// `dL/d out_proj.weight`, `(D, E)`.
    pub out_proj: Vec<T>,
}

impl<T: Float> Grads<T> {
    /// All-zero gradients for a mixer of dimensions `dims`.
    pub fn zeros(dims: BlockDims) -> Self {
        let z = |role| vec![T::ZERO; dims.numel(role).unwrap_or(0)];
        let dir = || DirGrads {
            x_proj: z(Role::XProj),
            dt_proj_w: z(Role::DtProjW),
            dt_proj_b: z(Role::DtProjB),
        };
        Grads {
            in_proj: z(Role::InProj),
            fwd: dir(),
            bwd: dir(),
            out_proj: z(Role::OutProj),
        }
    }

    /// The gradient of a trainable role (`None` for frozen or non-mixer roles).
    pub fn tensor(&self, role: Role) -> Option<&[T]> {
        Some(match role {
            Role::InProj => &self.in_proj,
            Role::OutProj => &self.out_proj,
            Role::XProj => &self.fwd.x_proj,
            Role::DtProjW => &self.fwd.dt_proj_w,
            Role::DtProjB => &self.fwd.dt_proj_b,
            Role::XProjBack => &self.bwd.x_proj,
            Role::DtProjWBack => &self.bwd.dt_proj_w,
            Role::DtProjBBack => &self.bwd.dt_proj_b,
            _ => return None,
        })
    }

    fn tensors_mut(&mut self) -> [&mut Vec<T>; 8] {
        [
            &mut self.in_proj,
            &mut self.fwd.x_proj,
            &mut self.fwd.dt_proj_w,
            &mut self.fwd.dt_proj_b,
            &mut self.bwd.x_proj,
            &mut self.bwd.dt_proj_w,
            &mut self.bwd.dt_proj_b,
            &mut self.out_proj,
        ]
    }

    fn fill_zero(&mut self) {
        for t in self.tensors_mut() {
            t.fill(T::ZERO);
        }
    }

    fn add_assign(&mut self, other: &Grads<T>) {
        let other = [
            &other.in_proj,
            &other.fwd.x_proj,
            &other.fwd.dt_proj_w,
            &other.fwd.dt_proj_b,
            &other.bwd.x_proj,
            &other.bwd.dt_proj_w,
            &other.bwd.dt_proj_b,
            &other.out_proj,
        ];
        for (a, b) in self.tensors_mut().into_iter().zip(other) {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += *y;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cache

/// What one branch of one image keeps from the forward for the backward.
#[derive(Clone, Debug, Default)]
struct DirCache<T> {
    /// Conv pre-activation `(L, E)`.
    s: Vec<T>,
    /// `u = silu(s)` `(L, E)`.
    u: Vec<T>,
    /// `x_proj` output `(L, R+2N)` (forward scratch).
    xd: Vec<T>,
    /// Δ low-rank part `(L, R)`.
    dtl: Vec<T>,
    /// `B` `(L, N)`.
    bm: Vec<T>,
    /// `C` `(L, N)`.
    cm: Vec<T>,
    /// Δ pre-activation incl. bias `(L, E)`.
    pre: Vec<T>,
    /// `Δ = softplus(pre)` `(L, E)`.
    delta: Vec<T>,
    /// Scan output incl. D-skip, before the gate `(L, E)`.
    y: Vec<T>,
    /// `exp(Δ·A)` `(L, N, E)`.
    da: Vec<T>,
}

/// Forward record of one image.
#[derive(Clone, Debug, Default)]
pub(crate) struct ImageCache<T> {
    hn: Vec<T>,
    x: Vec<T>,
    z: Vec<T>,
    fwd: DirCache<T>,
    bwd: DirCache<T>,
    /// Combined, gated, halved branch outputs `(L, E)`: the input of `out_proj`.
    m: Vec<T>,
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
    dims: Option<BlockDims>,
    seq_len: usize,
    images: Vec<ImageCache<T>>,
    /// Per-image gradients, summed in image order (deterministic for any thread count).
    grads: Vec<Grads<T>>,
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

// ---------------------------------------------------------------------------------------------
// Forward / backward

/// `A = −exp(A_log)` of both branches.
fn neg_exp<T: Float>(a_log: &[T]) -> Vec<T> {
    a_log.iter().map(|v| -v.exp()).collect()
}

/// Runs `f(scratch, item)` over `items`, split into at most `threads` contiguous chunks, each on its
/// own scoped thread with its own scratch from `mk` (the calling thread takes the first chunk).
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

/// Block forward on a batch: `hn (B, L, D)` → mixer output `(B, L, D)`, recording into `cache`.
///
/// Computes exactly the flip-free formulation of docs/RUNTIME.md §Forward pass (causal conv and
/// left-to-right scan for the forward branch, anti-causal conv and right-to-left scan for the
/// backward branch, gate `silu(z)` at the same token, `(o_f + o_b)/2`, `out_proj`). In `f64` it
/// matches `mixer_direct` of `vim_numpy_ref.py` to ~1e-15 relative.
///
/// Images are distributed over `threads` scoped threads; the result does not depend on `threads`.
///
/// # Panics
/// If `seq_len == 0` or `hn.len()` is not a multiple of `seq_len · D`.
pub fn forward<T: Float>(
    params: &BlockParams<T>,
    hn: &[T],
    seq_len: usize,
    cache: &mut Cache<T>,
    threads: usize,
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
    let mut items: Vec<(&mut ImageCache<T>, &[T], &mut [T])> = cache
        .images
        .iter_mut()
        .zip(hn.chunks_exact(row))
        .zip(y.chunks_exact_mut(row))
        .map(|((c, h), o)| (c, h, o))
        .collect();
    parallel_for(
        &mut items,
        threads,
        || (),
        |_, (ic, h, o)| {
            ic.shape(dims, seq_len);
            image_forward(params, &prep, h, seq_len, ic, o);
        },
    );
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

/// Per-thread scratch of the backward (sized for one image).
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
/// are computed on `threads` scoped threads and summed in image order, so the result is
/// bit-identical for every thread count. Frozen tensors and `dL/d hn` are not computed
/// ([`backward_with_input`] adds the latter).
///
/// # Panics
/// If `cache` holds no forward for these dims or `dy` does not have the forward output's shape.
pub fn backward<T: Float>(
    params: &BlockParams<T>,
    cache: &mut Cache<T>,
    dy: &[T],
    threads: usize,
) -> Grads<T> {
    backward_impl(params, cache, dy, None, threads)
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
    threads: usize,
) -> Grads<T> {
    assert_eq!(dhn.len(), dy.len(), "backward: dhn is not (B, L, D)");
    backward_impl(params, cache, dy, Some(dhn), threads)
}

fn backward_impl<T: Float>(
    params: &BlockParams<T>,
    cache: &mut Cache<T>,
    dy: &[T],
    dhn: Option<&mut [T]>,
    threads: usize,
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
    let mut items: Vec<ImageItem<'_, T>> = cache
        .images
        .iter()
        .zip(dy.chunks_exact(row))
        .zip(cache.grads.iter_mut())
        .zip(dhn_rows.iter_mut())
        .map(|(((c, g), gr), dh)| (c, g, gr, dh.take()))
        .collect();
    parallel_for(
        &mut items,
        threads,
        || Scratch::new(dims, len),
        |ws, (ic, g, gr, dh)| {
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

/// One image of the backward: its record, `dy`, its gradients and optionally its `dL/d hn`.
type ImageItem<'a, T> = (
    &'a ImageCache<T>,
    &'a [T],
    &'a mut Grads<T>,
    Option<&'a mut [T]>,
);

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
