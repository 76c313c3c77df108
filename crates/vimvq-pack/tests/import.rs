//! Checkpoint import: real torch-written fixtures (`tests/data/make_fixtures.py`), synthetic
//! state dicts, and hand-built hostile files. Every failure must be an `Err` with a clear
//! message, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use vimvq_pack::import::{self, Checkpoint, HostTensor, ImportError, ModelOptions};
use vimvq_rt::format::{Role, TensorData};
use vimvq_rt::{Interpolation, Preprocess, VimConfig};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vimvq-import-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}-{name}", std::process::id()))
}

fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn load(name: &str) -> Checkpoint {
    import::load(&data(name), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn err(r: Result<impl std::fmt::Debug, ImportError>) -> String {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    s
}

/// Same names, shapes and bit patterns.
fn assert_bit_identical(a: &Checkpoint, b: &Checkpoint) {
    let ka: Vec<_> = a.tensors.keys().collect();
    let kb: Vec<_> = b.tensors.keys().collect();
    assert_eq!(ka, kb);
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        assert_eq!(ta.shape, tb.shape, "{name}");
        let ba: Vec<u32> = ta.data.iter().map(|v| v.to_bits()).collect();
        let bb: Vec<u32> = tb.data.iter().map(|v| v.to_bits()).collect();
        assert_eq!(ba, bb, "{name}");
    }
}

const FIXTURE_TENSORS: usize = 7 + 2 * 17;

// ---- real fixtures ------------------------------------------------------------------------

#[test]
fn pth_and_safetensors_give_bit_identical_tensors() {
    let full = load("tiny_full.pth");
    let st = load("tiny.safetensors");
    assert_eq!(full.tensors.len(), FIXTURE_TENSORS);
    assert_bit_identical(&full, &st);
    // shapes are torch shapes
    assert_eq!(
        full.tensors["patch_embed.proj.weight"].shape,
        vec![8, 3, 4, 4]
    );
    assert_eq!(
        full.tensors["layers.1.mixer.conv1d.weight"].shape,
        vec![16, 1, 4]
    );
    assert_eq!(full.tensors["cls_token"].shape, vec![1, 1, 8]);
}

#[test]
fn bare_state_dict_loads() {
    assert_bit_identical(&load("tiny_bare.pth"), &load("tiny.safetensors"));
}

#[test]
fn strided_offset_shared_expanded_and_low_precision_storages() {
    // transposed, storage offset, shared storage, stride 0, f16, bf16, f64, v3/UntypedStorage
    assert_bit_identical(&load("tiny_views.pth"), &load("tiny.safetensors"));
}

#[test]
fn key_selects_the_sub_dict() {
    let p = data("tiny_full.pth");
    let model = import::load(&p, Some("model")).unwrap();
    assert_bit_identical(&model, &load("tiny_full.pth"));
    let ema = import::load(&p, Some("model_ema")).unwrap();
    assert_eq!(ema.tensors.len(), FIXTURE_TENSORS);
    for (name, t) in &model.tensors {
        let e = &ema.tensors[name];
        assert_eq!(e.shape, t.shape);
        for (x, y) in t.data.iter().zip(&e.data) {
            assert_eq!((x * 0.5).to_bits(), y.to_bits(), "{name}");
        }
    }
}

#[test]
fn unknown_key_lists_the_available_ones() {
    let p = data("tiny_full.pth");
    let m = err(import::load(&p, Some("state")));
    assert!(m.contains("tiny_full.pth"), "{m}");
    assert!(
        m.contains("'state'")
            && m.contains("model, optimizer, lr_scheduler, epoch, model_ema, scaler, args"),
        "{m}"
    );
    let m = err(import::load(&p, Some("epoch")));
    assert!(m.contains("'epoch' is a int, not a state dict"), "{m}");
    let m = err(import::load(&p, Some("args")));
    assert!(m.contains("argparse.Namespace"), "{m}");
    let m = err(import::load(&p, Some("optimizer")));
    assert!(
        m.contains("is a dict, not a tensor") || m.contains("not a tensor"),
        "{m}"
    );
    let m = err(import::load(&data("tiny_bare.pth"), Some("model_ema")));
    assert!(m.contains("bare state dict"), "{m}");
    let m = err(import::load(&data("tiny.safetensors"), Some("model_ema")));
    assert!(m.contains("one state dict"), "{m}");
    // the default key also works for safetensors
    assert_bit_identical(
        &import::load(&data("tiny.safetensors"), Some("model")).unwrap(),
        &load("tiny.safetensors"),
    );
}

#[test]
fn hustvl_args_become_metadata() {
    let m = load("tiny_full.pth").meta;
    assert_eq!(m["img_size"], "8");
    assert_eq!(m["resize"], "9"); // int(8 / 0.875)
    assert_eq!(m["model"], "vim_tiny_fixture");
    assert_eq!(m["num_classes"], "2");
    assert_eq!(m["epoch"], "3");
    assert_eq!(m["args.lr"], "0.0005");
    assert_eq!(m["args.no_amp"], "true");
    assert_eq!(m["args.data_path"], "/datasets/imagenet");
    assert!(!m.contains_key("args.opt_betas")); // a list: not a scalar
    assert!(!m.contains_key("args.clip_grad")); // None
    assert!(load("tiny_bare.pth").meta.is_empty());
    let st = load("tiny.safetensors").meta;
    assert_eq!(st["labels"], "cat\ndog");
    assert_eq!(st["mean"], "0.5,0.25,0.125");
}

#[test]
fn config_from_fixture_shapes() {
    let full = load("tiny_full.pth");
    let c = import::infer_config(&full, None).unwrap(); // img_size 8 from args
    let want = VimConfig {
        embed_dim: 8,
        depth: 2,
        patch: 4,
        stride: 2, // overlapping patches
        img_size: 8,
        channels: 3,
        num_classes: 2,
        d_state: 4,
        dt_rank: 1,
        d_conv: 4,
        d_inner: 16,
        norm_eps: 1e-5,
    };
    assert_eq!(c, want);
    assert_eq!(c.seq_len(), 10);
    // a bare state dict has no img_size: 224 does not fit, the message says what to do
    let bare = load("tiny_bare.pth");
    let m = err(import::infer_config(&bare, None));
    assert!(
        m.contains("pos_embed has 10 positions") && m.contains("--img-size"),
        "{m}"
    );
    assert_eq!(import::infer_config(&bare, Some(8)).unwrap(), want);
    // the argument beats the metadata
    let m = err(import::infer_config(&full, Some(20)));
    assert!(m.contains("img_size 20"), "{m}");
}

#[test]
fn to_packed_from_pth_and_safetensors() {
    let opts = ModelOptions::default();
    let a = import::to_packed(&load("tiny_full.pth"), &opts).unwrap();
    let b = import::to_packed(&load("tiny.safetensors"), &opts).unwrap();
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.config, b.config);
    assert_eq!(a.tensors.len(), FIXTURE_TENSORS);
    for t in &a.tensors {
        assert_eq!((t.rows, t.cols), t.role.shape(&a.config), "{:?}", t.role);
        let TensorData::F32(v) = &t.data else {
            panic!("not f32")
        };
        assert_eq!(v.len(), t.rows * t.cols);
    }
    let pw = a
        .tensors
        .iter()
        .find(|t| t.role == Role::PatchWeight)
        .unwrap();
    assert_eq!((pw.rows, pw.cols), (8, 48));
    // .pth: ImageNet defaults with the resize hustvl's eval transform uses
    let mut want = Preprocess::imagenet(8);
    want.resize = 9;
    assert_eq!(a.preprocess, want);
    assert!(a.labels.is_empty());
    // safetensors: everything from __metadata__
    assert_eq!(
        b.preprocess,
        Preprocess {
            resize: 9,
            crop: 8,
            interpolation: Interpolation::Bilinear,
            mean: [0.5, 0.25, 0.125],
            std: [0.5, 0.5, 0.25],
        }
    );
    assert_eq!(b.labels, vec!["cat", "dog"]);
    // flags win
    let opts = ModelOptions {
        resize: Some(10),
        mean: Some([0.1, 0.2, 0.3]),
        std: Some([1.0, 2.0, 3.0]),
        interpolation: Some(Interpolation::Bicubic),
        labels: Some(vec!["a".into(), "b".into()]),
        ..Default::default()
    };
    let c = import::to_packed(&load("tiny.safetensors"), &opts).unwrap();
    assert_eq!(
        c.preprocess,
        Preprocess {
            resize: 10,
            crop: 8,
            interpolation: Interpolation::Bicubic,
            mean: [0.1, 0.2, 0.3],
            std: [1.0, 2.0, 3.0],
        }
    );
    assert_eq!(c.labels, vec!["a", "b"]);
}

