//! Per-op profiling: the [`Op`]s of the forward pass and the [`OpTimer`] that receives them.

/// The operations [`infer_profiled`](super::infer_profiled) reports to an [`OpTimer`] (the `ops_ms`
/// keys of `vimvq bench`, docs/CLI.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// im2col + patch GEMM + bias, cls token, position embedding.
    PatchEmbed,
    /// Every fused residual add + RMSNorm (per layer and the final `norm_f`).
    Norm,
    /// `in_proj` GEMM.
    InProj,
    /// Depthwise causal / anti-causal conv1d + SiLU (both directions).
    Conv1d,
    /// `x_proj` GEMM (both directions).
    XProj,
    /// `dt_proj` GEMM (both directions).
    DtProj,
    /// Selective scan with softplus, `A = −exp(A_log)`, D skip and the SiLU(z) gate.
    Scan,
    /// Direction average + `out_proj` GEMM.
    OutProj,
    /// Classifier head GEMV + bias.
    Head,
}

impl Op {
    /// Every op, in pipeline order.
    pub const ALL: [Op; 9] = [
        Op::PatchEmbed,
        Op::Norm,
        Op::InProj,
        Op::Conv1d,
        Op::XProj,
        Op::DtProj,
        Op::Scan,
        Op::OutProj,
        Op::Head,
    ];

    /// The snake_case name used in `vimvq bench` JSON (`patch_embed`, `in_proj`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Op::PatchEmbed => "patch_embed",
            Op::Norm => "norm",
            Op::InProj => "in_proj",
            Op::Conv1d => "conv1d",
            Op::XProj => "x_proj",
            Op::DtProj => "dt_proj",
            Op::Scan => "scan",
            Op::OutProj => "out_proj",
            Op::Head => "head",
        }
    }
}

/// Per-op profiling callback of [`infer_profiled`](super::infer_profiled). The runtime has no
/// clock: the caller keeps one. `op_done(op)` is called right after each step of the forward pass;
/// the time elapsed since the previous call (or, for the first, since the caller invoked
/// [`infer_profiled`](super::infer_profiled)) belongs to `op`, so the per-op sums cover the whole
/// call. Called from the calling thread only, never allocates on the runtime's side.
/// [`infer`](super::infer) and [`infer_with`](super::infer_with) make no such calls.
pub trait OpTimer {
    /// `op` has just finished.
    fn op_done(&mut self, op: Op);
}

/// Calls `t.op_done(op)` when profiling; nothing otherwise.
#[inline(always)]
pub(super) fn mark(t: &mut Option<&mut dyn OpTimer>, op: Op) {
    if let Some(t) = t {
        t.op_done(op);
    }
}
