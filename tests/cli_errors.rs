//! Every bad input gives one `error: …` line on stderr, a non-zero exit (1; usage errors 2),
//! nothing on stdout, no panic, and no output file left behind.
//!
//! Uses the bundled Fashion-MNIST model (`models/fashion-mnist/vim_fmnist.{safetensors,pth}`).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch folder for one test.
fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli_errors-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn vimvq<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let o = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args(args)
        .output()
        .expect("spawn vimvq");
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Asserts the failure contract; `needle` must appear in the message (case-insensitive).
#[track_caller]
fn assert_error(o: &Out, code: i32, needle: &str) {
    let ctx = format!(
        "exit {:?}\nstdout: {:?}\nstderr: {:?}",
        o.code, o.stdout, o.stderr
    );
    assert_eq!(o.code, Some(code), "{ctx}");
    assert!(!o.stderr.contains("panicked"), "{ctx}");
    assert!(o.stdout.is_empty(), "{ctx}");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want exactly one stderr line; {ctx}");
    assert!(lines[0].starts_with("error: "), "{ctx}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "message should mention {needle:?}; {ctx}"
    );
}

fn fmnist(ext: &str) -> PathBuf {
    let p = root().join(format!("models/fashion-mnist/vim_fmnist.{ext}"));
    assert!(p.exists(), "bundled model {} is missing", p.display());
    p
}

/// The bundled model imported once into the target tmp dir.
fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let d = tmp("model");
        let out = d.join("fmnist.vimvq");
        let o = vimvq([
            OsStr::new("import"),
            fmnist("safetensors").as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
        ]);
        assert_eq!(o.code, Some(0), "import failed: {}", o.stderr);
        out
    })
}

fn sample_png() -> PathBuf {
    let dir = root().join("models/fashion-mnist/samples");
    let mut pngs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("png")))
        .collect();
    pngs.sort();
    pngs.into_iter().next().expect("no sample PNG")
}

/// Files in `dir` (to prove nothing was left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Writes a version-1.0 `.npy` file with the given dtype descriptor, shape and raw data.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

#[test]
fn missing_files() {
    let d = tmp("missing");
    let nope = d.join("nope.vimvq");
    assert_error(
        &vimvq([
            OsStr::new("run"),
            nope.as_os_str(),
            sample_png().as_os_str(),
        ]),
        1,
        "no such file",
    );
    assert_error(
        &vimvq([OsStr::new("inspect"), nope.as_os_str()]),
        1,
        "no such file",
    );
    let data = d.join("data");
    assert_error(
        &vimvq([
            OsStr::new("eval"),
            nope.as_os_str(),
            OsStr::new("--data"),
            data.as_os_str(),
        ]),
        1,
        "no such file",
    );
    // Model fine, image missing: the message names the image.
    let img = d.join("absent.png");
    assert_error(
        &vimvq([OsStr::new("run"), model().as_os_str(), img.as_os_str()]),
        1,
        "absent.png",
    );
    // Dataset folder missing.
    assert_error(
        &vimvq([
            OsStr::new("eval"),
            model().as_os_str(),
            OsStr::new("--data"),
            data.as_os_str(),
        ]),
        1,
        "no such file",
    );
    let out = d.join("out.vimvq");
    let ck = d.join("absent.pth");
    assert_error(
        &vimvq([
            OsStr::new("import"),
            ck.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
        ]),
        1,
        "absent.pth",
    );
    assert!(!out.exists());
    assert_eq!(listing(&d), Vec::<String>::new());
}

