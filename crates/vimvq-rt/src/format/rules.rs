//! The rules of the format that the reader checks and the writer follows, stated once: magic,
//! versions, feature bits, section layout and alignment, the per-tensor storage codes, the VQ
//! index layouts ([`IndexLayout`]) and range lengths, and the two CRCs (`docs/FORMAT.md`).

use super::error::TensorProblem;
use super::records::{FileHeader, TensorRecord};

/// File magic: `"VIMVQ"`, CR LF (detects text-mode newline mangling) and SUB (stops `type` on DOS).
pub const MAGIC: [u8; 8] = *b"VIMVQ\r\n\x1a";
/// Major version this crate reads and writes. Files with another major are rejected.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version this crate writes. Files with a newer minor are read (their reserved bytes
/// ignored).
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
pub const TABLE_OFFSET: usize = CONFIG_OFFSET + super::records::ConfigRecord::SIZE;

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
/// `TensorRecord::index_layout`: row-major `rows × ceil(cols / d)` ([`IndexLayout::RowMajor`]).
pub const LAYOUT_ROW_MAJOR: u8 = 0;
/// `TensorRecord::index_layout`: blocks of 16 rows, group-major inside a block
/// ([`IndexLayout::Rows16`]); what the writer emits.
pub const LAYOUT_ROWS16: u8 = 1;

/// Where index `(r, c)` (row `r`, sub-vector `c` of `g = ceil(cols / d)`) is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexLayout {
    /// `rows × g` row-major: `(r, c)` at `r·g + c`.
    RowMajor,
    /// Blocks of [`IndexLayout::BLOCK`] rows, group-major inside a block: `(r, c)` at
    /// `(r − r mod 16)·g + 16·c + r mod 16`; the last block is padded to 16 rows (index 0).
    /// One GEMM panel line, or one GEMV gather, reads 16 contiguous indices.
    Rows16,
}

impl IndexLayout {
    /// Rows per block of [`IndexLayout::Rows16`] (= the GEMM panel width).
    pub const BLOCK: usize = 16;

    /// Decodes a stored `index_layout` id ([`LAYOUT_ROW_MAJOR`] or [`LAYOUT_ROWS16`]).
    pub const fn from_id(id: u8) -> Option<IndexLayout> {
        match id {
            LAYOUT_ROW_MAJOR => Some(IndexLayout::RowMajor),
            LAYOUT_ROWS16 => Some(IndexLayout::Rows16),
            _ => None,
        }
    }

    /// The stored `index_layout` id.
    pub const fn id(self) -> u8 {
        match self {
            IndexLayout::RowMajor => LAYOUT_ROW_MAJOR,
            IndexLayout::Rows16 => LAYOUT_ROWS16,
        }
    }

    /// The required feature bit a file using this layout declares (0: none).
    pub const fn feature(self) -> u32 {
        match self {
            IndexLayout::RowMajor => 0,
            IndexLayout::Rows16 => FEATURE_ROWS16_LAYOUT,
        }
    }

    /// Position of index `(r, c)` with `g` indices per row.
    #[inline(always)]
    pub fn offset(self, r: usize, c: usize, g: usize) -> usize {
        match self {
            IndexLayout::RowMajor => r * g + c,
            IndexLayout::Rows16 => {
                let (b, j) = (r / Self::BLOCK, r % Self::BLOCK);
                b * Self::BLOCK * g + c * Self::BLOCK + j
            }
        }
    }

    /// Stored rows of indices for `rows` logical rows (padding included), in u64 so the reader
    /// can size a range that a 32-bit `usize` could not hold.
    pub const fn stored_rows(self, rows: u64) -> u64 {
        match self {
            IndexLayout::RowMajor => rows,
            IndexLayout::Rows16 => rows.div_ceil(Self::BLOCK as u64) * Self::BLOCK as u64,
        }
    }

    /// Stored indices of `rows` rows (padding included).
    pub fn len(self, rows: usize, g: usize) -> usize {
        match self {
            IndexLayout::RowMajor => rows * g,
            IndexLayout::Rows16 => rows.div_ceil(Self::BLOCK) * Self::BLOCK * g,
        }
    }
}

/// Rounds `n` up to a multiple of [`ALIGN`] (`None` on overflow).
pub const fn align_up(n: u64) -> Option<u64> {
    match n.checked_add(ALIGN as u64 - 1) {
        Some(v) => Some(v / ALIGN as u64 * ALIGN as u64),
        None => None,
    }
}

