//! `std` loaders that give [`Model::parse`] the 64-byte-aligned bytes it wants.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::vec::Vec;

use bytemuck::{Pod, Zeroable};

use crate::model::{Model, ParseOptions};

use super::FormatError;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Owned bytes whose first byte is 64-byte aligned (a `Vec<u8>` only guarantees 1).
#[derive(Clone)]
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            lines: std::vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }
    /// A 64-byte-aligned copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut a = Self::zeroed(bytes.len());
        a.as_mut_bytes().copy_from_slice(bytes);
        a
    }
    /// Reads a whole file.
    pub fn read_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let len = usize::try_from(f.metadata()?.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "file too large for this target")
        })?;
        let mut a = Self::zeroed(len);
        f.read_exact(a.as_mut_bytes())?;
        // The file may have grown meanwhile; the model is what we read.
        Ok(a)
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
    /// The bytes, mutable.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl core::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AlignedBytes")
            .field("len", &self.len)
            .finish()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(AlignedBytes),
}

/// A model file held in memory: memory-mapped (page-aligned) by [`ModelFile::open`], or read
/// into [`AlignedBytes`] by [`ModelFile::read`].
///
/// Parse it once with [`ModelFile::model`] and keep the [`Model`]: parsing validates the whole
/// file (and checksums the data section by default).
pub struct ModelFile {
    storage: Storage,
}

impl ModelFile {
    /// Memory-maps `path` read-only (falls back to [`ModelFile::read`] if mapping fails, e.g.
    /// for an empty file or a pipe).
    ///
    /// The file must not be modified or truncated while mapped (see `docs/RUNTIME.md`, Safety).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)?;
        // SAFETY: the mapping is read-only and private to this process. Mapped memory is only
        // undefined behaviour if another process modifies or truncates the file while it is
        // mapped, which the documented contract of `open` forbids (use `read` otherwise). The
        // parser never assumes the bytes are stable across reads for memory safety: every read
        // is bounds-checked against the slice length, which cannot change.
        match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => Ok(ModelFile {
                storage: Storage::Mapped(map),
            }),
            Err(_) => Self::read(path),
        }
    }

    /// Reads `path` into 64-byte-aligned memory.
    pub fn read(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(ModelFile {
            storage: Storage::Owned(AlignedBytes::read_file(path)?),
        })
    }

    /// Wraps bytes already in memory.
    pub fn from_bytes(bytes: AlignedBytes) -> Self {
        ModelFile {
            storage: Storage::Owned(bytes),
        }
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(a) => a.as_bytes(),
        }
    }

    /// True if the file is memory-mapped rather than read into memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Validates the file and returns the model ([`Model::parse`]).
    pub fn model(&self) -> Result<Model<'_>, FormatError> {
        Model::parse(self.bytes())
    }

    /// [`ModelFile::model`] with explicit options.
    pub fn model_with(&self, opts: ParseOptions) -> Result<Model<'_>, FormatError> {
        Model::parse_with(self.bytes(), opts)
    }
}

impl core::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ModelFile")
            .field("len", &self.bytes().len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}
