//! The inference context: its top-k rule against a full sort (property test), its frames against
//! the runtime's pieces called by hand (frame conversion, preprocessing, forward pass), thread
//! counts, and its errors.

mod fixtures;

use proptest::prelude::*;
use vimvq_rt::context::{top_k, Context, ContextError, FramePlan, Input, Top};
use vimvq_rt::format::{AlignedBytes, Role};
use vimvq_rt::forward::{infer, Features};
use vimvq_rt::frame::{self, FrameError, FrameFormat};
use vimvq_rt::model::Model;
use vimvq_rt::preprocess::{self, ImageRef, PixelFormat};

/// The rule stated in the module docs, the slow way: sort every class, NaN last, larger logit
/// first (IEEE total order, so +0 before −0), ties to the lower index; probabilities by the
/// textbook softmax in f64 over the non-NaN maximum.
fn reference(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (logits[a], logits[b]);
        (x.is_nan().cmp(&y.is_nan()))
            .then_with(|| y.total_cmp(&x))
            .then(a.cmp(&b))
    });
    let max = logits
        .iter()
        .filter(|v| !v.is_nan())
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    idx.iter()
        .take(k)
        .map(|&i| (i as u32, (logits[i] as f64 - max).exp() / sum))
        .collect()
}

/// Logits drawn from a small set of values (so ties are common), plus NaN, ±0 and ±∞.
fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => (-8i32..8).prop_map(|v| v as f32 * 0.5),
        3 => -30.0f32..30.0,
        1 => Just(f32::NAN),
        1 => Just(-0.0f32),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn top_k_is_the_sorted_prefix(logits in prop::collection::vec(logit(), 0..40), k in 0usize..45) {
        let mut out = vec![Top { class_index: 999, prob: -1.0 }; k];
        let n = top_k(&logits, &mut out);
        let want = reference(&logits, k);
        prop_assert_eq!(n, want.len());
        let got: Vec<u32> = out[..n].iter().map(|t| t.class_index).collect();
        let want_idx: Vec<u32> = want.iter().map(|w| w.0).collect();
        prop_assert_eq!(got, want_idx);
        for (t, (_, p)) in out.iter().zip(&want) {
            // f64 probabilities rounded to f32; the two exp implementations may differ by an ulp.
            prop_assert!(
                (t.prob as f64 - p).abs() <= 1e-6 * p.abs().max(1e-30) || (t.prob.is_nan() && p.is_nan()),
                "{} vs {}", t.prob, p
            );
        }
        // Entries past the class count are left alone.
        for t in &out[n..] {
            prop_assert_eq!(t.class_index, 999);
        }
    }
}

#[test]
fn top_k_examples() {
    let l = [1.0, 3.0, f32::NAN, 3.0, -2.0];
    let mut out = [Top::default(); 5];
    assert_eq!(top_k(&l, &mut out), 5);
    let idx: Vec<u32> = out.iter().map(|t| t.class_index).collect();
    assert_eq!(idx, [1, 3, 0, 4, 2]);
    let mut two = [Top::default(); 2];
    assert_eq!(top_k(&[1000.0, 1000.0, -1000.0], &mut two), 2);
    assert_eq!(two[0].prob, 0.5);
    assert_eq!(two[1].prob, 0.5);
}

/// A deterministic frame of `len` bytes.
fn frame_bytes(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (16 + (i * 29 + seed * 7 + (i / 97) * 13) % 220) as u8)
        .collect()
}

