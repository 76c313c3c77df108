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
mod error;
pub mod pickle;
pub mod pth;
pub mod safetensors;
mod tensor;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use self::config::{infer_config, to_packed, torch_name, torch_shape};
pub use self::error::ImportError;
pub use self::tensor::{Checkpoint, HostTensor, MAX_TENSORS, MAX_TENSOR_ELEMS, MAX_TOTAL_ELEMS};
pub use vimvq_rt::Interpolation;

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
