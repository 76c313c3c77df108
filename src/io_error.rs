//! One-line messages for file errors, shared by the commands and the input readers.

use std::path::Path;

use anyhow::anyhow;

/// `path: reason` for an I/O error, with "no such file" for the common case.
pub fn io_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("{}: no such file", path.display()),
        std::io::ErrorKind::PermissionDenied => anyhow!("{}: permission denied", path.display()),
        _ => anyhow!("{}: {e}", path.display()),
    }
}
