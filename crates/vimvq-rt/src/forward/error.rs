//! [`InferError`]: why the forward pass refused to run.

use core::fmt;

use crate::format::Role;

/// Why [`infer`](super::infer) refused to run. It never panics on bad buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InferError {
    /// `input.len()` is not `C·H·W`.
    InputLength {
        /// [`VimConfig::input_len`](crate::VimConfig::input_len).
        expected: usize,
        /// Given.
        actual: usize,
    },
    /// `logits.len()` is not `num_classes`.
    LogitsLength {
        /// `num_classes`.
        expected: usize,
        /// Given.
        actual: usize,
    },
    /// `scratch` is shorter than [`Model::scratch_bytes`](crate::model::Model::scratch_bytes).
    ScratchTooSmall {
        /// Needed bytes.
        needed: usize,
        /// Given bytes.
        actual: usize,
    },
    /// A tensor the schema guarantees could not be viewed (not reachable with a model from
    /// [`Model::parse`](crate::model::Model::parse)).
    MissingTensor(Role),
    /// A [`Features`](super::Features) buffer does not hold `D` (pooled) or `L·D` (tokens) values.
    FeaturesLength {
        /// `D` or `L·D`.
        expected: usize,
        /// Given.
        actual: usize,
    },
}

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            InferError::InputLength { expected, actual } => {
                write!(
                    f,
                    "input has {actual} values, the model takes {expected} (C·H·W)"
                )
            }
            InferError::LogitsLength { expected, actual } => {
                write!(
                    f,
                    "logits buffer has {actual} values, the model has {expected} classes"
                )
            }
            InferError::ScratchTooSmall { needed, actual } => {
                write!(
                    f,
                    "scratch buffer has {actual} bytes, inference needs {needed}"
                )
            }
            InferError::MissingTensor(r) => {
                write!(f, "model has no usable {} tensor", r.torch_name())
            }
            InferError::FeaturesLength { expected, actual } => {
                write!(
                    f,
                    "features buffer has {actual} values, the model gives {expected}"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InferError {}