#[test]
fn bad_preprocessing_and_labels_are_errors() {
    let ck = load("tiny.safetensors");
    let with = |o: ModelOptions| err(import::to_packed(&ck, &o));
    let m = with(ModelOptions {
        labels: Some(vec!["x".into()]),
        ..Default::default()
    });
    assert!(
        m.contains("1 labels given but the model has 2 classes"),
        "{m}"
    );
    let m = with(ModelOptions {
        std: Some([1.0, 0.0, 1.0]),
        ..Default::default()
    });
    assert!(m.contains("--std"), "{m}");
    let m = with(ModelOptions {
        crop: Some(7),
        ..Default::default()
    });
    assert!(m.contains("crop") && m.contains("img_size 8"), "{m}");
    let m = with(ModelOptions {
        resize: Some(4),
        ..Default::default()
    });
    assert!(m.contains("resize"), "{m}");

    let mut bad = ck.clone();
    bad.meta.insert("mean".into(), "0.5,0.5".into());
    let m = err(import::to_packed(&bad, &ModelOptions::default()));
    assert!(m.contains("metadata 'mean'"), "{m}");
    let mut bad = ck.clone();
    bad.meta.insert("channels".into(), "1".into());
    let m = err(import::to_packed(&bad, &ModelOptions::default()));
    assert!(
        m.contains("'channels'") && m.contains("3 input channels"),
        "{m}"
    );
    let mut bad = ck.clone();
    bad.meta.insert("img_size".into(), "eight".into());
    let m = err(import::to_packed(&bad, &ModelOptions::default()));
    assert!(m.contains("'img_size'"), "{m}");
    let mut bad = ck.clone();
    bad.meta.insert("labels".into(), "a\nb\nc\n".into());
    let m = err(import::to_packed(&bad, &ModelOptions::default()));
    assert!(m.contains("3 labels"), "{m}");
    let mut bad = ck;
    bad.meta.insert("interpolation".into(), "nearest".into());
    let m = err(import::to_packed(&bad, &ModelOptions::default()));
    assert!(m.contains("interpolation"), "{m}");
}

