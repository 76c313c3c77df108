//! The inference context: a model, the caller's scratch and a preprocessing plan, ready to
//! classify frames of one size and format (or already-normalised tensors) again and again.
//! `no_std` and allocation-free; with `std` it runs each inference on the thread count chosen at
//! construction. The C API, `vimvq run`/`eval`/`stream` and the packer's calibration all go
//! through it, so a frame becomes the same logits and the same top-k everywhere.
//!
//! ```text
//! frame ─(I420 → RGB24)─► Resize → CenterCrop → Normalize ─► tensor ─► forward ─► logits ─► top-k
//!         frame::i420_to_rgb24    preprocess::Plan                    forward::infer…   top_k
//! ```
//!
//! # Scratch
//! [`Context::scratch_bytes`] bytes (any alignment), carved into 64-byte-aligned pieces, in this
//! order: the RGB24 conversion of an I420 frame, the preprocessing scratch, the input tensor,
//! the logits and the forward pass's scratch for the thread count. A [`Input::Tensor`] context
//! has only the last two.
//!
//! # Top-k order
//! [`top_k`]: classes by descending logit — the order of the softmax probabilities, which are
//! a monotone function of the logits — with ties to the lower class index and NaN logits last.
//! Probabilities are `exp(l − max) / Σ exp(l − max)` computed in f64 (max over the non-NaN
//! logits) and rounded to f32.

use core::fmt;

use crate::forward::Features;
use crate::frame::{self, FrameError, FrameFormat};
use crate::model::Model;
use crate::preprocess::{ImageRef, PixelFormat, Plan, PreprocessError};
use crate::{forward, Preprocess, VimConfig};

/// Alignment of every scratch piece.
const ALIGN: usize = 64;

/// What a context classifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Raw frames of one size and format, preprocessed with the model's stored transform.
    Frame {
        /// Pixel layout ([`crate::frame`]).
        format: FrameFormat,
        /// Pixels per row.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// Already-normalised CHW tensors of [`VimConfig::input_len`] values only.
    Tensor,
}

/// One entry of a top-k list; the C API's `vimvq_top` (hence `repr(C)` and the `u32` index).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Top {
    /// Class index.
    pub class_index: u32,
    /// Softmax probability.
    pub prob: f32,
}

const _: () = assert!(core::mem::size_of::<Top>() == 8);

/// Why a context could not be built or could not classify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// The model's input channel count is neither 1 nor 3.
    Channels(usize),
    /// The scratch buffer, or a buffer size, does not fit: sizes overflow the address space.
    TooLarge,
    /// The preprocessing output does not match the model input.
    PlanMismatch {
        /// Values the stored transform yields.
        yields: usize,
        /// Values the network takes.
        takes: usize,
    },
    /// More than one thread asked for without the `std` feature.
    Threads(usize),
    /// A frame given to a [`Input::Tensor`] context.
    NotAFrameContext,
    /// The scratch buffer is shorter than [`Context::scratch_bytes`].
    ScratchTooSmall {
        /// Needed bytes.
        needed: usize,
        /// Given bytes.
        actual: usize,
    },
    /// The frame has the wrong length for its size and format.
    Frame(FrameError),
    /// Preprocessing refused the size or the stored transform.
    Preprocess(PreprocessError),
    /// The forward pass refused its buffers.
    Infer(forward::InferError),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ContextError::Channels(n) => {
                write!(f, "models with {n} input channels are not supported")
            }
            ContextError::TooLarge => write!(f, "model dimensions too large for this machine"),
            ContextError::PlanMismatch { yields, takes } => {
                write!(
                    f,
                    "preprocessing yields {yields} values, the model takes {takes}"
                )
            }
            ContextError::Threads(n) => {
                write!(f, "{n} threads asked for, this build runs one")
            }
            ContextError::NotAFrameContext => {
                write!(f, "this context takes tensors, not frames")
            }
            ContextError::ScratchTooSmall { needed, actual } => {
                write!(f, "scratch holds {actual} bytes, {needed} needed")
            }
            ContextError::Frame(e) => e.fmt(f),
            ContextError::Preprocess(e) => e.fmt(f),
            ContextError::Infer(e) => write!(f, "inference failed: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ContextError {}

impl From<FrameError> for ContextError {
    fn from(e: FrameError) -> Self {
        ContextError::Frame(e)
    }
}

impl From<PreprocessError> for ContextError {
    fn from(e: PreprocessError) -> Self {
        ContextError::Preprocess(e)
    }
}

impl From<forward::InferError> for ContextError {
    fn from(e: forward::InferError) -> Self {
        ContextError::Infer(e)
    }
}

/// `n` rounded up to [`ALIGN`], or `None` on overflow.
fn round_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// Splits the first `n` bytes off `rest`, advancing it by `n` rounded up to [`ALIGN`].
fn take<'s>(rest: &mut &'s mut [u8], n: usize) -> &'s mut [u8] {
    let step = round_up(n).unwrap_or(usize::MAX).min(rest.len());
    let (head, tail) = core::mem::take(rest).split_at_mut(step);
    *rest = tail;
    &mut head[..n.min(step)]
}

