//! A model in memory, ready for [`super::to_bytes`]: what the packer builds and the writer
//! serialises.

use alloc::string::String;
use alloc::vec::Vec;

use super::role::Role;
use crate::config::{Preprocess, VimConfig};

/// Stored values of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Dense f32, row-major `(rows, cols)`.
    F32(Vec<f32>),
    /// Vector-quantized weight: one codebook of `k` codewords of length `d`, and one index per
    /// sub-vector `W[r, c·d .. (c+1)·d]`, rows padded with zeros to a multiple of `d`.
    Vq {
        /// Codewords, `k × d` row-major.
        codebook: Vec<f32>,
        /// Codewords per codebook.
        k: usize,
        /// Sub-vector length.
        d: usize,
        /// `rows × ceil(cols / d)` indices, row-major, each `< k`.
        indices: Vec<u32>,
        /// Store the codebook as IEEE binary16 (the writer rounds each value to nearest and
        /// rejects one beyond ±65504); `false`: f32.
        codebook_f16: bool,
    },
}

/// One tensor of the model, addressed by its role and block index (0 for globals).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTensor {
    /// What the tensor is.
    pub role: Role,
    /// Block index for per-layer roles, 0 for globals.
    pub layer: usize,
    /// Logical shape `(rows, cols)`, as given by [`Role::shape`].
    pub rows: usize,
    /// See `rows`.
    pub cols: usize,
    /// The values.
    pub data: TensorData,
}

/// A complete model: dimensions, preprocessing, class names and every tensor of the schema.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedModel {
    /// Model dimensions.
    pub config: VimConfig,
    /// Eval transform stored in the file.
    pub preprocess: Preprocess,
    /// Class names (empty or `num_classes` long).
    pub labels: Vec<String>,
    /// Every tensor of the schema, in any order (the writer sorts them canonically).
    pub tensors: Vec<PackedTensor>,
}
