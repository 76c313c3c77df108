//! Block-wise calibration: hand-written forward and backward of one Vim (bimamba-v2) mixer.
//!
//! The ViM-VQ block objective (docs/QUANTIZATION.md) calibrates one block at a time: the input
//! is the block's normalised input `hn = RMSNorm_i(residual)` (the norm is frozen, so it is computed
//! once by the caller), the output is the mixer output, and the loss is the relative MSE against the
//! f32 block ([`rel_mse`]). The gradients w.r.t. the six linear weights and the two Δ biases
//! ([`TRAINABLE_ROLES`]) are written by hand:
//!
//! * [`ops`]: each operator (linear, depthwise conv causal/anti-causal, SiLU, softplus, selective
//!   scan, gate/combine) with its backward and a naive oracle;
//! * [`params`]: the mixer's dimensions and tensors ([`BlockDims`], [`BlockParams`]);
//! * [`grads`]: the gradients of the trainable tensors ([`Grads`]);
//! * [`cache`]: what the forward records for the backward ([`Cache`]);
//! * [`pass`]: [`forward`] (records a [`Cache`]) and [`backward`] composing the ops, parallel
//!   over the batch on the current rayon pool, and the loss [`rel_mse`].
//! * [`model`]: the whole body and head end to end (global fine-tuning): [`model::model_forward`]
//!   with gradient checkpointing, [`model::model_backward`] chaining [`backward_with_input`]
//!   through the norms and the residual stream, the KL loss and the codebook gradient.
//!
//! Everything is generic over [`Float`] (`f32` for calibration, `f64` for gradient checks).
//!
//! ```
//! use vimvq_pack::calib::{backward, forward, rel_mse, BlockDims, BlockParams, Cache};
//! let dims = BlockDims { d_model: 8, d_inner: 16, dt_rank: 1, d_state: 4, d_conv: 4 };
//! let target = BlockParams::<f32>::random_vim_like(dims, 1);
//! let params = BlockParams::<f32>::random_vim_like(dims, 2);
//! let (len, batch) = (5, 2);
//! let hn: Vec<f32> = (0..batch * len * 8).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut cache = Cache::new();
//! let y_ref = forward(&target, &hn, len, &mut cache);
//! let y = forward(&params, &hn, len, &mut cache);
//! let mut dy = vec![0.0; y.len()];
//! let loss = rel_mse(&y, &y_ref, Some(&mut dy));
//! let grads = backward(&params, &mut cache, &dy);
//! assert!(loss > 0.0 && grads.in_proj.iter().any(|g| *g != 0.0));
//! ```

pub mod cache;
pub mod float;
pub mod grads;
pub mod model;
pub mod ops;
pub mod params;
pub mod pass;

#[cfg(test)]
mod tests;

pub use cache::Cache;
pub use float::Float;
pub use grads::{DirGrads, Grads};
pub use params::{BlockDims, BlockParams, CalibError, DirParams, MIXER_ROLES, TRAINABLE_ROLES};
pub use pass::{backward, backward_with_input, forward, rel_mse};
