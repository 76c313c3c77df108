//! Gradients of the block loss w.r.t. the trainable tensors ([`Grads`], [`DirGrads`]).

use vimvq_rt::format::Role;

use super::float::Float;
use super::params::BlockDims;

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

    pub(super) fn fill_zero(&mut self) {
        for t in self.tensors_mut() {
            t.fill(T::ZERO);
        }
    }

    pub(super) fn add_assign(&mut self, other: &Grads<T>) {
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