/// `n` f32 values from a 64-byte-aligned piece of at least `4·n` bytes.
fn floats(bytes: &mut [u8], n: usize) -> &mut [f32] {
    &mut bytemuck::cast_slice_mut(&mut bytes[..4 * n])[..n]
}

/// The frame → normalised tensor stage of a [`Context`]: I420 conversion (if any) and the
/// stored transform for one frame size and format. Usable alone (the packer's calibration
/// images have no model file yet).
#[derive(Clone, Debug)]
pub struct FramePlan {
    format: FrameFormat,
    width: usize,
    height: usize,
    frame_bytes: usize,
    plan: Plan,
    /// Byte sizes of the RGB conversion and of the preprocessing scratch.
    pieces: [usize; 2],
}

impl FramePlan {
    /// Plans `p` for `width × height` frames in `format`, for a network with config `c`.
    pub fn new(
        p: &Preprocess,
        c: &VimConfig,
        format: FrameFormat,
        width: usize,
        height: usize,
    ) -> Result<FramePlan, ContextError> {
        if c.channels != 1 && c.channels != 3 {
            return Err(ContextError::Channels(c.channels));
        }
        let frame_bytes = frame::frame_len(format, width, height).ok_or(FrameError::BadSize)?;
        let (pixels, rgb) = match format {
            FrameFormat::Rgb24 => (PixelFormat::Rgb8, 0),
            FrameFormat::Gray8 => (PixelFormat::L8, 0),
            FrameFormat::I420 => (PixelFormat::Rgb8, {
                frame::rgb24_len(width, height).ok_or(FrameError::BadSize)?
            }),
        };
        let plan = Plan::new(width, height, pixels, p, c.channels)?;
        if plan.output_len() != c.input_len() {
            return Err(ContextError::PlanMismatch {
                yields: plan.output_len(),
                takes: c.input_len(),
            });
        }
        let pieces = [rgb, plan.scratch_bytes()];
        Ok(FramePlan {
            format,
            width,
            height,
            frame_bytes,
            plan,
            pieces,
        })
    }

    /// Bytes of one frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Scratch bytes [`FramePlan::run`] needs, including the slack to align it internally.
    pub fn scratch_bytes(&self) -> Option<usize> {
        let mut total = ALIGN - 1;
        for n in self.pieces {
            total = total.checked_add(round_up(n)?)?;
        }
        Some(total)
    }

    /// Preprocesses one `frame` into the normalised tensor `out` ([`VimConfig::input_len`]
    /// values), using `scratch` (at least [`FramePlan::scratch_bytes`] bytes, any alignment).
    pub fn run(
        &self,
        frame: &[u8],
        out: &mut [f32],
        scratch: &mut [u8],
    ) -> Result<(), ContextError> {
        let needed = self.scratch_bytes().ok_or(ContextError::TooLarge)?;
        if scratch.len() < needed {
            return Err(ContextError::ScratchTooSmall {
                needed,
                actual: scratch.len(),
            });
        }
        let pad = scratch.as_ptr().align_offset(ALIGN).min(ALIGN - 1);
        let mut rest = &mut scratch[pad..];
        let rgb = take(&mut rest, self.pieces[0]);
        let pre = take(&mut rest, self.pieces[1]);
        self.run_in(frame, out, rgb, pre)
    }