// ---- synthetic state dicts ----------------------------------------------------------------

fn cfg(
    d: usize,
    depth: usize,
    channels: usize,
    patch: usize,
    stride: usize,
    img: usize,
    classes: usize,
) -> VimConfig {
    VimConfig {
        embed_dim: d,
        depth,
        patch,
        stride,
        img_size: img,
        channels,
        num_classes: classes,
        d_state: 16,
        dt_rank: d.div_ceil(16),
        d_conv: 4,
        d_inner: 2 * d,
        norm_eps: 1e-5,
    }
}

/// A state dict with the exact torch names and shapes of `c`, values `0, 1, 2, ...` per tensor.
fn synth(c: &VimConfig) -> Checkpoint {
    let mut ck = Checkpoint::default();
    let mut add = |role: Role, layer: usize| {
        let shape = import::torch_shape(role, c);
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| i as f32).collect();
        ck.tensors
            .insert(import::torch_name(role, layer), HostTensor { shape, data });
    };
    for r in Role::GLOBAL {
        add(r, 0);
    }
    for l in 0..c.depth {
        for r in Role::LAYER {
            add(r, l);
        }
    }
    ck
}

#[test]
fn config_inference_released_geometries() {
    // Vim-Ti (stride 16) and Vim-Ti+ (stride 8, overlapping), shallow to stay small
    for stride in [16, 8] {
        let want = cfg(192, 2, 3, 16, stride, 224, 1000);
        let ck = synth(&want);
        assert_eq!(import::infer_config(&ck, None).unwrap(), want);
    }
    assert_eq!(cfg(192, 1, 3, 16, 8, 224, 10).seq_len(), 730);
    // Fashion-MNIST-like: 1 channel, 28 px, patch 4, stride 4 and stride 2
    for stride in [4, 2] {
        let want = cfg(16, 3, 1, 4, stride, 28, 10);
        let ck = synth(&want);
        assert_eq!(import::infer_config(&ck, Some(28)).unwrap(), want);
        let mut with_meta = ck.clone();
        with_meta.meta.insert("img_size".into(), "28".into());
        assert_eq!(import::infer_config(&with_meta, None).unwrap(), want);
    }
}

#[test]
fn one_channel_models_use_the_first_mean_and_std() {
    let c = cfg(16, 1, 1, 4, 4, 28, 10);
    let mut ck = synth(&c);
    ck.meta.insert("img_size".into(), "28".into());
    let p = import::to_packed(&ck, &ModelOptions::default()).unwrap();
    assert_eq!(p.preprocess.mean, [0.485; 3]);
    assert_eq!(p.preprocess.std, [0.229; 3]);
    assert_eq!(p.preprocess.resize, 32); // int(28 / 0.875)
    ck.meta.insert("mean".into(), "0.2860".into());
    ck.meta.insert("std".into(), "0.3530".into());
    let p = import::to_packed(&ck, &ModelOptions::default()).unwrap();
    assert_eq!(p.preprocess.mean, [0.286; 3]);
    assert_eq!(p.preprocess.std, [0.353; 3]);
    let o = ModelOptions {
        mean: Some([0.1, 0.2, 0.3]),
        ..Default::default()
    };
    assert_eq!(
        import::to_packed(&ck, &o).unwrap().preprocess.mean,
        [0.1; 3]
    );
    // packed values keep their order through the reshape
    let cw = p
        .tensors
        .iter()
        .find(|t| t.role == Role::ConvW && t.layer == 0)
        .unwrap();
    assert_eq!((cw.rows, cw.cols), (32, 4));
    let TensorData::F32(v) = &cw.data else {
        panic!()
    };
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as f32));
}