/// The runtime's pieces by hand: conversion, preprocessing, forward pass.
fn by_hand(model: &Model<'_>, format: FrameFormat, w: usize, h: usize, data: &[u8]) -> Vec<f32> {
    let c = *model.config();
    let (pixels, fmt) = match format {
        FrameFormat::Rgb24 => (data.to_vec(), PixelFormat::Rgb8),
        FrameFormat::Gray8 => (data.to_vec(), PixelFormat::L8),
        FrameFormat::I420 => {
            let mut rgb = vec![0u8; w * h * 3];
            frame::i420_to_rgb24(data, w, h, &mut rgb).unwrap();
            (rgb, PixelFormat::Rgb8)
        }
    };
    let img = ImageRef {
        data: &pixels,
        width: w,
        height: h,
        format: fmt,
    };
    let p = model.preprocess();
    let mut x = vec![0f32; c.input_len()];
    let mut pre = vec![0u8; preprocess::scratch_bytes(w, h, fmt, p, c.channels).unwrap()];
    preprocess::preprocess(&img, p, c.channels, &mut x, &mut pre).unwrap();
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; model.scratch_bytes()];
    infer(model, &x, &mut logits, &mut scratch).unwrap();
    logits
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn frames_equal_the_pieces_for_every_format_size_and_thread_count() {
    for (name, bytes) in fixtures::fixtures() {
        let file = AlignedBytes::from_slice(&bytes);
        let model = Model::parse(&file).unwrap();
        let classes = model.config().num_classes;
        for (w, h) in [(37, 23), (8, 8), (1, 50), (33, 17)] {
            for format in [FrameFormat::Rgb24, FrameFormat::I420, FrameFormat::Gray8] {
                let data = frame_bytes(frame::frame_len(format, w, h).unwrap(), w + h);
                let want = by_hand(&model, format, w, h, &data);
                let input = Input::Frame {
                    format,
                    width: w,
                    height: h,
                };
                for threads in [1, 2, 3] {
                    let n = Context::scratch_bytes(&model, input, threads).unwrap();
                    // Dirty, misaligned scratch.
                    let mut scratch = vec![0x5Au8; n + 7];
                    let mut ctx = Context::new(model, input, threads, &mut scratch[7..]).unwrap();
                    assert_eq!(ctx.frame_bytes(), data.len());
                    let mut top = vec![Top::default(); classes + 3];
                    for _ in 0..2 {
                        assert_eq!(ctx.classify(&data, &mut top).unwrap(), classes);
                        assert_eq!(
                            bits(ctx.logits()),
                            bits(&want),
                            "{name} {format:?} {w}x{h} threads {threads}"
                        );
                    }
                    let mut want_top = vec![Top::default(); classes];
                    top_k(&want, &mut want_top);
                    assert_eq!(&top[..classes], &want_top[..]);
                }
            }
        }
    }
}

#[test]
fn tensors_and_the_frame_plan_alone() {
    let (_, bytes) = &fixtures::fixtures()[0];
    let file = AlignedBytes::from_slice(bytes);
    let model = Model::parse(&file).unwrap();
    let c = *model.config();
    let x = fixtures::input(c.input_len(), 3);
    let mut want = vec![0f32; c.num_classes];
    let mut s = vec![0u8; model.scratch_bytes()];
    infer(&model, &x, &mut want, &mut s).unwrap();

    let n = Context::scratch_bytes(&model, Input::Tensor, 1).unwrap();
    assert!(n < model.scratch_bytes() + 4 * c.num_classes + 3 * 64);
    let mut scratch = vec![0u8; n];
    let mut ctx = Context::new(model, Input::Tensor, 1, &mut scratch).unwrap();
    let mut top = [Top::default(); 1];
    assert_eq!(ctx.classify_tensor(&x, &mut top).unwrap(), 1);
    assert_eq!(bits(ctx.logits()), bits(&want));
    assert_eq!(ctx.frame_bytes(), 0);
    assert_eq!(
        ctx.classify(&[0; 12], &mut top),
        Err(ContextError::NotAFrameContext)
    );
    assert!(matches!(
        ctx.classify_tensor(&x[1..], &mut top),
        Err(ContextError::Infer(_))
    ));

    // The frame stage alone gives the tensor the context feeds the network.
    let (w, h) = (19, 31);
    let data = frame_bytes(w * h * 3, 1);
    let fp = FramePlan::new(model.preprocess(), &c, FrameFormat::Rgb24, w, h).unwrap();
    let mut t = vec![0f32; c.input_len()];
    let mut pre = vec![0u8; fp.scratch_bytes().unwrap()];
    fp.run(&data, &mut t, &mut pre).unwrap();
    let mut logits = vec![0f32; c.num_classes];
    infer(&model, &t, &mut logits, &mut s).unwrap();
    assert_eq!(
        bits(&logits),
        bits(&by_hand(&model, FrameFormat::Rgb24, w, h, &data))
    );
    let short = pre.len() - 1;
    assert!(matches!(
        fp.run(&data, &mut t, &mut pre[..short]),
        Err(ContextError::ScratchTooSmall { .. })
    ));
}