    /// [`FramePlan::run`] with the scratch already carved.
    fn run_in(
        &self,
        frame: &[u8],
        out: &mut [f32],
        rgb: &mut [u8],
        pre: &mut [u8],
    ) -> Result<(), ContextError> {
        if frame.len() != self.frame_bytes {
            return Err(FrameError::BadFrameLength {
                expected: self.frame_bytes,
                got: frame.len(),
            }
            .into());
        }
        let (data, format) = match self.format {
            FrameFormat::Rgb24 => (frame, PixelFormat::Rgb8),
            FrameFormat::Gray8 => (frame, PixelFormat::L8),
            FrameFormat::I420 => {
                frame::i420_to_rgb24(frame, self.width, self.height, rgb)?;
                (&*rgb, PixelFormat::Rgb8)
            }
        };
        let img = ImageRef {
            data,
            width: self.width,
            height: self.height,
            format,
        };
        Ok(self.plan.run(&img, out, pre)?)
    }
}

/// A model with its scratch and preprocessing plan: classifies frames or tensors into the
/// caller's buffers without allocating (see the module documentation).
pub struct Context<'m, 's> {
    model: Model<'m>,
    threads: usize,
    frame: Option<FramePlan>,
    rgb: &'s mut [u8],
    pre: &'s mut [u8],
    tensor: &'s mut [f32],
    logits: &'s mut [f32],
    infer: &'s mut [u8],
}

/// The frame plan (for frame inputs) and the byte sizes of the five scratch pieces.
fn layout(
    model: &Model<'_>,
    input: Input,
    threads: usize,
) -> Result<(Option<FramePlan>, [usize; 5]), ContextError> {
    let c = model.config();
    if c.channels != 1 && c.channels != 3 {
        return Err(ContextError::Channels(c.channels));
    }
    if threads > 1 && cfg!(not(feature = "std")) {
        return Err(ContextError::Threads(threads));
    }
    let infer = c.scratch_bytes_threaded(threads);
    if infer == usize::MAX {
        return Err(ContextError::TooLarge);
    }
    let logits = c.num_classes.checked_mul(4).ok_or(ContextError::TooLarge)?;
    Ok(match input {
        Input::Tensor => (None, [0, 0, 0, logits, infer]),
        Input::Frame {
            format,
            width,
            height,
        } => {
            let fp = FramePlan::new(model.preprocess(), c, format, width, height)?;
            let tensor = c.input_len().checked_mul(4).ok_or(ContextError::TooLarge)?;
            let [rgb, pre] = fp.pieces;
            (Some(fp), [rgb, pre, tensor, logits, infer])
        }
    })
}

impl<'m, 's> Context<'m, 's> {
    /// Scratch bytes a context for `model`, `input` and `threads` needs (any alignment; includes
    /// the slack to align internally).
    pub fn scratch_bytes(
        model: &Model<'_>,
        input: Input,
        threads: usize,
    ) -> Result<usize, ContextError> {
        let (_, sizes) = layout(model, input, threads)?;
        let mut total = ALIGN - 1;
        for n in sizes {
            total = round_up(n)
                .and_then(|n| total.checked_add(n))
                .ok_or(ContextError::TooLarge)?;
        }
        Ok(total)
    }

    /// A context that classifies `input` with `model` on `threads` threads (0 counts as 1; more
    /// than 1 needs the `std` feature), in `scratch` (at least [`Context::scratch_bytes`] bytes).
    pub fn new(
        model: Model<'m>,
        input: Input,
        threads: usize,
        scratch: &'s mut [u8],
    ) -> Result<Self, ContextError> {
        let threads = threads.max(1);
        let needed = Self::scratch_bytes(&model, input, threads)?;
        if scratch.len() < needed {
            return Err(ContextError::ScratchTooSmall {
                needed,
                actual: scratch.len(),
            });
        }
        let (frame, [rgb_n, pre_n, tensor_n, logits_n, infer_n]) = layout(&model, input, threads)?;
        let pad = scratch.as_ptr().align_offset(ALIGN).min(ALIGN - 1);
        let mut rest = &mut scratch[pad..];
        let rgb = take(&mut rest, rgb_n);
        let pre = take(&mut rest, pre_n);
        let tensor = floats(take(&mut rest, tensor_n), tensor_n / 4);
        let logits = floats(take(&mut rest, logits_n), logits_n / 4);
        let infer = take(&mut rest, infer_n);
        Ok(Context {
            model,
            threads,
            frame,
            rgb,
            pre,
            tensor,
            logits,
            infer,
        })
    }

