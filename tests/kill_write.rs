//! Killing `vimvq import` / `vimvq pack` with SIGKILL at random moments never leaves a
//! truncated output: the target path holds either nothing or a previous complete output.
//!
//! The checkpoint is a Vim-Ti-shaped random safetensors (D=192, depth 24, 224×224, 1000
//! classes: ~7 M weights, ~28 MB) written by the test, so the write takes long enough to be
//! hit. Each round polls for the writer's temporary file (`.<name>.<pid>.<n>.vimvq-tmp` in the output
//! folder), then kills the process after a random delay (or kills it before the temporary file
//! appears, while it is still reading). A killed writer cannot remove its temporary file; that
//! is expected and documented, and the test removes them between rounds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vimvq_rt::format::AlignedBytes;
use vimvq_rt::model::Model;

const D: usize = 192;
const DEPTH: usize = 24;
const E: usize = 2 * D;
const N: usize = 16;
const R: usize = 12;
const K: usize = 4;
const PATCH: usize = 16;
const IMG: usize = 224;
const L: usize = (IMG / PATCH) * (IMG / PATCH) + 1;
const CLASSES: usize = 1000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes a Vim-Ti-shaped safetensors checkpoint with hustvl names and random f32 values.
fn write_checkpoint(path: &Path, seed: u64) {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, D]),
        ("pos_embed".into(), vec![1, L, D]),
        ("patch_embed.proj.weight".into(), vec![D, 3, PATCH, PATCH]),
        ("patch_embed.proj.bias".into(), vec![D]),
        ("norm_f.weight".into(), vec![D]),
        ("head.weight".into(), vec![CLASSES, D]),
        ("head.bias".into(), vec![CLASSES]),
    ];
    for i in 0..DEPTH {
        let p = format!("layers.{i}.");
        shapes.push((format!("{p}norm.weight"), vec![D]));
        shapes.push((format!("{p}mixer.in_proj.weight"), vec![2 * E, D]));
        shapes.push((format!("{p}mixer.out_proj.weight"), vec![D, E]));
        for b in ["", "_b"] {
            shapes.push((format!("{p}mixer.conv1d{b}.weight"), vec![E, 1, K]));
            shapes.push((format!("{p}mixer.conv1d{b}.bias"), vec![E]));
            shapes.push((format!("{p}mixer.x_proj{b}.weight"), vec![R + 2 * N, E]));
            shapes.push((format!("{p}mixer.dt_proj{b}.weight"), vec![E, R]));
            shapes.push((format!("{p}mixer.dt_proj{b}.bias"), vec![E]));
        }
        shapes.push((format!("{p}mixer.A_log"), vec![E, N]));
        shapes.push((format!("{p}mixer.A_b_log"), vec![E, N]));
        shapes.push((format!("{p}mixer.D"), vec![E]));
        shapes.push((format!("{p}mixer.D_b"), vec![E]));
    }
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({ "img_size": IMG.to_string() }),
    );
    let mut at = 0usize;
    for (name, shape) in &shapes {
        let bytes = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [at, at + bytes] }),
        );
        at += bytes;
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + at);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let mut rng = Rng(seed);
    for _ in 0..at / 4 {
        let v = ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04;
        out.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(path, out).unwrap();
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kill_write-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Hidden files in the output folder: the writer's temporary files (`.<name>.<pid>.<n>.vimvq-tmp`;
/// any hidden name counts, so an older naming is caught too).
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
        })
        .collect()
}

/// The output must be absent or byte-identical to one of `complete` (each a full, valid file).
fn assert_absent_or_complete(out: &Path, complete: &[&[u8]], what: &str) -> Option<usize> {
    let Ok(bytes) = fs::read(out) else {
        return None;
    };
    let which = complete.iter().position(|c| *c == bytes.as_slice());
    assert!(
        which.is_some(),
        "{what}: {} holds {} bytes that are no complete output (truncated or mixed)",
        out.display(),
        bytes.len()
    );
    let a = AlignedBytes::from_slice(&bytes);
    Model::parse(&a).unwrap_or_else(|e| panic!("{what}: output does not parse: {e}"));
    which
}

/// Runs `args` to completion (the reference outputs), returning the wall time.
fn run_ok(args: &[&std::ffi::OsStr]) -> Duration {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    t.elapsed()
}

