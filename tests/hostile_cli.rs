//! Issue 12's hostile inputs through the CLI: each finding's regression test (they fail on
//! 95a4037), and one test that feeds every input to the CLI and bounds the child's peak RSS
//! (`wait4` rusage, per child) to 100 MB above the same command's baseline, with no panic, no
//! signal and no hang (each run has a timeout).
//!
//! The inputs are built from bytes here (`crates/vimvq-pack/tests/common/hostile.rs` for the
//! checkpoints, `f5_model` for the `.vimvq` file).

#![cfg(unix)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../crates/vimvq-pack/tests/common/hostile.rs"]
mod hostile;

/// A fresh scratch folder for one test.
fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile_cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// An 8×8 RGB PNG.
fn png(path: &Path) -> PathBuf {
    image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 30) as u8, 90])
    })
    .save(path)
    .unwrap();
    path.to_path_buf()
}

/// How a run ended, and the child's peak RSS.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    peak_rss: u64,
    timed_out: bool,
}

/// Runs `vimvq args` with stdin from `/dev/null`, killing it after `timeout`.
///
/// The peak RSS is `wait4`'s rusage of the child alone. Linux counts into a process's
/// `ru_maxrss` the memory of the image it `exec`ed from, which for a child spawned here is this
/// whole test process; so the child is spawned by a fresh, small copy of this test binary
/// ([`rss_probe_helper`]), whose few MB are all that can leak into the figure.
fn vimvq<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Run {
    let spec: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_str().expect("UTF-8 argument").to_owned())
        .collect();
    let o = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rss_probe_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(PROBE_ARGS, serde_json::to_string(&spec).unwrap())
        .env(PROBE_TIMEOUT, timeout.as_millis().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .unwrap_or_else(|| {
            panic!(
                "probe printed no result: {text} {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let int = |k: &str| v[k].as_i64().map(|x| x as i32);
    Run {
        code: int("code"),
        signal: int("signal"),
        stdout: v["stdout"].as_str().unwrap().to_owned(),
        stderr: v["stderr"].as_str().unwrap().to_owned(),
        peak_rss: v["peak_rss"].as_u64().unwrap(),
        timed_out: v["timed_out"].as_bool().unwrap(),
    }
}

const PROBE_ARGS: &str = "VIMVQ_RSS_PROBE_ARGS";
const PROBE_TIMEOUT: &str = "VIMVQ_RSS_PROBE_TIMEOUT_MS";

/// The probe [`vimvq`] runs in a fresh process: spawns `vimvq` with the arguments in
/// `VIMVQ_RSS_PROBE_ARGS`, waits with `wait4` (killing it at the timeout), and prints the exit,
/// signal, output and peak RSS as one `PROBE {json}` line. Without the variable it does nothing.
#[test]
fn rss_probe_helper() {
    let Ok(spec) = std::env::var(PROBE_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&spec).unwrap();
    let timeout = Duration::from_millis(std::env::var(PROBE_TIMEOUT).unwrap().parse().unwrap());
    let out_dir = tmp(&format!("probe-{}", std::process::id()));
    let (so, se) = (out_dir.join("stdout"), out_dir.join("stderr"));
    // Reaped by `wait4` below: `Child::wait` would not give the rusage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&so).unwrap())
        .stderr(fs::File::create(&se).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: zeroed plain-data struct, filled by wait4 below.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: waits for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4 failed");
        if start.elapsed() > timeout && !timed_out {
            timed_out = true;
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = std::process::ExitStatus::from_raw(status);
    let v = serde_json::json!({
        "code": st.code(),
        "signal": st.signal(),
        "stdout": fs::read_to_string(&so).unwrap_or_default(),
        "stderr": fs::read_to_string(&se).unwrap_or_default(),
        "peak_rss": ru.ru_maxrss as u64 * 1024,
        "timed_out": timed_out,
    });
    fs::remove_dir_all(&out_dir).ok();
    println!("\nPROBE {v}");
}

const TIMEOUT: Duration = Duration::from_secs(120);

/// Asserts a clean one-line error (exit 1) containing `needle`.
#[track_caller]
fn assert_error(r: &Run, needle: &str) {
    assert!(!r.timed_out, "hang: {r:?}");
    assert_eq!(r.signal, None, "killed by a signal: {r:?}");
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line: {r:?}");
    assert!(lines[0].starts_with("error: "), "{r:?}");
    assert!(lines[0].contains(needle), "want {needle:?}: {r:?}");
}

/// The small Vim checkpoint imported to `.vimvq` by the CLI.
fn small_model(dir: &Path, ck: &[u8], name: &str) -> PathBuf {
    let ck = write(dir, &format!("{name}.safetensors"), ck);
    let out = dir.join(format!("{name}.vimvq"));
    let r = vimvq(
        &[
            OsStr::new("import"),
            ck.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
        TIMEOUT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    out
}

/// F5: a 6 MB `.vimvq` (valid checksums, exact ranges) whose dimensions (L = 65,026 positions,
/// E = 65,536 channels) need about 85 GB of inference scratch.
fn f5_model(dir: &Path) -> PathBuf {
    let bytes = hostile::huge_dims_vimvq(255, 65_536);
    let m = write(dir, "f5.vimvq", &bytes);
    let file = vimvq_rt::format::ModelFile::read(&m).unwrap();
    assert!(file.model().unwrap().scratch_bytes() > 80_000_000_000);
    m
}

/// ImageFolder `root/c0/` with one image and two links to itself (F6).
fn looped_folder(dir: &Path) -> PathBuf {
    let root = dir.join("loop");
    let class = root.join("c0");
    fs::create_dir_all(&class).unwrap();
    png(&class.join("a.png"));
    std::os::unix::fs::symlink(".", class.join("l1")).unwrap();
    std::os::unix::fs::symlink("..", class.join("l2")).unwrap();
    std::os::unix::fs::symlink("a.png", class.join("b.png")).unwrap();
    root
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
}

// ---- one test per finding ---------------------------------------------------------------------

#[test]
fn f1_to_f4_hostile_checkpoints_are_clean_errors() {
    let dir = tmp("f1-4");
    let out = dir.join("out.vimvq");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "f1.pth",
            hostile::f1_shared_storage(),
            "the pickle says 4000",
        ),
        ("f2.pth", hostile::f2_reduce_bomb(), "bytes of memory"),
        ("f3.pth", hostile::f3_stride0(), "repeats 1 stored elements"),
        (
            "f4.pth",
            hostile::f4_deflate_bomb(256),
            "unexpected tensors",
        ),
    ];
    for (name, bytes, needle) in cases {
        let p = write(&dir, name, &bytes);
        let r = vimvq(
            &[
                OsStr::new("import"),
                p.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            TIMEOUT,
        );
        assert_error(&r, needle);
        assert!(!out.exists());
        if name == "f1.pth" {
            assert_error(
                &vimvq(&[OsStr::new("inspect"), p.as_os_str()], TIMEOUT),
                needle,
            );
        }
    }
}

#[test]
fn f5_huge_model_dimensions_report_the_bytes_needed() {
    let dir = tmp("f5");
    let m = f5_model(&dir);
    let img = png(&dir.join("x.png"));
    let os = |s: &str| OsString::from(s);
    for args in [
        vec![os("run"), m.clone().into(), img.clone().into()],
        vec![os("bench"), m.clone().into(), os("--iters"), os("1")],
        vec![
            os("stream"),
            m.clone().into(),
            os("--size"),
            os("8x8"),
            os("--format"),
            os("rgb24"),
        ],
    ] {
        assert_error(&vimvq(&args, TIMEOUT), "inference scratch needs");
    }
}

#[test]
fn f6_folder_walks_end_and_count_each_image_once() {
    let dir = tmp("f6");
    let model = small_model(&dir, &hostile::vim_safetensors(&[], |_, _| {}), "m");
    let root = looped_folder(&dir);
    let r = vimvq(
        &[
            OsStr::new("eval"),
            model.as_os_str(),
            "--data".as_ref(),
            root.as_os_str(),
            "--json".as_ref(),
        ],
        Duration::from_secs(60),
    );
    assert!(!r.timed_out, "hang: {r:?}");
    assert_eq!(r.code, Some(0), "{r:?}");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["count"], 1, "{v}");
}

#[test]
fn f7_a_failing_report_keeps_the_old_model_and_fails_first() {
    let dir = tmp("f7");
    let ck = write(
        &dir,
        "m.safetensors",
        &hostile::vim_safetensors(&[], |_, _| {}),
    );
    let calib = dir.join("calib");
    fs::create_dir_all(&calib).unwrap();
    png(&calib.join("a.png"));
    let out = write(&dir, "out.vimvq", b"the user's old model");
    let report = dir.join("missing/report.json");
    let r = vimvq(
        &[
            OsStr::new("pack"),
            ck.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--calib".as_ref(),
            calib.as_os_str(),
            "--method".as_ref(),
            "rtn".as_ref(),
            "--report".as_ref(),
            report.as_os_str(),
        ],
        TIMEOUT,
    );
    assert_error(&r, "folder");
    assert!(r.stderr.contains("does not exist"), "{r:?}");
    assert_eq!(fs::read(&out).unwrap(), b"the user's old model");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}"); // m.safetensors, calib, out.vimvq
}

#[test]
fn f8_special_outputs_are_refused_and_permissions_kept() {
    let dir = tmp("f8");
    let ck = write(
        &dir,
        "m.safetensors",
        &hostile::vim_safetensors(&[], |_, _| {}),
    );
    let import = |out: &Path| {
        vimvq(
            &[
                OsStr::new("import"),
                ck.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            TIMEOUT,
        )
    };

    let fifo = dir.join("fifo.vimvq");
    mkfifo(&fifo);
    assert_error(&import(&fifo), "is a FIFO");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    let target = write(&dir, "target.bin", b"keep");
    let link = dir.join("link.vimvq");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_error(&import(&link), "symbolic link");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&target).unwrap(), b"keep");

    // A character device: made with mknod when allowed (root), else /dev/null's kind is
    // checked through the same refusal on the FIFO above.
    let dev = dir.join("null.vimvq");
    if Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert_error(&import(&dev), "is a character device");
        assert!(fs::symlink_metadata(&dev)
            .unwrap()
            .file_type()
            .is_char_device());
    }

    let private = write(&dir, "private.vimvq", b"old");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(import(&private).code, Some(0));
    let md = fs::metadata(&private).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert!(md.len() > 1000);
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn f10_labels_are_escaped_in_text_output() {
    let dir = tmp("f10");
    let model = small_model(&dir, &hostile::f10_escape_labels(), "m");
    let img = png(&dir.join("x.png"));
    let r = vimvq(
        &[
            OsStr::new("run"),
            model.as_os_str(),
            img.as_os_str(),
            "--topk".as_ref(),
            "3".as_ref(),
        ],
        TIMEOUT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        !r.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        r.stdout
    );
    assert!(r.stdout.contains("\\u{1b}[2Jdog"), "{:?}", r.stdout);
    assert!(r.stdout.contains("\\u{9b}31m"), "{:?}", r.stdout);
    // --json keeps the labels verbatim (JSON escapes them itself).
    let r = vimvq(
        &[
            OsStr::new("run"),
            model.as_os_str(),
            img.as_os_str(),
            "--json".as_ref(),
        ],
        TIMEOUT,
    );
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let labels: Vec<&str> = v["outputs"][0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"\u{1b}[2Jdog"), "{labels:?}");
}

#[test]
fn f11_endless_inputs_are_refused_without_reading_them() {
    let dir = tmp("f11");
    let model = small_model(&dir, &hostile::vim_safetensors(&[], |_, _| {}), "m");
    let img = png(&dir.join("x.png"));
    let r = vimvq(
        &[
            OsStr::new("run"),
            model.as_os_str(),
            "--tensor".as_ref(),
            "/dev/zero".as_ref(),
        ],
        TIMEOUT,
    );
    assert_error(&r, "not a .npy file");
    let r = vimvq(
        &[
            OsStr::new("run"),
            model.as_os_str(),
            img.as_os_str(),
            "--labels".as_ref(),
            "/dev/zero".as_ref(),
        ],
        TIMEOUT,
    );
    assert_error(&r, "larger than the 16777216-byte limit");
}

#[test]
fn f12_import_refuses_nan_weights_and_unusable_resize() {
    let dir = tmp("f12");
    let ck = write(&dir, "nan.safetensors", &hostile::f12_nan_weights());
    let out = dir.join("out.vimvq");
    let r = vimvq(
        &[
            OsStr::new("import"),
            ck.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
        TIMEOUT,
    );
    assert_error(&r, "'layers.0.mixer.out_proj.weight' holds NaN");
    // `--resize` is range-checked by the parser; the checkpoint's metadata was not.
    let big = write(
        &dir,
        "big.safetensors",
        &hostile::vim_safetensors(&[("resize", "4294967295")], |_, _| {}),
    );
    let r = vimvq(
        &[
            OsStr::new("import"),
            big.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
        TIMEOUT,
    );
    assert_error(&r, "resize: 4294967295");
    assert!(!out.exists());
}

// ---- every input, with the memory bound -------------------------------------------------------

#[test]
fn every_hostile_input_stays_within_100_mb_of_the_baseline() {
    let dir = tmp("rss");
    let os = |s: &str| OsString::from(s);
    let p = |path: &Path| OsString::from(path);
    let small = small_model(&dir, &hostile::vim_safetensors(&[], |_, _| {}), "small");
    let labels = small_model(&dir, &hostile::f10_escape_labels(), "labels");
    let f5 = f5_model(&dir);
    let img = png(&dir.join("x.png"));
    let ok_ck = write(
        &dir,
        "ok.safetensors",
        &hostile::vim_safetensors(&[], |_, _| {}),
    );
    let calib = dir.join("calib");
    fs::create_dir_all(&calib).unwrap();
    png(&calib.join("a.png"));
    let looped = looped_folder(&dir);
    let fifo = dir.join("fifo.vimvq");
    mkfifo(&fifo);
    let out = p(&dir.join("out.vimvq"));
    let ck = |name: &str, bytes: Vec<u8>| p(&write(&dir, name, &bytes));

    // (command, arguments); the baseline of a command is its run on a missing input.
    let cases: Vec<Vec<OsString>> = vec![
        vec![
            os("import"),
            ck("f1.pth", hostile::f1_shared_storage()),
            os("-o"),
            out.clone(),
        ],
        vec![os("inspect"), ck("f1b.pth", hostile::f1_shared_storage())],
        vec![
            os("import"),
            ck("f2.pth", hostile::f2_reduce_bomb()),
            os("-o"),
            out.clone(),
        ],
        vec![
            os("import"),
            ck("f3.pth", hostile::f3_stride0()),
            os("-o"),
            out.clone(),
        ],
        vec![
            os("import"),
            ck("f4.pth", hostile::f4_deflate_bomb(256)),
            os("-o"),
            out.clone(),
        ],
        vec![os("run"), p(&f5), p(&img)],
        vec![os("bench"), p(&f5), os("--iters"), os("1")],
        vec![
            os("stream"),
            p(&f5),
            os("--size"),
            os("8x8"),
            os("--format"),
            os("rgb24"),
        ],
        vec![os("eval"), p(&small), os("--data"), p(&looped)],
        vec![
            os("pack"),
            p(&ok_ck),
            os("-o"),
            out.clone(),
            os("--calib"),
            p(&looped.join("c0")),
            os("--method"),
            os("rtn"),
        ],
        vec![
            os("pack"),
            p(&ok_ck),
            os("-o"),
            out.clone(),
            os("--calib"),
            p(&calib),
            os("--method"),
            os("rtn"),
            os("--report"),
            p(&dir.join("missing/r.json")),
        ],
        vec![os("import"), p(&ok_ck), os("-o"), p(&fifo)],
        vec![os("run"), p(&labels), p(&img)],
        vec![os("run"), p(&small), os("--tensor"), os("/dev/zero")],
        vec![
            os("run"),
            p(&small),
            p(&img),
            os("--labels"),
            os("/dev/zero"),
        ],
        vec![
            os("import"),
            ck("f12.safetensors", hostile::f12_nan_weights()),
            os("-o"),
            out.clone(),
        ],
        vec![
            os("import"),
            ck(
                "resize.safetensors",
                hostile::vim_safetensors(&[("resize", "4294967295")], |_, _| {}),
            ),
            os("-o"),
            out.clone(),
        ],
    ];
    let mut baselines = std::collections::HashMap::new();
    let missing = p(&dir.join("missing.input"));
    for args in &cases {
        let cmd = args[0].clone();
        let base = *baselines.entry(cmd.clone()).or_insert_with(|| {
            let mut a = args.clone();
            a[1] = missing.clone();
            vimvq(&a, TIMEOUT).peak_rss
        });
        let r = vimvq(args, TIMEOUT);
        let what = format!("{args:?}: {r:?}");
        assert!(!r.timed_out, "hang: {what}");
        assert_eq!(r.signal, None, "signal: {what}");
        assert!(matches!(r.code, Some(0 | 1)), "{what}");
        assert!(!r.stderr.contains("panicked"), "{what}");
        eprintln!(
            "{:>6.1} MB peak (baseline {:>5.1} MB) exit {:?}: {}",
            r.peak_rss as f64 / 1e6,
            base as f64 / 1e6,
            r.code,
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(
            r.peak_rss <= base + 100_000_000,
            "peak RSS {} > baseline {} + 100 MB: {what}",
            r.peak_rss,
            base
        );
    }
}

#[test]
fn unclear_messages_are_clear_on_the_cli() {
    let dir = tmp("messages");
    let model = small_model(&dir, &hostile::vim_safetensors(&[], |_, _| {}), "m");
    // A .vimvq cut inside its magic: "truncated", not "not a checkpoint".
    let cut = write(&dir, "cut.vimvq", &fs::read(&model).unwrap()[..5]);
    assert_error(
        &vimvq(&[OsStr::new("inspect"), cut.as_os_str()], TIMEOUT),
        "truncated .vimvq model",
    );
    // A directory as the checkpoint: said once.
    let r = vimvq(
        &[
            OsStr::new("import"),
            dir.as_os_str(),
            "-o".as_ref(),
            dir.join("o.vimvq").as_os_str(),
        ],
        TIMEOUT,
    );
    assert_error(&r, "is a directory, not a checkpoint file");
    assert_eq!(r.stderr.matches("directory").count(), 1, "{r:?}");
    // A file name with a terminal escape is escaped in the error.
    let evil = write(&dir, "evil\u{1b}[2J.png", b"not a png");
    let r = vimvq(
        &[OsStr::new("run"), model.as_os_str(), evil.as_os_str()],
        TIMEOUT,
    );
    assert_error(&r, "evil\\u{1b}[2J.png");
    assert!(!r.stderr.contains('\u{1b}'), "{r:?}");
}
