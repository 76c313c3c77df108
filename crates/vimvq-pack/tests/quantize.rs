//! The quantization pipeline (`vimvq_pack::quantize`) on a small synthetic Vim with trained-like
//! weight magnitudes (`BlockParams::random_vim_like`): determinism (seed, thread count), the
//! stored form of every method, and that the block objective actually learns.
//!
//! The same checks on the bundled Fashion-MNIST model and real calibration images run through the
//! CLI in `tests/pack_cli.rs` at the workspace root.

use vimvq_pack::calib::{BlockDims, BlockParams};
use vimvq_pack::quantize::{
    quantize, quantize_resumable, Method, Objective, ProgressEvent, QuantOptions, Report,
    StateFile, QUANT_ROLES,
};
use vimvq_pack::rng::SplitMix64;
use vimvq_rt::context::{Context, Input};
use vimvq_rt::format::{to_bytes, AlignedBytes, PackedModel, PackedTensor, Role, TensorData};
use vimvq_rt::kernels::f16_to_f32;
use vimvq_rt::model::{Codebook, Model, Weight};
use vimvq_rt::{Preprocess, VimConfig};

/// D = 32, depth 2, 16×16 RGB input, patch 4 → 16 patches, L = 17; E = 64, N = 8, R = 2.
fn config() -> VimConfig {
    VimConfig {
        embed_dim: 32,
        depth: 2,
        patch: 4,
        stride: 4,
        img_size: 16,
        channels: 3,
        num_classes: 5,
        d_state: 8,
        dt_rank: 2,
        d_conv: 4,
        d_inner: 64,
        norm_eps: 1e-5,
    }
}

fn model() -> PackedModel {
    let cfg = config();
    let mut rng = SplitMix64::new(42);
    let mut normal =
        |n: usize, std: f64| -> Vec<f32> { (0..n).map(|_| (std * rng.normal()) as f32).collect() };
    let mut tensors = Vec::new();
    let mut push = |role: Role, layer: usize, data: Vec<f32>| {
        let (rows, cols) = role.shape(&cfg);
        assert_eq!(data.len(), rows * cols, "{role:?}");
        tensors.push(PackedTensor {
            role,
            layer,
            rows,
            cols,
            data: TensorData::F32(data),
        });
    };
    for role in Role::GLOBAL {
        let (rows, cols) = role.shape(&cfg);
        let data = match role {
            Role::NormF => vec![1.0; cols],
            Role::PatchWeight => normal(rows * cols, 0.1),
            _ => normal(rows * cols, 0.2),
        };
        push(role, 0, data);
    }
    for layer in 0..cfg.depth {
        let p = BlockParams::<f32>::random_vim_like(BlockDims::from_config(&cfg), layer as u64);
        for role in Role::LAYER {
            let data = match role {
                Role::Norm => normal(cfg.embed_dim, 0.1)
                    .into_iter()
                    .map(|v| 1.0 + v)
                    .collect(),
                r => p.tensor(r).unwrap().to_vec(),
            };
            push(role, layer, data);
        }
    }
    PackedModel {
        config: cfg,
        preprocess: Preprocess::imagenet(16),
        labels: Vec::new(),
        tensors,
    }
}

fn images(n: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(7);
    (0..n)
        .map(|_| {
            (0..config().input_len())
                .map(|_| rng.normal() as f32)
                .collect()
        })
        .collect()
}

/// Small codebooks so that every layer has many more sub-vectors than codewords.
fn opts(method: Method, objective: Objective) -> QuantOptions {
    let mut o = QuantOptions::with_bits(2).unwrap();
    o.method = method;
    o.objective = objective;
    o.vq.k = 16;
    o.vq.d = 2;
    o.vq.steps = 60;
    o.vq.kmeans_iters = 20;
    o.threads = 1;
    // The block-wise stage alone; fine-tuning has its own test below.
    o.finetune_steps = 0;
    o
}

fn run(o: &QuantOptions, calib: &[Vec<f32>]) -> (PackedModel, Report) {
    quantize(&model(), calib, o, &mut |_| {}).unwrap()
}

