//! `vimvq-rt`: Vision Mamba inference over packed `.vimvq` models.
//!
//! `#![no_std]` and allocation-free: the caller owns the model bytes, the input, the logits and a
//! scratch buffer (see [`VimConfig::scratch_bytes`]). The `alloc` feature adds the `.vimvq`
//! writer ([`format::to_bytes`]); the `std` feature (default, implies `alloc`) adds memory-mapped
//! loading, threads and `std::error::Error` impls.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod config;
pub mod context;
pub mod format;
pub mod forward;
pub mod frame;
pub mod kernels;
pub mod model;
pub mod preprocess;
pub use kernels::scan;

pub use config::{ConfigError, Interpolation, Preprocess, VimConfig};
