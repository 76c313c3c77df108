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

use crate::config::VimConfig;
use crate::format::Role;
// Every kernel goes through the dispatched table (kernels/dispatch.rs); same signatures as the
// scalar oracle's.
use crate::kernels::dispatch::{add_rmsnorm_f32, gemv_f32};
use crate::model::Model;

mod embed;
mod error;
mod options;
mod profile;
mod scratch;
mod team;
#[cfg(feature = "std")]
mod threaded;
mod weights;

pub use error::InferError;
pub use options::InferOptions;
pub use profile::{Op, OpTimer};
pub use scratch::PATCH_CHUNK;

use profile::mark;
use scratch::Scratch;
use team::{Alone, Job, Team};
use weights::{dense, weight, LayerWeights};

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

/// [`infer_with`] on `threads` threads (the calling one included): same logits, bit for bit.
/// `scratch` holds at least [`VimConfig::scratch_bytes_threaded`]`(threads)` bytes. `threads`
/// of 0 or 1 runs [`infer_with`] on the calling thread. Spawns `threads − 1` scoped threads per
/// call (the only allocations, by the standard library's thread start); the layers run without
/// any.
#[cfg(feature = "std")]
pub fn infer_threaded(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    scratch: &mut [u8],
    opts: &InferOptions,
    threads: usize,
) -> Result<(), InferError> {
    infer_impl(model, input, logits, scratch, opts, threads, None)
}

/// [`infer_threaded`] that reports each step to `timer` like [`infer_profiled`]: the calling
/// thread reports a step once every worker has finished it, so the times are wall-clock
/// times of the parallel steps.
#[cfg(feature = "std")]
pub fn infer_threaded_profiled(
    model: &Model<'_>,
    input: &[f32],
    logits: &mut [f32],
    scratch: &mut [u8],
    opts: &InferOptions,
    threads: usize,
    timer: &mut dyn OpTimer,
) -> Result<(), InferError> {
    infer_impl(model, input, logits, scratch, opts, threads, Some(timer))
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
