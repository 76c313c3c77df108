//! The parameters of one mixer: its dimensions ([`BlockDims`]), tensors ([`BlockParams`],
//! [`DirParams`]), role lists ([`MIXER_ROLES`], [`TRAINABLE_ROLES`]) and assembly errors
//! ([`CalibError`]).

use std::fmt;

use vimvq_rt::format::Role;
use vimvq_rt::VimConfig;

use super::float::Float;
use crate::rng::SplitMix64;

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
        let mut rng = SplitMix64::new(seed ^ 0x5eed_cafe_f00d_d00d);
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
                .map(|_| T::from_f64(bound * (2.0 * rng.next_f64() - 1.0)))
                .collect();
            let dt_proj_b = (0..e)
                .map(|_| {
                    let dt = (1e-3f64.ln() + rng.next_f64() * (0.1f64.ln() - 1e-3f64.ln())).exp();
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
