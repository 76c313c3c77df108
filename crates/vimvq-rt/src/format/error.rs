//! Errors of the `.vimvq` reader.

use core::fmt;

use super::Role;
use crate::config::ConfigError;

/// A tensor's PyTorch state-dict name (`layers.{i}.` prefix for per-layer roles), for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorName {
    /// The role.
    pub role: Role,
    /// Block index (ignored for global roles).
    pub layer: usize,
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.role.is_per_layer() {
            write!(f, "layers.{}.{}", self.layer, self.role.torch_name())
        } else {
            f.write_str(self.role.torch_name())
        }
    }
}

/// Which byte range of a tensor record a [`TensorProblem`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeKind {
    /// The values of a dense tensor, or the indices of a VQ tensor.
    Data,
    /// The codebook of a VQ tensor.
    Codebook,
}

impl fmt::Display for RangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeKind::Data => "data",
            RangeKind::Codebook => "codebook",
        })
    }
}

/// What is wrong with one tensor record (see [`FormatError::Tensor`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorProblem {
    /// The record at this table position is not the tensor the schema puts there.
    WrongTensor {
        /// Stored role id.
        role: u16,
        /// Stored layer.
        layer: u16,
    },
    /// Shape differs from [`Role::shape`].
    Shape {
        /// Stored rows.
        rows: u32,
        /// Stored cols.
        cols: u32,
        /// Schema rows.
        expected_rows: usize,
        /// Schema cols.
        expected_cols: usize,
    },
    /// Unknown `kind`.
    Kind(u8),
    /// VQ storage on a role that is not a linear weight.
    VqNotAllowed,
    /// Unknown codebook dtype.
    CodebookDtype(u8),
    /// Unknown index layout.
    IndexLayout(u8),
    /// `k` is 0 or above 65536, or `d` is 0 or above 16.
    VqParams {
        /// Stored `k`.
        k: u32,
        /// Stored `d`.
        d: u32,
    },
    /// Index width is not 8 or 16, or cannot represent `k` codewords.
    IndexBits {
        /// Stored width.
        bits: u8,
        /// Stored `k`.
        k: u32,
    },
    /// A VQ-only field is non-zero on a dense tensor.
    DenseField(&'static str),
    /// Non-zero reserved bytes.
    Reserved,
    /// A range has the wrong length for the shape and storage.
    RangeSize {
        /// Which range.
        range: RangeKind,
        /// Stored length.
        bytes: u64,
        /// Length implied by the record.
        expected: u64,
    },
    /// A range does not start on a 64-byte boundary.
    Misaligned {
        /// Which range.
        range: RangeKind,
        /// Stored offset.
        offset: u64,
    },
    /// A range extends outside the data section.
    OutOfBounds {
        /// Which range.
        range: RangeKind,
        /// Stored offset.
        offset: u64,
        /// Stored length.
        bytes: u64,
    },
    /// A range starts before the end of the previous one.
    Overlap {
        /// Which range.
        range: RangeKind,
        /// Stored offset.
        offset: u64,
        /// End of the previous range (or start of the data section).
        previous_end: u64,
    },
    /// A range leaves unaccounted bytes before it (ranges must be packed, 64-byte aligned).
    Gap {
        /// Which range.
        range: RangeKind,
        /// Stored offset.
        offset: u64,
        /// Where it must start.
        expected: u64,
    },
    /// A padding byte before a range is not zero.
    Padding {
        /// File offset of the byte.
        offset: u64,
    },
    /// A VQ index is `≥ k`.
    IndexOutOfRange {
        /// Position of the index in the row-major index array.
        position: u64,
        /// The index.
        index: u32,
        /// Codewords.
        k: u32,
    },
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TensorProblem::*;
        match *self {
            WrongTensor { role, layer } => match Role::from_u16(role) {
                Some(r) => write!(
                    f,
                    "table slot holds {} instead",
                    TensorName {
                        role: r,
                        layer: layer.into()
                    }
                ),
                None => write!(
                    f,
                    "table slot holds unknown role id {role} (layer {layer}) instead"
                ),
            },
            Shape {
                rows,
                cols,
                expected_rows,
                expected_cols,
            } => {
                write!(
                    f,
                    "shape ({rows}, {cols}) expected ({expected_rows}, {expected_cols})"
                )
            }
            Kind(k) => write!(f, "unknown storage kind {k}"),
            VqNotAllowed => f.write_str("vector quantization is only allowed on linear weights"),
            CodebookDtype(t) => write!(f, "unknown codebook dtype {t}"),
            IndexLayout(l) => write!(f, "unknown index layout {l}"),
            VqParams { k, d } => write!(
                f,
                "codebook k={k} d={d} out of range (1 ≤ k ≤ 65536, 1 ≤ d ≤ 16)"
            ),
            IndexBits { bits, k } => write!(f, "{bits}-bit indices cannot address k={k} codewords"),
            DenseField(name) => write!(f, "dense tensor has non-zero VQ field {name}"),
            Reserved => f.write_str("non-zero reserved bytes in tensor record"),
            RangeSize {
                range,
                bytes,
                expected,
            } => {
                write!(f, "{range} range is {bytes} bytes, expected {expected}")
            }
            Misaligned { range, offset } => {
                write!(f, "{range} offset {offset} is not 64-byte aligned")
            }
            OutOfBounds {
                range,
                offset,
                bytes,
            } => {
                write!(
                    f,
                    "{range} range {offset}+{bytes} lies outside the data section"
                )
            }
            Overlap {
                range,
                offset,
                previous_end,
            } => {
                write!(f, "{range} range at {offset} overlaps the previous range ending at {previous_end}")
            }
            Gap {
                range,
                offset,
                expected,
            } => {
                write!(f, "{range} range at {offset} leaves unaccounted bytes (expected offset {expected})")
            }
            Padding { offset } => write!(f, "non-zero padding byte at offset {offset}"),
            IndexOutOfRange { position, index, k } => {
                write!(f, "index #{position} is {index}, not < k={k}")
            }
        }
    }
}

