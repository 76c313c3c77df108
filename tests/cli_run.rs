//! `vimvq import`, `run` and `inspect` on the bundled Fashion-MNIST model, against numbers
//! PyTorch produced (`models/fashion-mnist/samples/expected.txt`, `tests/golden/fmnist_*.npy`).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli_run-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary and returns stdout, asserting success and a quiet stderr.
fn vimvq_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let o = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args(&args)
        .output()
        .expect("spawn vimvq");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "vimvq {args:?} failed: {stderr}");
    assert!(stderr.is_empty(), "unexpected stderr: {stderr}");
    String::from_utf8(o.stdout).unwrap()
}

fn fixture(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// The bundled safetensors model imported once.
fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let out = tmp("model").join("fmnist.vimvq");
        let st = fixture("models/fashion-mnist/vim_fmnist.safetensors");
        let line = vimvq_ok([
            OsStr::new("import"),
            st.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
        ]);
        assert!(
            line.starts_with("wrote ") && line.lines().count() == 1,
            "{line:?}"
        );
        out
    })
}

/// Reads a float32 C-order .npy into (shape, values).
fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = fs::read(p).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec::<f32>().unwrap())
}

fn samples() -> Vec<(PathBuf, usize)> {
    let dir = fixture("models/fashion-mnist/samples");
    let text = fs::read_to_string(dir.join("expected.txt")).unwrap();
    let rows: Vec<(PathBuf, usize)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (dir.join(f[0]), f[2].parse().unwrap())
        })
        .collect();
    assert!(rows.len() >= 5, "expected.txt lists {} samples", rows.len());
    rows
}

#[test]
fn samples_match_torch_top1() {
    let rows = samples();
    let mut args = vec![OsStr::new("run").to_owned(), model().as_os_str().to_owned()];
    args.extend(rows.iter().map(|(p, _)| p.as_os_str().to_owned()));
    args.push("--json".into());
    let v: Value = serde_json::from_str(&vimvq_ok(&args)).unwrap();
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), rows.len());
    for ((p, want), o) in rows.iter().zip(outs) {
        let got = o["top"][0]["class"].as_u64().unwrap() as usize;
        println!(
            "{}: vimvq {got}, torch {want}",
            p.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(got, *want, "{}", p.display());
    }

    // Text mode: one line per image, top-1 first, in input order.
    args.pop();
    args.extend(["--topk".into(), "3".into()]);
    let text = vimvq_ok(&args);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), rows.len());
    for ((p, want), line) in rows.iter().zip(lines) {
        let (name, tops) = line.split_once(": ").unwrap();
        assert_eq!(name, p.display().to_string());
        let first = tops.split(", ").next().unwrap();
        assert!(first.contains(&format!("({want})")), "{line}");
        assert_eq!(tops.split(", ").count(), 3, "{line}");
    }
}

#[test]
fn tensor_logits_match_torch() {
    let inputs = fixture("tests/golden/fmnist_inputs.npy");
    let (shape, _) = read_npy(&inputs);
    let (lshape, want) = read_npy(&fixture("tests/golden/fmnist_logits_torch.npy"));
    assert_eq!(lshape[0], shape[0]);
    let classes = lshape[1];
    let v: Value = serde_json::from_str(&vimvq_ok([
        OsStr::new("run"),
        model().as_os_str(),
        OsStr::new("--tensor"),
        inputs.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--topk"),
        OsStr::new("10"),
    ]))
    .unwrap();
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), shape[0]);
    let mut worst = 0.0f64;
    for (i, o) in outs.iter().enumerate() {
        let got: Vec<f64> = o["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let w = &want[i * classes..(i + 1) * classes];
        assert_eq!(got.len(), classes);
        let scale = w
            .iter()
            .fold(0.0f64, |m, &x| m.max((x as f64).abs()))
            .max(1e-6);
        for (g, &t) in got.iter().zip(w) {
            let rel = (g - t as f64).abs() / scale;
            worst = worst.max(rel);
            assert!(rel <= 1e-4, "row {i}: {g} vs torch {t} (rel {rel:.2e})");
        }
    }
    println!(
        "{} rows, max |Δlogit| / max|logit| = {worst:.3e}",
        outs.len()
    );
}

