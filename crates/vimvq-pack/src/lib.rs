//! `vimvq-pack`: checkpoint import, ViM-VQ quantization and the `.vimvq` writer.

pub mod calib;
pub mod format;
pub mod import;
pub mod output;
pub mod quantize;
pub mod vq;
