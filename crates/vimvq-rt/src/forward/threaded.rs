//! Multi-threaded inference ([`infer_threaded`]): one image, `n` scoped worker threads that run
//! the layer loop of [`super::team`] in lock-step, with a spinning barrier between steps. No
//! allocation after the threads start, no thread pool, no rayon. With one thread no thread is
//! started and no barrier is used; either way every output value is computed by the same code,
//! so the logits are bit-identical for any thread count.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::team::{Barrier, Job, Own, Team};
use super::*;

/// [`infer_with`] on `threads` threads (the calling one included): same logits, bit for bit.
/// `scratch` holds at least [`VimConfig::scratch_bytes_threaded`]`(threads)` bytes. `threads`
/// of 0 or 1 runs [`infer_with`] on the calling thread. Spawns `threads − 1` scoped threads per
/// call (the only allocations, by the standard library's thread start); the layers run without
/// any.
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

/// Runs the team of `threads ≥ 2` workers: worker 0 on the calling thread with the buffers of
/// `s`, the others on scoped threads with private buffers carved from `extra` (the scratch
/// after [`VimConfig::scratch_bytes`]). `None` if `extra` is too short.
pub(super) fn run(
    job: Job<'_, '_>,
    threads: usize,
    s: &mut Scratch<'_>,
    extra: &mut [u8],
    timer: &mut Option<&mut dyn OpTimer>,
) -> Option<()> {
    // Every extra worker's buffers, carved before any thread starts (a failure after a spawn
    // would leave that worker waiting at the first barrier).
    let lens = buffer_lens(job.c);
    let own_lens = [lens[BUF_A], lens[BUF_H], lens[BUF_PANEL], lens[BUF_IM2COL]];
    let per_worker: usize = own_lens.iter().sum();
    let (_, lines, _) = bytemuck::pod_align_to_mut::<u8, Line>(extra);
    let floats: &mut [f32] = bytemuck::cast_slice_mut(lines);
    let extra = floats.get_mut(..per_worker * (threads - 1))?;
    let barrier = SpinBarrier::new(threads);
    let (team, own) = Team::new(threads, &barrier, job, s);
    std::thread::scope(|scope| {
        for (w, bufs) in extra.chunks_exact_mut(per_worker).enumerate() {
            let (a, rest) = bufs.split_at_mut(own_lens[0]);
            let (h, rest) = rest.split_at_mut(own_lens[1]);
            let (panel, im2col) = rest.split_at_mut(own_lens[2]);
            let own = Own {
                a,
                h,
                panel,
                im2col,
            };
            let (team, barrier) = (&team, &barrier);
            scope.spawn(move || {
                let _guard = PoisonOnPanic(barrier);
                team.work(w + 1, own, &mut None)
            });
        }
        let _guard = PoisonOnPanic(&barrier);
        team.work(0, own, timer);
    });
    Some(())
}

/// Sense-counting barrier: spins briefly, then yields (the cores may be shared).
struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    fn new(n: usize) -> Self {
        SpinBarrier {
            n,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }
}

impl Barrier for SpinBarrier {
    fn wait(&self) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == gen {
            assert!(
                !self.poisoned.load(Ordering::Relaxed),
                "another inference worker panicked"
            );
            if spins < 256 {
                spins += 1;
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Marks the barrier poisoned if its worker unwinds, so the others stop waiting.
struct PoisonOnPanic<'b>(&'b SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Relaxed);
        }
    }
}
