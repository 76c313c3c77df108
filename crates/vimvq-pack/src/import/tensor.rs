//! What an import produces: host tensors, the checkpoint that holds them, and the size caps
//! every reader enforces.

use std::collections::BTreeMap;

/// Most tensors in one state dict.
pub const MAX_TENSORS: usize = 100_000;
/// Most elements in one tensor (2^28, 1 GiB of f32; Vim-B's largest tensor has 2.4 M).
pub const MAX_TENSOR_ELEMS: u64 = 1 << 28;
/// Most elements over all loaded tensors (2^30, 4 GiB of f32; Vim-B has 98 M).
pub const MAX_TOTAL_ELEMS: u64 = 1 << 30;

/// A dense tensor on the host, converted to f32, row-major, in its torch shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Torch shape, e.g. `[D, C, p, p]` for the patch embedding.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// The tensors of one state dict and the checkpoint's metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// State-dict name (without any `module.` prefix) → tensor.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Text metadata. safetensors: `__metadata__` verbatim (the bundled models use `img_size`,
    /// `resize`, `crop`, `interpolation`, `mean`, `std`, `channels`, `labels`). `.pth`:
    /// `epoch`, every scalar field of `args` as `args.<name>`, and `img_size`, `resize`,
    /// `model`, `num_classes` derived from hustvl's `args`.
    pub meta: BTreeMap<String, String>,
}
