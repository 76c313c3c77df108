//! [`ImportError`]: everything that can go wrong while importing.

use std::path::PathBuf;

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