#[test]
fn not_a_checkpoint() {
    let d = tmp("notckpt");
    let txt = d.join("notes.txt");
    fs::write(&txt, "these are not the weights you are looking for\n").unwrap();
    let out = d.join("out.vimvq");
    let o = vimvq([
        OsStr::new("import"),
        txt.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    assert_error(&o, 1, "not a checkpoint");
    assert_error(
        &vimvq([OsStr::new("inspect"), txt.as_os_str()]),
        1,
        "not a checkpoint",
    );
    // A text file is not a model either.
    assert_error(
        &vimvq([OsStr::new("run"), txt.as_os_str(), sample_png().as_os_str()]),
        1,
        "not a .vimvq",
    );
    // An empty file.
    let empty = d.join("empty.pth");
    fs::write(&empty, b"").unwrap();
    assert_error(
        &vimvq([
            OsStr::new("import"),
            empty.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
        ]),
        1,
        "empty",
    );
    assert_eq!(listing(&d), vec!["empty.pth", "notes.txt"]);
}

#[test]
fn truncated_checkpoints() {
    let d = tmp("trunc_ckpt");
    for ext in ["pth", "safetensors"] {
        let full = fs::read(fmnist(ext)).unwrap();
        for frac in [0.001, 0.1, 0.5, 0.9, 0.999] {
            let cut = ((full.len() as f64 * frac) as usize).max(1);
            let p = d.join(format!("cut{cut}.{ext}"));
            fs::write(&p, &full[..cut]).unwrap();
            let out = d.join(format!("cut{cut}.vimvq"));
            let o = vimvq([
                OsStr::new("import"),
                p.as_os_str(),
                OsStr::new("-o"),
                out.as_os_str(),
            ]);
            assert_error(&o, 1, &format!("cut{cut}.{ext}"));
            assert!(!out.exists(), "{} left behind", out.display());
            let o = vimvq([OsStr::new("inspect"), p.as_os_str()]);
            assert_error(&o, 1, &format!("cut{cut}.{ext}"));
            fs::remove_file(&p).unwrap();
        }
    }
    assert_eq!(
        listing(&d),
        Vec::<String>::new(),
        "temporary files left behind"
    );
}

/// Rewrites the safetensors header so that `head.weight` claims another shape with the same
/// number of elements (the file stays self-consistent; only the Vim schema is violated).
#[test]
fn wrong_tensor_shape() {
    let d = tmp("shape");
    let bytes = fs::read(fmnist("safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let shape = header["head.weight"]["shape"].as_array().unwrap().clone();
    let (rows, cols) = (shape[0].as_u64().unwrap(), shape[1].as_u64().unwrap());
    assert_eq!(cols % 2, 0);
    header["head.weight"]["shape"] = serde_json::json!([rows * 2, cols / 2]);
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut edited = (text.len() as u64).to_le_bytes().to_vec();
    edited.extend_from_slice(&text);
    edited.extend_from_slice(&bytes[8 + n..]);
    let p = d.join("reshaped.safetensors");
    fs::write(&p, edited).unwrap();
    let out = d.join("reshaped.vimvq");
    let o = vimvq([
        OsStr::new("import"),
        p.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    assert_error(&o, 1, "head.weight");
    assert!(!out.exists());
    assert_error(
        &vimvq([OsStr::new("inspect"), p.as_os_str()]),
        1,
        "head.weight",
    );

    // A tensor missing altogether.
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.as_object_mut().unwrap().remove("norm_f.weight");
    let text = serde_json::to_vec(&header).unwrap();
    let mut edited = (text.len() as u64).to_le_bytes().to_vec();
    edited.extend_from_slice(&text);
    edited.extend_from_slice(&bytes[8 + n..]);
    let p = d.join("missing_tensor.safetensors");
    fs::write(&p, edited).unwrap();
    let o = vimvq([
        OsStr::new("import"),
        p.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    // Either the safetensors reader (data not fully covered) or the schema check complains.
    assert_eq!(o.code, Some(1));
    assert_error(&o, 1, "missing_tensor.safetensors");
    assert!(!out.exists());
}

#[test]
fn truncated_and_corrupted_models() {
    let d = tmp("trunc_model");
    let full = fs::read(model()).unwrap();
    let img = sample_png();
    let len = full.len();
    for cut in [
        0,
        1,
        7,
        8,
        63,
        64,
        100,
        200,
        1000,
        len / 3,
        len / 2,
        len - 64,
        len - 1,
    ] {
        let p = d.join(format!("cut{cut}.vimvq"));
        fs::write(&p, &full[..cut]).unwrap();
        let name = format!("cut{cut}.vimvq");
        assert_error(
            &vimvq([OsStr::new("run"), p.as_os_str(), img.as_os_str()]),
            1,
            &name,
        );
        assert_error(&vimvq([OsStr::new("inspect"), p.as_os_str()]), 1, &name);
        let data = d.join("nodata");
        assert_error(
            &vimvq([
                OsStr::new("eval"),
                p.as_os_str(),
                OsStr::new("--data"),
                data.as_os_str(),
            ]),
            1,
            &name,
        );
    }
    // One flipped bit in the data section: the checksum catches it.
    let mut flipped = full.clone();
    flipped[len - 100] ^= 0x10;
    let p = d.join("flipped.vimvq");
    fs::write(&p, &flipped).unwrap();
    assert_error(
        &vimvq([OsStr::new("run"), p.as_os_str(), img.as_os_str()]),
        1,
        "checksum",
    );
    // Trailing garbage.
    let mut longer = full.clone();
    longer.extend_from_slice(&[0u8; 64]);
    let p = d.join("longer.vimvq");
    fs::write(&p, &longer).unwrap();
    assert_error(
        &vimvq([OsStr::new("run"), p.as_os_str(), img.as_os_str()]),
        1,
        "longer.vimvq",
    );
    // A checkpoint is not a model for `run`.
    assert_error(
        &vimvq([
            OsStr::new("run"),
            fmnist("pth").as_os_str(),
            img.as_os_str(),
        ]),
        1,
        "not a .vimvq",
    );
}

#[test]
fn undecodable_images() {
    let d = tmp("badimg");
    // Deterministic pseudo-random bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let bad = d.join("photo.jpg");
    fs::write(&bad, &junk).unwrap();
    assert_error(
        &vimvq([OsStr::new("run"), model().as_os_str(), bad.as_os_str()]),
        1,
        "photo.jpg",
    );
    // A PNG signature followed by junk: recognised, then fails to decode.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&junk[..200]);
    let badpng = d.join("broken.png");
    fs::write(&badpng, &png).unwrap();
    assert_error(
        &vimvq([OsStr::new("run"), model().as_os_str(), badpng.as_os_str()]),
        1,
        "broken.png",
    );
    // A truncated real PNG.
    let good = fs::read(sample_png()).unwrap();
    let cut = d.join("cut.png");
    fs::write(&cut, &good[..good.len() / 2]).unwrap();
    assert_error(
        &vimvq([OsStr::new("run"), model().as_os_str(), cut.as_os_str()]),
        1,
        "cut.png",
    );
    // The first image is fine: still no partial stdout, one error line.
    assert_error(
        &vimvq([
            OsStr::new("run"),
            model().as_os_str(),
            sample_png().as_os_str(),
            bad.as_os_str(),
            OsStr::new("--json"),
        ]),
        1,
        "photo.jpg",
    );
    // In an ImageFolder: eval names the file.
    let data = d.join("data");
    fs::create_dir_all(data.join("a")).unwrap();
    fs::create_dir_all(data.join("b")).unwrap();
    fs::copy(sample_png(), data.join("a/ok.png")).unwrap();
    fs::write(data.join("b/Bad.JPEG"), &junk).unwrap();
    let o = vimvq([
        OsStr::new("eval"),
        model().as_os_str(),
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_error(&o, 1, "Bad.JPEG");
    // A class folder without images.
    fs::remove_file(data.join("b/Bad.JPEG")).unwrap();
    fs::write(data.join("b/readme.txt"), "no images here").unwrap();
    let o = vimvq([
        OsStr::new("eval"),
        model().as_os_str(),
        OsStr::new("--data"),
        data.as_os_str(),
    ]);
    assert_error(&o, 1, "no images");
}

#[test]
fn wrong_npy_inputs() {
    let d = tmp("npy");
    let f32s = |n: usize| vec![0u8; n * 4];
    // The bundled model takes (1, 28, 28).
    // (file, dtype, shape, data, expected message part)
    type Case = (
        &'static str,
        &'static str,
        Vec<usize>,
        Vec<u8>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("rgb.npy", "<f4", vec![1, 3, 28, 28], f32s(3 * 784), "shape"),
        (
            "small.npy",
            "<f4",
            vec![2, 1, 27, 27],
            f32s(2 * 729),
            "shape",
        ),
        ("flat.npy", "<f4", vec![784], f32s(784), "shape"),
        (
            "f64.npy",
            "<f8",
            vec![1, 28, 28],
            vec![0u8; 784 * 8],
            "float32",
        ),
        ("int.npy", "<i4", vec![1, 28, 28], f32s(784), "float32"),
        (
            "short.npy",
            "<f4",
            vec![4, 1, 28, 28],
            f32s(784 + 3),
            "short.npy",
        ),
        ("empty.npy", "<f4", vec![0, 1, 28, 28], vec![], "no images"),
        (
            "huge.npy",
            "<f4",
            vec![1 << 40, 1, 28, 28],
            f32s(784),
            "huge.npy",
        ),
    ];
    for (name, descr, shape, data, needle) in cases {
        let p = d.join(name);
        write_npy(&p, descr, &shape, &data);
        let o = vimvq([
            OsStr::new("run"),
            model().as_os_str(),
            OsStr::new("--tensor"),
            p.as_os_str(),
        ]);
        assert_error(&o, 1, needle);
    }
    let p = d.join("garbage.npy");
    fs::write(&p, b"\x93NUMPY but not really").unwrap();
    let o = vimvq([
        OsStr::new("run"),
        model().as_os_str(),
        OsStr::new("--tensor"),
        p.as_os_str(),
    ]);
    assert_error(&o, 1, "garbage.npy");
}

#[test]
fn bad_flags_are_usage_errors() {
    let d = tmp("flags");
    let m = model().as_os_str().to_owned();
    let img = sample_png().into_os_string();
    let ck = fmnist("safetensors").into_os_string();
    let out = d.join("x.vimvq").into_os_string();
    let s = |v: &str| OsStr::new(v).to_owned();
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec![s("run"), m.clone(), img.clone(), s("--topk"), s("abc")],
            "--topk",
        ),
        (
            vec![s("run"), m.clone(), img.clone(), s("--topk"), s("0")],
            "--topk",
        ),
        (
            vec![s("run"), m.clone(), img.clone(), s("--threads"), s("0")],
            "--threads",
        ),
        (
            vec![s("run"), m.clone(), img.clone(), s("--bogus")],
            "--bogus",
        ),
        (vec![s("run"), m.clone()], "required"),
        (
            vec![s("run"), m.clone(), img.clone(), s("--tensor"), s("x.npy")],
            "cannot be used",
        ),
        (vec![s("eval"), m.clone()], "--data"),
        (
            vec![
                s("eval"),
                m.clone(),
                s("--data"),
                s("."),
                s("--limit"),
                s("-3"),
            ],
            "-3",
        ),
        (
            vec![
                s("eval"),
                m.clone(),
                s("--data"),
                s("."),
                s("--limit"),
                s("0"),
            ],
            "--limit",
        ),
        (vec![s("import"), ck.clone()], "--output"),
        (
            vec![
                s("import"),
                ck.clone(),
                s("-o"),
                out.clone(),
                s("--interpolation"),
                s("nearest"),
            ],
            "nearest",
        ),
        (
            vec![
                s("import"),
                ck.clone(),
                s("-o"),
                out.clone(),
                s("--mean"),
                s("0.5,0.5"),
            ],
            "--mean",
        ),
        (
            vec![
                s("import"),
                ck.clone(),
                s("-o"),
                out.clone(),
                s("--std"),
                s("a,b,c"),
            ],
            "--std",
        ),
        (
            vec![
                s("import"),
                ck.clone(),
                s("-o"),
                out.clone(),
                s("--img-size"),
                s("0"),
            ],
            "--img-size",
        ),
        (vec![s("frobnicate")], "frobnicate"),
    ];
    for (args, needle) in cases {
        assert_error(&vimvq(&args), 2, needle);
    }
    // Values that parse but that the model rejects are runtime errors (exit 1).
    let o = vimvq([
        s("import"),
        ck.clone(),
        s("-o"),
        out.clone(),
        s("--crop"),
        s("20"),
    ]);
    assert_error(&o, 1, "crop");
    let o = vimvq([
        s("import"),
        ck.clone(),
        s("-o"),
        out.clone(),
        s("--std"),
        s("0"),
    ]);
    assert_error(&o, 1, "std");
    let labels = d.join("labels.txt");
    fs::write(&labels, "only\ntwo\n").unwrap();
    let o = vimvq([
        s("import"),
        ck.clone(),
        s("-o"),
        out.clone(),
        s("--labels"),
        labels.clone().into_os_string(),
    ]);
    assert_error(&o, 1, "labels");
    let o = vimvq([
        s("run"),
        m.clone(),
        img.clone(),
        s("--labels"),
        labels.into_os_string(),
    ]);
    assert_error(&o, 1, "labels");
    let o = vimvq([
        s("import"),
        ck.clone(),
        s("-o"),
        out.clone(),
        s("--key"),
        s("model_ema"),
    ]);
    assert_error(&o, 1, "model_ema");
    // Output into a folder that does not exist.
    let o = vimvq([
        s("import"),
        ck,
        s("-o"),
        d.join("no/such/dir/x.vimvq").into_os_string(),
    ]);
    assert_error(&o, 1, "x.vimvq");
    assert_eq!(
        listing(&d),
        vec!["labels.txt"],
        "no output may be left behind"
    );
}

#[test]
fn help_and_version_succeed() {
    for args in [vec!["--help"], vec!["run", "--help"], vec!["--version"]] {
        let o = vimvq(&args);
        assert_eq!(o.code, Some(0), "{args:?}: {}", o.stderr);
        assert!(!o.stdout.is_empty());
    }
}
