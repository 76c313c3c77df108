//! Checkpoint import: PyTorch `.pth` (zip) and `.safetensors` → [`Checkpoint`] →
//! [`VimConfig`](vimvq_rt::VimConfig) and an all-f32
//! [`PackedModel`](vimvq_rt::format::PackedModel).
//!
//! ```no_run
//! # use std::path::Path;
//! use vimvq_pack::import::{self, ModelOptions};
//! let ck = import::load(Path::new("vim_t_midclstok_76p1acc.pth"), None)?; // `model` sub-dict
//! let model = import::to_packed(&ck, &ModelOptions::default())?;
//! # Ok::<(), import::ImportError>(())
//! ```
//!
//! # Formats
//! [`load`] looks at the content, not the file name:
//! * `PK\x03\x04` — a PyTorch zip checkpoint ([`pth`]), e.g. what hustvl/Vim `main.py` writes:
//!   `{'model', 'model_ema', 'optimizer', 'lr_scheduler', 'epoch', 'scaler', 'args'}`, or a bare
//!   `torch.save(model.state_dict())`.
//! * an 8-byte little-endian header length followed by `{` — safetensors ([`safetensors`]).
//! * a pickle opcode stream (`\x80\x02…`) — a legacy (pre-1.6) torch file: refused with a hint.
//!
//! Tensor names may carry a DDP `module.` prefix; it is stripped.
//!
//! # Why a hand-written pickle reader
//! The reader in [`pickle`] (~800 lines without its tests, a third of them docs and error
//! text) only understands the opcodes `torch.save` emits; it never imports or calls anything.
//! The crates considered (checked with `cargo info` and by reading their sources, 2026):
//! * `candle-core` (`candle_core::pickle`): pulls in a whole tensor framework (gemm, rayon, rand,
//!   float8, yoke, zerocopy, …) for one module, and its unpickler has no caps on memo copies,
//!   nesting or object count.
//! * `pytorch-reader` (burn): well hardened and light-ish (zip, tar, serde, crc32fast), but
//!   only published as a pre-release (0.23.0-pre.1), and it reads an `argparse.Namespace`
//!   (`NEWOBJ` + `BUILD`) as an opaque value, dropping its fields, so `args.input_size` cannot
//!   be recovered; reading both tensors and `args` also means parsing the pickle twice.
//!
//! Neither meets "never execute, capped, lean, and gives us `args`", so the reader is local:
//! an arena-based stack machine with explicit caps (see the constants in [`pickle`]).
//!
//! # Limits
//! Besides the pickle caps: at most [`MAX_TENSORS`] tensors, [`MAX_TENSOR_ELEMS`] elements per
//! tensor and [`MAX_TOTAL_ELEMS`] in all. Every size a file claims is checked against what the
//! file holds before memory is allocated for it.

pub mod config;
pub mod pickle;
pub mod pth;
pub mod safetensors;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use self::config::{infer_config, to_packed, torch_name, torch_shape};
pub use vimvq_rt::Interpolation;

/// Most tensors in one state dict.
pub const MAX_TENSORS: usize = 100_000;
/// Most elements in one tensor (2^28, 1 GiB of f32; Vim-B's largest tensor has 2.4 M).
pub const MAX_TENSOR_ELEMS: u64 = 1 << 28;
/// Most elements over all loaded tensors (2^30, 4 GiB of f32; Vim-B has 98 M).
pub const MAX_TOTAL_ELEMS: u64 = 1 << 30;

/// A dense tensor on the host, converted to f32, row-major, in its torch shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Torch shape, e.g. `[D, C, p, p]` for the patch embedding.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// The tensors of one state dict and the checkpoint's metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// State-dict name (without any `module.` prefix) → tensor.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Text metadata. safetensors: `__metadata__` verbatim (the bundled models use `img_size`,
    /// `resize`, `crop`, `interpolation`, `mean`, `std`, `channels`, `labels`). `.pth`:
    /// `epoch`, every scalar field of `args` as `args.<name>`, and `img_size`, `resize`,
    /// `model`, `num_classes` derived from hustvl's `args`.
    pub meta: BTreeMap<String, String>,
}

