//! The f32 forward pass of a Vim classifier (patch embedding, `depth` bidirectional Mamba blocks,
//! final norm, head on the cls token; token-major, flip-free), allocation-free.
//!
//! ```text
//! tokens  = im2col(image) · W_patchᵀ + b            (P × D), cls token inserted at P/2, + pos_embed
//! layer i: residual (+)= hidden; hidden = RMSNorm_i(residual)
//!          x | z = hidden · W_inᵀ;  g = silu(z)
//!          per direction (forward: causal conv, scan t = 0…; backward: anti-causal, t = L−1…):
//!            u = silu(conv1d(x));  dt|B|C = u · W_xᵀ;  Δ = dt · W_dtᵀ;  acc ±= scan(u, Δ, B, C) · g
//!          hidden = (acc / 2) · W_outᵀ
//! logits  = RMSNorm_f(residual + hidden)[P/2] · W_headᵀ + b_head
//! ```
//! By default the last layer only computes what the cls row needs (conv/projections for the
//! tokens each scan visits, scans stopped at the cls position, `out_proj` and the final norm on
//! the cls row only); the result is bit-identical to the full computation
//! ([`InferOptions::cls_only_last_layer`]).
//!
//! The patch embedding and the layers are written once, in `forward/team.rs`, as the share of
//! worker `w` of `n`: [`infer`] runs that team with one worker on the calling thread,
//! `infer_threaded` (`std`) with `n`, so both give the same logits by construction. The final
//! norm and the head run on the calling thread. Most callers want [`crate::context`], which adds
//! frame conversion, preprocessing and top-k.

use core::fmt;
use core::ops::Range;

use bytemuck::{Pod, Zeroable};

use crate::config::VimConfig;
use crate::format::Role;
// Every kernel goes through the dispatched table (kernels/dispatch.rs); same signatures as the
// scalar oracle's.
use crate::kernels::dispatch::{
    add_rmsnorm_f32, conv1d_silu_f32, gemv_f32, linear_f32, rmsnorm_f32, scratch_len,
    silu_inplace_f32,
};
use crate::kernels::scalar::{add_bias_f32, neg_exp_f32};
use crate::kernels::{Direction, MatMut, MatRef, Weight};
use crate::model::Model;
use crate::scan::{ScanInputs, ScanPlan, ScanWeights};

mod team;
#[cfg(feature = "std")]
mod threaded;
#[cfg(feature = "std")]
pub use threaded::{infer_threaded, infer_threaded_profiled};

use team::{Alone, Job, Team};

/// Patch tokens embedded per im2col chunk (bounds the im2col buffer).
pub const PATCH_CHUNK: usize = 16;

/// f32 values per 64-byte line; every scratch buffer starts on a line.
const LINE: usize = 16;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([f32; LINE]);

/// Number of scratch buffers.
const NBUF: usize = 11;
/// Indices into [`buffer_lens`] of the per-worker buffers.
const BUF_A: usize = 7;
const BUF_H: usize = 8;
const BUF_PANEL: usize = 9;
const BUF_IM2COL: usize = 10;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// f32 counts of the scratch buffers (see [`Scratch`]), each rounded up to whole lines.
/// Saturates instead of overflowing.
const fn buffer_lens(c: &VimConfig) -> [usize; NBUF] {
    let l = c.seq_len();
    let (d, e, n) = (c.embed_dim, c.d_inner, c.d_state);
    let x = c.x_proj_rows();
    let max_cols = max(max(c.patch_len(), d), max(e, c.dt_rank));
    let raw = [
        l.saturating_mul(d),                       // residual
        l.saturating_mul(d),                       // hidden
        l.saturating_mul(e).saturating_mul(2),     // xz
        l.saturating_mul(e),                       // u
        l.saturating_mul(x),                       // x_dbl
        l.saturating_mul(e),                       // delta
        l.saturating_mul(e),                       // acc
        e.saturating_mul(n),                       // A
        e.saturating_mul(n),                       // h
        scratch_len(max_cols),                     // packed GEMM / VQ panel, VQ GEMV table
        PATCH_CHUNK.saturating_mul(c.patch_len()), // im2col
    ];
    let mut out = [0usize; NBUF];
    let mut i = 0;
    while i < NBUF {
        out[i] = raw[i].saturating_add(LINE - 1) / LINE * LINE;
        i += 1;
    }
    out
}

