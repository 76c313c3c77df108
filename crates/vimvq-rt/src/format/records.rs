//! Fixed-size on-disk records, little-endian. Field offsets are given in each doc comment and in
//! `docs/FORMAT.md`.

use core::mem::size_of;

use byteorder::{ByteOrder, LittleEndian as LE};

/// File header, 64 bytes at offset 0.
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 8 | `magic` = [`super::MAGIC`] |
/// | 8 | 2 | `version_major` |
/// | 10 | 2 | `version_minor` |
/// | 12 | 2 | `config_offset` (= 64) |
/// | 14 | 2 | `table_offset` (= 192) |
/// | 16 | 4 | `required_features` |
/// | 20 | 4 | `optional_features` |
/// | 24 | 4 | `tensor_count` |
/// | 28 | 4 | `labels_offset` |
/// | 32 | 4 | `labels_len` |
/// | 36 | 4 | `data_offset` |
/// | 40 | 4 | `meta_crc32` |
/// | 44 | 4 | `data_crc32` |
/// | 48 | 8 | `data_bytes` |
/// | 56 | 8 | `file_bytes` |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// [`super::MAGIC`].
    pub magic: [u8; 8],
    /// Incompatible revisions; a reader rejects any major it does not know.
    pub version_major: u16,
    /// Compatible revisions; a reader accepts newer minors.
    pub version_minor: u16,
    /// Offset of the [`ConfigRecord`].
    pub config_offset: u16,
    /// Offset of the first [`TensorRecord`].
    pub table_offset: u16,
    /// Features a reader must understand (unknown set bits → reject).
    pub required_features: u32,
    /// Features a reader may ignore.
    pub optional_features: u32,
    /// Number of tensor records.
    pub tensor_count: u32,
    /// Offset of the labels text.
    pub labels_offset: u32,
    /// Length of the labels text in bytes.
    pub labels_len: u32,
    /// Offset of the data section (64-byte aligned).
    pub data_offset: u32,
    /// CRC-32 of header (this field zeroed) + config + table + labels.
    pub meta_crc32: u32,
    /// CRC-32 of the whole data section.
    pub data_crc32: u32,
    /// Length of the data section (a multiple of 64).
    pub data_bytes: u64,
    /// Length of the file (`data_offset + data_bytes`).
    pub file_bytes: u64,
}
const _: () = assert!(size_of::<FileHeader>() == 64);

impl FileHeader {
    /// Encoded size.
    pub const SIZE: usize = 64;
    /// Offset of `meta_crc32` inside the header.
    pub const META_CRC_OFFSET: usize = 40;
    /// Offset of `data_crc32` inside the header.
    pub const DATA_CRC_OFFSET: usize = 44;

    /// Encodes to the little-endian on-disk bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..8].copy_from_slice(&self.magic);
        LE::write_u16(&mut b[8..], self.version_major);
        LE::write_u16(&mut b[10..], self.version_minor);
        LE::write_u16(&mut b[12..], self.config_offset);
        LE::write_u16(&mut b[14..], self.table_offset);
        LE::write_u32(&mut b[16..], self.required_features);
        LE::write_u32(&mut b[20..], self.optional_features);
        LE::write_u32(&mut b[24..], self.tensor_count);
        LE::write_u32(&mut b[28..], self.labels_offset);
        LE::write_u32(&mut b[32..], self.labels_len);
        LE::write_u32(&mut b[36..], self.data_offset);
        LE::write_u32(&mut b[40..], self.meta_crc32);
        LE::write_u32(&mut b[44..], self.data_crc32);
        LE::write_u64(&mut b[48..], self.data_bytes);
        LE::write_u64(&mut b[56..], self.file_bytes);
        b
    }

    /// Decodes the on-disk bytes (no validation).
    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[..8]);
        FileHeader {
            magic,
            version_major: LE::read_u16(&b[8..]),
            version_minor: LE::read_u16(&b[10..]),
            config_offset: LE::read_u16(&b[12..]),
            table_offset: LE::read_u16(&b[14..]),
            required_features: LE::read_u32(&b[16..]),
            optional_features: LE::read_u32(&b[20..]),
            tensor_count: LE::read_u32(&b[24..]),
            labels_offset: LE::read_u32(&b[28..]),
            labels_len: LE::read_u32(&b[32..]),
            data_offset: LE::read_u32(&b[36..]),
            meta_crc32: LE::read_u32(&b[40..]),
            data_crc32: LE::read_u32(&b[44..]),
            data_bytes: LE::read_u64(&b[48..]),
            file_bytes: LE::read_u64(&b[56..]),
        }
    }
}