/// User overrides for what the checkpoint does not say (the CLI's MODEL OPTIONS).
/// `None` = take it from the checkpoint metadata, else the default.
#[derive(Default, Clone, Debug)]
pub struct ModelOptions {
    /// Input side in pixels (default 224).
    pub img_size: Option<u32>,
    /// Shorter side after resizing (default `img_size / 0.875`, truncated).
    pub resize: Option<u32>,
    /// Centre crop side (must equal `img_size`).
    pub crop: Option<u32>,
    /// Per-channel mean on the `[0, 1]` scale (default ImageNet).
    pub mean: Option<[f32; 3]>,
    /// Per-channel std on the `[0, 1]` scale (default ImageNet).
    pub std: Option<[f32; 3]>,
    /// Resize filter (default bicubic).
    pub interpolation: Option<Interpolation>,
    /// Class names, `num_classes` of them.
    pub labels: Option<Vec<String>>,
}

/// Everything that can go wrong while importing. Messages are one line and name the file or
/// tensor at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// Any other I/O failure. (The cause is part of the message, not a `source`, so a printed
    /// error chain does not repeat it.)
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The path names a directory.
    #[error("{}: is a directory, not a checkpoint file", path.display())]
    IsDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The file has no bytes.
    #[error("{}: file is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Neither a torch zip checkpoint nor safetensors.
    #[error("{}: not a checkpoint (expected a PyTorch .pth zip archive or a .safetensors file)", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A pre-1.6 torch file (a bare pickle stream).
    #[error("{}: legacy (non-zip) PyTorch file; re-save it with torch.save(torch.load(f, weights_only=False), f) on PyTorch ≥ 1.6", path.display())]
    LegacyTorch {
        /// The file.
        path: PathBuf,
    },
    /// A size above one of the sanity caps.
    #[error("{}: {what} is too large ({} > limit {limit})", path.display(), shown(*size))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What was measured.
        what: String,
        /// Its size (`u128::MAX` if even that overflowed).
        size: u128,
        /// The cap.
        limit: u64,
    },
    /// The zip container is unreadable.
    #[error("{}: {msg}", path.display())]
    Zip {
        /// The file.
        path: PathBuf,
        /// Details.
        msg: String,
    },
    /// The pickle is malformed, hostile or unsupported.
    #[error("{}: data.pkl, byte {offset}: {msg}", path.display())]
    Pickle {
        /// The file.
        path: PathBuf,
        /// Offset of the failing opcode.
        offset: usize,
        /// Details.
        msg: String,
    },
    /// The checkpoint's structure is not what a state dict should look like.
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Details.
        msg: String,
    },
    /// `--key` names no entry of the checkpoint.
    #[error("{}: no key '{key}' in the checkpoint (available: {available})", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The requested key.
        key: String,
        /// The top-level keys.
        available: String,
    },
    /// No key given and no state dict found.
    #[error("{}: no state dict found (no 'model' entry and the top level is not a state dict); pick one with --key (available: {available})", path.display())]
    NoStateDict {
        /// The file.
        path: PathBuf,
        /// The top-level keys.
        available: String,
    },
    /// A tensor's bytes do not match its description.
    #[error("{}: tensor '{tensor}': {msg}", path.display())]
    Storage {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Details.
        msg: String,
    },
    /// A tensor of a non-float type.
    #[error("{}: tensor '{tensor}' has type {dtype}; only f32, f16, bf16 and f64 are supported", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its type.
        dtype: String,
    },
    /// The safetensors container is invalid.
    #[error("{}: invalid safetensors file: {msg}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Details.
        msg: String,
    },
    /// Two names collide once the `module.` prefix is stripped.
    #[error("tensor '{name}' appears twice (with and without the 'module.' prefix)")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A schema tensor is absent.
    #[error("missing tensor '{name}' (expected shape {expected})")]
    MissingTensor {
        /// The name.
        name: String,
        /// Its expected shape.
        expected: String,
    },
    /// A schema tensor has the wrong shape.
    #[error("tensor '{name}' has shape {found}, expected {expected}")]
    ShapeMismatch {
        /// The name.
        name: String,
        /// Its shape.
        found: String,
        /// The expected shape.
        expected: String,
    },
    /// Tensors that are not part of a Vim classifier.
    #[error("unexpected tensors, not part of a Vision Mamba classifier: {names}")]
    UnexpectedTensors {
        /// Some of their names.
        names: String,
    },
    /// The shapes do not describe a consistent model.
    #[error("cannot infer the model config: {0}")]
    Config(String),
    /// A metadata value that does not parse or contradicts the tensors.
    #[error("checkpoint metadata '{key}' = {value:?}: {msg}")]
    Meta {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// Details.
        msg: String,
    },
    /// An invalid preprocessing setting.
    #[error("{origin}: {msg}")]
    Preprocess {
        /// Where it came from (`--std`, `metadata 'mean'`, ...).
        origin: String,
        /// Details.
        msg: String,
    },
    /// A weight that is NaN or infinite: the model would output NaN.
    #[error("tensor '{name}' holds {value} at flat index {index}; weights must be finite")]
    NonFinite {
        /// The tensor's state-dict name.
        name: String,
        /// Flat (row-major) index of the first such value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Label count differs from the class count.
    #[error("{found} labels given but the model has {expected} classes")]
    Labels {
        /// Labels given.
        found: usize,
        /// `num_classes`.
        expected: usize,
    },
}