impl VimConfig {
    /// Bytes of scratch memory [`infer`] needs for this model, including up to 63 bytes of slack
    /// to align the buffer internally to 64 bytes. A `const fn`, so an application can size a
    /// `static` arena. Returns `usize::MAX` for a config that fails [`VimConfig::check`] or whose
    /// buffers do not fit the address space.
    ///
    /// For one image: `4·(2·L·D + 2·L·E + 3·L·E + L·(R+2N) + 2·E·N + 16·max(C·p², D, E, R) +
    /// 16·C·p²)` bytes, each buffer rounded up to 64 bytes, plus 63.
    pub const fn scratch_bytes(&self) -> usize {
        if self.check().is_err() {
            return usize::MAX;
        }
        let lens = buffer_lens(self);
        let mut total: usize = 0;
        let mut i = 0;
        while i < NBUF {
            total = total.saturating_add(lens[i]);
            i += 1;
        }
        if total > (usize::MAX - 63) / 4 {
            return usize::MAX;
        }
        total * 4 + 63
    }

    /// Bytes of scratch memory [`infer_threaded`] needs with `threads` workers:
    /// [`scratch_bytes`](Self::scratch_bytes) plus, per extra worker, its own GEMM panel, scan
    /// state and im2col chunk (`4·(16·max(C·p², D, E, R) + 2·E·N + 16·C·p²)` bytes, rounded to
    /// 64-byte lines) and 63 bytes of alignment slack. Equals
    /// `scratch_bytes()` for `threads ≤ 1`; `usize::MAX` when it does not fit.
    pub const fn scratch_bytes_threaded(&self, threads: usize) -> usize {
        let base = self.scratch_bytes();
        if base == usize::MAX || threads <= 1 {
            return base;
        }
        let lens = buffer_lens(self);
        let worker =
            (lens[BUF_A] + lens[BUF_H] + lens[BUF_PANEL] + lens[BUF_IM2COL]).saturating_mul(4);
        match worker.checked_mul(threads - 1) {
            Some(extra) => base.saturating_add(63).saturating_add(extra),
            None => usize::MAX,
        }
    }
}

/// Switches of [`infer_with`].
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

/// The operations [`infer_profiled`] reports to an [`OpTimer`] (the `ops_ms` keys of
/// `vimvq bench`, docs/CLI.md).
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

/// Per-op profiling callback of [`infer_profiled`]. The runtime has no clock: the caller keeps
/// one. `op_done(op)` is called right after each step of the forward pass; the time elapsed since
/// the previous call (or, for the first, since the caller invoked [`infer_profiled`]) belongs to
/// `op`, so the per-op sums cover the whole call. Called from the calling thread only, never
/// allocates on the runtime's side. [`infer`] and [`infer_with`] make no such calls.
pub trait OpTimer {
    /// `op` has just finished.
    fn op_done(&mut self, op: Op);
}

