//! [`ProgressEvent`]: what a quantization run reports as it goes, and the run's [`Eta`].

/// Progress of [`quantize`](super::quantize), for progress bars.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressEvent {
    /// A resumed run continues after `done` of `count` blocks restored from its saved state.
    Resumed {
        /// Blocks restored.
        done: usize,
        /// Blocks in the model.
        count: usize,
    },
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
        /// Wall time of the unit, seconds.
        seconds: f64,
        /// Where the whole run stands.
        eta: Eta,
    },
}

/// Cost of one fine-tuning step per block, in block-objective optimiser steps (measured on the
/// 24-layer Vim-Ti's default pack: 1.5; with 1.3 its ETA was 16 % short).
const FINETUNE_STEP_BLOCKS: f64 = 1.5;

/// Where a run stands after a block: blocks done, time spent, time left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eta {
    /// Blocks finished (restored ones included).
    pub done: usize,
    /// Blocks in the model.
    pub total: usize,
    /// Seconds since this process started quantizing.
    pub elapsed: f64,
    /// Estimated seconds until the run is done: the blocks left, then the fine-tuning stage.
    pub remaining: f64,
}

/// What the fine-tuning stage after the blocks will cost, for [`Eta::after_blocks`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinetuneCost {
    /// Steps of the stage.
    pub steps: usize,
    /// Measured seconds of one block-objective optimiser step (forward and backward of one
    /// block on one minibatch), 0 when no block trained with steps.
    pub block_step_seconds: f64,
}

impl Eta {
    /// The run's ETA after `block_seconds.len()` finished blocks (their wall times) of `total`:
    /// the mean block time so far × the blocks left, plus the fine-tuning stage, one step of
    /// which costs about `FINETUNE_STEP_BLOCKS` block-objective steps per block (a forward, a
    /// recomputed forward and a backward through every block).
    pub fn after_blocks(
        block_seconds: &[f64],
        total: usize,
        elapsed: f64,
        finetune: FinetuneCost,
    ) -> Self {
        let done = block_seconds.len();
        let mean = block_seconds.iter().sum::<f64>() / done.max(1) as f64;
        let stage = finetune.steps as f64
            * total as f64
            * FINETUNE_STEP_BLOCKS
            * finetune.block_step_seconds;
        Eta {
            done,
            total,
            elapsed,
            remaining: mean * total.saturating_sub(done) as f64 + stage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_the_mean_block_time_times_the_blocks_left() {
        let none = FinetuneCost {
            steps: 0,
            block_step_seconds: 0.5,
        };
        let e = Eta::after_blocks(&[2.0, 4.0], 5, 7.5, none);
        assert_eq!((e.done, e.total, e.elapsed, e.remaining), (2, 5, 7.5, 9.0));
        assert_eq!(Eta::after_blocks(&[3.0; 4], 4, 12.0, none).remaining, 0.0);
        assert_eq!(Eta::after_blocks(&[], 4, 0.0, none).remaining, 0.0);
        // 10 fine-tuning steps over 4 blocks at 0.5 s per block step: 10 · 4 · 1.5 · 0.5 = 30 s.
        let ft = FinetuneCost {
            steps: 10,
            block_step_seconds: 0.5,
        };
        assert!((Eta::after_blocks(&[3.0; 4], 4, 12.0, ft).remaining - 30.0).abs() < 1e-9);
    }
}
