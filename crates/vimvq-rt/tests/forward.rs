//! Forward pass: parity with an independent float64 flip-based reference, exactness of the
//! last-layer shortcut and of VQ execution, buffer errors, and zero heap allocation.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use vimvq_rt::forward::{infer, infer_with, InferError, InferOptions};
use vimvq_rt::model::Model;
use vimvq_rt::VimConfig;

/// Named error budget: runtime f32 vs float64 reference, `max|Δ| / max|ref|` on the logits.
const F32_VS_F64: f64 = 1e-5;

#[test]
fn matches_float64_reference_on_odd_configs() {
    for (i, c) in test_configs().iter().enumerate() {
        for storage in [Storage::Dense, Storage::Mixed] {
            let m = random_model(c, 100 + i as u64, storage);
            let bytes = pack(&m);
            let reference = RefModel::new(&m);
            for seed in 0..2 {
                let img = random_image(c, seed);
                let got = run(&bytes, &img);
                let want = reference_logits(&reference, &img);
                let err = rel_err(&got, &want);
                assert!(
                    err < F32_VS_F64,
                    "config #{i} {storage:?} seed {seed}: rel err {err:e}"
                );
                assert!(
                    want.iter().map(|v| v.abs()).fold(0.0, f64::max) > 1e-3,
                    "degenerate logits"
                );
            }
        }
    }
}

#[test]
fn matches_float64_reference_on_fmnist_shapes() {
    // The bundled Fashion-MNIST model's dimensions: D=128, depth 4, 4×4 patches, 28×28×1.
    let c = vim_config(128, 4, 4, 4, 28, 1, 10);
    let m = random_model(&c, 7, Storage::Dense);
    let img = random_image(&c, 3);
    let got = run(&pack(&m), &img);
    let want = reference_logits(&RefModel::new(&m), &img);
    let err = rel_err(&got, &want);
    assert!(err < F32_VS_F64, "rel err {err:e}");
    assert_eq!(argmax(&got), argmax(&want));
}

#[test]
fn cls_only_last_layer_is_bit_identical() {
    let mut configs = test_configs();
    configs.push(vim_config(32, 2, 4, 2, 16, 3, 11));
    for (i, c) in configs.iter().enumerate() {
        let bytes = pack(&random_model(c, 40 + i as u64, Storage::Mixed));
        let model = Model::parse(&bytes).unwrap();
        let img = random_image(c, 9);
        let mut scratch = vec![0u8; model.scratch_bytes()];
        let mut fast = vec![0f32; c.num_classes];
        let mut full = vec![0f32; c.num_classes];
        infer_with(
            &model,
            &img,
            &mut fast,
            &mut scratch,
            &InferOptions {
                cls_only_last_layer: true,
            },
        )
        .unwrap();
        infer_with(
            &model,
            &img,
            &mut full,
            &mut scratch,
            &InferOptions {
                cls_only_last_layer: false,
            },
        )
        .unwrap();
        let fb: Vec<u32> = fast.iter().map(|v| v.to_bits()).collect();
        let gb: Vec<u32> = full.iter().map(|v| v.to_bits()).collect();
        assert_eq!(fb, gb, "config #{i}");
    }
}

#[test]
fn vq_model_equals_its_decoded_dense_model_bit_for_bit() {
    for (i, c) in test_configs().iter().enumerate() {
        for storage in [
            Storage::Vq(256, 4),
            Storage::Vq(1000, 3),
            Storage::Vq(5, 1),
            Storage::Mixed,
        ] {
            let m = random_model(c, 70 + i as u64, storage);
            let dense = densify(&m);
            let img = random_image(c, 1);
            let vq_bytes = pack(&m);
            let dense_bytes = pack(&dense);
            assert!(Model::parse(&vq_bytes).unwrap().tensors().any(|t| t.k > 0));
            let a = run(&vq_bytes, &img);
            let b = run(&dense_bytes, &img);
            let ab: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
            let bb: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
            assert_eq!(ab, bb, "config #{i} {storage:?}");
        }
    }
}