/// Model dimensions and preprocessing, 128 bytes at offset 64. Every field is a little-endian
/// `u32` (`f32` fields as their IEEE bits).
///
/// | off | field | | off | field |
/// |---|---|---|---|---|
/// | 0 | `embed_dim` | | 48 | `resize` |
/// | 4 | `depth` | | 52 | `crop` |
/// | 8 | `patch` | | 56 | `interpolation` (0 bicubic, 1 bilinear) |
/// | 12 | `stride` | | 60 | `mean[0..3]` (f32) |
/// | 16 | `img_size` | | 72 | `std[0..3]` (f32) |
/// | 20 | `channels` | | 84 | `reserved[44]` (zero) |
/// | 24 | `num_classes` | | | |
/// | 28 | `d_state` | | | |
/// | 32 | `dt_rank` | | | |
/// | 36 | `d_conv` | | | |
/// | 40 | `d_inner` | | | |
/// | 44 | `norm_eps` (f32) | | | |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConfigRecord {
    /// `D`.
    pub embed_dim: u32,
    /// Blocks.
    pub depth: u32,
    /// Patch size.
    pub patch: u32,
    /// Patch stride.
    pub stride: u32,
    /// Input side.
    pub img_size: u32,
    /// Input channels.
    pub channels: u32,
    /// Classes.
    pub num_classes: u32,
    /// `N`.
    pub d_state: u32,
    /// `R`.
    pub dt_rank: u32,
    /// `K`.
    pub d_conv: u32,
    /// `E`.
    pub d_inner: u32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Shorter side after resizing.
    pub resize: u32,
    /// Centre-crop side.
    pub crop: u32,
    /// [`crate::Interpolation`] id.
    pub interpolation: u32,
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// Zero in files written by this version.
    pub reserved: [u8; 44],
}
const _: () = assert!(size_of::<ConfigRecord>() == 128);

impl ConfigRecord {
    /// Encoded size.
    pub const SIZE: usize = 128;

    /// Encodes to the little-endian on-disk bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let words = [
            self.embed_dim,
            self.depth,
            self.patch,
            self.stride,
            self.img_size,
            self.channels,
            self.num_classes,
            self.d_state,
            self.dt_rank,
            self.d_conv,
            self.d_inner,
            self.norm_eps.to_bits(),
            self.resize,
            self.crop,
            self.interpolation,
            self.mean[0].to_bits(),
            self.mean[1].to_bits(),
            self.mean[2].to_bits(),
            self.std[0].to_bits(),
            self.std[1].to_bits(),
            self.std[2].to_bits(),
        ];
        LE::write_u32_into(&words, &mut b[..84]);
        b[84..].copy_from_slice(&self.reserved);
        b
    }

    /// Decodes the on-disk bytes (no validation).
    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        let w = |i: usize| LE::read_u32(&b[4 * i..]);
        let f = |i: usize| f32::from_bits(LE::read_u32(&b[4 * i..]));
        let mut reserved = [0u8; 44];
        reserved.copy_from_slice(&b[84..]);
        ConfigRecord {
            embed_dim: w(0),
            depth: w(1),
            patch: w(2),
            stride: w(3),
            img_size: w(4),
            channels: w(5),
            num_classes: w(6),
            d_state: w(7),
            dt_rank: w(8),
            d_conv: w(9),
            d_inner: w(10),
            norm_eps: f(11),
            resize: w(12),
            crop: w(13),
            interpolation: w(14),
            mean: [f(15), f(16), f(17)],
            std: [f(18), f(19), f(20)],
            reserved,
        }
    }
}

