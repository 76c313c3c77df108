//! `std` loaders that give the reader (`Model::parse`) the 64-byte-aligned bytes it wants.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::vec::Vec;

use bytemuck::{Pod, Zeroable};

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

/// How [`ModelFile::open_with`] maps a model file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Read every page in at open (Linux `MAP_POPULATE`; ignored elsewhere): `open` costs one
    /// sequential read of the file, and inference never stalls on a page fault afterwards.
    pub populate: bool,
    /// Lock the mapping in RAM (`mlock`; unix only, an error elsewhere): the pages cannot be
    /// evicted under memory pressure. Needs `RLIMIT_MEMLOCK` ≥ the file size (or
    /// `CAP_IPC_LOCK`); locking also faults every page in.
    pub lock: bool,
}

#[cfg(unix)]
fn lock(map: &memmap2::Mmap) -> io::Result<()> {
    map.lock()
}

#[cfg(not(unix))]
fn lock(_map: &memmap2::Mmap) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "locking a mapped model in RAM is only supported on unix",
    ))
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(AlignedBytes),
}

/// A model file held in memory: memory-mapped (page-aligned) by [`ModelFile::open`], or read
/// into [`AlignedBytes`] by [`ModelFile::read`].
///
/// Parse it once with `ModelFile::model` and keep the `Model`: parsing validates the whole
/// file (and checksums the data section by default).
pub struct ModelFile {
    storage: Storage,
}

impl ModelFile {
    /// Memory-maps `path` read-only (falls back to [`ModelFile::read`] if mapping fails, e.g.
    /// for an empty file or a pipe). Pages are faulted in lazily; see [`ModelFile::open_with`]
    /// to pre-fault or lock them.
    ///
    /// The file must not be modified or truncated while mapped (see `docs/RUNTIME.md`, Safety).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(path, LoadOptions::default())
    }

    /// [`ModelFile::open`] with explicit [`LoadOptions`]: pre-fault every page at open
    /// (`populate`, so the first inference does not take page faults) and/or lock the pages in
    /// RAM (`lock`, so they are never evicted). A failed `lock` (e.g. `RLIMIT_MEMLOCK`) is an
    /// error, not a silent fallback; the fallback to [`ModelFile::read`] applies only to files
    /// that cannot be mapped at all.
    pub fn open_with(path: impl AsRef<Path>, opts: LoadOptions) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)?;
        let mut mo = memmap2::MmapOptions::new();
        if opts.populate {
            mo.populate();
        }
        // SAFETY: the mapping is read-only and private to this process. Mapped memory is only
        // undefined behaviour if another process modifies or truncates the file while it is
        // mapped, which the documented contract of `open` forbids (use `read` otherwise). The
        // parser never assumes the bytes are stable across reads for memory safety: every read
        // is bounds-checked against the slice length, which cannot change.
        let map = match unsafe { mo.map(&file) } {
            Ok(map) => map,
            Err(_) => return Self::read(path),
        };
        if opts.lock {
            lock(&map)?;
        }
        Ok(ModelFile {
            storage: Storage::Mapped(map),
        })
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
}

impl core::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ModelFile")
            .field("len", &self.bytes().len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}