#[test]
fn same_seed_same_model_for_any_thread_count() {
    let calib = images(12);
    for objective in [Objective::Block, Objective::Layer] {
        let mut o = opts(Method::VimVq, objective);
        let (a, _) = run(&o, &calib);
        let (b, _) = run(&o, &calib);
        assert_eq!(a, b, "{objective:?}: same seed, same threads");
        o.threads = 2;
        let (c, _) = run(&o, &calib);
        assert_eq!(a, c, "{objective:?}: 1 vs 2 threads");
        o.threads = 3;
        let (d, _) = run(&o, &calib);
        assert_eq!(a, d, "{objective:?}: 1 vs 3 threads");
        o.vq.seed = 1;
        let (e, _) = run(&o, &calib);
        assert_ne!(a, e, "{objective:?}: another seed changes the result");
    }
}

#[test]
fn every_quantized_tensor_is_vq_with_valid_indices() {
    let calib = images(8);
    let f32_model = model();
    for method in [Method::VimVq, Method::Vq4dit, Method::KMeans, Method::Gptvq] {
        let o = opts(method, Objective::Block);
        let (q, report) = run(&o, &calib);
        assert_eq!(q.tensors.len(), f32_model.tensors.len());
        let mut vq = 0;
        for (t, t0) in q.tensors.iter().zip(&f32_model.tensors) {
            assert_eq!(
                (t.role, t.layer, t.rows, t.cols),
                (t0.role, t0.layer, t0.rows, t0.cols)
            );
            if QUANT_ROLES.contains(&t.role) {
                let TensorData::Vq {
                    codebook,
                    k,
                    d,
                    indices,
                    codebook_f16: false,
                } = &t.data
                else {
                    panic!("{method:?}: {:?} of layer {} is not VQ", t.role, t.layer)
                };
                assert_eq!((*k, *d), (16, 2));
                assert_eq!(codebook.len(), 32);
                assert_eq!(indices.len(), t.rows * t.cols.div_ceil(2));
                assert!(indices.iter().all(|&i| i < 16), "{method:?}: index >= k");
                assert!(codebook.iter().all(|v| v.is_finite()));
                vq += 1;
            } else if matches!(t.role, Role::DtProjB | Role::DtProjBBack) {
                assert!(matches!(t.data, TensorData::F32(_)));
            } else {
                assert_eq!(t, t0, "{method:?}: {:?} must stay as it was", t.role);
            }
        }
        assert_eq!(vq, 12);
        assert_eq!(report.layers.len(), 12);
        assert!((report.bits_per_weight() - 2.0).abs() < 1e-12);
        // 16 codewords × 2 × 32 bits per layer on top of 2 bits per weight.
        assert!(report.true_bits_per_weight > 2.0 && report.true_bits_per_weight_f16 > 2.0);
        assert!(report.true_bits_per_weight > report.true_bits_per_weight_f16);
        for l in &report.layers {
            assert!(
                l.rel_weight_error > 0.0 && l.rel_weight_error < 1.0,
                "{l:?}"
            );
            assert!(l.rel_output_error.is_finite() && l.rel_output_error >= 0.0);
        }
    }
}