/// Why [`infer`] refused to run. It never panics on bad buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InferError {
    /// `input.len()` is not `C·H·W`.
    InputLength {
        /// [`VimConfig::input_len`].
        expected: usize,
        /// Given.
        actual: usize,
    },
    /// `logits.len()` is not `num_classes`.
    LogitsLength {
        /// `num_classes`.
        expected: usize,
        /// Given.
        actual: usize,
    },
    /// `scratch` is shorter than [`Model::scratch_bytes`].
    ScratchTooSmall {
        /// Needed bytes.
        needed: usize,
        /// Given bytes.
        actual: usize,
    },
    /// A tensor the schema guarantees could not be viewed (not reachable with a model from
    /// [`Model::parse`]).
    MissingTensor(Role),
    /// A [`Features`] buffer does not hold `D` (pooled) or `L·D` (tokens) values.
    FeaturesLength {
        /// `D` or `L·D`.
        expected: usize,
        /// Given.
        actual: usize,
    },
}

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            InferError::InputLength { expected, actual } => {
                write!(
                    f,
                    "input has {actual} values, the model takes {expected} (C·H·W)"
                )
            }
            InferError::LogitsLength { expected, actual } => {
                write!(
                    f,
                    "logits buffer has {actual} values, the model has {expected} classes"
                )
            }
            InferError::ScratchTooSmall { needed, actual } => {
                write!(
                    f,
                    "scratch buffer has {actual} bytes, inference needs {needed}"
                )
            }
            InferError::MissingTensor(r) => {
                write!(f, "model has no usable {} tensor", r.torch_name())
            }
            InferError::FeaturesLength { expected, actual } => {
                write!(
                    f,
                    "features buffer has {actual} values, the model gives {expected}"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InferError {}

/// The scratch buffers, carved from the caller's bytes.
struct Scratch<'s> {
    residual: &'s mut [f32],
    hidden: &'s mut [f32],
    xz: &'s mut [f32],
    u: &'s mut [f32],
    x_dbl: &'s mut [f32],
    delta: &'s mut [f32],
    acc: &'s mut [f32],
    a: &'s mut [f32],
    h: &'s mut [f32],
    panel: &'s mut [f32],
    im2col: &'s mut [f32],
}

impl<'s> Scratch<'s> {
    fn carve(c: &VimConfig, bytes: &'s mut [u8]) -> Option<Self> {
        let (_, lines, _) = bytemuck::pod_align_to_mut::<u8, Line>(bytes);
        let mut rest: &'s mut [f32] = bytemuck::cast_slice_mut(lines);
        let mut bufs: [&'s mut [f32]; NBUF] = Default::default();
        for (buf, len) in bufs.iter_mut().zip(buffer_lens(c)) {
            if rest.len() < len {
                return None;
            }
            let (head, tail) = core::mem::take(&mut rest).split_at_mut(len);
            *buf = head;
            rest = tail;
        }
        let [residual, hidden, xz, u, x_dbl, delta, acc, a, h, panel, im2col] = bufs;
        Some(Scratch {
            residual,
            hidden,
            xz,
            u,
            x_dbl,
            delta,
            acc,
            a,
            h,
            panel,
            im2col,
        })
    }
}

/// Weights of one scan direction.
struct DirWeights<'a> {
    conv_w: &'a [f32],
    conv_b: &'a [f32],
    x_proj: Weight<'a>,
    dt_proj: Weight<'a>,
    dt_bias: &'a [f32],
    a_log: &'a [f32],
    d_skip: &'a [f32],
}

struct LayerWeights<'a> {
    norm: &'a [f32],
    in_proj: Weight<'a>,
    out_proj: Weight<'a>,
    fwd: DirWeights<'a>,
    bwd: DirWeights<'a>,
}

fn dense<'a>(m: &Model<'a>, role: Role, layer: usize) -> Result<&'a [f32], InferError> {
    m.dense(role, layer).ok_or(InferError::MissingTensor(role))
}

fn weight<'a>(m: &Model<'a>, role: Role, layer: usize) -> Result<Weight<'a>, InferError> {
    m.weight(role, layer).ok_or(InferError::MissingTensor(role))
}

