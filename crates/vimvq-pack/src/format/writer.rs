//! Writes a [`PackedModel`] to a `.vimvq` file: the bytes come from the format's writer
//! ([`vimvq_rt::format::to_bytes`]), the file is replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use vimvq_rt::format::{to_bytes, PackedModel, WriteError};

/// Why a model file cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteFileError {
    /// The model breaks a rule of the format.
    #[error("{0}")]
    Model(#[from] WriteError),
    /// Writing the file failed.
    #[error("cannot write model file: {0}")]
    Io(#[from] io::Error),
}

/// Writes `model` to `path` atomically: the bytes go to a new temporary file in the same folder,
/// which is flushed to disk (`fsync`), renamed over `path`, and the folder is synced. If anything
/// fails before the rename, the temporary file is removed and an existing `path` is untouched.
pub fn write_file(model: &PackedModel, path: &Path) -> Result<(), WriteFileError> {
    let bytes = to_bytes(model)?;
    write_atomic(path, &bytes)?;
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temp(dir, &name)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
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
