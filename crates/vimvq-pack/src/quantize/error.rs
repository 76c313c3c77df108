//! [`QuantError`]: why quantization failed.

use vimvq_rt::format::Role;

use crate::calib::CalibError;
use crate::vq::VqError;

/// Why quantization failed. Messages are one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// Invalid options.
    #[error("{0}")]
    Options(String),
    /// Invalid quantizer settings.
    #[error("{0}")]
    Vq(VqError),
    /// The worker thread pool could not be started.
    #[error("cannot start {threads} worker threads: {msg}")]
    Threads {
        /// Threads asked for (0 = all cores).
        threads: usize,
        /// Details.
        msg: String,
    },
    /// No calibration images.
    #[error("no calibration images")]
    NoCalibration,
    /// A calibration image of the wrong size or with non-finite values.
    #[error("calibration image {index}: {msg}")]
    BadImage {
        /// Position in the calibration list.
        index: usize,
        /// Details.
        msg: String,
    },
    /// The input model is not a complete all-f32 model.
    #[error("input model: {0}")]
    Model(String),
    /// A mixer could not be assembled.
    #[error("block {block}: {source}")]
    Block {
        /// Block index.
        block: usize,
        /// Cause.
        source: CalibError,
    },
    /// A layer could not be quantized.
    #[error("layers.{block}.{name}: {source}")]
    Layer {
        /// Block index.
        block: usize,
        /// Torch name of the layer within the block.
        name: &'static str,
        /// Cause.
        source: VqError,
    },
    /// The block objective produced a non-finite loss.
    #[error("block {block}: the calibration loss became non-finite at step {step}; lower the learning rates")]
    Diverged {
        /// Block index.
        block: usize,
        /// Step.
        step: usize,
    },
    /// The saved state of a resumable run cannot be used or written (the message names the file
    /// and what to do).
    #[error("{0}")]
    Resume(String),
    /// Global fine-tuning produced a non-finite loss.
    #[error(
        "fine-tuning: the KL loss became non-finite at step {step}; use fewer --finetune-steps"
    )]
    FinetuneDiverged {
        /// Step.
        step: usize,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl QuantError {
    pub(super) fn layer(block: usize, role: Role, source: VqError) -> Self {
        QuantError::Layer {
            block,
            name: role.torch_name(),
            source,
        }
    }
}
