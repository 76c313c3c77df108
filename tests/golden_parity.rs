//! End-to-end parity of the runtime with the PyTorch model and the float64 numpy reference.
//!
//! Fixtures (made by `models/tools/make_golden.py`, committed in `tests/golden/`):
//! * `vimti_random.safetensors`: Vim-Ti shapes (D=192, L=197, 1000 classes), depth 2, random
//!   weights; `vimti_input.npy` (2,3,224,224); `vimti_logits_{torch,f64}.npy` (2,1000).
//! * the bundled `models/fashion-mnist/vim_fmnist.safetensors` (D=128, depth 4, 4×4 patches,
//!   28×28×1, 10 classes); `fmnist_inputs.npy` (64,1,28,28); `fmnist_logits_{torch,f64}.npy`.
//!
//! Path: safetensors → `vimvq_pack::import` → `.vimvq` writer → `Model::parse` → `infer`.
//! Budget: `max|Δ| / max|ref| ≤ 1e-4` per image against both references, identical top-1.
//! `VIMVQ_GOLDEN_DIR` / `VIMVQ_FMNIST_MODEL` point the test at other fixture files.

use std::path::{Path, PathBuf};

use vimvq_pack::import::{self, ModelOptions};
use vimvq_pack::output::write_atomic;
use vimvq_rt::format::{to_bytes, AlignedBytes, ModelFile};
use vimvq_rt::forward::infer;
use vimvq_rt::model::Model;

/// Named error budget of the end-to-end comparison.
const PARITY_REL: f64 = 1e-4;

fn golden_dir() -> PathBuf {
    std::env::var_os("VIMVQ_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"))
}

fn fmnist_model() -> PathBuf {
    std::env::var_os("VIMVQ_FMNIST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/fashion-mnist/vim_fmnist.safetensors")
        })
}

fn require(p: &Path) -> &Path {
    assert!(
        p.exists(),
        "missing fixture {} (regenerate with models/tools/make_golden.py)",
        p.display()
    );
    p
}

fn npy<T: npyz::Deserialize>(name: &str) -> (Vec<u64>, Vec<T>) {
    let path = golden_dir().join(name);
    let f = std::fs::File::open(require(&path)).unwrap();
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<T>().unwrap())
}

fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn rel(got: &[f32], want: &[f64]) -> f64 {
    let num = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    num / want.iter().map(|b| b.abs()).fold(0.0, f64::max)
}

/// Imports a safetensors checkpoint and packs it.
fn pack(path: &Path) -> Vec<u8> {
    let ck = import::load(require(path), None).unwrap_or_else(|e| panic!("{e}"));
    let packed = import::to_packed(&ck, &ModelOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    to_bytes(&packed).unwrap()
}

/// Runs every image and checks both references; returns the worst relative errors.
fn check(
    model: &Model<'_>,
    inputs: &[f32],
    n: usize,
    torch: &[f32],
    f64_ref: &[f64],
) -> (f64, f64) {
    let c = model.config();
    let (il, k) = (c.input_len(), c.num_classes);
    assert_eq!(inputs.len(), n * il);
    assert_eq!((torch.len(), f64_ref.len()), (n * k, n * k));
    let mut scratch = vec![0u8; model.scratch_bytes()];
    let mut logits = vec![0f32; k];
    let (mut worst_torch, mut worst_f64) = (0f64, 0f64);
    for i in 0..n {
        infer(
            model,
            &inputs[i * il..(i + 1) * il],
            &mut logits,
            &mut scratch,
        )
        .unwrap();
        let t: Vec<f64> = torch[i * k..(i + 1) * k]
            .iter()
            .map(|v| *v as f64)
            .collect();
        let r = &f64_ref[i * k..(i + 1) * k];
        let (et, ef) = (rel(&logits, &t), rel(&logits, r));
        assert!(et <= PARITY_REL, "image {i}: rel err vs torch {et:e}");
        assert!(ef <= PARITY_REL, "image {i}: rel err vs float64 {ef:e}");
        assert_eq!(
            argmax(&logits),
            argmax(r),
            "image {i}: top-1 differs from float64"
        );
        assert_eq!(
            argmax(&logits),
            argmax(&t),
            "image {i}: top-1 differs from torch"
        );
        worst_torch = worst_torch.max(et);
        worst_f64 = worst_f64.max(ef);
    }
    (worst_torch, worst_f64)
}

#[test]
fn vim_ti_random_matches_torch_and_float64() {
    let bytes = pack(&golden_dir().join("vimti_random.safetensors"));
    // Through the file path the CLI uses: atomic write, then mmap.
    let dir = std::env::temp_dir().join(format!("vimvq-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vimti.vimvq");
    let ck = import::load(&golden_dir().join("vimti_random.safetensors"), None).unwrap();
    let packed = import::to_packed(&ck, &ModelOptions::default()).unwrap();
    write_atomic(&path, &to_bytes(&packed).unwrap()).unwrap();
    let file = ModelFile::open(&path).unwrap();
    assert_eq!(file.bytes(), &bytes[..]);
    let model = file.model().unwrap();
    let c = model.config();
    assert_eq!(
        (
            c.embed_dim,
            c.depth,
            c.seq_len(),
            c.num_classes,
            c.d_inner,
            c.dt_rank
        ),
        (192, 2, 197, 1000, 384, 12)
    );

    let (shape, inputs) = npy::<f32>("vimti_input.npy");
    assert_eq!(shape, [2, 3, 224, 224]);
    let (_, torch) = npy::<f32>("vimti_logits_torch.npy");
    let (_, f64_ref) = npy::<f64>("vimti_logits_f64.npy");
    let (et, ef) = check(&model, &inputs, 2, &torch, &f64_ref);
    eprintln!("vim-ti random: max rel err vs torch {et:.3e}, vs float64 {ef:.3e}");
    drop(file);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fashion_mnist_model_matches_torch_and_float64() {
    let bytes = AlignedBytes::from_slice(&pack(&fmnist_model()));
    let model = Model::parse(&bytes).unwrap();
    let c = model.config();
    assert_eq!(
        (
            c.embed_dim,
            c.depth,
            c.patch,
            c.stride,
            c.img_size,
            c.channels,
            c.num_classes
        ),
        (128, 4, 4, 4, 28, 1, 10)
    );
    let (shape, inputs) = npy::<f32>("fmnist_inputs.npy");
    assert_eq!(shape, [64, 1, 28, 28]);
    let (_, torch) = npy::<f32>("fmnist_logits_torch.npy");
    let (_, f64_ref) = npy::<f64>("fmnist_logits_f64.npy");
    let (et, ef) = check(&model, &inputs, 64, &torch, &f64_ref);
    eprintln!("fashion-mnist: max rel err vs torch {et:.3e}, vs float64 {ef:.3e}");
}