impl<'a> LayerWeights<'a> {
    fn load(m: &Model<'a>, i: usize) -> Result<Self, InferError> {
        Ok(LayerWeights {
            norm: dense(m, Role::Norm, i)?,
            in_proj: weight(m, Role::InProj, i)?,
            out_proj: weight(m, Role::OutProj, i)?,
            fwd: DirWeights {
                conv_w: dense(m, Role::ConvW, i)?,
                conv_b: dense(m, Role::ConvB, i)?,
                x_proj: weight(m, Role::XProj, i)?,
                dt_proj: weight(m, Role::DtProjW, i)?,
                dt_bias: dense(m, Role::DtProjB, i)?,
                a_log: dense(m, Role::ALog, i)?,
                d_skip: dense(m, Role::DSkip, i)?,
            },
            bwd: DirWeights {
                conv_w: dense(m, Role::ConvWBack, i)?,
                conv_b: dense(m, Role::ConvBBack, i)?,
                x_proj: weight(m, Role::XProjBack, i)?,
                dt_proj: weight(m, Role::DtProjWBack, i)?,
                dt_bias: dense(m, Role::DtProjBBack, i)?,
                a_log: dense(m, Role::ALogBack, i)?,
                d_skip: dense(m, Role::DSkipBack, i)?,
            },
        })
    }
}

/// Runs the classifier on one normalised CHW image: `input` holds [`VimConfig::input_len`]
/// values, `logits` receives `num_classes`, `scratch` holds at least [`Model::scratch_bytes`]
/// bytes (any alignment). Performs no heap allocation.
pub fn infer(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    scratch: &mut [u8],
) -> Result<(), InferError> {
    infer_with(model, input, logits, scratch, &InferOptions::default())
}

/// [`infer`] with explicit [`InferOptions`].
pub fn infer_with(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    scratch: &mut [u8],
    opts: &InferOptions,
) -> Result<(), InferError> {
    infer_impl(model, input, logits, scratch, opts, 1, None)
}

/// [`infer_with`] that reports each step to `timer` ([`OpTimer::op_done`]); same results bit for
/// bit. `vimvq bench` uses it for its per-op breakdown.
pub fn infer_profiled(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    scratch: &mut [u8],
    opts: &InferOptions,
    timer: &mut dyn OpTimer,
) -> Result<(), InferError> {
    infer_impl(model, input, logits, scratch, opts, 1, Some(timer))
}

/// Calls `t.op_done(op)` when profiling; nothing otherwise.
#[inline(always)]
fn mark(t: &mut Option<&mut dyn OpTimer>, op: Op) {
    if let Some(t) = t {
        t.op_done(op);
    }
}

/// The forward pass on `threads` workers (0 counts as 1; more than one only with `std`): the
/// team runs patch embedding and every layer, then the calling thread the final norm and head.
pub(crate) fn infer_impl(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    scratch: &mut [u8],
    opts: &InferOptions,
    threads: usize,
    mut timer: Option<&mut dyn OpTimer>,
) -> Result<(), InferError> {
    infer_outputs(
        model,
        input,
        logits,
        Features::default(),
        scratch,
        opts,
        threads,
        &mut timer,
    )
}

/// The network's outputs besides the logits, written by [`infer_features`] into the caller's
/// buffers. Both are what the head reads: the final hidden states after `norm_f`.
#[derive(Debug, Default)]
pub struct Features<'o> {
    /// `D` values: the pooled feature vector the head consumes — the normalised cls token,
    /// what the reference model's `forward_features` returns.
    pub pooled: Option<&'o mut [f32]>,
    /// `L·D` values, token-major: every token's final hidden state after `norm_f`, the cls
    /// token at [`VimConfig::cls_pos`]. Asking for them runs the last layer on every row.
    pub tokens: Option<&'o mut [f32]>,
}

/// [`infer_threaded`] (or [`infer`] for `threads ≤ 1`) that also writes `features`; the logits
/// are bit-identical, and the pooled features too whether or not the tokens are asked for.
/// `logits = pooled · W_headᵀ + b_head`. `scratch` holds at least
/// [`VimConfig::scratch_bytes_threaded`]`(threads)` bytes.
pub fn infer_features(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    features: Features<'_>,
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), InferError> {
    let opts = InferOptions {
        cls_only_last_layer: features.tokens.is_none(),
    };
    infer_outputs(
        model, input, logits, features, scratch, &opts, threads, &mut None,
    )
}

