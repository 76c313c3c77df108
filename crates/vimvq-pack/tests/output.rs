//! `vimvq_pack::output`: atomic replacement, staged commits, refused targets, kept permissions,
//! stale temporary files.

use std::fs;
use std::path::{Path, PathBuf};

use vimvq_pack::output::{self, TEMP_SUFFIX};

fn temp_dir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vimvq-output-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn listing(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_atomic_replaces_whole_and_leaves_no_temp_file() {
    let dir = temp_dir("atomic");
    let path = dir.join("model.vimvq");
    output::write_atomic(&path, b"first").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first");
    output::write_atomic(&path, b"second, longer").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second, longer");
    assert_eq!(listing(&dir), vec!["model.vimvq"]);

    // A non-empty directory as the target: refused, nothing created.
    let blocker = dir.join("blocked.vimvq");
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("keep"), b"x").unwrap();
    let e = output::write_atomic(&blocker, b"x").unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    assert_eq!(listing(&dir), vec!["blocked.vimvq", "model.vimvq"]);
    assert_eq!(listing(&blocker), vec!["keep"]);

    // Missing folder: an error that names it, nothing created.
    let e = output::check_target(&dir.join("nope/x.vimvq")).unwrap_err();
    assert!(e.to_string().contains("nope does not exist"), "{e}");
    assert!(output::write_atomic(&dir.join("nope/x.vimvq"), b"x").is_err());
    assert_eq!(listing(&dir), vec!["blocked.vimvq", "model.vimvq"]);
}

#[test]
fn staged_files_replace_nothing_until_committed() {
    let dir = temp_dir("staged");
    let (a, b) = (dir.join("a.vimvq"), dir.join("b.json"));
    fs::write(&a, b"old a").unwrap();
    let sa = output::stage(&a, b"new a").unwrap();
    let sb = output::stage(&b, b"new b").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"old a");
    assert!(!b.exists());
    assert_eq!(
        listing(&dir)
            .iter()
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .count(),
        2
    );
    // One dropped uncommitted: its temporary file goes, the target stays.
    drop(sb);
    assert!(!b.exists());
    sa.commit().unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"new a");
    assert_eq!(listing(&dir), vec!["a.vimvq"]);
    // check_target's write probe leaves nothing either.
    output::check_target(&b).unwrap();
    assert_eq!(listing(&dir), vec!["a.vimvq"]);
}

#[cfg(unix)]
#[test]
fn special_targets_are_refused_and_permissions_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("special");
    let target = dir.join("real");
    fs::write(&target, b"keep").unwrap();
    let link = dir.join("link.vimvq");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for e in [
        output::check_target(&link).unwrap_err(),
        output::write_atomic(&link, b"x").unwrap_err(),
    ] {
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
    assert_eq!(fs::read(&target).unwrap(), b"keep");

    let private = dir.join("private.vimvq");
    fs::write(&private, b"old").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o640)).unwrap();
    output::write_atomic(&private, b"new").unwrap();
    assert_eq!(
        fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(fs::read(&private).unwrap(), b"new");
}

#[test]
fn stale_temporary_files_of_dead_processes_are_removed() {
    let dir = temp_dir("stale");
    let path = dir.join("m.vimvq");
    // A process that has exited: its pid names a dead writer.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--list")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = dir.join(format!(".m.vimvq.{dead}.3{TEMP_SUFFIX}"));
    let mine = dir.join(format!(".m.vimvq.{}.99{TEMP_SUFFIX}", std::process::id()));
    let other = dir.join(format!(".n.vimvq.{dead}.3{TEMP_SUFFIX}"));
    let unrelated = dir.join(".m.vimvq.notes");
    for p in [&stale, &mine, &other, &unrelated] {
        fs::write(p, b"x").unwrap();
    }
    output::write_atomic(&path, b"model").unwrap();
    assert!(!stale.exists());
    assert!(mine.exists() && other.exists() && unrelated.exists());
}