    /// The model.
    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    /// Bytes one frame must hold (0 for a tensor context).
    pub fn frame_bytes(&self) -> usize {
        self.frame.as_ref().map_or(0, FramePlan::frame_bytes)
    }

    /// Preprocesses and classifies one frame of the context's size and format: the logits go
    /// to [`Context::logits`], the best `min(top.len(), num_classes)` classes to `top`
    /// ([`top_k`]'s order). Returns the number of `top` entries written.
    pub fn classify(&mut self, frame: &[u8], top: &mut [Top]) -> Result<usize, ContextError> {
        self.classify_features(frame, top, Features::default())
    }

    /// [`Context::classify`] that also writes the [`Features`] asked for (the pooled vector of
    /// `D` values, the `L·D` token states) into the caller's buffers; same logits and top-k.
    pub fn classify_features(
        &mut self,
        frame: &[u8],
        top: &mut [Top],
        features: Features<'_>,
    ) -> Result<usize, ContextError> {
        let fp = self.frame.as_ref().ok_or(ContextError::NotAFrameContext)?;
        fp.run_in(frame, self.tensor, self.rgb, self.pre)?;
        self.forward(None, features)?;
        Ok(top_k(self.logits, top))
    }

    /// Classifies one already-normalised CHW tensor ([`VimConfig::input_len`] values) like
    /// [`Context::classify`].
    pub fn classify_tensor(&mut self, x: &[f32], top: &mut [Top]) -> Result<usize, ContextError> {
        self.classify_tensor_features(x, top, Features::default())
    }

    /// [`Context::classify_tensor`] with [`Features`] like [`Context::classify_features`].
    pub fn classify_tensor_features(
        &mut self,
        x: &[f32],
        top: &mut [Top],
        features: Features<'_>,
    ) -> Result<usize, ContextError> {
        self.forward(Some(x), features)?;
        Ok(top_k(self.logits, top))
    }

    /// The logits of the last classification (`num_classes` values).
    pub fn logits(&self) -> &[f32] {
        self.logits
    }

    /// The network on `x`, or on the preprocessed frame in `self.tensor`.
    fn forward(&mut self, x: Option<&[f32]>, features: Features<'_>) -> Result<(), ContextError> {
        let input = x.unwrap_or(self.tensor);
        forward::infer_features(
            &self.model,
            input,
            self.logits,
            features,
            self.infer,
            self.threads,
        )?;
        Ok(())
    }
}

/// True if class `a` ranks before class `b`: larger logit, NaN last, ties to the lower index.
fn before(l: &[f32], a: usize, b: usize) -> bool {
    let (x, y) = (l[a], l[b]);
    match (x.is_nan(), y.is_nan()) {
        (true, true) => a < b,
        (true, false) => false,
        (false, true) => true,
        _ => match y.total_cmp(&x) {
            core::cmp::Ordering::Less => true,
            core::cmp::Ordering::Greater => false,
            core::cmp::Ordering::Equal => a < b,
        },
    }
}

/// The best `min(out.len(), logits.len())` classes of `logits` with their softmax
/// probabilities, best first (the module's top-k order), into `out`; returns how many were
/// written. No allocation: an insertion into the sorted prefix of `out`.
pub fn top_k(logits: &[f32], out: &mut [Top]) -> usize {
    let k = out.len().min(logits.len());
    let mut filled = 0;
    for i in 0..logits.len() {
        if filled == k && (k == 0 || !before(logits, i, out[k - 1].class_index as usize)) {
            continue;
        }
        // Position of `i` among the kept classes; the last one drops out when full.
        let mut at = filled.min(k - 1);
        while at > 0 && before(logits, i, out[at - 1].class_index as usize) {
            out[at] = out[at - 1];
            at -= 1;
        }
        out[at].class_index = i as u32;
        filled = (filled + 1).min(k);
    }
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| libm::exp(v as f64 - max)).sum();
    for t in &mut out[..k] {
        t.prob = (libm::exp(logits[t.class_index as usize] as f64 - max) / sum) as f32;
    }
    k
}