/// The forward pass behind every entry point; see [`infer_impl`].
#[allow(clippy::too_many_arguments)]
fn infer_outputs(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    mut features: Features<'_>,
    scratch: &mut [u8],
    opts: &InferOptions,
    threads: usize,
    timer: &mut Option<&mut dyn OpTimer>,
) -> Result<(), InferError> {
    let c = *model.config();
    let (needed, actual) = (c.scratch_bytes_threaded(threads), scratch.len());
    check_buffers(&c, input, logits, actual, needed)?;
    check_features(&c, &features)?;
    check_tensors(model, &c)?;
    let too_small = InferError::ScratchTooSmall { needed, actual };
    let (main, extra) = scratch.split_at_mut(c.scratch_bytes());
    let mut s = Scratch::carve(&c, main).ok_or(too_small)?;
    let job = Job {
        model,
        c: &c,
        opts,
        input,
    };
    #[cfg(feature = "std")]
    if threads > 1 {
        threaded::run(job, threads, &mut s, extra, timer).ok_or(too_small)?;
    } else {
        let (team, own) = Team::new(1, &Alone, job, &mut s);
        team.work(0, own, timer);
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = extra;
        let (team, own) = Team::new(1, &Alone, job, &mut s);
        team.work(0, own, timer);
    }
    head(model, &c, opts, &mut s, logits, timer)?;
    let (d, pos) = (c.embed_dim, c.cls_pos());
    if let Some(f) = features.pooled.as_deref_mut() {
        f.copy_from_slice(&s.hidden[pos * d..(pos + 1) * d]);
    }
    if let Some(t) = features.tokens.as_deref_mut() {
        t.copy_from_slice(&s.hidden[..c.seq_len() * d]);
    }
    Ok(())
}