#[test]
fn errors_are_values_not_panics() {
    let (_, bytes) = &fixtures::fixtures()[0];
    let file = AlignedBytes::from_slice(bytes);
    let model = Model::parse(&file).unwrap();
    let input = Input::Frame {
        format: FrameFormat::I420,
        width: 5,
        height: 3,
    };
    let n = Context::scratch_bytes(&model, input, 1).unwrap();
    let mut scratch = vec![0u8; n];
    assert_eq!(
        Context::new(model, input, 1, &mut scratch[..n - 1]).err(),
        Some(ContextError::ScratchTooSmall {
            needed: n,
            actual: n - 1
        })
    );
    let mut ctx = Context::new(model, input, 1, &mut scratch).unwrap();
    let mut top = [Top::default(); 2];
    assert_eq!(
        ctx.classify(&[0; 5 * 3], &mut top),
        Err(ContextError::Frame(FrameError::BadFrameLength {
            expected: 5 * 3 + 2 * 3 * 2,
            got: 15
        }))
    );
    let zero = Input::Frame {
        format: FrameFormat::Rgb24,
        width: 0,
        height: 3,
    };
    assert_eq!(
        Context::scratch_bytes(&model, zero, 1),
        Err(ContextError::Frame(FrameError::BadSize))
    );
    let huge = Input::Frame {
        format: FrameFormat::Gray8,
        width: usize::MAX / 2,
        height: 3,
    };
    assert!(Context::scratch_bytes(&model, huge, 1).is_err());
    assert!(!ContextError::NotAFrameContext.to_string().is_empty());
}

#[test]
fn features_are_what_the_head_consumes() {
    let mut checked = 0;
    for (name, bytes) in fixtures::fixtures() {
        let file = AlignedBytes::from_slice(&bytes);
        let model = Model::parse(&file).unwrap();
        let c = *model.config();
        let Some(w) = model.dense(Role::HeadWeight, 0) else {
            continue; // a VQ head: checked through the dense fixture
        };
        let b = model.dense(Role::HeadBias, 0).unwrap();
        let (fw, fh) = (23, 45);
        let data = frame_bytes(fw * fh * 3, 4);
        let input = Input::Frame {
            format: FrameFormat::Rgb24,
            width: fw,
            height: fh,
        };
        for threads in [1, 2] {
            let mut scratch = vec![0u8; Context::scratch_bytes(&model, input, threads).unwrap()];
            let mut ctx = Context::new(model, input, threads, &mut scratch).unwrap();
            let mut pooled = vec![0f32; c.embed_dim];
            let features = Features {
                pooled: Some(&mut pooled),
                tokens: None,
            };
            ctx.classify_features(&data, &mut [], features).unwrap();
            let f = &pooled[..];
            for (j, &l) in ctx.logits().iter().enumerate() {
                let row = &w[j * c.embed_dim..(j + 1) * c.embed_dim];
                let dot: f64 = row.iter().zip(f).map(|(&a, &x)| a as f64 * x as f64).sum();
                let want = dot + b[j] as f64;
                let scale: f64 = row
                    .iter()
                    .zip(f)
                    .map(|(&a, &x)| (a as f64 * x as f64).abs())
                    .sum();
                assert!(
                    (l as f64 - want).abs() <= 1e-5 * (scale + b[j].abs() as f64 + 1.0),
                    "{name} threads {threads} class {j}: {l} vs {want}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no fixture with a dense head");
}