#[test]
fn missing_misshaped_and_unknown_tensors_are_named() {
    let c = cfg(16, 2, 3, 4, 4, 16, 5);
    let good = synth(&c);
    assert_eq!(import::infer_config(&good, Some(16)).unwrap(), c);
    let infer = |ck: &Checkpoint| err(import::infer_config(ck, Some(16)));

    let mut ck = good.clone();
    ck.tensors.remove("layers.1.mixer.dt_proj_b.bias");
    let m = infer(&ck);
    assert!(
        m.contains("missing tensor 'layers.1.mixer.dt_proj_b.bias'") && m.contains("[32]"),
        "{m}"
    );

    let mut ck = good.clone();
    ck.tensors.remove("layers.0.mixer.A_log");
    let m = infer(&ck);
    assert!(
        m.contains("'layers.0.mixer.A_log'") && m.contains("(E, N)"),
        "{m}"
    );

    let mut ck = good.clone();
    ck.tensors
        .get_mut("layers.1.mixer.x_proj.weight")
        .unwrap()
        .shape = vec![32, 33];
    let m = infer(&ck);
    assert!(
        m.contains("'layers.1.mixer.x_proj.weight' has shape [32, 33], expected [33, 32]"),
        "{m}"
    );

    let mut ck = good.clone();
    ck.tensors.get_mut("cls_token").unwrap().shape = vec![16];
    let m = infer(&ck);
    assert!(
        m.contains("'cls_token' has shape [16], expected [1, 1, 16]"),
        "{m}"
    );

    let mut ck = good.clone();
    ck.tensors
        .get_mut("layers.0.mixer.in_proj.weight")
        .unwrap()
        .shape = vec![31, 16];
    let m = infer(&ck);
    assert!(m.contains("in_proj.weight"), "{m}");

    let mut ck = good.clone();
    let t = ck.tensors["head.bias"].clone();
    ck.tensors.insert("layers.0.mixer.bias".into(), t.clone());
    ck.tensors.insert("fc_norm.weight".into(), t);
    let m = infer(&ck);
    assert!(
        m.contains("unexpected tensors")
            && m.contains("fc_norm.weight")
            && m.contains("layers.0.mixer.bias"),
        "{m}"
    );

    let mut ck = good.clone();
    let layer1: Vec<String> = ck
        .tensors
        .keys()
        .filter(|k| k.starts_with("layers.1."))
        .cloned()
        .collect();
    for k in layer1 {
        let t = ck.tensors.remove(&k).unwrap();
        ck.tensors.insert(k.replace("layers.1.", "layers.3."), t);
    }
    let m = infer(&ck);
    assert!(m.contains("not contiguous") && m.contains("0, 3"), "{m}");

    let mut ck = good;
    ck.tensors.retain(|k, _| !k.starts_with("layers."));
    assert!(infer(&ck).contains("no layers"));
    assert!(infer(&Checkpoint::default()).contains("no layers"));
}

// ---- safetensors built in the test --------------------------------------------------------

fn st_bytes(
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
    meta: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, meta).unwrap()
}

fn st_from(ck: &Checkpoint, prefix: &str) -> Vec<u8> {
    let t: Vec<_> = ck
        .tensors
        .iter()
        .map(|(n, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (
                format!("{prefix}{n}"),
                safetensors::Dtype::F32,
                t.shape.clone(),
                b,
            )
        })
        .collect();
    st_bytes(&t, None)
}

#[test]
fn ddp_module_prefix_is_stripped() {
    let ck = synth(&cfg(16, 1, 3, 4, 4, 8, 3));
    let p = write_tmp("ddp.safetensors", &st_from(&ck, "module."));
    let back = import::load(&p, None).unwrap();
    assert_bit_identical(&back, &ck);
    // a name present with and without the prefix is ambiguous
    let mut t: Vec<_> = vec![(
        "module.head.bias".to_string(),
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    )];
    t.push((
        "head.bias".to_string(),
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    ));
    let p = write_tmp("dup.safetensors", &st_bytes(&t, None));
    assert!(err(import::load(&p, None)).contains("'head.bias' appears twice"));
}

#[test]
fn safetensors_dtypes() {
    let one = |dt, bytes: Vec<u8>| {
        let p = write_tmp(
            "dt.safetensors",
            &st_bytes(&[("x".into(), dt, vec![2], bytes)], None),
        );
        import::load(&p, None)
    };
    let f16: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    assert_eq!(
        one(safetensors::Dtype::F16, f16).unwrap().tensors["x"].data,
        vec![1.5, -2.0]
    );
    let bf: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    assert_eq!(
        one(safetensors::Dtype::BF16, bf).unwrap().tensors["x"].data,
        vec![1.5, -2.0]
    );
    let f64b: Vec<u8> = [0.1f64, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        one(safetensors::Dtype::F64, f64b).unwrap().tensors["x"].data,
        vec![0.1f32, 3.0]
    );
    let m = err(one(safetensors::Dtype::I64, vec![0; 16]));
    assert!(m.contains("tensor 'x' has type I64"), "{m}");
}