/// Why a byte buffer is not a valid `.vimvq` model. Every message fits on one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The buffer does not start on a 4-byte boundary, so f32/u16 views are impossible.
    /// Load with [`super::ModelFile`] / [`super::AlignedBytes`] (64-byte aligned).
    Misaligned {
        /// Buffer address modulo 64.
        address_mod_64: usize,
    },
    /// The buffer ends before the end the header declares.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The buffer is longer than the file the header declares.
    TrailingBytes {
        /// Declared file length.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The first 8 bytes are not `VIMVQ\r\n\x1a`.
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// A major version this reader does not know.
    UnsupportedVersion {
        /// Stored major.
        major: u16,
        /// Stored minor.
        minor: u16,
    },
    /// Required feature bits this reader does not know.
    UnknownRequiredFeatures {
        /// The unknown bits.
        bits: u32,
    },
    /// The file uses a feature without declaring its required-feature bit.
    UndeclaredFeature {
        /// The missing bit.
        bit: u32,
    },
    /// A header field disagrees with the layout rules.
    Layout {
        /// Field name.
        field: &'static str,
        /// Stored value.
        value: u64,
        /// Value the layout requires.
        expected: u64,
    },
    /// Header/config/table/labels checksum mismatch.
    MetaChecksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// Data-section checksum mismatch.
    DataChecksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// The stored dimensions are invalid.
    Config(ConfigError),
    /// The stored preprocessing is invalid or inconsistent with the dimensions.
    Preprocess(&'static str),
    /// The model's buffers would not fit in this target's address space.
    TooLarge,
    /// Non-zero reserved bytes in a section (files of this minor version must zero them).
    Reserved {
        /// Section name.
        section: &'static str,
    },
    /// `tensor_count` differs from the schema's count for the stored depth.
    TensorCount {
        /// Stored count.
        found: u32,
        /// Schema count.
        expected: u64,
    },
    /// The labels are not UTF-8.
    LabelsNotUtf8,
    /// The labels are not empty and not `num_classes` newline-terminated lines.
    LabelCount {
        /// Newline-terminated lines found (an unterminated last line counts as one more).
        found: usize,
        /// `num_classes`.
        expected: usize,
    },
    /// A padding byte (between sections or data ranges) is not zero.
    NonZeroPadding {
        /// File offset of the byte.
        offset: u64,
    },
    /// A tensor record is invalid.
    Tensor {
        /// The tensor the schema expects at that table position.
        name: TensorName,
        /// What is wrong.
        problem: TensorProblem,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match *self {
            Misaligned { address_mod_64 } => write!(
                f,
                "model bytes start at an address ≡ {address_mod_64} (mod 64); need 4-byte alignment \
                 (load with ModelFile or AlignedBytes)"
            ),
            Truncated { needed, actual } => write!(f, "file truncated: {actual} bytes, header needs {needed}"),
            TrailingBytes { expected, actual } => {
                write!(f, "{actual} bytes but the header declares a {expected}-byte file")
            }
            BadMagic { found } => write!(f, "not a .vimvq file (magic {found:02x?})"),
            UnsupportedVersion { major, minor } => {
                write!(f, "unsupported format version {major}.{minor} (this reader knows 1.x)")
            }
            UnknownRequiredFeatures { bits } => write!(f, "file requires unknown features {bits:#x}"),
            UndeclaredFeature { bit } => write!(f, "file uses feature {bit:#x} without declaring it"),
            Layout { field, value, expected } => write!(f, "header {field} is {value}, expected {expected}"),
            MetaChecksum { stored, computed } => {
                write!(f, "metadata checksum mismatch: stored {stored:08x}, computed {computed:08x}")
            }
            DataChecksum { stored, computed } => {
                write!(f, "data checksum mismatch: stored {stored:08x}, computed {computed:08x}")
            }
            Config(e) => write!(f, "invalid model config: {e}"),
            Preprocess(why) => write!(f, "invalid preprocessing: {why}"),
            TooLarge => f.write_str("model dimensions too large for this target"),
            Reserved { section } => write!(f, "non-zero reserved bytes in {section}"),
            TensorCount { found, expected } => {
                write!(f, "tensor table has {found} records, the schema needs {expected}")
            }
            LabelsNotUtf8 => f.write_str("labels are not valid UTF-8"),
            LabelCount { found, expected } => {
                write!(f, "{found} labels, expected {expected} newline-terminated lines or none")
            }
            NonZeroPadding { offset } => write!(f, "non-zero padding byte at offset {offset}"),
            Tensor { name, problem } => write!(f, "tensor {name}: {problem}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {}
