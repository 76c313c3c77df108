//! The selective scan of one direction of a bimamba-v2 mixer, token-major and
//! flip-free: the backward direction runs `t = L−1 … 0` over the original token order.
//!
//! For every step `t` and channel `e` (with `Δ` already projected by `dt_proj`, bias not added):
//! ```text
//! δ      = softplus(Δ[t][e] + dt_bias[e])            (threshold-20 rule)
//! h[e,n] = exp(δ·A[e,n])·h[e,n] + (δ·u[t][e])·B_t[n]  for n < N, h starts at 0
//! y      = Σ_n h[e,n]·C_t[n]                          (increasing n)
//! out    = (y + D[e]·u[t][e]) · gate[t][e]            (gate = silu(z), same position t)
//! ```
//! where `B_t = x_dbl[t][R .. R+N]`, `C_t = x_dbl[t][R+N .. R+2N]`. The output is stored into
//! (forward) or added to (backward) the accumulator, giving `out_fwd + out_bwd` per position.

use core::ops::Range;

use crate::kernels::scalar::softplus_f32;
use crate::kernels::{Direction, MatMut, MatRef};

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
    /// `silu(z)`, `L × E`.
    pub gate: MatRef<'a>,
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

/// Runs one direction of the selective scan; `h` is the `E × N` state (overwritten).
///
/// Every output is computed by the same sequence of f32 operations whatever `steps`/`emit` are,
/// so restricting them (the last-layer shortcut) leaves the emitted values bit-identical.
///
/// # Panics
/// If shapes are inconsistent or the plan violates the rules on [`ScanPlan`].
pub fn selective_scan_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    h: &mut [f32],
) {
    let e = x.u.cols();
    let n = w.d_state;
    let l = x.u.rows();
    assert!(w.a.len() == e * n && h.len() == e * n);
    assert!(w.d_skip.len() == e && w.dt_bias.len() == e);
    assert!(x.delta.cols() == e && x.gate.cols() == e && acc.cols() == e);
    assert!(x.x_dbl.cols() == w.dt_rank + 2 * n);
    assert!(x.delta.rows() >= l && x.x_dbl.rows() >= l && x.gate.rows() >= l && acc.rows() >= l);
    assert!(plan.emit.start >= plan.steps.start && plan.emit.end <= plan.steps.end);
    match plan.dir {
        Direction::Forward => assert!(plan.steps.start == 0 && plan.steps.end <= l),
        Direction::Backward => assert!(plan.steps.end == l),
    }
    selective_scan_channels_f32(w, x, plan, acc, 0, h, 0..e);
}

/// [`selective_scan_f32`] restricted to the channels `ch` (the scan is independent per
/// channel; threads split it this way): `h` holds at least `ch.len() · N` values (the state of
/// those channels), and the output of channel `e` goes to column `e − acc_col0` of `acc`.
/// Bit-identical to the corresponding columns of the whole-width scan.
///
/// # Panics
/// If shapes are inconsistent or the plan violates the rules on [`ScanPlan`].
pub fn selective_scan_channels_f32(
    w: &ScanWeights<'_>,
    x: &ScanInputs<'_>,
    plan: &ScanPlan,
    acc: &mut MatMut<'_>,
    acc_col0: usize,
    h: &mut [f32],
    ch: Range<usize>,
) {
    let n = w.d_state;
    let nc = ch.len();
    assert!(h.len() >= nc * n && ch.end <= x.u.cols() && w.a.len() >= ch.end * n);
    assert!(ch.start >= acc_col0 && ch.end - acc_col0 <= acc.cols());
    let h = &mut h[..nc * n];
    h.fill(0.0);
    let ch0 = ch.start;
    let mut step = |t: usize| {
        let xd = x.x_dbl.row(t);
        let b = &xd[w.dt_rank..w.dt_rank + n];
        let c = &xd[w.dt_rank + n..w.dt_rank + 2 * n];
        let (u, delta, gate) = (x.u.row(t), x.delta.row(t), x.gate.row(t));
        let emit = plan.emit.contains(&t);
        let out = acc.row_mut(t);
        for ch in ch.clone() {
            let dt = softplus_f32(delta[ch] + w.dt_bias[ch]);
            let uu = u[ch];
            let du = dt * uu;
            let hs = &mut h[(ch - ch0) * n..(ch - ch0 + 1) * n];
            let ar = &w.a[ch * n..(ch + 1) * n];
            if !emit {
                for i in 0..n {
                    hs[i] = libm::expf(dt * ar[i]) * hs[i] + du * b[i];
                }
            } else {
                let mut y = 0f32;
                for i in 0..n {
                    let hn = libm::expf(dt * ar[i]) * hs[i] + du * b[i];
                    hs[i] = hn;
                    y += hn * c[i];
                }
                let o = (y + w.d_skip[ch] * uu) * gate[ch];
                if plan.accumulate {
                    out[ch - acc_col0] += o;
                } else {
                    out[ch - acc_col0] = o;
                }
            }
        }
    };
    match plan.dir {
        Direction::Forward => plan.steps.clone().for_each(&mut step),
        Direction::Backward => plan.steps.clone().rev().for_each(&mut step),
    }
}
