//! The layer loop, run by a team of `n` workers in lock-step, each on its share of every step,
//! with a barrier between steps. One worker (`n = 1`, the calling thread, no barrier) is the
//! single-thread forward pass; [`super::threaded`] starts `n − 1` more threads. Both run this
//! code, so the logits are the same bit for bit for any `n` by construction.
//!
//! | step | split |
//! |---|---|
//! | patch embedding | patches (token rows) |
//! | add + RMSNorm | token rows |
//! | `in_proj` | output columns, 16-aligned (whole GEMM panels) |
//! | conv1d + SiLU | channels |
//! | `x_proj` | token rows (its output is only `R + 2N` wide) |
//! | `dt_proj` | output columns (channels) |
//! | scan (+ gate and direction average) | channels, one state per worker |
//! | `out_proj` | output columns |
//!
//! Patch embedding splits by patches (each worker has its own im2col chunk); the final norm and
//! the head (one row) run on the calling thread after the team.
//!
//! The activations are shared between the workers through [`Shared`]: raw views whose
//! disjointness is a property of the schedule (each step writes a buffer no one reads in that
//! step, in disjoint pieces; a barrier separates steps), so this module holds `unsafe` blocks,
//! each with its argument.

use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;

use super::embed::{embed_rows, patch_embed_rows};
use super::options::InferOptions;
use super::profile::{mark, Op, OpTimer};
use super::scratch::Scratch;
use super::weights::{DirWeights, LayerWeights};
use crate::config::VimConfig;
use crate::kernels::dispatch::{
    add_rmsnorm_f32, combine_gate_f32, conv1d_silu_f32, linear_f32, neg_exp_f32, rmsnorm_f32,
    selective_scan_channels_f32,
};
use crate::kernels::generic::NR;
use crate::kernels::{Direction, MatMut, MatRef};
use crate::model::Model;
use crate::scan::{ScanInputs, ScanPlan, ScanWeights};

/// What a worker does at the end of a step: wait for the others (several threads), or nothing
/// (one worker).
pub(super) trait Barrier: Sync {
    /// Returns once every worker has called `wait` for this step.
    fn wait(&self);
}

/// The barrier of a team of one.
pub(super) struct Alone;

impl Barrier for Alone {
    #[inline(always)]
    fn wait(&self) {}
}

/// A worker's private buffers.
pub(super) struct Own<'s> {
    pub(super) a: &'s mut [f32],
    pub(super) h: &'s mut [f32],
    pub(super) panel: &'s mut [f32],
    pub(super) im2col: &'s mut [f32],
}

/// The activation buffers every worker reads and writes pieces of.
struct Activations<'s> {
    residual: Shared<'s>,
    hidden: Shared<'s>,
    xz: Shared<'s>,
    u: Shared<'s>,
    x_dbl: Shared<'s>,
    delta: Shared<'s>,
    acc: Shared<'s>,
}

/// A scratch buffer lent to all workers at once.
struct Shared<'s> {
    ptr: NonNull<f32>,
    len: usize,
    _borrow: PhantomData<&'s mut [f32]>,
}

// SAFETY: `Shared` only hands out views through the `unsafe` methods below, whose callers
// guarantee that no two threads access an element concurrently unless both only read.
unsafe impl Sync for Shared<'_> {}

impl<'s> Shared<'s> {
    fn new(buf: &'s mut [f32]) -> Self {
        Shared {
            len: buf.len(),
            ptr: NonNull::from(buf).cast(),
            _borrow: PhantomData,
        }
    }