/// A size for messages; `u128::MAX` stands for "beyond 2^128".
fn shown(size: u128) -> String {
    if size == u128::MAX {
        "more than 2^128".into()
    } else {
        size.to_string()
    }
}

/// What [`load`] found at the start of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zip,
    Safetensors,
    LegacyTorch,
    Unknown,
}

fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Kind::Zip;
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Kind::LegacyTorch;
    }
    if head.len() >= 9 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[..8]);
        let n = u64::from_le_bytes(n);
        // a plausible header length (it may still run past a truncated file's end)
        if (2..=safetensors::MAX_HEADER_BYTES).contains(&n) && head[8] == b'{' {
            return Kind::Safetensors;
        }
    }
    Kind::Unknown
}

/// Reads a checkpoint. `key` selects the state dict inside a `.pth` dict: by default `model`
/// if present, else the top level when it is itself a state dict (a bare
/// `torch.save(model.state_dict())`), else `state_dict`. safetensors files hold exactly one
/// state dict, so only `None` or `Some("model")` are accepted for them.
pub fn load(path: &Path, key: Option<&str>) -> Result<Checkpoint, ImportError> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ImportError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ImportError::Io {
            path: path.to_path_buf(),
            cause: e,
        },
    };
    let mut file = File::open(path).map_err(io)?;
    let md = file.metadata().map_err(io)?;
    if md.is_dir() {
        return Err(ImportError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let len = md.len();
    if len == 0 {
        return Err(ImportError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut head = Vec::with_capacity(16);
    (&mut file).take(16).read_to_end(&mut head).map_err(io)?;
    let ck = match sniff(&head) {
        Kind::Zip => {
            drop(head);
            let file = File::open(path).map_err(io)?;
            pth::load(path, file, key)?
        }
        Kind::Safetensors => {
            if let Some(k) = key.filter(|k| *k != "model") {
                return Err(ImportError::UnknownKey {
                    path: path.to_path_buf(),
                    key: k.to_owned(),
                    available: "none: a safetensors file holds one state dict".into(),
                });
            }
            let file = File::open(path).map_err(io)?;
            safetensors::load(path, file, len)?
        }
        Kind::LegacyTorch => {
            return Err(ImportError::LegacyTorch {
                path: path.to_path_buf(),
            })
        }
        Kind::Unknown => {
            return Err(ImportError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    };
    strip_module_prefix(ck)
}

/// Removes a DDP `module.` prefix from every name that has one.
fn strip_module_prefix(mut ck: Checkpoint) -> Result<Checkpoint, ImportError> {
    if !ck.tensors.keys().any(|k| k.starts_with("module.")) {
        return Ok(ck);
    }
    let mut out = BTreeMap::new();
    for (k, v) in std::mem::take(&mut ck.tensors) {
        let name = k.strip_prefix("module.").map(str::to_owned).unwrap_or(k);
        if out.contains_key(&name) {
            return Err(ImportError::DuplicateTensor { name });
        }
        out.insert(name, v);
    }
    ck.tensors = out;
    Ok(ck)
}