/// Checks the [`Features`] buffers' lengths against the model.
fn check_features(c: &VimConfig, f: &Features<'_>) -> Result<(), InferError> {
    let want = [c.embed_dim, c.seq_len().saturating_mul(c.embed_dim)];
    for (buf, expected) in [f.pooled.as_deref(), f.tokens.as_deref()]
        .into_iter()
        .zip(want)
    {
        match buf {
            Some(b) if b.len() != expected => {
                return Err(InferError::FeaturesLength {
                    expected,
                    actual: b.len(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Views every tensor the layer loop uses, so that the team (which cannot report errors
/// mid-step) never meets a missing one.
fn check_tensors(model: &Model<'_>, c: &VimConfig) -> Result<(), InferError> {
    for i in 0..c.depth {
        LayerWeights::load(model, i)?;
    }
    for role in [Role::PatchBias, Role::ClsToken, Role::PosEmbed] {
        dense(model, role, 0)?;
    }
    weight(model, Role::PatchWeight, 0).map(|_| ())
}

/// Checks the caller's buffers against the model.
fn check_buffers(
    c: &VimConfig,
    input: &[f32],
    logits: &[f32],
    scratch_len: usize,
    needed: usize,
) -> Result<(), InferError> {
    if input.len() != c.input_len() {
        return Err(InferError::InputLength {
            expected: c.input_len(),
            actual: input.len(),
        });
    }
    if logits.len() != c.num_classes {
        return Err(InferError::LogitsLength {
            expected: c.num_classes,
            actual: logits.len(),
        });
    }
    if scratch_len < needed {
        return Err(InferError::ScratchTooSmall {
            needed,
            actual: scratch_len,
        });
    }
    Ok(())
}

/// Final fused add + `norm_f`, then the head on the cls row → `logits`.
fn head(
    model: &Model<'_>,
    c: &VimConfig,
    opts: &InferOptions,
    s: &mut Scratch<'_>,
    logits: &mut [f32],
    timer: &mut Option<&mut dyn OpTimer>,
) -> Result<(), InferError> {
    let (l, d, pos) = (c.seq_len(), c.embed_dim, c.cls_pos());
    let norm_f = dense(model, Role::NormF, 0)?;
    let rows = if opts.cls_only_last_layer {
        pos..pos + 1
    } else {
        0..l
    };
    for t in rows {
        add_rmsnorm_f32(
            &mut s.residual[t * d..(t + 1) * d],
            &mut s.hidden[t * d..(t + 1) * d],
            norm_f,
            c.norm_eps,
        );
    }
    mark(timer, Op::Norm);
    let head = weight(model, Role::HeadWeight, 0)?;
    gemv_f32(&s.hidden[pos * d..(pos + 1) * d], &head, logits, s.panel);
    for (o, b) in logits.iter_mut().zip(dense(model, Role::HeadBias, 0)?) {
        *o += b;
    }
    mark(timer, Op::Head);
    Ok(())
}

/// Token rows that patches `patches` occupy, plus the cls row when the range reaches it: patches
/// before the cls position keep their index, the others move up by one, and the range that
/// starts at or contains the cls position owns its row. Consecutive patch ranges give
/// consecutive row ranges, and `0..P` gives `0..L`.
fn embed_rows(patches: Range<usize>, pos: usize) -> Range<usize> {
    let row = |k: usize| k + usize::from(k > pos);
    row(patches.start)..row(patches.end)
}

/// Patch embedding (im2col GEMM in chunks + bias), middle cls token and position embedding of
/// the rows [`embed_rows`]`(patches)`; `hidden` views exactly those rows.
fn patch_embed_rows(
    model: &Model<'_>,
    c: &VimConfig,
    input: &[f32],
    patches: Range<usize>,
    hidden: &mut MatMut<'_>,
    im2col: &mut [f32],
    panel: &mut [f32],
) -> Result<(), InferError> {
    let (d, g, p, stride, img) = (c.embed_dim, c.grid(), c.patch, c.stride, c.img_size);
    let (pl, pos) = (c.patch_len(), c.cls_pos());
    let w = weight(model, Role::PatchWeight, 0)?;
    let bias = dense(model, Role::PatchBias, 0)?;
    let rows = embed_rows(patches.clone(), pos);
    let r0 = rows.start;
    let mut k0 = patches.start;
    while k0 < patches.end {
        let k1 = (k0 + PATCH_CHUNK).min(patches.end);
        // Patch k is grid cell (k / g, k % g), flattened in (channel, row, col) order.
        for k in k0..k1 {
            let (gy, gx) = (k / g, k % g);
            let dst = &mut im2col[(k - k0) * pl..(k - k0 + 1) * pl];
            for ch in 0..c.channels {
                for py in 0..p {
                    let src = ch * img * img + (gy * stride + py) * img + gx * stride;
                    let o = (ch * p + py) * p;
                    dst[o..o + p].copy_from_slice(&input[src..src + p]);
                }
            }
        }
        let pieces = [(k0, k1.min(pos), 0), (k0.max(pos), k1, 1)];
        for (a, b, shift) in pieces {
            if a >= b {
                continue;
            }
            let at = MatRef::new(&im2col[(a - k0) * pl..(b - k0) * pl], b - a, pl, pl);
            let mut out = hidden.reborrow().sub(a + shift - r0..b + shift - r0, 0..d);
            linear_f32(at, &w, &mut out, panel);
            add_bias_f32(&mut out, bias);
        }
        k0 = k1;
    }
    let (cls, pe) = (
        dense(model, Role::ClsToken, 0)?,
        dense(model, Role::PosEmbed, 0)?,
    );
    for t in rows {
        let h = hidden.row_mut(t - r0);
        if t == pos {
            h.copy_from_slice(cls);
        }
        for (x, e) in h.iter_mut().zip(&pe[t * d..(t + 1) * d]) {
            *x += e;
        }
    }
    Ok(())
}