    /// The whole buffer, read-only.
    ///
    /// # Safety
    /// No thread may write the buffer while the returned slice is alive.
    unsafe fn read(&self) -> &[f32] {
        // SAFETY: `ptr`/`len` come from a live `&'s mut [f32]`; writes are excluded by the caller.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Columns `cols` of rows `rows` of the buffer viewed with row length `stride`.
    ///
    /// # Safety
    /// No other thread may access these elements while the view is alive.
    unsafe fn write(&self, rows: Range<usize>, cols: Range<usize>, stride: usize) -> MatMut<'_> {
        assert!(cols.start <= cols.end && cols.end <= stride && rows.start <= rows.end);
        assert!(rows.is_empty() || rows.end * stride <= self.len);
        let start = if rows.is_empty() {
            0
        } else {
            rows.start * stride + cols.start
        };
        // SAFETY: the bounds were checked above, so every element of the view lies inside the
        // buffer; exclusivity is the caller's guarantee.
        unsafe {
            MatMut::from_raw(
                NonNull::new_unchecked(self.ptr.as_ptr().add(start)),
                rows.len(),
                cols.len(),
                stride,
            )
        }
    }
}

/// `len` items split into `n` near-equal pieces whose boundaries are multiples of `align`;
/// piece `w`.
fn piece(len: usize, n: usize, w: usize, align: usize) -> Range<usize> {
    let units = len.div_ceil(align);
    let (per, extra) = (units / n, units % n);
    let start = w * per + w.min(extra);
    let end = start + per + usize::from(w < extra);
    (start * align).min(len)..(end * align).min(len)
}

/// What one inference computes: the model, its config, the options and the input image.
#[derive(Clone, Copy)]
pub(super) struct Job<'t, 'm> {
    pub(super) model: &'t Model<'m>,
    pub(super) c: &'t VimConfig,
    pub(super) opts: &'t InferOptions,
    pub(super) input: &'t [f32],
}

/// The workers of one inference and what they share.
pub(super) struct Team<'t, 'm, 's> {
    n: usize,
    barrier: &'t dyn Barrier,
    job: Job<'t, 'm>,
    sh: Activations<'s>,
}

impl<'t, 'm, 's> Team<'t, 'm, 's> {
    /// A team of `n` workers lent the activations of `s`; also returns worker 0's private
    /// buffers (the other workers bring their own). The tensors must have been checked
    /// ([`check_tensors`](super::check_tensors)).
    pub(super) fn new(
        n: usize,
        barrier: &'t dyn Barrier,
        job: Job<'t, 'm>,
        s: &'s mut Scratch<'_>,
    ) -> (Self, Own<'s>) {
        let sh = Activations {
            residual: Shared::new(&mut *s.residual),
            hidden: Shared::new(&mut *s.hidden),
            xz: Shared::new(&mut *s.xz),
            u: Shared::new(&mut *s.u),
            x_dbl: Shared::new(&mut *s.x_dbl),
            delta: Shared::new(&mut *s.delta),
            acc: Shared::new(&mut *s.acc),
        };
        let own = Own {
            a: &mut *s.a,
            h: &mut *s.h,
            panel: &mut *s.panel,
            im2col: &mut *s.im2col,
        };
        (
            Team {
                n,
                barrier,
                job,
                sh,
            },
            own,
        )
    }

    /// Waits until every worker has finished the current step; the worker holding the timer
    /// (the calling thread's) then reports it.
    fn step_done(&self, timer: &mut Option<&mut dyn OpTimer>, op: Op) {
        self.barrier.wait();
        mark(timer, op);
    }

    /// Worker `w`'s part of the patch embedding and every layer; the worker holding the timer
    /// reports each step.
    pub(super) fn work(&self, w: usize, mut own: Own<'_>, timer: &mut Option<&mut dyn OpTimer>) {
        let Job {
            model,
            c,
            opts,
            input,
        } = self.job;
        {
            let patches = piece(c.num_patches(), self.n, w, 1);
            let rows = embed_rows(patches.clone(), c.cls_pos());
            // SAFETY: consecutive patch pieces map to disjoint row ranges; nobody reads hidden
            // in this step.
            let mut hidden = unsafe { self.sh.hidden.write(rows, 0..c.embed_dim, c.embed_dim) };
            // Cannot fail: the tensors were checked before the team started.
            let _ = patch_embed_rows(model, c, input, patches, &mut hidden, own.im2col, own.panel);
        }
        self.step_done(timer, Op::PatchEmbed);
        for i in 0..c.depth {
            // Checked before the team started.
            let Ok(lw) = LayerWeights::load(model, i) else {
                continue;
            };
            let cls_only = opts.cls_only_last_layer && i + 1 == c.depth;
            self.layer(w, &lw, i, cls_only, &mut own, timer);
        }
    }