/// One tensor, 64 bytes; the table holds one per tensor in canonical order
/// ([`super::Role::table_index`]).
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 2 | `role` ([`super::Role`] id) |
/// | 2 | 2 | `layer` (0 for globals) |
/// | 4 | 1 | `kind` (0 dense f32, 1 VQ) |
/// | 5 | 1 | `codebook_dtype` (0 f32, 1 f16; 0 when dense) |
/// | 6 | 1 | `index_bits` (8 or 16; 0 when dense) |
/// | 7 | 1 | `index_layout` (0 row-major, 1 rows16; 0 when dense) |
/// | 8 | 4 | `rows` |
/// | 12 | 4 | `cols` |
/// | 16 | 4 | `k` (0 when dense) |
/// | 20 | 4 | `d` (0 when dense) |
/// | 24 | 8 | `data_offset` (values, or the indices of a VQ tensor) |
/// | 32 | 8 | `data_bytes` |
/// | 40 | 8 | `codebook_offset` (0 when dense) |
/// | 48 | 8 | `codebook_bytes` (0 when dense) |
/// | 56 | 8 | `reserved` (zero) |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorRecord {
    /// [`super::Role`] id.
    pub role: u16,
    /// Block index (0 for globals).
    pub layer: u16,
    /// [`super::KIND_DENSE`] or [`super::KIND_VQ`].
    pub kind: u8,
    /// [`super::DTYPE_F32`] or [`super::DTYPE_F16`] (VQ only).
    pub codebook_dtype: u8,
    /// 8 or 16 (VQ only).
    pub index_bits: u8,
    /// [`super::LAYOUT_ROW_MAJOR`] or [`super::LAYOUT_ROWS16`] (VQ only).
    pub index_layout: u8,
    /// Logical rows.
    pub rows: u32,
    /// Logical columns.
    pub cols: u32,
    /// Codewords (VQ only).
    pub k: u32,
    /// Codeword length (VQ only).
    pub d: u32,
    /// Absolute offset of the values (dense) or indices (VQ).
    pub data_offset: u64,
    /// Length of that range.
    pub data_bytes: u64,
    /// Absolute offset of the codebook (VQ only).
    pub codebook_offset: u64,
    /// Length of the codebook (VQ only).
    pub codebook_bytes: u64,
    /// Zero in files written by this version.
    pub reserved: [u8; 8],
}
const _: () = assert!(size_of::<TensorRecord>() == 64);

impl TensorRecord {
    /// Encoded size.
    pub const SIZE: usize = 64;

    /// Encodes to the little-endian on-disk bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        LE::write_u16(&mut b[0..], self.role);
        LE::write_u16(&mut b[2..], self.layer);
        b[4] = self.kind;
        b[5] = self.codebook_dtype;
        b[6] = self.index_bits;
        b[7] = self.index_layout;
        LE::write_u32(&mut b[8..], self.rows);
        LE::write_u32(&mut b[12..], self.cols);
        LE::write_u32(&mut b[16..], self.k);
        LE::write_u32(&mut b[20..], self.d);
        LE::write_u64(&mut b[24..], self.data_offset);
        LE::write_u64(&mut b[32..], self.data_bytes);
        LE::write_u64(&mut b[40..], self.codebook_offset);
        LE::write_u64(&mut b[48..], self.codebook_bytes);
        b[56..].copy_from_slice(&self.reserved);
        b
    }

    /// Decodes the on-disk bytes (no validation).
    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&b[56..]);
        TensorRecord {
            role: LE::read_u16(&b[0..]),
            layer: LE::read_u16(&b[2..]),
            kind: b[4],
            codebook_dtype: b[5],
            index_bits: b[6],
            index_layout: b[7],
            rows: LE::read_u32(&b[8..]),
            cols: LE::read_u32(&b[12..]),
            k: LE::read_u32(&b[16..]),
            d: LE::read_u32(&b[20..]),
            data_offset: LE::read_u64(&b[24..]),
            data_bytes: LE::read_u64(&b[32..]),
            codebook_offset: LE::read_u64(&b[40..]),
            codebook_bytes: LE::read_u64(&b[48..]),
            reserved,
        }
    }
}