#[test]
fn f16_codebooks_are_the_rounded_f32_ones_and_the_file_stores_them_as_f16() {
    let calib = images(8);
    // k-means has no calibration, so rounding at the end of each layer is the only difference.
    let o32 = opts(Method::KMeans, Objective::Block);
    let o16 = QuantOptions {
        codebook_f16: true,
        ..o32.clone()
    };
    let ((q32, r32), (q16, r16)) = (run(&o32, &calib), run(&o16, &calib));
    let mut vq = 0;
    for (a, b) in q32.tensors.iter().zip(&q16.tensors) {
        match (&a.data, &b.data) {
            (
                TensorData::Vq {
                    codebook: c32,
                    indices: i32,
                    codebook_f16: false,
                    ..
                },
                TensorData::Vq {
                    codebook: c16,
                    indices: i16,
                    codebook_f16: true,
                    ..
                },
            ) => {
                assert_eq!(i32, i16);
                let rounded: Vec<f32> = c32
                    .iter()
                    .map(|v| half::f16::from_f32(*v).to_f32())
                    .collect();
                assert_eq!(&rounded, c16);
                vq += 1;
            }
            (x, y) => assert_eq!(x, y),
        }
    }
    assert!(vq > 0);
    // The report counts the codebooks as stored.
    assert_eq!(r16.true_bits_per_weight, r32.true_bits_per_weight_f16);
    assert!(r16.true_bits_per_weight < r32.true_bits_per_weight);
    // The file holds f16 codebooks (half the bytes), and the runtime reads back these values.
    let (b32, b16) = (to_bytes(&q32).unwrap(), to_bytes(&q16).unwrap());
    assert!(b16.len() < b32.len());
    let a16 = AlignedBytes::from_slice(&b16);
    let m = Model::parse(&a16).unwrap();
    for t in &q16.tensors {
        if let (TensorData::Vq { codebook, .. }, Some(Weight::Vq(w))) =
            (&t.data, m.weight(t.role, t.layer))
        {
            let Codebook::F16(h) = w.codebook else {
                panic!("{:?}: not stored as f16", t.role)
            };
            let back: Vec<f32> = h.iter().map(|x| f16_to_f32(*x)).collect();
            assert_eq!(&back, codebook);
        }
    }
}

#[test]
fn rtn_stores_dequantized_f32_with_at_most_2_pow_b_levels_per_row() {
    let calib = images(4);
    let o = opts(Method::Rtn, Objective::Block);
    let (q, report) = run(&o, &calib);
    for t in q.tensors.iter().filter(|t| QUANT_ROLES.contains(&t.role)) {
        let TensorData::F32(w) = &t.data else {
            panic!("rtn must store f32")
        };
        for row in w.chunks_exact(t.cols) {
            let mut levels: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
            levels.sort_unstable();
            levels.dedup();
            assert!(levels.len() <= 4, "{:?}: {} levels", t.role, levels.len());
        }
    }
    assert_eq!(report.k_d(), (4, 1));
    // 2 bits per weight plus 32 bits per row.
    assert!(report.true_bits_per_weight > 2.0 && report.true_bits_per_weight < 4.0);
    assert_eq!(report.blocks.iter().map(|b| b.steps).sum::<usize>(), 0);
}

#[test]
fn block_objective_learns_and_beats_kmeans() {
    let calib = images(16);
    let mut o = opts(Method::VimVq, Objective::Block);
    o.vq.steps = 120;
    let mut steps_seen = 0;
    let mut last_confirmed = 0.0;
    let (_, report) = quantize(&model(), &calib, &o, &mut |e| {
        if let ProgressEvent::Step { confirmed, .. } = e {
            steps_seen += 1;
            last_confirmed = confirmed;
        }
    })
    .unwrap();
    assert_eq!(steps_seen, 2 * 120);
    assert_eq!(
        last_confirmed, 1.0,
        "the schedule floor confirms everything"
    );
    for b in &report.blocks {
        let (first, last) = (b.train_loss_first.unwrap(), b.train_loss_last.unwrap());
        let km = b.kmeans_loss.unwrap();
        println!(
            "block {}: k-means {km:.4e}, train {first:.4e} -> {last:.4e}, final hard {:.4e}",
            b.block, b.loss
        );
        assert_eq!(b.loss_history.len(), 120);
        // The soft start (convex combinations of the nearest codewords) is below the hard k-means
        // loss; the last 20 % of the steps train with every assignment hard, and must end well
        // below the hard start.
        assert!(
            last < 0.8 * km,
            "block {}: hard phase not below k-means",
            b.block
        );
        assert!(
            b.loss < 0.8 * km,
            "block {}: not better than k-means",
            b.block
        );
        assert!(b.images_steps_per_second > 0.0);
    }
    assert!(report.images_steps_per_second > 0.0);
    // The k-means method reports the same block loss as the k-means initialisation.
    let (_, km) = run(&opts(Method::KMeans, Objective::Block), &calib);
    assert!(
        (km.blocks[0].loss - report.blocks[0].kmeans_loss.unwrap()).abs()
            <= 1e-9 * km.blocks[0].loss
    );

    // Without IVQ and the ratio regulariser the minibatch loss is the pure soft reconstruction
    // objective throughout: gradient descent on it must make it fall.
    o.ivq = false;
    o.vq.lambda_r = 0.0;
    let (_, soft) = run(&o, &calib);
    for b in &soft.blocks {
        let (first, last) = (b.train_loss_first.unwrap(), b.train_loss_last.unwrap());
        println!(
            "block {} (no IVQ): soft loss {first:.4e} -> {last:.4e}",
            b.block
        );
        assert!(
            last < 0.9 * first,
            "block {}: soft loss did not decrease",
            b.block
        );
    }
}

