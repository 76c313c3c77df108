//! The packed `.vimvq` file format, specified in `docs/FORMAT.md`: its rules ([`rules`], stated
//! once), the on-disk records, the validating reader, and (with the `alloc` feature) the writer.
//!
//! Every on-disk struct here is `#[repr(C)]` with a compile-time size check, but is never
//! transmuted from the file: [`FileHeader::decode`] & co. read each field little-endian, and
//! `encode` writes it back, so the layout is the same on every host. The reader is
//! `Model::parse` (in `crate::model`, built on `validate`); the writer is [`to_bytes`].

mod error;
#[cfg(feature = "std")]
mod file;
#[cfg(feature = "alloc")]
mod packed;
mod records;
mod role;
pub mod rules;
pub(crate) mod validate;
#[cfg(feature = "alloc")]
mod writer;

pub use error::{FormatError, RangeKind, TensorName, TensorProblem};
#[cfg(feature = "std")]
pub use file::{AlignedBytes, LoadOptions, ModelFile};
#[cfg(feature = "alloc")]
pub use packed::{PackedModel, PackedTensor, TensorData};
pub use records::{ConfigRecord, FileHeader, TensorRecord};
pub use role::Role;
pub use rules::{
    align_up, crc32, meta_crc32, IndexLayout, ALIGN, CONFIG_OFFSET, DTYPE_F16, DTYPE_F32,
    FEATURE_F16_CODEBOOK, FEATURE_ROWS16_LAYOUT, FEATURE_VQ, KIND_DENSE, KIND_VQ,
    KNOWN_REQUIRED_FEATURES, LAYOUT_ROWS16, LAYOUT_ROW_MAJOR, MAGIC, MAX_D, MAX_K, TABLE_OFFSET,
    VERSION_MAJOR, VERSION_MINOR,
};
pub use validate::check_preprocess;
#[cfg(feature = "alloc")]
pub use writer::{to_bytes, WriteError};
