//! The packed `.vimvq` file format: on-disk records and the validating reader.
//! Specified in `docs/FORMAT.md`.
//!
//! Every on-disk struct here is `#[repr(C)]` with a compile-time size check, but is never
//! transmuted from the file: [`FileHeader::decode`] & co. read each field with
//! `from_le_bytes`, and `encode` writes it back, so the layout is little-endian on every host.
//! The reader is [`crate::model::Model::parse`]; the writer lives in `vimvq-pack`.

mod error;
#[cfg(feature = "std")]
mod file;
mod records;
mod role;
pub(crate) mod validate;

pub use error::{FormatError, RangeKind, TensorName, TensorProblem};
#[cfg(feature = "std")]
pub use file::{AlignedBytes, LoadOptions, ModelFile};
pub use records::{ConfigRecord, FileHeader, TensorRecord};
pub use role::Role;
pub use validate::check_preprocess;

/// File magic: `"VIMVQ"`, CR LF (detects text-mode newline mangling) and SUB (stops `type` on DOS).
pub const MAGIC: [u8; 8] = *b"VIMVQ\r\n\x1a";
/// Major version this crate reads and writes. Files with another major are rejected.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version this crate writes. Files with a newer minor are read (their reserved bytes ignored).
pub const VERSION_MINOR: u16 = 0;

/// Required feature bit: the file contains vector-quantized tensors.
pub const FEATURE_VQ: u32 = 1 << 0;
/// Required feature bit: some codebook is stored as IEEE binary16.
pub const FEATURE_F16_CODEBOOK: u32 = 1 << 1;
/// Required feature bit: some VQ tensor stores its indices in [`LAYOUT_ROWS16`].
pub const FEATURE_ROWS16_LAYOUT: u32 = 1 << 2;
/// Every required feature bit this reader understands; any other set bit is rejected.
pub const KNOWN_REQUIRED_FEATURES: u32 = FEATURE_VQ | FEATURE_F16_CODEBOOK | FEATURE_ROWS16_LAYOUT;

/// Alignment of every data range and of the data section, relative to the file start.
pub const ALIGN: usize = 64;
/// Byte offset of the config record (it directly follows the header).
pub const CONFIG_OFFSET: usize = FileHeader::SIZE;
/// Byte offset of the tensor table (it directly follows the config record).
pub const TABLE_OFFSET: usize = CONFIG_OFFSET + ConfigRecord::SIZE;

/// Largest codebook size `k`.
pub const MAX_K: u32 = 1 << 16;
/// Largest codeword length `d`.
pub const MAX_D: u32 = 16;

/// `TensorRecord::kind`: dense f32 values.
pub const KIND_DENSE: u8 = 0;
/// `TensorRecord::kind`: vector-quantized (indices in the data range, plus a codebook range).
pub const KIND_VQ: u8 = 1;
/// `TensorRecord::codebook_dtype`: f32 codewords.
pub const DTYPE_F32: u8 = 0;
/// `TensorRecord::codebook_dtype`: f16 codewords.
pub const DTYPE_F16: u8 = 1;
/// `TensorRecord::index_layout`: row-major `rows × ceil(cols / d)`.
pub const LAYOUT_ROW_MAJOR: u8 = 0;
/// `TensorRecord::index_layout`: blocks of 16 rows, group-major inside a block
/// ([`crate::kernels::IndexLayout::Rows16`]); what the packer writes.
pub const LAYOUT_ROWS16: u8 = 1;

/// Rounds `n` up to a multiple of [`ALIGN`] (`None` on overflow).
pub const fn align_up(n: u64) -> Option<u64> {
    match n.checked_add(ALIGN as u64 - 1) {
        Some(v) => Some(v / ALIGN as u64 * ALIGN as u64),
        None => None,
    }
}

/// CRC-32/ISO-HDLC (the CRC of zlib, PNG and gzip: reflected polynomial `0xEDB88320`, initial
/// value and final XOR `0xFFFFFFFF`) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The header's `meta_crc32`: CRC-32 of the 64 header bytes with bytes 40..44 (the field itself)
/// zeroed, followed by `rest` (the config record, the tensor table and the labels, contiguous).
pub fn meta_crc32(header: &[u8; FileHeader::SIZE], rest: &[u8]) -> u32 {
    let mut h = *header;
    h[FileHeader::META_CRC_OFFSET..FileHeader::META_CRC_OFFSET + 4].fill(0);
    let mut c = crc32fast::Hasher::new();
    c.update(&h);
    c.update(rest);
    c.finalize()
}