#[test]
fn hostile_safetensors_headers() {
    // claims 10^12 f32 elements in a 100-byte file: must fail without allocating
    let header =
        br#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 16]);
    let m = err(import::load(&write_tmp("huge.safetensors", &b), None));
    assert!(m.contains("invalid safetensors"), "{m}");
    // header length past the end of the file
    let mut b = 1_000_000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    let m = err(import::load(&write_tmp("hdr.safetensors", &b), None));
    assert!(m.contains("does not fit") && m.contains("truncated"), "{m}");
    // offsets that disagree with the shape
    let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 8]);
    let m = err(import::load(&write_tmp("off.safetensors", &b), None));
    assert!(m.contains("invalid safetensors"), "{m}");
}

// ---- broken and foreign files -------------------------------------------------------------

#[test]
fn truncated_files_are_errors() {
    for name in ["tiny_full.pth", "tiny_views.pth", "tiny.safetensors"] {
        let bytes = std::fs::read(data(name)).unwrap();
        let n = bytes.len();
        for cut in [
            1,
            3,
            4,
            9,
            30,
            64,
            200,
            1000,
            n / 3,
            n / 2,
            n - 1000,
            n - 100,
            n - 22,
            n - 1,
        ] {
            let p = write_tmp("cut", &bytes[..cut]);
            let m = err(import::load(&p, None));
            assert!(m.contains(p.to_str().unwrap()), "{name} cut at {cut}: {m}");
        }
    }
}

#[test]
fn corrupted_bytes_are_errors_or_detected() {
    // flip one byte at many places in the pickle and the storages; the loader must never panic,
    // and when it succeeds the tensors must still be the right ones (flips in padding)
    let bytes = std::fs::read(data("tiny_bare.pth")).unwrap();
    let reference = load("tiny_bare.pth");
    let step = (bytes.len() / 97).max(1);
    for at in (0..bytes.len()).step_by(step) {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        let p = write_tmp("flip.pth", &b);
        if let Ok(ck) = import::load(&p, None) {
            assert_eq!(ck.tensors.len(), reference.tensors.len(), "flip at {at}");
        }
    }
}

#[test]
fn mutated_pickles_never_panic() {
    // re-zip tiny_bare.pth with a mutated data.pkl (so the zip CRC does not catch it first)
    let mut ar = zip::ZipArchive::new(std::fs::File::open(data("tiny_bare.pth")).unwrap()).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..ar.len() {
        let mut f = ar.by_index(i).unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut b).unwrap();
        entries.push((f.name().to_owned(), b));
    }
    let pkl_at = entries
        .iter()
        .position(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap();
    let original = entries[pkl_at].1.clone();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut ok, mut failed) = (0, 0);
    for round in 0..400 {
        let mut b = original.clone();
        let at = (next() % b.len() as u64) as usize;
        match round % 4 {
            0 => b[at] ^= 1 << (next() % 8),
            1 => b[at] = next() as u8,
            2 => b.truncate(at),
            _ => {
                let len = (next() % 64) as usize;
                let end = (at + len).min(b.len());
                let chunk = b[at..end].to_vec();
                b.splice(at..at, chunk);
            }
        }
        entries[pkl_at].1 = b;
        let e: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let p = write_tmp("mut.pth", &zip_of(&e));
        match import::load(&p, None) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().contains('\n'));
                failed += 1
            }
        }
        let _ = std::fs::remove_file(&p);
    }
    assert!(failed > 100, "{ok} loaded, {failed} refused");
}

