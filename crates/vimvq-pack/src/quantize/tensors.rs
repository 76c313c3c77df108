//! Reading and replacing one tensor of the output model.

use vimvq_rt::format::{PackedModel, PackedTensor, Role, TensorData};

use super::error::QuantError;

/// Tensor `(role, layer)` of `model`, if it has one.
pub(super) fn find(model: &PackedModel, role: Role, layer: usize) -> Option<&PackedTensor> {
    model
        .tensors
        .iter()
        .find(|t| t.role == role && t.layer == layer)
}

/// The data of tensor `(role, layer)` of the output model (missing = a bug).
pub(super) fn tensor(
    model: &PackedModel,
    role: Role,
    layer: usize,
) -> Result<&TensorData, QuantError> {
    find(model, role, layer)
        .map(|t| &t.data)
        .ok_or(QuantError::Internal("output tensor"))
}

/// Replaces the data of tensor `(role, layer)` of `model`.
pub(super) fn replace(
    model: &mut PackedModel,
    role: Role,
    layer: usize,
    data: TensorData,
) -> Result<(), QuantError> {
    let t: &mut PackedTensor = model
        .tensors
        .iter_mut()
        .find(|t| t.role == role && t.layer == layer)
        .ok_or(QuantError::Internal("output tensor"))?;
    t.data = data;
    Ok(())
}