#[test]
fn ablation_switches_change_the_run() {
    let calib = images(8);
    let full = opts(Method::VimVq, Objective::Block);
    let mut no_ivq = full.clone();
    no_ivq.ivq = false;
    let mut no_hull = full.clone();
    no_hull.hull_update = false;
    let (_, r_full) = run(&full, &calib);
    let (_, r_ivq) = run(&no_ivq, &calib);
    let (_, r_hull) = run(&no_hull, &calib);
    // Without IVQ nothing is confirmed during training; without the hull update nothing is replaced.
    assert!(r_ivq
        .blocks
        .iter()
        .all(|b| b.confirmed_history.iter().all(|&c| c == 0.0)));
    assert!(r_full
        .blocks
        .iter()
        .all(|b| *b.confirmed_history.last().unwrap() == 1.0));
    assert!(r_hull.blocks.iter().all(|b| b.replaced == 0));
    assert!(r_full.blocks.iter().any(|b| b.replaced > 0));
    assert_eq!(r_hull.effective.hull_every, 0);
    assert_eq!(r_ivq.effective.confirm_threshold, 1.0);
}

#[test]
fn bad_inputs_are_errors() {
    let o = opts(Method::VimVq, Objective::Block);
    let m = model();
    let e = quantize(&m, &[], &o, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("no calibration images"), "{e}");
    let e = quantize(&m, &[vec![0.0; 5]], &o, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("calibration image 0"), "{e}");
    let mut nan = images(1);
    nan[0][3] = f32::NAN;
    assert!(quantize(&m, &nan, &o, &mut |_| {}).is_err());
    let mut bad = o.clone();
    bad.batch = 0;
    assert!(quantize(&m, &images(1), &bad, &mut |_| {}).is_err());
    // An already quantized model is refused.
    let (q, _) = run(&o, &images(2));
    let e = quantize(&q, &images(2), &o, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already quantized"), "{e}");
}

#[test]
fn report_json_has_the_cli_fields() {
    let (_, r) = run(&opts(Method::Vq4dit, Objective::Layer), &images(4));
    let j = r.to_json();
    for key in [
        "method",
        "k",
        "d",
        "bits_per_weight",
        "true_bits_per_weight",
        "calib_images",
        "seconds",
        "peak_rss_bytes",
        "layers",
    ] {
        assert!(j.get(key).is_some(), "missing {key}");
    }
    assert_eq!(j["method"], "vq4dit");
    assert_eq!(j["objective"], "layer");
    assert_eq!(j["calib_images"], 4);
    assert_eq!(j["layers"].as_array().unwrap().len(), 12);
    assert_eq!(j["layers"][0]["name"], "layers.0.mixer.in_proj.weight");
    assert_eq!(j["layers"][11]["name"], "layers.1.mixer.out_proj.weight");
    for l in j["layers"].as_array().unwrap() {
        assert!(l["rel_weight_error"].as_f64().unwrap() > 0.0);
        assert!(l["rel_output_error"].as_f64().unwrap() > 0.0);
    }
    assert!(j["peak_rss_bytes"].as_u64().unwrap() > 0);
}

// ---- resumable runs ------------------------------------------------------------------------

fn state_dir(tag: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quantize-resume-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("calib/{i}.png")).collect()
}

