//! `vimvq eval` on the full Fashion-MNIST test set (10,000 PNGs written from Debian's
//! `dataset-fashion-mnist` IDX files) must reproduce the accuracy PyTorch measured for the
//! bundled model (`tests/golden/fmnist_accuracy.json`) within 0.1 point.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DATA: &str = "/usr/share/datasets/fashion-mnist";
const LABELS: [&str; 10] = [
    "t-shirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a gzipped IDX file: (dims, bytes).
fn read_idx(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let f = fs::File::open(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (install Debian's dataset-fashion-mnist)",
            path.display()
        )
    });
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(
        &raw[..3],
        &[0, 0, 8],
        "{}: not an unsigned-byte IDX file",
        path.display()
    );
    let nd = raw[3] as usize;
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let data = raw[4 + 4 * nd..].to_vec();
    assert_eq!(data.len(), dims.iter().product::<usize>());
    (dims, data)
}

/// Writes `DIR/<k>_<name>/<index>.png`; class folders sort in class order.
fn write_image_folder(dir: &Path) -> usize {
    let (idims, images) = read_idx(&Path::new(DATA).join("t10k-images-idx3-ubyte.gz"));
    let (ldims, labels) = read_idx(&Path::new(DATA).join("t10k-labels-idx1-ubyte.gz"));
    assert_eq!(idims, [10_000, 28, 28]);
    assert_eq!(ldims, [10_000]);
    let _ = fs::remove_dir_all(dir);
    for (k, name) in LABELS.iter().enumerate() {
        fs::create_dir_all(dir.join(format!("{k}_{name}"))).unwrap();
    }
    for (i, (px, &y)) in images.chunks_exact(784).zip(&labels).enumerate() {
        let img = image::GrayImage::from_raw(28, 28, px.to_vec()).unwrap();
        let p = dir
            .join(format!("{y}_{}", LABELS[y as usize]))
            .join(format!("{i:05}.png"));
        img.save(&p).unwrap();
    }
    labels.len()
}

fn vimvq_ok(args: &[&OsStr]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "vimvq {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn full_test_set_matches_pytorch_accuracy() {
    let golden: Value = serde_json::from_str(
        &fs::read_to_string(root().join("tests/golden/fmnist_accuracy.json"))
            .expect("tests/golden/fmnist_accuracy.json"),
    )
    .unwrap();
    let want = golden["top1"].as_f64().expect("fmnist_accuracy.json: top1");
    let want_count = golden
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(10_000);

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("eval_fmnist-{}", std::process::id()));
    let data = tmp.join("test");
    let n = write_image_folder(&data);
    assert_eq!(n as u64, want_count);
    let model = tmp.join("fmnist.vimvq");
    let st = root().join("models/fashion-mnist/vim_fmnist.safetensors");
    vimvq_ok(&[
        OsStr::new("import"),
        st.as_os_str(),
        OsStr::new("-o"),
        model.as_os_str(),
    ]);

    let out = vimvq_ok(&[
        OsStr::new("eval"),
        model.as_os_str(),
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--threads"),
        OsStr::new("2"),
        OsStr::new("--json"),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["count", "images_per_second", "threads", "top1", "top5"]
    );
    let top1 = v["top1"].as_f64().unwrap();
    let top5 = v["top5"].as_f64().unwrap();
    println!(
        "vimvq eval: top-1 {top1:.4} (PyTorch {want:.4}), top-5 {top5:.4}, {} images, {:.1} images/s, {} threads",
        v["count"], v["images_per_second"].as_f64().unwrap(), v["threads"]
    );
    assert_eq!(v["count"].as_u64(), Some(want_count));
    assert_eq!(v["threads"].as_u64(), Some(2));
    assert!(
        (top1 - want).abs() <= 0.001,
        "top-1 {top1} vs PyTorch {want}"
    );
    if let Some(t5) = golden.get("top5").and_then(Value::as_f64) {
        assert!((top5 - t5).abs() <= 0.001, "top-5 {top5} vs PyTorch {t5}");
    }
    assert!(top5 >= top1 && v["images_per_second"].as_f64().unwrap() > 0.0);

    // --limit: an evenly spread subset, single-threaded, text output.
    let text = vimvq_ok(&[
        OsStr::new("eval"),
        model.as_os_str(),
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--limit"),
        OsStr::new("500"),
    ]);
    assert!(
        text.starts_with("top-1 ") && text.contains("(500 images, 10 classes"),
        "{text}"
    );
    let _ = fs::remove_dir_all(&tmp);
}
