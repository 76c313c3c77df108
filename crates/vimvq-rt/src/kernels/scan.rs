//! The selective scan of one direction of a bimamba-v2 mixer (docs/RUNTIME.md "Scan"): its
//! operand types and plan. The scalar oracle is [`super::scalar::selective_scan_f32`]
//! (`kernels/scalar.rs`), the vector body is `kernels/scan_simd.rs`. Token-major and flip-free: the
//! backward direction runs `t = L−1 … 0` over the original token order.
//!
//! For every step `t` and channel `e` (with `Δ` already projected by `dt_proj`, bias not added):
//! ```text
//! δ      = softplus(Δ[t][e] + dt_bias[e])            (threshold-20 rule)
//! h[e,n] = exp(δ·A[e,n])·h[e,n] + (δ·u[t][e])·B_t[n]  for n < N, h starts at 0
//! y      = Σ_n h[e,n]·C_t[n]                          (increasing n)
//! out    = y + D[e]·u[t][e]
//! ```
//! where `B_t = x_dbl[t][R .. R+N]`, `C_t = x_dbl[t][R+N .. R+2N]`. The output is stored into
//! (forward) or added to (backward) the accumulator, giving `out_fwd + out_bwd` per position.
//! The gate `silu(z)` is the same for both directions at a position, so the forward pass applies
//! it once to that sum ([`super::scalar::combine_gate_f32`]) instead of in each scan.

use core::ops::Range;

use super::{Direction, MatMut, MatRef};

/// Per-direction parameters of one layer.
#[derive(Clone, Copy, Debug)]
pub struct ScanWeights<'a> {
    /// `A = −exp(A_log)`, `E × N` row-major.
    pub a: &'a [f32],
    /// Skip weights `D`, `E`.
    pub d_skip: &'a [f32],
    /// `dt_proj` bias, `E` (added before softplus).
    pub dt_bias: &'a [f32],
    /// `R`: `B` starts at column `R` of `x_dbl`.
    pub dt_rank: usize,
    /// `N`, the state size per channel.
    pub d_state: usize,
}

/// Activations one direction reads, all indexed by absolute token position `t`.
#[derive(Clone, Copy, Debug)]
pub struct ScanInputs<'a> {
    /// Conv + SiLU output `u`, `L × E`.
    pub u: MatRef<'a>,
    /// `dt_proj(x_dbl[:, :R])` without bias, `L × E`.
    pub delta: MatRef<'a>,
    /// `x_proj(u)` = `dt | B | C`, `L × (R + 2N)`.
    pub x_dbl: MatRef<'a>,
}

/// Which steps to run and which outputs to produce.
#[derive(Clone, Debug)]
pub struct ScanPlan {
    /// Direction of the recurrence.
    pub dir: Direction,
    /// Positions the state visits. Forward steps run `steps.start, …, steps.end − 1` and need
    /// `steps.start == 0`; backward steps run `steps.end − 1, …, steps.start` and need
    /// `steps.end == L` (the state starts at zero at the sequence end).
    pub steps: Range<usize>,
    /// Positions whose output is written (a sub-range of `steps`; e.g. only the cls token in
    /// the last layer). The state is updated at every step regardless.
    pub emit: Range<usize>,
    /// Add to the accumulator (`true`) or overwrite it (`false`).
    pub accumulate: bool,
}

/// The shape and plan checks every whole-width scan makes.
///
/// # Panics
/// If shapes are inconsistent or the plan violates the rules on [`ScanPlan`].
pub(crate) fn check(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &MatMut<'_>,
    h: &[f32],
) {
    let e = x.u.cols();
    let n = w.d_state;
    let l = x.u.rows();
    assert!(w.a.len() == e * n && h.len() == e * n);
    assert!(w.d_skip.len() == e && w.dt_bias.len() == e);
    assert!(x.delta.cols() == e && acc.cols() == e);
    assert!(x.x_dbl.cols() == w.dt_rank + 2 * n);
    assert!(x.delta.rows() >= l && x.x_dbl.rows() >= l && acc.rows() >= l);
    assert!(plan.emit.start >= plan.steps.start && plan.emit.end <= plan.steps.end);
    match plan.dir {
        Direction::Forward => assert!(plan.steps.start == 0 && plan.steps.end <= l),
        Direction::Backward => assert!(plan.steps.end == l),
    }
}

/// The block's `u` and output row of one step.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct OutRow {
    pub u: *const f32,
    pub o: *mut f32,
}

impl OutRow {
    pub(crate) const NULL: OutRow = OutRow {
        u: core::ptr::null(),
        o: core::ptr::null_mut(),
    };
}

/// The output step a tile does instead of leaving `y`: `o = y + D·u`, stored or added to the
/// accumulator row.
#[derive(Clone, Copy)]
pub(crate) struct TileOut {
    /// One row per step.
    pub rows: *const OutRow,
    /// `D` of the block's channels.
    pub d_skip: *const f32,
    /// Add to the output (`true`) or store it.
    pub accumulate: bool,
}

/// One register tile of states over the first `cn` steps of a chunk (the vector scan's unit of
/// work, `kernels/scan_simd.rs`; an ISA may run it with a kernel of its own).
pub(crate) struct Tile {
    /// `A′` rows of the tile's states, `[TS][LANES]`.
    pub a2: *const f32,
    /// State rows of the tile, `[TS][LANES]`, read and written back.
    pub hs: *mut f32,
    /// `δ`, `δ·u` and `y` of the chunk, `[CHUNK][LANES]` each.
    pub dt: *const f32,
    pub du: *const f32,
    pub y: *mut f32,
    /// `B_t | C_t` row of each step.
    pub bc: *const *const f32,
    /// Index of the tile's first state in those rows.
    pub bc0: usize,
    /// `N`: `C_t` starts `N` values after `B_t`.
    pub n: usize,
    /// Steps to run (≥ 1).
    pub cn: usize,
    /// The first tile stores `y`; later ones add to it.
    pub first: bool,
    /// The `exp` constants of `scan_simd::exp2_v` (its `Consts`).
    pub kc: *const f32,
    /// Set on the chunk's last tile when every step is emitted for a full block: the tile
    /// writes the outputs instead of `y`.
    pub out: Option<TileOut>,
}
