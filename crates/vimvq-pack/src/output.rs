//! Safe replacement of output files (`.vimvq` models, reports, caches).
//!
//! [`stage`] writes the bytes to a new temporary file beside the target, flushed to disk;
//! [`Staged::commit`] renames it over the target and syncs the folder. Until the commit an
//! existing target is untouched, so a caller writing several files stages them all and commits
//! only when everything succeeded. The rules:
//! * The target must be absent or a regular file: a symlink, directory, FIFO, socket or device
//!   node is refused, never replaced. An existing file's permission bits are kept.
//! * Temporary files are named `.<name>.<pid>.<n>.vimvq-tmp` (`<name>` the target's file name).
//!   They are removed on any error, when a [`Staged`] is dropped uncommitted, and on SIGINT,
//!   SIGTERM, SIGHUP and SIGXFSZ (the signal is then re-raised, so the process still ends by
//!   it). SIGKILL cannot be caught: a killed writer leaves its temporary file, and the next
//!   [`stage`] of the same target removes those whose process is gone.
//! * [`check_target`] runs these checks, and a write probe of the folder, before any long work.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of every temporary file.
pub const TEMP_SUFFIX: &str = ".vimvq-tmp";

/// Writes `bytes` to `path` atomically: [`stage`] then [`Staged::commit`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    stage(path, bytes)?.commit()
}

/// Checks, before any work, that `path` can be written: its folder exists and is writable, and
/// it is absent or a regular file.
pub fn check_target(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    check_kind(path)?;
    match fs::metadata(dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return Err(invalid(format!("{} is not a folder", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("folder {} does not exist", dir.display()),
            ))
        }
        Err(e) => return Err(e),
    }
    let (probe, file) = create_temp(dir, &name).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create files in folder {}: {e}", dir.display()),
        )
    })?;
    drop(file);
    drop(probe); // removes it
    Ok(())
}

/// A temporary file holding the complete new contents of `path`, not yet renamed over it.
/// Dropping it uncommitted removes the temporary file.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    slot: Option<usize>,
    committed: bool,
}

/// Writes `bytes` to a fresh temporary file beside `path` (see the module docs), after removing
/// stale temporary files of dead processes for the same target.
pub fn stage(path: &Path, bytes: &[u8]) -> io::Result<Staged> {
    let (dir, name) = split(path)?;
    let keep_mode = check_kind(path)?;
    remove_stale(dir, &name);
    let (mut staged, mut file) = create_temp(dir, &name)?;
    staged.path = path.to_path_buf();
    if let Some(perm) = keep_mode {
        file.set_permissions(perm)?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(staged)
}

impl Staged {
    /// Renames the temporary file over the target and syncs the folder.
    pub fn commit(mut self) -> io::Result<()> {
        // The target may have changed since `stage`: check again right before replacing it.
        check_kind(&self.path)?;
        fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        sync_dir(&self.dir)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            signals::unregister(slot);
        }
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The folder (`.` for a bare name) and file name of `path`.
fn split(path: &Path) -> io::Result<(&Path, String)> {
    let name = path
        .file_name()
        .ok_or_else(|| invalid("the output path has no file name".into()))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// Refuses a target that is not a regular file; returns the permissions of an existing one.
fn check_kind(path: &Path) -> io::Result<Option<fs::Permissions>> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let t = md.file_type();
    if t.is_file() {
        return Ok(Some(md.permissions()));
    }
    let what = if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else {
        special_kind(&t)
    };
    Err(invalid(format!(
        "is {what}, not a regular file; refusing to replace it"
    )))
}

#[cfg(unix)]
fn special_kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::FileType) -> &'static str {
    "a special file"
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh temporary file for `name` in `dir`, returned as an uncommitted [`Staged`]
/// (whose target is still to be set). The path is registered for removal on a signal before the
/// file exists, so no signal can leave it behind.
fn create_temp(dir: &Path, name: &str) -> io::Result<(Staged, File)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()));
        let slot = signals::register(&tmp);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => {
                let staged = Staged {
                    tmp,
                    path: PathBuf::new(),
                    dir: dir.to_path_buf(),
                    slot,
                    committed: false,
                };
                return Ok((staged, f));
            }
            Err(e) => {
                if let Some(slot) = slot {
                    signals::unregister(slot);
                }
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
        }
    }
}

/// Removes `.<name>.<pid>.<n>.vimvq-tmp` files in `dir` whose process no longer runs.
fn remove_stale(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(pid), true) = (pid.parse::<u32>(), n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if pid != std::process::id() && !signals::process_alive(pid) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing on this platform; the rename is already durable
    // as far as the OS allows.
    Ok(())
}

/// Removing live temporary files when a terminating signal arrives.
///
/// The handler may only make async-signal-safe calls, so the paths live in a fixed table of
/// atomic pointers to NUL-terminated strings: [`register`] publishes one, the handler and
/// [`unregister`] each take it with an atomic swap, so exactly one of them owns it (the handler
/// only `unlink`s it; its memory is then leaked, as the process is ending). The handler is
/// installed once, for each signal whose disposition is still the default (a program's own
/// handler, or an ignored SIGHUP under `nohup`, is left alone).
#[cfg(unix)]
mod signals {
    use std::ffi::{c_char, c_int, CString};
    use std::path::Path;
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Once;

    const SLOTS: usize = 16;
    static PATHS: [AtomicPtr<c_char>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
    static INSTALL: Once = Once::new();
    const SIGNALS: [c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGXFSZ];

    extern "C" fn on_signal(sig: c_int) {
        for slot in &PATHS {
            let p = slot.swap(ptr::null_mut(), Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: `p` came from `CString::into_raw` in `register` and nobody else holds
                // it after the swap; `unlink` is async-signal-safe.
                unsafe { libc::unlink(p) };
            }
        }
        // SAFETY: restoring the default action and re-raising are async-signal-safe; the signal
        // is blocked while this handler runs and is delivered, with its default action, on return.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    fn install() {
        for sig in SIGNALS {
            // SAFETY: plain sigaction calls with zeroed, then filled, structs; `on_signal` only
            // makes async-signal-safe calls.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, ptr::null(), &mut old) != 0
                    || old.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, ptr::null_mut());
            }
        }
    }

    /// Publishes `path` for removal on a signal; `None` if it cannot be (table full, NUL byte).
    pub fn register(path: &Path) -> Option<usize> {
        INSTALL.call_once(install);
        let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        let raw = c.into_raw();
        for (i, slot) in PATHS.iter().enumerate() {
            if slot
                .compare_exchange(ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(i);
            }
        }
        // SAFETY: `raw` was just made by `into_raw` and was never published.
        drop(unsafe { CString::from_raw(raw) });
        None
    }

    /// Withdraws the path registered in `slot`.
    pub fn unregister(slot: usize) {
        let p = PATHS[slot].swap(ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` came from `into_raw` and the swap made this the only owner.
            drop(unsafe { CString::from_raw(p) });
        }
    }

    /// Whether process `pid` exists (signal 0 probes without sending anything).
    pub fn process_alive(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 only checks for the process.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
}

#[cfg(not(unix))]
mod signals {
    use std::path::Path;

    pub fn register(_: &Path) -> Option<usize> {
        None
    }
    pub fn unregister(_: usize) {}
    pub fn process_alive(_: u32) -> bool {
        true
    }
}
