//! `vimvq bench`: the JSON of docs/CLI.md, sane statistics, and a per-op breakdown that accounts
//! for the whole forward pass (its sum within 10 % of the mean latency).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vimvq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vimvq"))
}

/// The bundled Fashion-MNIST model if present, else the tiny fixture, imported once.
fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let bundled = root().join("models/fashion-mnist/vim_fmnist.safetensors");
        let src = if bundled.exists() {
            bundled
        } else {
            eprintln!("note: bundled model absent, using the tiny fixture checkpoint");
            root().join("crates/vimvq-pack/tests/data/tiny.safetensors")
        };
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench_cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("m.vimvq");
        let o = vimvq()
            .arg("import")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

fn bench(args: &[&str]) -> (String, String, i32) {
    let o = vimvq()
        .arg("bench")
        .arg(model())
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

const OPS: [&str; 9] = [
    "patch_embed",
    "in_proj",
    "conv1d",
    "x_proj",
    "dt_proj",
    "scan",
    "out_proj",
    "norm",
    "head",
];

#[test]
fn json_matches_cli_md_and_ops_sum_to_total() {
    let (out, err, code) = bench(&["--json", "--iters", "30", "--warmup", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    println!("{v}");

    // docs/CLI.md: {"threads", "iters", "latency_ms": {"min","median","p90","max"},
    // "ops_ms": {...}, "peak_rss_bytes", "model_bytes", "scratch_bytes"} (and more fields).
    for key in [
        "threads",
        "iters",
        "peak_rss_bytes",
        "model_bytes",
        "scratch_bytes",
    ] {
        assert!(v[key].is_u64(), "{key} missing or not an integer: {v}");
    }
    assert_eq!(v["threads"], 1);
    assert_eq!(v["iters"], 30);
    let lat = &v["latency_ms"];
    let q: Vec<f64> = ["min", "median", "p90", "max"]
        .iter()
        .map(|k| {
            lat[k]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_ms.{k}: {v}"))
        })
        .collect();
    assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{lat}");
    let mean = lat["mean"].as_f64().unwrap();
    assert!(q[0] <= mean && mean <= q[3]);

    let ops = v["ops_ms"].as_object().unwrap();
    let mut sum = 0.0;
    for k in OPS {
        let ms = ops
            .get(k)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("ops_ms.{k} missing: {v}"));
        assert!(ms >= 0.0);
        sum += ms;
    }
    assert_eq!(ops.len(), OPS.len(), "unexpected op keys: {v}");
    println!("ops sum {sum:.5} ms, mean latency {mean:.5} ms");
    assert!(
        (sum - mean).abs() <= 0.10 * mean,
        "per-op sum {sum} ms is not within 10 % of the mean latency {mean} ms"
    );
    assert!(ops["scan"].as_f64().unwrap() > 0.0 && ops["in_proj"].as_f64().unwrap() > 0.0);

    let file_len = std::fs::metadata(model()).unwrap().len();
    assert_eq!(v["model_bytes"].as_u64(), Some(file_len));
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    let insp: Value = serde_json::from_slice(
        &vimvq()
            .arg("inspect")
            .arg(model())
            .arg("--json")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(v["scratch_bytes"].as_u64().unwrap() > 0, "{insp}");
}

#[test]
fn text_output_and_bad_arguments() {
    let (out, err, code) = bench(&["--iters", "3", "--warmup", "0"]);
    assert_eq!(code, 0, "{err}");
    for k in OPS {
        assert!(out.contains(k), "{k} missing from:\n{out}");
    }
    assert!(out.contains("median") && out.contains("peak RSS"), "{out}");

    for bad in [["--iters", "0"], ["--iters", "x"], ["--threads", "0"]] {
        let (out, err, code) = bench(&bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "));
    }
    let o = vimvq()
        .args(["bench", "missing.vimvq", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        "error: missing.vimvq: no such file"
    );
}
