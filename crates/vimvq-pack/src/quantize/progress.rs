//! [`ProgressEvent`]: what a quantization run reports as it goes.

/// Progress of [`quantize`](super::quantize), for progress bars.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressEvent {
    /// A unit of work starts: a block (block objective) or a layer.
    Start {
        /// `block 2` or a tensor name.
        unit: String,
        /// 0-based index of the unit.
        index: usize,
        /// Number of units.
        count: usize,
        /// Optimiser steps the unit will take (0 for one-shot methods).
        steps: usize,
    },
    /// One optimiser step of the current unit is done.
    Step {
        /// Steps done.
        step: usize,
        /// Step budget.
        steps: usize,
        /// Minibatch reconstruction loss before the step.
        loss: f64,
        /// Confirmed fraction of the unit's sub-vectors after the step.
        confirmed: f64,
    },
    /// One step of the global fine-tuning stage (after every block) is done.
    FinetuneStep {
        /// Steps done.
        step: usize,
        /// Step budget.
        steps: usize,
        /// Minibatch KL(f32 ‖ quantized) before the step.
        loss: f64,
    },
    /// The current unit is done.
    Done {
        /// As in `Start`.
        unit: String,
        /// Final hard loss (block: relative block MSE on all calibration images; layer: its
        /// relative output error).
        loss: f64,
    },
}