#[test]
fn repeated_runs_and_dirty_unaligned_scratch_give_identical_results() {
    let c = &test_configs()[2];
    let bytes = pack(&random_model(c, 5, Storage::Mixed));
    let model = Model::parse(&bytes).unwrap();
    let img = random_image(c, 2);
    let mut first = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; model.scratch_bytes() + 64];
    infer(
        &model,
        &img,
        &mut first,
        &mut scratch[..model.scratch_bytes()],
    )
    .unwrap();
    for offset in [1usize, 3, 17, 63] {
        scratch.iter_mut().for_each(|b| *b = 0xA5); // garbage, incl. NaN patterns
        let mut again = vec![0f32; c.num_classes];
        infer(
            &model,
            &img,
            &mut again,
            &mut scratch[offset..offset + model.scratch_bytes()],
        )
        .unwrap();
        assert_eq!(first, again, "offset {offset}");
    }
}

#[test]
fn buffer_errors_are_reported_not_panicked() {
    let c = &test_configs()[0];
    let bytes = pack(&random_model(c, 1, Storage::Dense));
    let model = Model::parse(&bytes).unwrap();
    let need = model.scratch_bytes();
    let img = random_image(c, 0);
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; need];
    assert_eq!(
        infer(&model, &img[1..], &mut logits, &mut scratch),
        Err(InferError::InputLength {
            expected: c.input_len(),
            actual: c.input_len() - 1
        })
    );
    assert_eq!(
        infer(&model, &img, &mut logits[1..], &mut scratch),
        Err(InferError::LogitsLength {
            expected: c.num_classes,
            actual: c.num_classes - 1
        })
    );
    for short in [0, 1, need / 2, need - 1] {
        assert_eq!(
            infer(&model, &img, &mut logits, &mut scratch[..short]),
            Err(InferError::ScratchTooSmall {
                needed: need,
                actual: short
            })
        );
    }
    // Exactly `need` bytes works at every alignment (covered above for 1, 3, 17, 63).
    assert_eq!(infer(&model, &img, &mut logits, &mut scratch), Ok(()));
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn scratch_bytes_is_const_and_matches_the_formula() {
    const VIM_TI: VimConfig = VimConfig {
        embed_dim: 192,
        depth: 24,
        patch: 16,
        stride: 16,
        img_size: 224,
        channels: 3,
        num_classes: 1000,
        d_state: 16,
        dt_rank: 12,
        d_conv: 4,
        d_inner: 384,
        norm_eps: 1e-5,
    };
    // Usable for a static arena.
    const TI_BYTES: usize = VIM_TI.scratch_bytes();
    static ARENA: [u8; TI_BYTES] = [0; TI_BYTES];
    assert_eq!(ARENA.len(), TI_BYTES);
    // Independent count for Vim-Ti (L=197, D=192, E=384, R+2N=44, N=16, C·p²=768), in f32s,
    // each buffer rounded up to 16 floats.
    let r16 = |n: usize| n.div_ceil(16) * 16;
    let floats = 2 * r16(197 * 192)
        + r16(197 * 768)
        + 3 * r16(197 * 384)
        + r16(197 * 44)
        + 2 * r16(384 * 16)
        + r16(16 * 768) // packed 16-row GEMM panel (kernels::dispatch::scratch_len)
        + r16(16 * 768);
    assert_eq!(TI_BYTES, floats * 4 + 63);
    // Invalid configs saturate instead of panicking.
    let bad = VimConfig {
        stride: 0,
        ..VIM_TI
    };
    assert_eq!(bad.scratch_bytes(), usize::MAX);
}

// ---------------------------------------------------------------------------------------------
// Zero heap allocation: count allocations made by this thread while `infer` runs.

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn infer_performs_no_heap_allocation() {
    let c = &test_configs()[2];
    let bytes = pack(&random_model(c, 3, Storage::Mixed));
    let model = Model::parse(&bytes).unwrap();
    let img = random_image(c, 4);
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; model.scratch_bytes()];
    // Sanity check of the counter itself.
    COUNTING.with(|f| f.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    COUNTING.with(|f| f.set(false));
    drop(v);
    assert_eq!(
        ALLOCS.swap(0, Ordering::SeqCst),
        1,
        "the counting allocator does not count"
    );

    COUNTING.with(|f| f.set(true));
    let r1 = infer(&model, &img, &mut logits, &mut scratch);
    let r2 = infer_with(
        &model,
        &img,
        &mut logits,
        &mut scratch,
        &InferOptions {
            cls_only_last_layer: false,
        },
    );
    let parsed = Model::parse(&bytes).map(|m| m.scratch_bytes());
    COUNTING.with(|f| f.set(false));
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "infer/parse allocated");
    r1.unwrap();
    r2.unwrap();
    parsed.unwrap();
}