/// Offset of the labels text: right after a table of `tensor_count` records.
pub const fn labels_offset(tensor_count: u32) -> u64 {
    TABLE_OFFSET as u64 + tensor_count as u64 * TensorRecord::SIZE as u64
}

/// True if `1 ≤ k ≤` [`MAX_K`] and `1 ≤ d ≤` [`MAX_D`].
pub const fn vq_params_ok(k: u64, d: u64) -> bool {
    k >= 1 && k <= MAX_K as u64 && d >= 1 && d <= MAX_D as u64
}

/// Index width the writer stores for `k` codewords: 8 bits when `k ≤ 256`, else 16.
pub const fn index_bits_for(k: u32) -> u8 {
    if k <= 256 {
        8
    } else {
        16
    }
}

/// Bytes per stored index of width `bits` for `k` codewords; `None` for a width the format does
/// not allow (8 bits need `k ≤ 256`; 16 bits hold any `k`).
pub const fn index_bytes(bits: u8, k: u32) -> Option<u64> {
    match bits {
        8 if k <= 256 => Some(1),
        16 => Some(2),
        _ => None,
    }
}

/// Bytes per codeword value of `dtype` and the feature bits it requires; `None` for an unknown
/// dtype.
pub const fn codebook_dtype(dtype: u8) -> Option<(u64, u32)> {
    match dtype {
        DTYPE_F32 => Some((4, FEATURE_VQ)),
        DTYPE_F16 => Some((2, FEATURE_VQ | FEATURE_F16_CODEBOOK)),
        _ => None,
    }
}

/// `∏ factors`, or `u64::MAX` (a length no range can have) on overflow.
pub fn checked_product(factors: &[u64]) -> u64 {
    factors
        .iter()
        .try_fold(1u64, |a, f| a.checked_mul(*f))
        .unwrap_or(u64::MAX)
}

/// Byte length of a dense `rows × cols` f32 range.
pub fn dense_bytes(rows: u64, cols: u64) -> u64 {
    checked_product(&[rows, cols, 4])
}

/// Byte length of the index range of a VQ `rows × cols` tensor with codeword length `d`.
pub fn index_range_bytes(
    layout: IndexLayout,
    rows: u64,
    cols: u64,
    d: u64,
    index_bytes: u64,
) -> u64 {
    checked_product(&[layout.stored_rows(rows), cols.div_ceil(d), index_bytes])
}

/// Byte length of a codebook of `k` codewords of length `d`.
pub fn codebook_bytes(k: u64, d: u64, value_bytes: u64) -> u64 {
    checked_product(&[k, d, value_bytes])
}

/// CRC-32/ISO-HDLC (the CRC of zlib, PNG and gzip: reflected polynomial `0xEDB88320`, initial
/// value and final XOR `0xFFFFFFFF`) of `bytes`. The header's `data_crc32` is this CRC of the
/// whole data section.
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

/// What the descriptive fields of a VQ tensor record imply; see [`vq_storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqStorage {
    /// Order of the indices.
    pub layout: IndexLayout,
    /// Bytes per stored index (1 or 2).
    pub index_bytes: u64,
    /// Length of the index (data) range.
    pub data_bytes: u64,
    /// Length of the codebook range.
    pub codebook_bytes: u64,
    /// Required feature bits the tensor uses.
    pub features: u32,
}

/// Checks the VQ fields of `rec` (codebook dtype, index layout, `k`, `d`, index width; in that
/// order) and returns the range lengths and feature bits they imply. The writer sizes its ranges
/// with it, the reader compares the stored ones against it.
pub fn vq_storage(rec: &TensorRecord) -> Result<VqStorage, TensorProblem> {
    use TensorProblem as P;
    let (value_bytes, dtype_features) =
        codebook_dtype(rec.codebook_dtype).ok_or(P::CodebookDtype(rec.codebook_dtype))?;
    let layout = IndexLayout::from_id(rec.index_layout).ok_or(P::IndexLayout(rec.index_layout))?;
    let (k, d) = (u64::from(rec.k), u64::from(rec.d));
    if !vq_params_ok(k, d) {
        return Err(P::VqParams { k: rec.k, d: rec.d });
    }
    let ib = index_bytes(rec.index_bits, rec.k).ok_or(P::IndexBits {
        bits: rec.index_bits,
        k: rec.k,
    })?;
    Ok(VqStorage {
        layout,
        index_bytes: ib,
        data_bytes: index_range_bytes(layout, rec.rows.into(), rec.cols.into(), d, ib),
        codebook_bytes: codebook_bytes(k, d, value_bytes),
        features: dtype_features | layout.feature(),
    })
}
