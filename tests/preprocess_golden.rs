//! Preprocessing against torchvision on real photos (Debian's `python3-skimage` data files), as
//! recorded by `models/tools/make_golden.py` in `tests/golden/preprocess/manifest.json`:
//! decode with the `image` crate, run `vimvq_rt::preprocess`, compare with the torchvision tensor,
//! then check `vimvq run` gives the same top-1 as PyTorch through the random Vim-Ti model (and,
//! for the grayscale variant, through the bundled Fashion-MNIST model).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vimvq_rt::preprocess::{ImageRef, PixelFormat, Plan};
use vimvq_rt::{Interpolation, Preprocess};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(rel: &str) -> PathBuf {
    root().join("tests/golden").join(rel)
}

fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec::<f32>().unwrap())
}

/// Decodes like the CLI: grayscale stays L8, everything else becomes RGB8.
fn decode(p: &Path) -> (Vec<u8>, usize, usize, PixelFormat) {
    let img = image::ImageReader::open(p)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .decode()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        (img.to_rgb8().into_raw(), w, h, PixelFormat::Rgb8)
    } else {
        (img.to_luma8().into_raw(), w, h, PixelFormat::L8)
    }
}

fn preprocess(p: &Path, pre: &Preprocess, channels: usize) -> (Vec<f32>, (usize, usize)) {
    let (data, w, h, format) = decode(p);
    let plan = Plan::new(w, h, format, pre, channels).unwrap();
    let mut out = vec![0f32; plan.output_len()];
    let mut scratch = vec![0u8; plan.scratch_bytes()];
    let img = ImageRef {
        data: &data,
        width: w,
        height: h,
        format,
    };
    plan.run(&img, &mut out, &mut scratch).unwrap();
    (out, plan.resized_size())
}

/// (mean |Δ|, max |Δ|).
fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0.0f64;
    let mut max = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64 - *y as f64).abs();
        sum += d;
        max = max.max(d);
    }
    (sum / a.len() as f64, max)
}

fn vimvq(args: &[&OsStr]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "vimvq {args:?}: {stderr}");
    String::from_utf8(o.stdout).unwrap()
}

fn top1_via_cli(model: &Path, photo: &Path) -> u64 {
    let v: Value = serde_json::from_str(&vimvq(&[
        OsStr::new("run"),
        model.as_os_str(),
        photo.as_os_str(),
        OsStr::new("--json"),
    ]))
    .unwrap();
    v["outputs"][0]["top"][0]["class"].as_u64().unwrap()
}

fn skimage_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "python3-skimage"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

#[test]
fn photos_match_torchvision() {
    let manifest: Value = serde_json::from_str(
        &fs::read_to_string(golden("preprocess/manifest.json"))
            .expect("tests/golden/preprocess/manifest.json"),
    )
    .unwrap();
    let photos = manifest["photos"].as_array().unwrap();
    assert!(photos.len() >= 5, "manifest lists {} photos", photos.len());
    if photos
        .iter()
        .any(|e| !Path::new(e["path"].as_str().unwrap()).exists())
    {
        assert!(
            !skimage_installed(),
            "python3-skimage is installed but a manifest photo is missing (moved?)"
        );
        println!("NOTE: python3-skimage is not installed; skipping the photo golden test");
        return;
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("preprocess_golden-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let vimti = tmp.join("vimti.vimvq");
    vimvq(&[
        OsStr::new("import"),
        golden("vimti_random.safetensors").as_os_str(),
        OsStr::new("-o"),
        vimti.as_os_str(),
    ]);

    let imagenet = Preprocess {
        resize: 256,
        crop: 224,
        interpolation: Interpolation::Bicubic,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    println!("versions used for the goldens: {}", manifest["versions"]);
    let mut saw_gray = false;
    for e in photos {
        let name = e["name"].as_str().unwrap();
        let path = PathBuf::from(e["path"].as_str().unwrap());
        let (shape, want) = read_npy(&golden(e["file"].as_str().unwrap()));
        assert_eq!(shape, [3, 224, 224]);
        let (got, resized) = preprocess(&path, &imagenet, 3);
        let rs = &e["resized_size_wh"];
        assert_eq!(
            [resized.0 as u64, resized.1 as u64],
            [rs[0].as_u64().unwrap(), rs[1].as_u64().unwrap()]
        );
        let (mean, max) = diff(&got, &want);
        let format = e["format"].as_str().unwrap_or("?");
        println!(
            "{name:<22} {format:<5} {}: mean |Δ| = {mean:.3e}, max |Δ| = {max:.3e}",
            e["original_size_wh"]
        );
        assert!(mean <= 0.01, "{name}: mean |Δ| {mean}");
        if format == "PNG" {
            // Same pixels in, same arithmetic: should be (and so far is) bit-exact.
            assert!(
                mean <= 1e-6,
                "{name}: PNG mean |Δ| {mean} (expected near-exact)"
            );
        }
        let want_top1 = e["vimti_random_top1"].as_u64().unwrap();
        let got_top1 = top1_via_cli(&vimti, &path);
        println!("{name:<22} random Vim-Ti top-1: vimvq {got_top1}, torch {want_top1}");
        assert_eq!(got_top1, want_top1, "{name}: top-1");

        if let Some(g) = e.get("gray28") {
            saw_gray = true;
            let gray = Preprocess {
                resize: 32,
                crop: 28,
                interpolation: Interpolation::Bicubic,
                mean: [0.2860; 3],
                std: [0.3530; 3],
            };
            let (shape, want) = read_npy(&golden(g["file"].as_str().unwrap()));
            assert_eq!(shape, [1, 28, 28]);
            let (got, resized) = preprocess(&path, &gray, 1);
            let rs = &g["resized_size_wh"];
            assert_eq!(
                [resized.0 as u64, resized.1 as u64],
                [rs[0].as_u64().unwrap(), rs[1].as_u64().unwrap()]
            );
            let (mean, max) = diff(&got, &want);
            println!("{name:<22} gray 28×28: mean |Δ| = {mean:.3e}, max |Δ| = {max:.3e}");
            assert!(mean <= 0.01, "{name} gray: mean |Δ| {mean}");
            if format == "PNG" {
                assert!(mean <= 1e-6, "{name} gray: PNG mean |Δ| {mean}");
            }
            // The bundled Fashion-MNIST model, with this transform stored in the file.
            let fm = tmp.join("fmnist_resize32.vimvq");
            vimvq(&[
                OsStr::new("import"),
                root()
                    .join("models/fashion-mnist/vim_fmnist.safetensors")
                    .as_os_str(),
                OsStr::new("-o"),
                fm.as_os_str(),
                OsStr::new("--resize"),
                OsStr::new("32"),
            ]);
            let want_top1 = g["fmnist_top1"].as_u64().unwrap();
            let got_top1 = top1_via_cli(&fm, &path);
            println!("{name:<22} Fashion-MNIST top-1: vimvq {got_top1}, torch {want_top1}");
            assert_eq!(got_top1, want_top1, "{name} gray: top-1");
        }
    }
    assert!(saw_gray, "the manifest has no grayscale variant");
    let _ = fs::remove_dir_all(&tmp);
}