#[test]
fn not_a_checkpoint() {
    let m = err(import::load(
        &write_tmp("notes.txt", b"just some text, not a model\n"),
        None,
    ));
    assert!(m.contains("not a checkpoint"), "{m}");
    let m = err(import::load(&write_tmp("empty.pth", b""), None));
    assert!(m.contains("file is empty"), "{m}");
    let missing = tmp("does-not-exist.pth");
    let m = err(import::load(&missing, None));
    assert!(
        m.contains("no such file") && m.contains("does-not-exist.pth"),
        "{m}"
    );
    let dir = tmp("dir");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(err(import::load(&dir, None)).contains("directory"));
    // a legacy (pre-1.6) torch file starts with a pickle stream
    let m = err(import::load(
        &write_tmp("old.pth", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 jR."),
        None,
    ));
    assert!(m.contains("legacy"), "{m}");
    // a zip that is not a torch checkpoint (e.g. an .npz)
    let z = zip_of(&[("x.npy", b"\x93NUMPY")]);
    let m = err(import::load(&write_tmp("x.npz", &z), None));
    assert!(m.contains("no <archive>/data.pkl"), "{m}");
    // a pickle whose root is not a dict
    let z = zip_of(&[("a/data.pkl", b"\x80\x02K\x07.")]);
    let m = err(import::load(&write_tmp("int.pth", &z), None));
    assert!(m.contains("is a int, not a dict"), "{m}");
    // a dict with no state dict in it
    let z = zip_of(&[("a/data.pkl", b"\x80\x02}(X\x01\x00\x00\x00kK\x01u.")]);
    let m = err(import::load(&write_tmp("nosd.pth", &z), None));
    assert!(
        m.contains("no state dict found") && m.contains("available: k"),
        "{m}"
    );
}

// ---- hand-built .pth files ----------------------------------------------------------------

use hostile::{state_dict_pickle as pkl, uni, Entry, T};

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let e: Vec<Entry> = entries.iter().map(|(n, b)| Entry::stored(n, b)).collect();
    hostile::zip(&e)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn pth(ts: &[T], storages: &[(&str, Vec<u8>)], byteorder: &[u8]) -> PathBuf {
    let mut entries = vec![
        Entry::stored("arch/data.pkl", &pkl(ts)),
        Entry::stored("arch/byteorder", byteorder),
    ];
    for (k, b) in storages {
        entries.push(Entry::stored(&format!("arch/data/{k}"), b));
    }
    write_tmp("hand.pth", &hostile::zip(&entries))
}

#[test]
fn hand_built_pth_views() {
    let s0 = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let t = |name, offset, size, stride| T {
        name,
        kind: "FloatStorage",
        key: "0",
        numel: 7,
        offset,
        size,
        stride,
    };
    let p = pth(
        &[
            t("a", 1, &[2, 3], &[1, 2]),             // transposed view starting at 1
            t("b", 6, &[], &[]),                     // scalar
            t("c", 0, &[0, 5], &[5, 1]),             // empty
            t("d", 2, &[3], &[0]),                   // expanded
            t("e", 0, &[2, 1, 2], &[1, 1 << 62, 2]), // a size-1 dim with an absurd stride
        ],
        &[("0", s0)],
        b"little",
    );
    let ck = import::load(&p, None).unwrap();
    assert_eq!(ck.tensors["a"].data, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    assert_eq!(ck.tensors["b"].shape, Vec::<usize>::new());
    assert_eq!(ck.tensors["b"].data, vec![6.0]);
    assert_eq!(ck.tensors["c"].shape, vec![0, 5]);
    assert!(ck.tensors["c"].data.is_empty());
    assert_eq!(ck.tensors["d"].data, vec![2.0; 3]);
    assert_eq!(ck.tensors["e"].data, vec![0.0, 2.0, 1.0, 3.0]);
}

#[test]
fn hostile_pth_files() {
    let s = || vec![("0", f32_bytes(&[1.0, 2.0, 3.0, 4.0]))];
    let one = |t: T| pth(&[t], &s(), b"little");
    let base = || T {
        name: "w",
        kind: "FloatStorage",
        key: "0",
        numel: 4,
        offset: 0,
        size: &[4],
        stride: &[1],
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        // 10^12 elements through a stride-0 view of one element: refused before allocating
        (
            one(T {
                size: &[1_000_000, 1_000_000],
                stride: &[0, 0],
                ..base()
            }),
            "too large",
        ),
        // a storage claiming 10^12 elements backed by 16 bytes
        (
            one(T {
                numel: 1_000_000_000_000,
                ..base()
            }),
            "storage",
        ),
        (
            one(T {
                numel: u64::MAX / 2,
                ..base()
            }),
            "over the limit",
        ),
        // views past the end of the storage
        (
            one(T {
                stride: &[2],
                ..base()
            }),
            "reaches past",
        ),
        (
            one(T {
                offset: 1,
                ..base()
            }),
            "reaches past",
        ),
        (
            one(T {
                offset: u64::MAX - 1,
                ..base()
            }),
            "non-negative int, found -2",
        ),
        (
            one(T {
                size: &[i64::MAX as u64, 2],
                stride: &[1, 1],
                ..base()
            }),
            "too large",
        ),
        // storage entry missing / wrong type
        (one(T { key: "7", ..base() }), "missing from the archive"),
        (
            one(T {
                kind: "LongStorage",
                numel: 2,
                size: &[2],
                ..base()
            }),
            "type LongStorage",
        ),
        (
            one(T {
                kind: "WeirdStorage",
                ..base()
            }),
            "WeirdStorage",
        ),
        (pth(&[base()], &s(), b"big"), "only little-endian"),
    ];
    for (p, want) in cases {
        let m = err(import::load(&p, None));
        assert!(m.contains(want), "want {want:?}: {m}");
    }
    // sanity: the base case is fine
    assert_eq!(
        import::load(&one(base()), None).unwrap().tensors["w"].data,
        vec![1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn args_mean_and_std_are_read() {
    // {'model': {}, 'args': Namespace(mean=(0.5, 0.25, 0.125), std=0.5, input_size=4, eval_crop_ratio=1.0)}
    let mut o = vec![0x80, 2, b'}', b'('];
    uni(&mut o, "model");
    o.push(b'}');
    uni(&mut o, "args");
    o.extend(b"cargparse\nNamespace\n)\x81}(");
    uni(&mut o, "mean");
    for v in [0.5f64, 0.25, 0.125] {
        o.push(b'G');
        o.extend(v.to_be_bytes());
    }
    o.push(0x87);
    uni(&mut o, "std");
    o.push(b'G');
    o.extend(0.5f64.to_be_bytes());
    uni(&mut o, "input_size");
    o.extend([b'K', 4]);
    uni(&mut o, "eval_crop_ratio");
    o.push(b'G');
    o.extend(1.0f64.to_be_bytes());
    o.extend(b"ubu.");
    let p = write_tmp("args.pth", &zip_of(&[("a/data.pkl", &o)]));
    let ck = import::load(&p, None).unwrap();
    assert!(ck.tensors.is_empty());
    assert_eq!(ck.meta["mean"], "0.5,0.25,0.125");
    assert_eq!(ck.meta["std"], "0.5");
    assert_eq!(ck.meta["img_size"], "4");
    assert_eq!(ck.meta["resize"], "4");
}

#[test]
fn hostile_pickles_in_a_zip() {
    // (pickle, error with --key a, error without a key)
    let cases: Vec<(&[u8], &str, &str)> = vec![
        (
            b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.",
            "os.system, not a dict",
            "os.system, not a dict",
        ),
        (
            b"\x80\x02}(X\x01\x00\x00\x00acposix\nsystem\n)Ru.",
            "'a' holds a pickled posix.system object",
            "no state dict found",
        ),
        (
            b"\x80\x02}(X\x01\x00\x00\x00a}(X\x01\x00\x00\x00bK\x01uu.",
            "['b'] is a int, not a tensor",
            "no state dict",
        ),
        (b"\x80\x02(((((((((", "without STOP", "without STOP"),
        (b"\x80\x02\x8c\x09hello", "end of pickle", "end of pickle"),
        (
            b"garbage",
            "unsupported pickle opcode",
            "unsupported pickle opcode",
        ),
    ];
    for (pk, with_key, without) in cases {
        let p = write_tmp("evil.pth", &zip_of(&[("a/data.pkl", pk)]));
        let m = err(import::load(&p, Some("a")));
        assert!(m.contains(with_key), "want {with_key:?}: {m}");
        let m = err(import::load(&p, None));
        assert!(m.contains(without), "want {without:?}: {m}");
    }
}

// ---- the bundled Fashion-MNIST model ------------------------------------------------------

#[test]
fn bundled_fashion_mnist_pth_and_safetensors_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fashion-mnist");
    let (pth, st) = (
        dir.join("vim_fmnist.pth"),
        dir.join("vim_fmnist.safetensors"),
    );
    if !pth.exists() || !st.exists() {
        eprintln!(
            "SKIPPED bundled_fashion_mnist_pth_and_safetensors_agree: no model in {} yet",
            dir.display()
        );
        return;
    }
    let a = import::load(&pth, None).unwrap();
    let b = import::load(&st, None).unwrap();
    assert_bit_identical(&a, &b);
    let ema = import::load(&pth, Some("model_ema")).unwrap();
    assert_eq!(ema.tensors.len(), a.tensors.len());
    // the .pth carries no class names: give both the same ones
    let labels: Vec<String> = b.meta["labels"].lines().map(str::to_owned).collect();
    let opts = ModelOptions {
        labels: Some(labels),
        ..Default::default()
    };
    let pa = import::to_packed(&a, &opts).unwrap();
    let pb = import::to_packed(&b, &opts).unwrap();
    assert_eq!(pa, pb);
    assert_eq!(pa.config.channels, 1);
    assert_eq!(pa.labels.len(), pa.config.num_classes);
    // and the safetensors metadata alone gives the same model
    assert_eq!(import::to_packed(&b, &ModelOptions::default()).unwrap(), pb);
}

// ---- issue 12: hostile inputs found by testing (each fails on 95a4037) ----------------------

#[path = "common/hostile.rs"]
mod hostile;

#[test]
fn f1_shared_storage_claiming_more_is_an_error_not_a_panic() {
    let p = write_tmp("f1.pth", &hostile::f1_shared_storage());
    let m = err(import::load(&p, None));
    assert!(
        m.contains("tensor 'b'") && m.contains("holds 16 bytes, the pickle says 4000"),
        "{m}"
    );
}

#[test]
fn f2_repeated_reduce_of_a_large_list_hits_the_byte_budget() {
    let p = write_tmp("f2.pth", &hostile::f2_reduce_bomb());
    let m = err(import::load(&p, None));
    assert!(
        m.contains("data.pkl") && m.contains("bytes of memory"),
        "{m}"
    );
}

#[test]
fn f3_stride0_views_are_refused_before_materialising() {
    let p = write_tmp("f3.pth", &hostile::f3_stride0());
    let t = std::time::Instant::now();
    let m = err(import::load(&p, None));
    assert!(
        m.contains("tensor 'a'") && m.contains("repeats 1 stored elements as 268435456"),
        "{m}"
    );
    // Refused from the pickle's numbers alone (the old code gathered 1 GiB per view first).
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn f4_compressed_storage_is_read_only_as_far_as_the_view_reaches() {
    // The entry inflates to 256 MiB; the view needs 16 bytes. (The memory bound is asserted on
    // the CLI in tests/hostile_cli.rs.)
    let p = write_tmp("f4.pth", &hostile::f4_deflate_bomb(256));
    let ck = import::load(&p, None).unwrap();
    assert_eq!(ck.tensors["w"].data, vec![0.0; 4]);
    // An entry smaller than the storage the pickle declares is refused before reading.
    let t = hostile::T {
        name: "w",
        kind: "FloatStorage",
        key: "0",
        numel: 8,
        offset: 0,
        size: &[4],
        stride: &[1],
    };
    let small = hostile::pth(
        &hostile::state_dict_pickle(&[t]),
        vec![hostile::Entry::stored("0", &[0u8; 16])],
    );
    let m = err(import::load(&write_tmp("f4b.pth", &small), None));
    assert!(m.contains("holds 16 bytes, the pickle says 32"), "{m}");
}

#[test]
fn f12_nan_weights_and_unusable_preprocessing_are_refused() {
    let p = write_tmp("f12.safetensors", &hostile::f12_nan_weights());
    let ck = import::load(&p, None).unwrap();
    let m = err(import::to_packed(&ck, &ModelOptions::default()));
    assert!(
        m.contains("layers.0.mixer.out_proj.weight") && m.contains("NaN") && m.contains("index 5"),
        "{m}"
    );
    let inf = hostile::vim_safetensors(&[], |name, v| {
        if name == "head.bias" {
            v[2] = f32::NEG_INFINITY;
        }
    });
    let ck = import::load(&write_tmp("inf.safetensors", &inf), None).unwrap();
    let m = err(import::to_packed(&ck, &ModelOptions::default()));
    assert!(m.contains("'head.bias'") && m.contains("-inf"), "{m}");

    let ok = hostile::vim_safetensors(&[], |_, _| {});
    let ck = import::load(&write_tmp("ok.safetensors", &ok), None).unwrap();
    import::to_packed(&ck, &ModelOptions::default()).unwrap();
    let with = |o: ModelOptions| err(import::to_packed(&ck, &o));
    let m = with(ModelOptions {
        resize: Some(u32::MAX),
        ..Default::default()
    });
    assert!(m.contains("resize") && m.contains("4294967295"), "{m}");
    let m = with(ModelOptions {
        std: Some([1e-30, 1.0, 1.0]),
        ..Default::default()
    });
    assert!(m.contains("--std") && m.contains("at least"), "{m}");
    let m = with(ModelOptions {
        mean: Some([0.5, 1e30, 0.5]),
        ..Default::default()
    });
    assert!(m.contains("--mean"), "{m}");
    // The same through metadata names the field.
    let meta = hostile::vim_safetensors(&[("resize", "4000000000")], |_, _| {});
    let ck = import::load(&write_tmp("resize.safetensors", &meta), None).unwrap();
    let m = err(import::to_packed(&ck, &ModelOptions::default()));
    assert!(m.contains("resize: 4000000000"), "{m}");
}

#[test]
fn unclear_messages_are_clear() {
    // A tensor whose element count overflows u64: the real count, not 18446744073709551615.
    let t = hostile::T {
        name: "w",
        kind: "FloatStorage",
        key: "0",
        numel: 1,
        offset: 0,
        size: &[1 << 40, 1 << 40],
        stride: &[0, 0],
    };
    let p = hostile::pth(
        &hostile::state_dict_pickle(&[t]),
        vec![hostile::Entry::stored("0", &[0u8; 4])],
    );
    let m = err(import::load(&write_tmp("huge.pth", &p), None));
    assert!(
        m.contains("1208925819614629174706176") && !m.contains("18446744073709551615"),
        "{m}"
    );
    // A directory: said once.
    let d = tmp("dir");
    std::fs::create_dir_all(&d).unwrap();
    let m = err(import::load(&d, None));
    assert_eq!(m.matches("directory").count(), 1, "{m}");
    // safetensors offsets: a sentence, not `InvalidOffset("b")`.
    let mut st = hostile::vim_safetensors(&[], |_, _| {});
    let hlen = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(st[8..8 + hlen].to_vec()).unwrap();
    let bad = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    st.splice(8..8 + hlen, bad.bytes());
    let m = err(import::load(&write_tmp("off.safetensors", &st), None));
    assert!(
        !m.contains("InvalidOffset") && m.contains("data_offsets"),
        "{m}"
    );
}

#[test]
fn fuzz_seeds_are_the_builders_output() {
    // `VIMVQ_WRITE_FUZZ_SEEDS=1 cargo test -p vimvq-pack --test import fuzz_seeds` rewrites them.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let write = std::env::var_os("VIMVQ_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in hostile::fuzz_seeds() {
        let p = root.join(target).join(name);
        if write {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &bytes).unwrap();
        }
        assert_eq!(
            std::fs::read(&p).ok().as_deref(),
            Some(&bytes[..]),
            "{} is stale: rewrite it with VIMVQ_WRITE_FUZZ_SEEDS=1",
            p.display()
        );
        assert!(bytes.len() <= 131_072, "{name}: {} bytes", bytes.len());
    }
}