/// Runs resumably with the state in `dir/out.vimvq.resume`; copies the state saved after the
/// first block to `dir/after0` (a run killed during block 1 leaves exactly that file).
fn run_saving(
    dir: &std::path::Path,
    o: &QuantOptions,
    calib: &[Vec<f32>],
) -> Result<(PackedModel, Report, Vec<ProgressEvent>), vimvq_pack::quantize::QuantError> {
    let state = StateFile {
        path: StateFile::path_for(&dir.join("out.vimvq")),
        image_names: names(calib.len()),
    };
    let mut events = Vec::new();
    let (m, r) = quantize_resumable(&model(), calib, o, &state, &mut |e| {
        if let ProgressEvent::Done { eta, .. } = &e {
            if eta.done == 1 {
                std::fs::copy(&state.path, dir.join("after0")).unwrap();
            }
        }
        events.push(e);
    })?;
    Ok((m, r, events))
}

#[test]
fn a_resumed_run_equals_the_uninterrupted_one_byte_for_byte() {
    let calib = images(10);
    for (method, objective) in [
        (Method::VimVq, Objective::Block),
        (Method::Gptvq, Objective::Layer),
    ] {
        let dir = state_dir(method.name());
        let mut o = opts(method, objective);
        o.vq.steps = 20;
        let (full, full_report) = run(&o, &calib);
        let (m, _, events) = run_saving(&dir, &o, &calib).unwrap();
        assert_eq!(m, full, "{method:?}: saving the state changes nothing");
        assert!(!events
            .iter()
            .any(|e| matches!(e, ProgressEvent::Resumed { .. })));
        // "Killed" during block 1: its state is the one saved after block 0. Resume on 2 threads.
        let state = StateFile::path_for(&dir.join("out.vimvq"));
        std::fs::copy(dir.join("after0"), &state).unwrap();
        o.threads = 2;
        let (m, r, events) = run_saving(&dir, &o, &calib).unwrap();
        assert_eq!(
            events.first(),
            Some(&ProgressEvent::Resumed { done: 1, count: 2 })
        );
        let starts = events
            .iter()
            .filter(|e| matches!(e, ProgressEvent::Start { .. }))
            .count();
        assert_eq!(starts, 1, "{method:?}: only block 1 runs again");
        assert_eq!(m, full, "{method:?}: resumed model");
        assert_eq!(to_bytes(&m).unwrap(), to_bytes(&full).unwrap());
        assert_eq!(r.resumed_blocks, 1);
        assert_eq!(r.layers, full_report.layers, "{method:?}: layer report");
        let losses = |r: &Report| r.blocks.iter().map(|b| b.loss).collect::<Vec<_>>();
        assert_eq!(losses(&r), losses(&full_report));
        assert_eq!(r.blocks[0].loss_history, full_report.blocks[0].loss_history);
        assert_eq!(r.true_bits_per_weight, full_report.true_bits_per_weight);
        // A finished run's state resumes to the end without computing anything.
        let (m, r, events) = run_saving(&dir, &o, &calib).unwrap();
        assert_eq!((m, r.resumed_blocks, events.len()), (full, 2, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn resume_error(dir: &std::path::Path, o: &QuantOptions, calib: &[Vec<f32>]) -> String {
    let state = StateFile::path_for(&dir.join("out.vimvq"));
    std::fs::copy(dir.join("after0"), &state).unwrap();
    let e = run_saving(dir, o, calib).map(|_| ()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, vimvq_pack::quantize::QuantError::Resume(_)),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains(&*state.to_string_lossy()) && msg.contains("delete it"),
        "{msg}"
    );
    msg
}

#[test]
fn another_run_refuses_the_saved_state_and_says_what_differs() {
    let calib = images(6);
    let dir = state_dir("mismatch");
    let mut o = opts(Method::VimVq, Objective::Block);
    o.vq.steps = 10;
    run_saving(&dir, &o, &calib).unwrap();

    let mut other = o.clone();
    other.vq.steps = 11;
    other.vq.seed = 4;
    let m = resume_error(&dir, &other, &calib);
    assert!(
        m.contains("options differ") && m.contains("steps 10 then, 11 now") && m.contains("seed"),
        "{m}"
    );
    let mut other = o.clone();
    other.vq.schedule_at[0] = 0.3; // a library-only setting
    assert!(resume_error(&dir, &other, &calib).contains("options differ"));

    // Another checkpoint: one weight changed.
    let state = StateFile::path_for(&dir.join("out.vimvq"));
    std::fs::copy(dir.join("after0"), &state).unwrap();
    let mut m2 = model();
    if let TensorData::F32(v) = &mut m2.tensors[0].data {
        v[0] += 1e-3;
    }
    let sf = StateFile {
        path: state.clone(),
        image_names: names(6),
    };
    let e = quantize_resumable(&m2, &calib, &o, &sf, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("checkpoint"), "{e}");

    // Other calibration images: fewer, other content, other names.
    assert!(resume_error(&dir, &o, &calib[..5]).contains("it used 6 calibration images"));
    let mut changed = calib.clone();
    changed[3][0] += 0.5;
    assert!(resume_error(&dir, &o, &changed).contains("content"));
    std::fs::copy(dir.join("after0"), &state).unwrap();
    let sf = StateFile {
        path: state.clone(),
        image_names: (0..6).map(|i| format!("other/{i}.png")).collect(),
    };
    let e = quantize_resumable(&model(), &calib, &o, &sf, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("other files"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_truncated_or_hostile_state_is_a_one_line_error() {
    let calib = images(4);
    let dir = state_dir("corrupt");
    let mut o = opts(Method::KMeans, Objective::Block);
    o.vq.kmeans_iters = 5;
    run_saving(&dir, &o, &calib).unwrap();
    let state = StateFile::path_for(&dir.join("out.vimvq"));
    let good = std::fs::read(dir.join("after0")).unwrap();
    let attempt = |bytes: &[u8]| -> Result<(), String> {
        std::fs::write(&state, bytes).unwrap();
        let sf = StateFile {
            path: state.clone(),
            image_names: names(4),
        };
        match quantize_resumable(&model(), &calib, &o, &sf, &mut |_| {}) {
            Ok(_) => Ok(()),
            Err(e) => {
                let m = e.to_string();
                assert!(!m.contains('\n') && m.contains("delete it"), "{m}");
                Err(m)
            }
        }
    };
    assert_eq!(attempt(&good), Ok(()));
    // Truncated anywhere, or one byte flipped: the checksum catches it.
    for cut in (0..good.len()).step_by(good.len() / 97 + 1) {
        let m = attempt(&good[..cut]).unwrap_err();
        assert!(m.contains("corrupt"), "cut {cut}: {m}");
    }
    for at in (8..good.len()).step_by(good.len() / 53 + 1) {
        let mut b = good.clone();
        b[at] ^= 0x40;
        let m = attempt(&b).unwrap_err();
        assert!(
            m.contains("corrupt") || m.contains("version"),
            "byte {at}: {m}"
        );
    }
    // Crafted with a valid checksum: every byte changed in turn, checksum fixed. Any outcome but a
    // panic or an unbounded allocation is fine (lengths are checked against the file's bytes).
    let mut rng = SplitMix64::new(9);
    for _ in 0..300 {
        let mut b = good.clone();
        let at = 12 + rng.below(b.len() - 16);
        b[at] = b[at].wrapping_add(1 + rng.below(255) as u8);
        if rng.below(4) == 0 {
            // A huge length: 0xFF.. over 8 bytes.
            let end = (at + 8).min(b.len() - 4);
            b[at..end].fill(0xFF);
        }
        let n = b.len() - 4;
        let crc = vimvq_rt::format::crc32(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        let _ = attempt(&b);
    }
    // Not a regular file: refused.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let sf = StateFile {
        path: state.clone(),
        image_names: names(4),
    };
    let e = quantize_resumable(&model(), &calib, &o, &sf, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logits of `m` on `images`, from the deployment runtime.
fn runtime_logits(m: &PackedModel, images: &[Vec<f32>]) -> Vec<f32> {
    let bytes = AlignedBytes::from_slice(&to_bytes(m).unwrap());
    let model = Model::parse(&bytes).unwrap();
    let mut scratch = vec![0u8; Context::scratch_bytes(&model, Input::Tensor, 1).unwrap()];
    let mut ctx = Context::new(model, Input::Tensor, 1, &mut scratch).unwrap();
    let mut out = Vec::new();
    for x in images {
        ctx.classify_tensor(x, &mut []).unwrap();
        out.extend_from_slice(ctx.logits());
    }
    out
}

/// Mean KL(f32 ‖ q) of the softmax outputs on `images` (the runtime on both models).
fn mean_kl(q: &PackedModel, images: &[Vec<f32>]) -> f64 {
    let classes = config().num_classes;
    let (p, l) = (runtime_logits(&model(), images), runtime_logits(q, images));
    let log_softmax = |z: &[f32]| -> Vec<f64> {
        let m = z.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
        let s = z.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
        z.iter().map(|v| *v as f64 - m - s).collect()
    };
    let kl: f64 = p
        .chunks(classes)
        .zip(l.chunks(classes))
        .map(|(a, b)| {
            let (a, b) = (log_softmax(a), log_softmax(b));
            a.iter()
                .zip(&b)
                .map(|(x, y)| x.exp() * (x - y))
                .sum::<f64>()
        })
        .sum();
    kl / images.len() as f64
}

#[test]
fn finetuning_lowers_the_kl_keeps_the_indices_and_ignores_threads() {
    let calib = images(16);
    let mut o = opts(Method::KMeans, Objective::Block);
    let (base, _) = run(&o, &calib);
    o.finetune_steps = 40;
    let mut events = Vec::new();
    let (ft, report) = quantize(&model(), &calib, &o, &mut |e| {
        if let ProgressEvent::FinetuneStep { step, steps, .. } = e {
            events.push((step, steps));
        }
    })
    .unwrap();
    assert_eq!(events, (1..=40).map(|s| (s, 40)).collect::<Vec<_>>());
    let f = report.finetune.clone().unwrap();
    assert_eq!(f.steps, 40);
    assert!(f.loss_last < f.loss_first, "{f:?}");
    let json = report.to_json();
    assert_eq!(json["finetune_steps"], 40);
    let (k0, k1) = (mean_kl(&base, &calib), mean_kl(&ft, &calib));
    eprintln!("calibration KL: block-wise {k0:.4e}, fine-tuned {k1:.4e}");
    assert!(k1 < 0.9 * k0, "{k0} → {k1}");
    // Same tensors; indices unchanged; codebooks, norms and Δ biases moved; the rest identical.
    let mut moved = [false; 3];
    for (a, b) in base.tensors.iter().zip(&ft.tensors) {
        assert_eq!((a.role, a.layer), (b.role, b.layer));
        match (&a.data, &b.data) {
            (
                TensorData::Vq {
                    indices: ia,
                    codebook: ca,
                    ..
                },
                TensorData::Vq {
                    indices: ib,
                    codebook: cb,
                    ..
                },
            ) => {
                assert_eq!(ia, ib, "{:?} {}", a.role, a.layer);
                moved[0] |= ca != cb;
            }
            _ if matches!(a.role, Role::Norm | Role::NormF) => moved[1] |= a.data != b.data,
            _ if matches!(a.role, Role::DtProjB | Role::DtProjBBack) => {
                moved[2] |= a.data != b.data
            }
            _ => assert_eq!(a.data, b.data, "{:?} {}", a.role, a.layer),
        }
    }
    assert_eq!(moved, [true; 3]);
    for threads in [2, 3] {
        o.threads = threads;
        assert_eq!(run(&o, &calib).0, ft, "{threads} threads");
    }
    // RTN has no codebooks: the stage does not run.
    let mut r = opts(Method::Rtn, Objective::Block);
    r.finetune_steps = 5;
    let (rq, rr) = run(&r, &calib);
    assert!(rr.finetune.is_none());
    r.finetune_steps = 0;
    assert_eq!(run(&r, &calib).0, rq);
}
