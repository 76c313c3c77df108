//! Multi-threaded inference: bit-identical logits to the one-thread path for every thread count,
//! storage kind, kernel level and the last-layer shortcut; scratch sizing and errors.

mod common;

use common::*;
use vimvq_rt::forward::{infer_threaded, infer_with, InferError, InferOptions};
use vimvq_rt::kernels::dispatch;
use vimvq_rt::model::Model;

/// `dispatch::force` switches the kernels of every thread of the process: tests that compare
/// runs hold this lock so that no level switch lands between the runs they compare.
static LEVEL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `VIMVQ_TEST_QUICK=1` (set under qemu, where threads are emulated): fewer storages, thread
/// counts and no Vim-Ti-width model; every code path is still run.
fn quick() -> bool {
    std::env::var_os("VIMVQ_TEST_QUICK").is_some()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn logits(model: &Model<'_>, img: &[f32], opts: &InferOptions, threads: usize) -> Vec<f32> {
    let c = model.config();
    let mut out = vec![0f32; c.num_classes];
    // Dirty, unaligned scratch: the executor must not depend on its contents or alignment.
    let mut scratch = vec![0xA5u8; c.scratch_bytes_threaded(threads) + 1];
    infer_threaded(model, img, &mut out, &mut scratch[1..], opts, threads).unwrap();
    out
}

#[test]
fn threaded_logits_equal_one_thread_bit_for_bit() {
    let _level = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    let mut configs = test_configs();
    // Fashion-MNIST shapes and a Vim-Ti-width model (E = 384: uneven 16-column pieces).
    configs.push(vim_config(128, 4, 4, 4, 28, 1, 10));
    if !quick() {
        configs.push(vim_config(192, 2, 16, 16, 64, 3, 17));
    }
    let storages: &[Storage] = if quick() {
        &[Storage::Mixed, Storage::Vq(5, 1)]
    } else {
        &[
            Storage::Dense,
            Storage::Mixed,
            Storage::Vq(256, 4),
            Storage::Vq(5, 1),
        ]
    };
    let thread_counts: &[usize] = if quick() { &[2, 3] } else { &[2, 3, 5] };
    for (i, c) in configs.iter().enumerate() {
        for &storage in storages {
            let bytes = pack(&random_model(c, 300 + i as u64, storage));
            let model = Model::parse(&bytes).unwrap();
            let img = random_image(c, 4);
            for cls_only in [true, false] {
                let opts = InferOptions {
                    cls_only_last_layer: cls_only,
                };
                let one = logits(&model, &img, &opts, 1);
                let mut reference = vec![0f32; c.num_classes];
                let mut scratch = vec![0u8; model.scratch_bytes()];
                infer_with(&model, &img, &mut reference, &mut scratch, &opts).unwrap();
                assert_eq!(bits(&one), bits(&reference));
                for &threads in thread_counts {
                    let got = logits(&model, &img, &opts, threads);
                    assert_eq!(
                        bits(&got),
                        bits(&one),
                        "config #{i} {storage:?} cls_only {cls_only} threads {threads}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_kernel_level_is_bit_identical_threaded() {
    let _level = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    let c = vim_config(128, 3, 4, 4, 28, 1, 10);
    let bytes = pack(&random_model(&c, 11, Storage::Mixed));
    let model = Model::parse(&bytes).unwrap();
    let img = random_image(&c, 1);
    let opts = InferOptions::default();
    let before = dispatch::active();
    for level in dispatch::Level::ALL {
        if dispatch::force(level).is_err() {
            eprintln!("SKIP {}: not available on this CPU", level.name());
            continue;
        }
        let one = logits(&model, &img, &opts, 1);
        let two = logits(&model, &img, &opts, 2);
        assert_eq!(bits(&one), bits(&two), "level {}", level.name());
    }
    dispatch::force(before).unwrap();
}

#[test]
fn scratch_sizing_and_errors() {
    let c = vim_config(64, 2, 4, 4, 16, 3, 10);
    let bytes = pack(&random_model(&c, 2, Storage::Dense));
    let model = Model::parse(&bytes).unwrap();
    let base = c.scratch_bytes();
    assert_eq!(c.scratch_bytes_threaded(0), base);
    assert_eq!(c.scratch_bytes_threaded(1), base);
    let two = c.scratch_bytes_threaded(2);
    let per_worker = c.scratch_bytes_threaded(3) - two;
    assert!(two > base && per_worker > 0);
    assert_eq!(c.scratch_bytes_threaded(5), two + 3 * per_worker);
    assert_eq!(c.scratch_bytes_threaded(usize::MAX), usize::MAX);
    // Usable to size a static arena.
    const fn arena(c: &vimvq_rt::VimConfig) -> usize {
        c.scratch_bytes_threaded(4)
    }
    assert_eq!(arena(&c), two + 2 * per_worker);

    let img = random_image(&c, 0);
    let mut out = vec![0f32; 10];
    let mut scratch = vec![0u8; two - 1];
    let opts = InferOptions::default();
    assert_eq!(
        infer_threaded(&model, &img, &mut out, &mut scratch, &opts, 2),
        Err(InferError::ScratchTooSmall {
            needed: two,
            actual: two - 1
        })
    );
    let mut scratch = vec![0u8; two];
    assert!(matches!(
        infer_threaded(&model, &img[1..], &mut out, &mut scratch, &opts, 2),
        Err(InferError::InputLength { .. })
    ));
    assert!(matches!(
        infer_threaded(&model, &img, &mut out[1..], &mut scratch, &opts, 2),
        Err(InferError::LogitsLength { .. })
    ));
    // Exactly the advertised size works, at any alignment.
    for shift in 0..4 {
        let mut big = vec![0u8; two + shift];
        infer_threaded(&model, &img, &mut out, &mut big[shift..], &opts, 2).unwrap();
    }
}
