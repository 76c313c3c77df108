//! The tensors of one layer, viewed from the model.

use super::error::InferError;
use crate::format::Role;
use crate::kernels::Weight;
use crate::model::Model;

/// Weights of one scan direction.
pub(super) struct DirWeights<'a> {
    pub(super) conv_w: &'a [f32],
    pub(super) conv_b: &'a [f32],
    pub(super) x_proj: Weight<'a>,
    pub(super) dt_proj: Weight<'a>,
    pub(super) dt_bias: &'a [f32],
    pub(super) a_log: &'a [f32],
    pub(super) d_skip: &'a [f32],
}

pub(super) struct LayerWeights<'a> {
    pub(super) norm: &'a [f32],
    pub(super) in_proj: Weight<'a>,
    pub(super) out_proj: Weight<'a>,
    pub(super) fwd: DirWeights<'a>,
    pub(super) bwd: DirWeights<'a>,
}

pub(super) fn dense<'a>(m: &Model<'a>, role: Role, layer: usize) -> Result<&'a [f32], InferError> {
    m.dense(role, layer).ok_or(InferError::MissingTensor(role))
}

pub(super) fn weight<'a>(
    m: &Model<'a>,
    role: Role,
    layer: usize,
) -> Result<Weight<'a>, InferError> {
    m.weight(role, layer).ok_or(InferError::MissingTensor(role))
}

impl<'a> LayerWeights<'a> {
    pub(super) fn load(m: &Model<'a>, i: usize) -> Result<Self, InferError> {
        Ok(LayerWeights {
            norm: dense(m, Role::Norm, i)?,
            in_proj: weight(m, Role::InProj, i)?,
            out_proj: weight(m, Role::OutProj, i)?,
            fwd: DirWeights {
                conv_w: dense(m, Role::ConvW, i)?,
                conv_b: dense(m, Role::ConvB, i)?,
                x_proj: weight(m, Role::XProj, i)?,
                dt_proj: weight(m, Role::DtProjW, i)?,
                dt_bias: dense(m, Role::DtProjB, i)?,
                a_log: dense(m, Role::ALog, i)?,
                d_skip: dense(m, Role::DSkip, i)?,
            },
            bwd: DirWeights {
                conv_w: dense(m, Role::ConvWBack, i)?,
                conv_b: dense(m, Role::ConvBBack, i)?,
                x_proj: weight(m, Role::XProjBack, i)?,
                dt_proj: weight(m, Role::DtProjWBack, i)?,
                dt_bias: dense(m, Role::DtProjBBack, i)?,
                a_log: dense(m, Role::ALogBack, i)?,
                d_skip: dense(m, Role::DSkipBack, i)?,
            },
        })
    }
}