    /// One block, worker `w`'s share: fused add + RMSNorm, then the bimamba-v2 mixer; leaves
    /// the mixer output in `hidden` (only the cls row when `cls_only`). The barrier count is the
    /// same for every worker.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        w: usize,
        lw: &LayerWeights<'_>,
        layer: usize,
        cls_only: bool,
        own: &mut Own<'_>,
        timer: &mut Option<&mut dyn OpTimer>,
    ) {
        let (c, sh) = (self.job.c, &self.sh);
        let (l, d, e, pos) = (c.seq_len(), c.embed_dim, c.d_inner, c.cls_pos());
        let n = self.n;

        // Add + RMSNorm, by rows.
        {
            let rows = piece(l, n, w, 1);
            // SAFETY: rows are disjoint between workers; no one reads residual/hidden here.
            let (mut res, mut hid) = unsafe {
                (
                    sh.residual.write(rows.clone(), 0..d, d),
                    sh.hidden.write(rows.clone(), 0..d, d),
                )
            };
            for t in 0..rows.len() {
                let (r, h) = (res.row_mut(t), hid.row_mut(t));
                if layer == 0 {
                    r.copy_from_slice(h);
                    rmsnorm_f32(r, lw.norm, c.norm_eps, h);
                } else {
                    add_rmsnorm_f32(r, h, lw.norm, c.norm_eps);
                }
            }
        }
        self.step_done(timer, Op::Norm);

        let (fwd, bwd, emit) = if cls_only {
            (0..pos + 1, pos..l, pos..pos + 1)
        } else {
            (0..l, 0..l, 0..l)
        };

        // in_proj by output columns.
        'in_proj: {
            let cols = piece(2 * e, n, w, NR);
            if cols.is_empty() {
                break 'in_proj;
            }
            // SAFETY: hidden is only read in this step; the xz columns are this worker's.
            let (hidden, mut out) =
                unsafe { (sh.hidden.read(), sh.xz.write(0..l, cols.clone(), 2 * e)) };
            let normed = MatRef::new(hidden, l, d, d);
            linear_f32(normed, &lw.in_proj.rows(cols, d), &mut out, own.panel);
        }
        self.step_done(timer, Op::InProj);

        for (dw, dir, steps) in [
            (&lw.fwd, Direction::Forward, fwd),
            (&lw.bwd, Direction::Backward, bwd),
        ] {
            self.direction(w, dw, dir, steps, emit.clone(), own, timer);
        }

        // out_proj by output columns.
        let cols = piece(d, n, w, NR);
        if !cols.is_empty() {
            // SAFETY: acc is only read in this step; the hidden columns are this worker's.
            let (acc, mut out) = unsafe {
                (
                    sh.acc.read(),
                    sh.hidden.write(emit.clone(), cols.clone(), d),
                )
            };
            let a = MatRef::new(&acc[emit.start * e..emit.end * e], emit.len(), e, e);
            linear_f32(a, &lw.out_proj.rows(cols, e), &mut out, own.panel);
        }
        self.step_done(timer, Op::OutProj);
    }

    /// One scan direction, worker `w`'s share: conv + SiLU, `x_proj` and `dt_proj` over `steps`,
    /// then the scan into `acc` (stores for the forward direction; the backward one adds, then
    /// gates the sum by `silu(z)` and averages it).
    #[allow(clippy::too_many_arguments)]
    fn direction(
        &self,
        w: usize,
        dw: &DirWeights<'_>,
        dir: Direction,
        steps: Range<usize>,
        emit: Range<usize>,
        own: &mut Own<'_>,
        timer: &mut Option<&mut dyn OpTimer>,
    ) {
        let (c, sh) = (self.job.c, &self.sh);
        let (l, e, r, ns) = (c.seq_len(), c.d_inner, c.dt_rank, c.d_state);
        let xr = c.x_proj_rows();
        let k = c.d_conv;
        let ch = piece(e, self.n, w, NR);

        // conv1d + SiLU by channels (a worker may get no channels when n is large).
        if !ch.is_empty() {
            // SAFETY: xz is only read in this step; the u columns are this worker's.
            let (xz, mut u) = unsafe { (sh.xz.read(), sh.u.write(0..l, ch.clone(), e)) };
            let x = MatRef::new(&xz[ch.start..], l, ch.len(), 2 * e);
            conv1d_silu_f32(
                dir,
                x,
                &dw.conv_w[ch.start * k..ch.end * k],
                &dw.conv_b[ch.clone()],
                steps.clone(),
                &mut u,
            );
        }
        self.step_done(timer, Op::Conv1d);

        // x_proj by token rows.
        let p = piece(steps.len(), self.n, w, 1);
        let rows = steps.start + p.start..steps.start + p.end;
        if !rows.is_empty() {
            // SAFETY: u is only read in this step; the x_dbl rows are this worker's.
            let (u, mut out) = unsafe { (sh.u.read(), sh.x_dbl.write(rows.clone(), 0..xr, xr)) };
            let a = MatRef::new(&u[rows.start * e..rows.end * e], rows.len(), e, e);
            linear_f32(a, &dw.x_proj, &mut out, own.panel);
        }
        self.step_done(timer, Op::XProj);

        // dt_proj by output columns (channels).
        if !ch.is_empty() {
            // SAFETY: x_dbl is only read in this step; the delta columns are this worker's.
            let (x_dbl, mut out) = unsafe {
                (
                    sh.x_dbl.read(),
                    sh.delta.write(steps.clone(), ch.clone(), e),
                )
            };
            let dt = MatRef::new(&x_dbl[steps.start * xr..steps.end * xr], steps.len(), r, xr);
            linear_f32(dt, &dw.dt_proj.rows(ch.clone(), r), &mut out, own.panel);
        }
        self.step_done(timer, Op::DtProj);

        // Scan by channels (after the backward one, the sum of the two is gated and averaged).
        if !ch.is_empty() {
            neg_exp_f32(
                &dw.a_log[ch.start * ns..ch.end * ns],
                &mut own.a[ch.start * ns..ch.end * ns],
            );
            let weights = ScanWeights {
                a: &own.a[..e * ns],
                d_skip: dw.d_skip,
                dt_bias: dw.dt_bias,
                dt_rank: r,
                d_state: ns,
            };
            // SAFETY: u, delta, x_dbl and xz are only read in this step; the acc columns are
            // this worker's.
            let (u, delta, x_dbl, xz, mut acc) = unsafe {
                (
                    sh.u.read(),
                    sh.delta.read(),
                    sh.x_dbl.read(),
                    sh.xz.read(),
                    sh.acc.write(0..l, ch.clone(), e),
                )
            };
            let inputs = ScanInputs {
                u: MatRef::new(u, l, e, e),
                delta: MatRef::new(delta, l, e, e),
                x_dbl: MatRef::new(x_dbl, l, xr, xr),
            };
            let backward = dir == Direction::Backward;
            let plan = ScanPlan {
                dir,
                steps,
                emit: emit.clone(),
                accumulate: backward,
            };
            let acc_col0 = ch.start;
            selective_scan_channels_f32(
                &weights,
                &inputs,
                &plan,
                &mut acc,
                acc_col0,
                own.h,
                ch.clone(),
            );
            if backward {
                let z = MatRef::new(&xz[e + ch.start..], l, ch.len(), 2 * e);
                for t in emit {
                    combine_gate_f32(acc.row_mut(t), z.row(t));
                }
            }
        }
        self.step_done(timer, Op::Scan);
    }
}