#[test]
fn run_json_schema() {
    let (p, _) = samples().remove(0);
    let v: Value = serde_json::from_str(&vimvq_ok([
        OsStr::new("run"),
        model().as_os_str(),
        p.as_os_str(),
        p.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--topk"),
        OsStr::new("4"),
        OsStr::new("--threads"),
        OsStr::new("2"),
    ]))
    .unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["outputs"]
    );
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0], outs[1], "same image, same output");
    let o = outs[0].as_object().unwrap();
    assert_eq!(
        o.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["logits", "top"])
    );
    let logits: Vec<f64> = o["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(logits.len(), 10);
    let top = o["top"].as_array().unwrap();
    assert_eq!(top.len(), 4);
    // Probabilities are the softmax of the logits, in descending order.
    let m = logits.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
    let mut prev = f64::INFINITY;
    for t in top {
        let t = t.as_object().unwrap();
        assert_eq!(
            t.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            BTreeSet::from(["class", "label", "prob"])
        );
        let c = t["class"].as_u64().unwrap() as usize;
        let p = t["prob"].as_f64().unwrap();
        assert!(t["label"].is_string(), "the bundled model has labels");
        assert!((p - (logits[c] - m).exp() / z).abs() < 1e-6);
        assert!(p <= prev);
        prev = p;
    }
    // --labels overrides the model's names; a model without labels prints null.
    let d = tmp("labels");
    let lf = d.join("names.txt");
    fs::write(&lf, (0..10).map(|i| format!("n{i}\n")).collect::<String>()).unwrap();
    let v: Value = serde_json::from_str(&vimvq_ok([
        OsStr::new("run"),
        model().as_os_str(),
        p.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--labels"),
        lf.as_os_str(),
    ]))
    .unwrap();
    let t = &v["outputs"][0]["top"][0];
    assert_eq!(t["label"], format!("n{}", t["class"]));
    assert_eq!(
        v["outputs"][0]["top"].as_array().unwrap().len(),
        5,
        "default --topk 5"
    );

    let bare = d.join("bare.vimvq");
    // Import without labels: the pth has none and no --labels is given.
    vimvq_ok([
        OsStr::new("import"),
        fixture("models/fashion-mnist/vim_fmnist.pth").as_os_str(),
        OsStr::new("-o"),
        bare.as_os_str(),
    ]);
    let v: Value = serde_json::from_str(&vimvq_ok([
        OsStr::new("run"),
        bare.as_os_str(),
        p.as_os_str(),
        OsStr::new("--json"),
    ]))
    .unwrap();
    assert!(v["outputs"][0]["top"][0]["label"].is_null());
}

#[test]
fn pth_and_safetensors_import_identically() {
    let d = tmp("identical");
    let from_st = d.join("st.vimvq");
    let from_pth = d.join("pth.vimvq");
    vimvq_ok([
        OsStr::new("import"),
        fixture("models/fashion-mnist/vim_fmnist.safetensors").as_os_str(),
        OsStr::new("-o"),
        from_st.as_os_str(),
    ]);
    // The .pth carries hustvl-style `args` (img size, resize) but no mean/std/labels: give them
    // as flags, which must land on exactly the bytes the safetensors metadata produces.
    vimvq_ok([
        OsStr::new("import"),
        fixture("models/fashion-mnist/vim_fmnist.pth").as_os_str(),
        OsStr::new("-o"),
        from_pth.as_os_str(),
        OsStr::new("--key"),
        OsStr::new("model"),
        OsStr::new("--mean"),
        OsStr::new("0.2860"),
        OsStr::new("--std"),
        OsStr::new("0.3530"),
        OsStr::new("--labels"),
        fixture("models/fashion-mnist/labels.txt").as_os_str(),
    ]);
    let a = fs::read(&from_st).unwrap();
    let b = fs::read(&from_pth).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(
        a == b,
        "first difference at byte {:?}",
        a.iter().zip(&b).position(|(x, y)| x != y)
    );
    // model_ema is a different state dict: same layout and size, different weights.
    let ema = d.join("ema.vimvq");
    vimvq_ok([
        OsStr::new("import"),
        fixture("models/fashion-mnist/vim_fmnist.pth").as_os_str(),
        OsStr::new("-o"),
        ema.as_os_str(),
        OsStr::new("--key"),
        OsStr::new("model_ema"),
        OsStr::new("--mean"),
        OsStr::new("0.2860"),
        OsStr::new("--std"),
        OsStr::new("0.3530"),
        OsStr::new("--labels"),
        fixture("models/fashion-mnist/labels.txt").as_os_str(),
    ]);
    let e = fs::read(&ema).unwrap();
    assert_eq!(e.len(), a.len());
    assert!(e != a, "model_ema imported the same weights as model");
    let names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary files left: {names:?}");
}

