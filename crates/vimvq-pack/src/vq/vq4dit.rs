//! VQ4DiT baseline (docs/QUANTIZATION.md): the FCCO machinery with a fixed hull of the 2
//! nearest codewords (no replacement), no incremental confirmation, and one-shot argmax hardening
//! after the last step. Same codebook initialisation, learning rates, regulariser weight and step
//! budget as ViM-VQ, so only the method differs. Run it with [`super::train::FccoSettings::VQ4DIT`]
//! (block and layer objective), which applies these settings.

/// Hull size of VQ4DiT.
pub const HULL: usize = 2;
/// Hull update period of VQ4DiT: never.
pub const HULL_EVERY: usize = 0;
/// VQ4DiT has no incremental confirmation.
pub const IVQ: bool = false;
