//! `Model::parse`, `infer` and the inference context (frames and tensors) perform zero heap
//! allocations and zero frees: proven under a counting `#[global_allocator]` on the real fixtures
//! (f32, 8-bit and 16-bit VQ indices).
//!
//! Only the thread that "arms" the counter is counted, so the test harness's own threads
//! cannot disturb the result.

mod fixtures;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vimvq_rt::context::{Context, ContextError, Input, Top};
use vimvq_rt::format::AlignedBytes;
use vimvq_rt::forward::{infer, infer_with, InferError, InferOptions};
use vimvq_rt::frame::{frame_len, FrameFormat};
use vimvq_rt::model::{Model, ParseOptions};

struct Counting;

thread_local! {
    // Per-thread, so tests running in parallel on other threads never touch our counts.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static FREES: Cell<usize> = const { Cell::new(0) };
}

/// Counts one event on this thread if counting is armed here.
fn bump(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

fn read(counter: &'static std::thread::LocalKey<Cell<usize>>) -> usize {
    counter.with(Cell::get)
}

// SAFETY: forwards every call unchanged to `System`; the counters and the flag are thread-locals
// with const initialisers and no destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump(&ALLOCS);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        bump(&ALLOCS);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        bump(&FREES);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        bump(&ALLOCS);
        bump(&FREES);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with this thread's allocations counted; returns `(result, allocs, frees)`.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (a0, f0) = (read(&ALLOCS), read(&FREES));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    let (a1, f1) = (read(&ALLOCS), read(&FREES));
    (out, a1 - a0, f1 - f0)
}

#[test]
fn the_counter_counts() {
    let (v, allocs, frees) = counted(|| std::hint::black_box(vec![1u8; 100]).len());
    assert_eq!((v, allocs, frees), (100, 1, 1));
}

#[test]
fn parse_and_infer_allocate_nothing() {
    for (name, bytes) in fixtures::fixtures() {
        let file = AlignedBytes::from_slice(&bytes);
        for verify in [true, false] {
            let opts = ParseOptions {
                verify_data_checksum: verify,
            };
            let (m, allocs, frees) = counted(|| Model::parse_with(&file, opts));
            m.unwrap();
            assert_eq!((allocs, frees), (0, 0), "{name}: Model::parse allocated");
        }
        let model = Model::parse(&file).unwrap();
        let c = *model.config();
        // Every buffer is allocated before counting starts.
        let input = fixtures::input(c.input_len(), 5);
        let mut logits = vec![0f32; c.num_classes];
        let mut logits_full = vec![0f32; c.num_classes];
        let mut scratch = vec![0u8; model.scratch_bytes()];
        let full = InferOptions {
            cls_only_last_layer: false,
        };
        let (r, allocs, frees) = counted(|| {
            let a = infer(&model, &input, &mut logits, &mut scratch);
            let b = infer_with(&model, &input, &mut logits_full, &mut scratch, &full);
            // Accessors an embedder uses around inference.
            let n = model.tensors().count() + model.labels().count();
            let e = infer(&model, &input, &mut logits, &mut scratch[..16]);
            (a, b, n, e)
        });
        assert_eq!((allocs, frees), (0, 0), "{name}: inference allocated");
        r.0.unwrap();
        r.1.unwrap();
        assert!(r.2 > 0);
        assert!(matches!(r.3, Err(InferError::ScratchTooSmall { .. })));
        // Same logits whether the last layer computes only the cls row or every row (up to
        // the SIMD kernels' summation order).
        for (a, b) in logits.iter().zip(&logits_full) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{name}: {a} vs {b}"
            );
        }
        assert!(logits.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn context_classify_allocates_nothing() {
    for (name, bytes) in fixtures::fixtures() {
        let file = AlignedBytes::from_slice(&bytes);
        let model = Model::parse(&file).unwrap();
        let c = *model.config();
        let tensor = fixtures::input(c.input_len(), 2);
        let (w, h) = (41, 29);
        for format in [FrameFormat::Rgb24, FrameFormat::I420, FrameFormat::Gray8] {
            let input = Input::Frame {
                format,
                width: w,
                height: h,
            };
            // Every buffer is allocated before counting starts.
            let frame: Vec<u8> = (0..frame_len(format, w, h).unwrap())
                .map(|i| (i * 37 % 251) as u8)
                .collect();
            let mut scratch = vec![0u8; Context::scratch_bytes(&model, input, 1).unwrap()];
            let mut top = [Top::default(); 3];
            let (r, allocs, frees) = counted(|| {
                let mut ctx = Context::new(model, input, 1, &mut scratch)?;
                let a = ctx.classify(&frame, &mut top)?;
                let b = ctx.classify_tensor(&tensor, &mut top)?;
                let e = ctx.classify(&frame[1..], &mut top).is_err();
                Ok::<_, ContextError>((a, b, e, ctx.logits().iter().all(|v| v.is_finite())))
            });
            assert_eq!(
                (allocs, frees),
                (0, 0),
                "{name} {format:?}: context allocated"
            );
            let n = c.num_classes.min(3);
            assert_eq!(r.unwrap(), (n, n, true, true), "{name} {format:?}");
        }
    }
}

#[test]
fn rejecting_a_hostile_file_allocates_nothing() {
    let (_, bytes) = &fixtures::fixtures()[1];
    let mut bad = bytes.clone();
    bad[200] ^= 0xff;
    let bad = AlignedBytes::from_slice(&bad);
    let short = AlignedBytes::from_slice(&bytes[..bytes.len() / 2]);
    let (r, allocs, frees) =
        counted(|| (Model::parse(&bad).is_err(), Model::parse(&short).is_err()));
    assert_eq!(r, (true, true));
    assert_eq!((allocs, frees), (0, 0));
}

/// `VimConfig::scratch_bytes` is usable in a `const` (so for a `static` arena) and gives the
/// figures of docs/RUNTIME.md §Memory budget for the released shapes.
#[test]
fn scratch_budget_of_released_models() {
    const fn vim(d: usize, stride: usize) -> vimvq_rt::VimConfig {
        vimvq_rt::VimConfig {
            embed_dim: d,
            depth: 24,
            patch: 16,
            stride,
            img_size: 224,
            channels: 3,
            num_classes: 1000,
            d_state: 16,
            dt_rank: d.div_ceil(16),
            d_conv: 4,
            d_inner: 2 * d,
            norm_eps: 1e-5,
        }
    }
    const TI: usize = vim(192, 16).scratch_bytes();
    const S: usize = vim(384, 16).scratch_bytes();
    const B: usize = vim(768, 16).scratch_bytes();
    const TI_PLUS: usize = vim(192, 8).scratch_bytes();
    static ARENA_TI: [u8; TI] = [0; TI];
    assert_eq!(ARENA_TI.len(), TI);
    eprintln!("scratch bytes: Vim-Ti {TI}, Vim-S {S}, Vim-B {B}, Vim-Ti+ (stride 8) {TI_PLUS}");
    // Includes the 16-row packed GEMM panel of the SIMD kernels (kernels::dispatch::scratch_len).
    assert_eq!([TI, S, B], [1_997_759, 3_871_935, 7_669_375]);
    // Hostile dims never overflow: they saturate to usize::MAX (and `check` rejects them).
    let mut huge = vim(65536, 1);
    huge.img_size = 65536;
    assert_eq!(huge.scratch_bytes(), usize::MAX);
}
