//! Feature outputs (`vimvq_rt::forward::infer_features`) against the PyTorch model's
//! `forward_features` (the normalised cls token) and its token states after `norm_f`.
//!
//! Fixtures (made by `models/tools/make_features_golden.py`, committed in `tests/golden/`):
//! `fmnist_{features,tokens}_torch.npy` for the first 8 `fmnist_inputs.npy` images with the
//! bundled model, `vimti_{features,tokens}_torch.npy` for `vimti_input.npy` with
//! `vimti_random.safetensors`. Budget: `max|Δ| / max|ref| ≤ 1e-4` per image, for 1 and 2
//! threads. Also checks that the logits are `features · W_headᵀ + b_head` to float rounding,
//! and that asking for features leaves the logits bit-identical.

use std::path::{Path, PathBuf};

use vimvq_pack::import::{self, ModelOptions};
use vimvq_rt::format::to_bytes;
use vimvq_rt::format::{AlignedBytes, Role};
use vimvq_rt::forward::{infer, infer_features, Features};
use vimvq_rt::model::Model;

/// Named error budget, the same as the logits' (tests/golden_parity.rs).
const PARITY_REL: f64 = 1e-4;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn npy(name: &str) -> (Vec<u64>, Vec<f32>) {
    let path = root().join("tests/golden").join(name);
    let f = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with models/tools/make_features_golden.py)",
            path.display()
        )
    });
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn pack(path: PathBuf) -> AlignedBytes {
    let ck = import::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
    let packed = import::to_packed(&ck, &ModelOptions::default()).unwrap();
    AlignedBytes::from_slice(&to_bytes(&packed).unwrap())
}

fn rel(got: &[f32], want: &[f32]) -> f64 {
    let num = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    num / want.iter().map(|b| b.abs() as f64).fold(0.0, f64::max)
}

/// `logits[j] = Σ f·W[j] + b[j]` within the float32 rounding bound of a `D`-term dot product
/// (`D · ε · Σ|terms|`), against the sum in f64.
fn check_head(model: &Model<'_>, features: &[f32], logits: &[f32]) {
    let d = model.config().embed_dim;
    let w = model.dense(Role::HeadWeight, 0).expect("dense head");
    let b = model.dense(Role::HeadBias, 0).expect("head bias");
    for (j, &l) in logits.iter().enumerate() {
        let terms = features.iter().zip(&w[j * d..(j + 1) * d]);
        let exact: f64 = terms
            .clone()
            .map(|(f, w)| *f as f64 * *w as f64)
            .sum::<f64>()
            + b[j] as f64;
        let size: f64 = terms
            .map(|(f, w)| (*f as f64 * *w as f64).abs())
            .sum::<f64>()
            + b[j].abs() as f64;
        let bound = (d + 1) as f64 * f32::EPSILON as f64 * size;
        assert!(
            (l as f64 - exact).abs() <= bound,
            "class {j}: logit {l} vs features·head + bias {exact} (bound {bound:e})"
        );
    }
}

/// Runs every image on 1 and 2 threads; returns the worst relative errors (features, tokens).
fn check(model: &Model<'_>, prefix: &str, inputs: &str) -> (f64, f64) {
    let c = *model.config();
    let (d, l, k, il) = (c.embed_dim, c.seq_len(), c.num_classes, c.input_len());
    let (fshape, want_f) = npy(&format!("{prefix}_features_torch.npy"));
    let (tshape, want_t) = npy(&format!("{prefix}_tokens_torch.npy"));
    let n = fshape[0] as usize;
    assert_eq!(fshape, [n as u64, d as u64]);
    assert_eq!(tshape, [n as u64, l as u64, d as u64]);
    let (_, inputs) = npy(inputs);
    let mut worst = (0f64, 0f64);
    for threads in [1, 2] {
        let mut scratch = vec![0u8; c.scratch_bytes_threaded(threads)];
        for i in 0..n {
            let x = &inputs[i * il..(i + 1) * il];
            let mut plain = vec![0f32; k];
            infer(model, x, &mut plain, &mut scratch).unwrap();
            let (mut logits, mut pooled, mut tokens) =
                (vec![0f32; k], vec![0f32; d], vec![0f32; l * d]);
            let f = Features {
                pooled: Some(&mut pooled),
                tokens: Some(&mut tokens),
            };
            infer_features(model, x, &mut logits, f, &mut scratch, threads).unwrap();
            assert_eq!(
                logits, plain,
                "{prefix} image {i}: logits changed by the features"
            );
            // The pooled vector alone (cls-only last layer) is the same, bit for bit.
            let mut alone = vec![0f32; d];
            let f = Features {
                pooled: Some(&mut alone),
                tokens: None,
            };
            infer_features(model, x, &mut logits, f, &mut scratch, threads).unwrap();
            assert_eq!(alone, pooled, "{prefix} image {i}");
            let pos = c.cls_pos();
            assert_eq!(
                &tokens[pos * d..(pos + 1) * d],
                &pooled[..],
                "{prefix} image {i}"
            );
            check_head(model, &pooled, &logits);

            let ef = rel(&pooled, &want_f[i * d..(i + 1) * d]);
            let et = rel(&tokens, &want_t[i * l * d..(i + 1) * l * d]);
            assert!(
                ef <= PARITY_REL,
                "{prefix} image {i}: features rel err {ef:e}"
            );
            assert!(
                et <= PARITY_REL,
                "{prefix} image {i}: tokens rel err {et:e}"
            );
            worst = (worst.0.max(ef), worst.1.max(et));
        }
    }
    worst
}

#[test]
fn fashion_mnist_features_match_torch() {
    let bytes = pack(root().join("models/fashion-mnist/vim_fmnist.safetensors"));
    let model = Model::parse(&bytes).unwrap();
    let (ef, et) = check(&model, "fmnist", "fmnist_inputs.npy");
    eprintln!("fashion-mnist: features rel err {ef:.3e}, tokens {et:.3e}");
}

#[test]
fn vim_ti_random_features_match_torch() {
    let bytes = pack(root().join("tests/golden/vimti_random.safetensors"));
    let model = Model::parse(&bytes).unwrap();
    let (ef, et) = check(&model, "vimti", "vimti_input.npy");
    eprintln!("vim-ti random: features rel err {ef:.3e}, tokens {et:.3e}");
}

#[test]
fn wrong_feature_buffers_are_refused() {
    let bytes = pack(root().join("models/fashion-mnist/vim_fmnist.safetensors"));
    let model = Model::parse(&bytes).unwrap();
    let c = *model.config();
    let x = vec![0f32; c.input_len()];
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; c.scratch_bytes()];
    let mut short = vec![0f32; c.embed_dim - 1];
    let f = Features {
        pooled: Some(&mut short),
        tokens: None,
    };
    let e = infer_features(&model, &x, &mut logits, f, &mut scratch, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "features buffer has {} values, the model gives {}",
            c.embed_dim - 1,
            c.embed_dim
        )
    );
    let mut tokens = vec![0f32; c.embed_dim];
    let f = Features {
        pooled: None,
        tokens: Some(&mut tokens),
    };
    assert!(infer_features(&model, &x, &mut logits, f, &mut scratch, 1).is_err());
}