/// Kills `args` (which write `out`) `rounds` times at random moments and checks `out` each time.
fn kill_rounds(
    args: &[&std::ffi::OsStr],
    out: &Path,
    complete: &[&[u8]],
    full_run: Duration,
    rounds: usize,
    rng: &mut Rng,
) -> (usize, usize) {
    let dir = out.parent().unwrap();
    let (mut during_write, mut before_write) = (0, 0);
    // Kill timing depends on the machine's load: past `rounds`, keep going (up to 4× as many)
    // until at least half of the rounds have landed during the write.
    let mut round = 0;
    while round < rounds || (during_write * 2 < rounds && round < rounds * 4) {
        round += 1;
        for t in temp_files(dir) {
            fs::remove_file(t).unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_vimvq"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        // One round in four kills while the input is still being read.
        let early = round % 4 == 3;
        if early {
            std::thread::sleep(Duration::from_millis(
                rng.below(full_run.as_millis() as u64 / 3) + 1,
            ));
        } else {
            // Poll for the temporary file, then wait a random part of the write.
            while temp_files(dir).is_empty() && start.elapsed() < full_run * 4 {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            let seen = start.elapsed();
            let rest = full_run.saturating_sub(seen).as_micros() as u64;
            std::thread::sleep(Duration::from_micros(rng.below(rest.max(1000))));
        }
        let still_running = child.try_wait().unwrap().is_none();
        let had_temp = !temp_files(dir).is_empty();
        child.kill().ok(); // SIGKILL on unix
        child.wait().unwrap();
        if still_running && had_temp {
            during_write += 1;
        } else if still_running {
            before_write += 1;
        }
        assert_absent_or_complete(out, complete, &format!("round {round}"));
    }
    for t in temp_files(dir) {
        fs::remove_file(t).unwrap();
    }
    (during_write, before_write)
}

#[cfg(unix)]
#[test]
fn sigkill_during_import_leaves_old_or_nothing() {
    let dir = tmp_dir("import");
    let (ck_a, ck_b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    write_checkpoint(&ck_a, 1);
    write_checkpoint(&ck_b, 2);
    let out = dir.join("out/model.vimvq");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (ref_a, ref_b) = (dir.join("ref_a.vimvq"), dir.join("ref_b.vimvq"));
    let os = |p: &Path| p.as_os_str().to_owned();
    let import =
        |ck: &Path, o: &Path| vec![os(Path::new("import")), os(ck), os(Path::new("-o")), os(o)];
    let args_a = import(&ck_a, &ref_a);
    let args_b = import(&ck_b, &ref_b);
    let full = run_ok(&args_a.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    run_ok(&args_b.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let (a, b) = (fs::read(&ref_a).unwrap(), fs::read(&ref_b).unwrap());
    assert!(a.len() > 20 << 20 && a != b, "{} bytes", a.len());

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!(
        "kill_write seed {seed}, full import {full:?}, output {} bytes",
        a.len()
    );
    let mut rng = Rng(seed);

    // 1. No previous output: killed runs leave nothing (or, if the kill came too late, B).
    let to_out = import(&ck_b, &out);
    let to_out: Vec<_> = to_out.iter().map(|a| a.as_os_str()).collect();
    let (w1, r1) = kill_rounds(&to_out, &out, &[&b], full, 6, &mut rng);
    // 2. A previous complete output A: killed runs writing B leave A (or a complete B).
    let _ = fs::remove_file(&out);
    fs::copy(&ref_a, &out).unwrap();
    let (w2, r2) = kill_rounds(&to_out, &out, &[&a, &b], full, 8, &mut rng);
    eprintln!(
        "kills: {} during the write, {} before it (temp file not yet created)",
        w1 + w2,
        r1 + r2
    );
    assert!(
        w1 + w2 >= 3,
        "too few kills landed during the write: {}",
        w1 + w2
    );
    fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn sigkill_during_pack_leaves_old_or_nothing() {
    let calib = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fashion-mnist/calib");
    if !calib.is_dir() {
        eprintln!("SKIPPED: {} missing", calib.display());
        return;
    }
    let dir = tmp_dir("pack");
    let ck = dir.join("ti.safetensors");
    write_checkpoint(&ck, 3);
    let out = dir.join("out/model.vimvq");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let reference = dir.join("ref.vimvq");
    // RTN keeps f32 storage (a ~28 MB write) and needs no optimisation: fast and large.
    let pack = |o: &Path| -> Vec<std::ffi::OsString> {
        [
            "pack",
            ck.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
            "--method",
            "rtn",
            "--calib-count",
            "1",
        ]
        .iter()
        .map(Into::into)
        .collect()
    };
    let args_ref = pack(&reference);
    let full = run_ok(&args_ref.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let full_bytes = fs::read(&reference).unwrap();
    let mut rng = Rng(full.as_nanos() as u64);
    let args = pack(&out);
    let args: Vec<_> = args.iter().map(|a| a.as_os_str()).collect();
    let (w1, _) = kill_rounds(&args, &out, &[&full_bytes], full, 4, &mut rng);
    // Previous output: the f32 import of the same checkpoint... any complete file will do; use
    // the reference itself renamed, then check it survives or is replaced whole.
    fs::copy(&reference, &out).unwrap();
    let (w2, _) = kill_rounds(&args, &out, &[&full_bytes], full, 4, &mut rng);
    eprintln!("pack kills during the write: {}", w1 + w2);
    fs::remove_dir_all(&dir).ok();
}

// ---- issue 12 F9: temporary files never outlive a catchable signal --------------------------

/// Spawns `vimvq import ck -o out` and waits until its temporary file exists (or it ended).
#[cfg(unix)]
fn spawn_until_temp(ck: &Path, out: &Path) -> (std::process::Child, bool) {
    let dir = out.parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vimvq"))
        .args([Path::new("import"), ck, Path::new("-o"), out])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while temp_files(dir).is_empty() && start.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            return (child, false);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    (child, true)
}

#[cfg(unix)]
#[test]
fn sigint_sigterm_and_sighup_remove_the_temporary_file() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tmp_dir("signals");
    let ck = dir.join("a.safetensors");
    write_checkpoint(&ck, 4);
    let out = dir.join("out/model.vimvq");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut landed = 0;
    for (round, sig) in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let (mut child, during) = spawn_until_temp(&ck, &out);
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let st = child.wait().unwrap();
        let left = temp_files(out.parent().unwrap());
        assert!(
            left.is_empty(),
            "round {round}, signal {sig}: {left:?} left behind"
        );
        if during && st.signal() == Some(sig) {
            landed += 1;
        }
        let _ = fs::remove_file(&out);
    }
    // Timing depends on the load: most rounds land while the temporary file exists.
    assert!(landed >= 3, "only {landed} signals landed during the write");
    fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn a_file_size_limit_removes_the_temporary_file_and_keeps_the_old_output() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tmp_dir("xfsz");
    let ck = dir.join("a.safetensors");
    write_checkpoint(&ck, 5);
    let out = dir.join("out/model.vimvq");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    fs::write(&out, b"previous model").unwrap();
    // `ulimit -f` counts 1024-byte blocks: 8 MiB, below the ~28 MB output.
    let st = Command::new("sh")
        .args(["-c", "ulimit -f 8192; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_vimvq"))
        .args([Path::new("import"), &ck, Path::new("-o"), &out])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.signal(), Some(libc::SIGXFSZ), "{st:?}");
    assert_eq!(temp_files(out.parent().unwrap()), Vec::<PathBuf>::new());
    assert_eq!(fs::read(&out).unwrap(), b"previous model");
    fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn the_next_run_removes_a_killed_writers_temporary_file() {
    let dir = tmp_dir("stale");
    let ck = dir.join("a.safetensors");
    write_checkpoint(&ck, 6);
    let out = dir.join("out/model.vimvq");
    let folder = out.parent().unwrap().to_path_buf();
    fs::create_dir_all(&folder).unwrap();
    // SIGKILL cannot be caught: its temporary file stays...
    let mut left = Vec::new();
    for _ in 0..10 {
        let (mut child, during) = spawn_until_temp(&ck, &out);
        child.kill().unwrap();
        child.wait().unwrap();
        left = temp_files(&folder);
        if during && !left.is_empty() {
            break;
        }
    }
    assert!(!left.is_empty(), "no kill landed during the write");
    // ... and one of another target, or of a live process, is not touched.
    let other = folder.join(format!(".other.vimvq.1.0{}", ".vimvq-tmp"));
    let live = folder.join(format!(".model.vimvq.{}.0.vimvq-tmp", std::process::id()));
    fs::write(&other, b"x").unwrap();
    fs::write(&live, b"x").unwrap();
    run_ok(&[
        "import".as_ref(),
        ck.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    for t in &left {
        assert!(!t.exists(), "{} survived the next run", t.display());
    }
    assert!(other.exists() && live.exists());
    fs::remove_dir_all(&dir).ok();
}
