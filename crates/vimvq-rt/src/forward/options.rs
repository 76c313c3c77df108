//! [`InferOptions`]: the switches of the forward pass.

/// Switches of [`infer_with`](super::infer_with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InferOptions {
    /// In the last layer, compute only what the cls row needs (only the cls token's row reaches
    /// the head, so the other rows of the last block's output are never read). The logits are
    /// bit-identical either way; `false` runs every row (for tests and debugging).
    pub cls_only_last_layer: bool,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            cls_only_last_layer: true,
        }
    }
}
