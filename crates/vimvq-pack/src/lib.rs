//! `vimvq-pack`: checkpoint import, ViM-VQ quantization, and writing `.vimvq` files safely (`output`).

pub mod calib;
pub mod import;
pub mod output;
pub mod quantize;
pub mod rng;
pub mod vq;
