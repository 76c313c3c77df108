//! `vimvq-pack`: checkpoint import, ViM-VQ quantization and the `.vimvq` writer.

pub mod format;
pub mod import;