fn check_inspect(v: &Value, kind: &str) {
    for k in [
        "file_bytes",
        "weight_bytes",
        "config",
        "tensors",
        "outliers",
    ] {
        assert!(v.get(k).is_some(), "inspect --json lacks {k}");
    }
    let c = &v["config"];
    assert_eq!(c["channels"], 1);
    assert_eq!(c["num_classes"], 10);
    assert_eq!(c["img_size"], 28);
    let depth = c["depth"].as_u64().unwrap() as usize;
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 7 + 17 * depth);
    let mut sum = 0;
    for t in tensors {
        let t = t.as_object().unwrap();
        for k in [
            "name",
            "shape",
            "kind",
            "bits_per_weight",
            "bytes",
            "k",
            "d",
        ] {
            assert!(t.contains_key(k), "tensor lacks {k}: {t:?}");
        }
        assert_eq!(t["kind"], kind);
        assert_eq!(t["bits_per_weight"].as_f64().unwrap(), 32.0);
        let numel: u64 = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .product();
        assert_eq!(t["bytes"].as_u64().unwrap(), numel * 4, "{t:?}");
        sum += t["bytes"].as_u64().unwrap();
    }
    assert_eq!(v["weight_bytes"].as_u64().unwrap(), sum);
    assert!(v["file_bytes"].as_u64().unwrap() > 0);
    assert_eq!(tensors[0]["name"], "patch_embed.proj.weight");
    assert_eq!(
        tensors[0]["shape"],
        serde_json::json!([c["embed_dim"], 1, c["patch"], c["patch"]])
    );
    // One outlier row per linear layer: patch embed, head, and 6 per block.
    let outliers = v["outliers"].as_array().unwrap();
    assert_eq!(outliers.len(), 2 + 6 * depth);
    for o in outliers {
        let r = o["max_abs_over_std"].as_f64().unwrap();
        let k = o["excess_kurtosis"].as_f64().unwrap();
        let s = o["share_above_6sigma"].as_f64().unwrap();
        assert!(
            r >= 1.0 && r.is_finite() && k >= -2.0 && (0.0..=1.0).contains(&s),
            "{o}"
        );
    }
}

#[test]
fn inspect_json_schema() {
    let m: Value = serde_json::from_str(&vimvq_ok([
        OsStr::new("inspect"),
        model().as_os_str(),
        OsStr::new("--json"),
    ]))
    .unwrap();
    check_inspect(&m, "dense");
    assert_eq!(
        m["file_bytes"].as_u64().unwrap(),
        fs::metadata(model()).unwrap().len()
    );
    assert_eq!(m["tensors"][0]["k"], Value::Null);
    let st = fixture("models/fashion-mnist/vim_fmnist.safetensors");
    let c: Value = serde_json::from_str(&vimvq_ok([
        OsStr::new("inspect"),
        st.as_os_str(),
        OsStr::new("--json"),
    ]))
    .unwrap();
    check_inspect(&c, "dense");
    // Same weights, same statistics and config, whichever file they come from.
    assert_eq!(m["config"], c["config"]);
    assert_eq!(m["outliers"], c["outliers"]);
    assert_eq!(m["weight_bytes"], c["weight_bytes"]);
    // Text mode works too.
    let text = vimvq_ok([OsStr::new("inspect"), model().as_os_str()]);
    assert!(text.contains("head.weight") && text.contains("outliers"));
}
