//! Image files below a folder (`pack --calib`, `pack --eval`, `eval --data`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::io_error;
use crate::image_io::has_image_extension;

/// Deepest folder nesting walked.
const MAX_DEPTH: usize = 64;

/// One image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The folder it was listed in.
    pub dir: PathBuf,
    /// Its name in that folder.
    pub name: OsString,
    /// `dir/name`.
    pub path: PathBuf,
}

/// Every image file below `root`, each once, ordered by (folder bytes, name bytes).
///
/// Symlinked folders are followed, as torchvision's `ImageFolder` does, but each folder is
/// entered once only (identified by device and inode), so link loops end and a folder linked
/// twice is not listed twice. A file reachable under several names (symlinks, hard links) is
/// listed once, under its first name in that order.
pub fn image_files(root: &Path) -> Result<Vec<Found>> {
    let mut w = Walk {
        seen_dirs: HashSet::new(),
        out: Vec::new(),
    };
    w.dir(root, 0)?;
    let mut files = w.out;
    files.sort_by(|a, b| {
        let key = |f: &(Found, FileId)| {
            (
                f.0.dir.as_os_str().as_encoded_bytes().to_vec(),
                f.0.name.as_encoded_bytes().to_vec(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut seen = HashSet::new();
    Ok(files
        .into_iter()
        .filter(|(_, id)| seen.insert(*id))
        .map(|(f, _)| f)
        .collect())
}

/// Identity of a file or folder across names.
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(md: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino())
}

#[cfg(not(unix))]
fn file_id(_: &fs::Metadata) -> FileId {
    // No portable identity: every folder and file is distinct (the depth cap ends link loops).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    (0, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

struct Walk {
    seen_dirs: HashSet<FileId>,
    out: Vec<(Found, FileId)>,
}

impl Walk {
    fn dir(&mut self, dir: &Path, depth: usize) -> Result<()> {
        let md = fs::metadata(dir).map_err(|e| io_error(dir, &e))?;
        if !self.seen_dirs.insert(file_id(&md)) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            bail!(
                "{}: folders nested more than {MAX_DEPTH} deep",
                dir.display()
            );
        }
        let mut entries = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| io_error(dir, &e))? {
            entries.push(e.map_err(|e| io_error(dir, &e))?);
        }
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            // A dangling link or an unreadable entry is not an image: skip it.
            let Ok(md) = fs::metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                self.dir(&path, depth + 1)?;
            } else if md.is_file() && has_image_extension(&path) {
                let found = Found {
                    dir: dir.to_path_buf(),
                    name: e.file_name(),
                    path,
                };
                self.out.push((found, file_id(&md)));
            }
        }
        Ok(())
    }
}
