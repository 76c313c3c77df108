//! Writes a [`PackedModel`] as a `.vimvq` v1 file (`docs/FORMAT.md`).
//!
//! The output is canonical, hence deterministic: tensors in [`Role::table_index`] order, every
//! data range at the next 64-byte boundary (a VQ tensor's indices, then its codebook), zero
//! padding, no timestamps. Indices are stored as u8 when `k ≤ 256`, else u16, in the
//! [`IndexLayout::Rows16`] order the kernels read; codebooks as f32 or, when asked, f16.

use std::io;

use vimvq_rt::format::{
    align_up, check_preprocess, crc32, meta_crc32, ConfigRecord, FileHeader, FormatError, Role,
    TensorName, TensorRecord, CONFIG_OFFSET, DTYPE_F16, DTYPE_F32, FEATURE_F16_CODEBOOK,
    FEATURE_ROWS16_LAYOUT, FEATURE_VQ, KIND_DENSE, KIND_VQ, LAYOUT_ROWS16, MAGIC, MAX_D, MAX_K,
    TABLE_OFFSET, VERSION_MAJOR, VERSION_MINOR,
};
use vimvq_rt::kernels::IndexLayout;
use vimvq_rt::{ConfigError, Interpolation, VimConfig};

use super::{PackedModel, PackedTensor, TensorData};

/// Why a model cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The dimensions are invalid.
    #[error("invalid model config: {0}")]
    Config(ConfigError),
    /// The preprocessing is invalid (see [`check_preprocess`]).
    #[error("{0}")]
    Preprocess(FormatError),
    /// A tensor that the schema of this config does not have (e.g. `layer ≥ depth`).
    #[error("tensor {role:?} of layer {layer} is not part of a depth-{depth} model")]
    Unexpected {
        /// Its role.
        role: Role,
        /// Its layer.
        layer: usize,
        /// The model depth.
        depth: usize,
    },
    /// The same `(role, layer)` twice.
    #[error("tensor {0}: given more than once")]
    Duplicate(TensorName),
    /// A tensor of the schema is absent.
    #[error("tensor {0}: missing")]
    Missing(TensorName),
    /// `rows`/`cols` differ from [`Role::shape`].
    #[error("tensor {name}: shape ({rows}, {cols}) expected ({expected_rows}, {expected_cols})")]
    Shape {
        /// The tensor.
        name: TensorName,
        /// Given rows.
        rows: usize,
        /// Given cols.
        cols: usize,
        /// Schema rows.
        expected_rows: usize,
        /// Schema cols.
        expected_cols: usize,
    },
    /// A value array has the wrong length for the shape.
    #[error("tensor {name}: {what} has {len} values, expected {expected}")]
    Length {
        /// The tensor.
        name: TensorName,
        /// `values`, `codebook` or `indices`.
        what: &'static str,
        /// Given length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A codebook value that f16 storage cannot hold (beyond ±65504).
    #[error("tensor {name}: codebook value {value} at {position} does not fit in f16")]
    F16Range {
        /// The tensor.
        name: TensorName,
        /// Its position in the codebook.
        position: usize,
        /// The value.
        value: f32,
    },
    /// VQ storage on a role that is not a linear weight.
    #[error("tensor {0}: vector quantization is only allowed on linear weights")]
    VqNotAllowed(TensorName),
    /// `k` or `d` out of range.
    #[error("tensor {name}: codebook k={k} d={d} out of range (1 ≤ k ≤ 65536, 1 ≤ d ≤ 16)")]
    VqParams {
        /// The tensor.
        name: TensorName,
        /// Given k.
        k: usize,
        /// Given d.
        d: usize,
    },
    /// A VQ index `≥ k`.
    #[error("tensor {name}: index #{position} is {index}, not < k={k}")]
    IndexOutOfRange {
        /// The tensor.
        name: TensorName,
        /// Position in the index array.
        position: usize,
        /// The index.
        index: u32,
        /// Codewords.
        k: usize,
    },
    /// Labels are neither empty nor `num_classes` long.
    #[error("{found} labels, expected {expected} or none")]
    LabelCount {
        /// Given.
        found: usize,
        /// `num_classes`.
        expected: usize,
    },
    /// A label contains a newline.
    #[error("label #{0} contains a newline")]
    LabelNewline(usize),
    /// A size exceeds what the format can describe.
    #[error("model too large for the format: {0}")]
    TooLarge(&'static str),
    /// Writing the file failed.
    #[error("cannot write model file: {0}")]
    Io(#[from] io::Error),
}

fn u32_of(v: usize, what: &'static str) -> Result<u32, WriteError> {
    u32::try_from(v).map_err(|_| WriteError::TooLarge(what))
}

/// Validated tensors in canonical order.
fn canonical_tensors(model: &PackedModel) -> Result<Vec<&PackedTensor>, WriteError> {
    let c = &model.config;
    let n = Role::table_len(c.depth);
    let mut slots: Vec<Option<&PackedTensor>> = vec![None; n];
    for t in &model.tensors {
        let fits = if t.role.is_per_layer() {
            t.layer < c.depth
        } else {
            t.layer == 0
        };
        if !fits {
            return Err(WriteError::Unexpected {
                role: t.role,
                layer: t.layer,
                depth: c.depth,
            });
        }
        let name = TensorName {
            role: t.role,
            layer: t.layer,
        };
        let slot = &mut slots[t.role.table_index(t.layer)];
        if slot.is_some() {
            return Err(WriteError::Duplicate(name));
        }
        check_tensor(c, t, name)?;
        *slot = Some(t);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.ok_or_else(|| {
                let (role, layer) = if i < Role::GLOBAL.len() {
                    (Role::GLOBAL[i], 0)
                } else {
                    let j = i - Role::GLOBAL.len();
                    (Role::LAYER[j % Role::LAYER.len()], j / Role::LAYER.len())
                };
                WriteError::Missing(TensorName { role, layer })
            })
        })
        .collect()
}

fn check_tensor(c: &VimConfig, t: &PackedTensor, name: TensorName) -> Result<(), WriteError> {
    let (er, ec) = t.role.shape(c);
    if (t.rows, t.cols) != (er, ec) {
        return Err(WriteError::Shape {
            name,
            rows: t.rows,
            cols: t.cols,
            expected_rows: er,
            expected_cols: ec,
        });
    }
    let len_err = |what, len, expected| WriteError::Length {
        name,
        what,
        len,
        expected,
    };
    match &t.data {
        TensorData::F32(v) => {
            if v.len() != er * ec {
                return Err(len_err("values", v.len(), er * ec));
            }
        }
        TensorData::Vq {
            codebook,
            k,
            d,
            indices,
            codebook_f16,
        } => {
            if !t.role.is_linear() {
                return Err(WriteError::VqNotAllowed(name));
            }
            if *k == 0 || *k > MAX_K as usize || *d == 0 || *d > MAX_D as usize {
                return Err(WriteError::VqParams { name, k: *k, d: *d });
            }
            if codebook.len() != k * d {
                return Err(len_err("codebook", codebook.len(), k * d));
            }
            let n_idx = er * ec.div_ceil(*d);
            if indices.len() != n_idx {
                return Err(len_err("indices", indices.len(), n_idx));
            }
            if *codebook_f16 {
                if let Some(position) = codebook
                    .iter()
                    .position(|v| v.is_finite() && !half::f16::from_f32(*v).is_finite())
                {
                    return Err(WriteError::F16Range {
                        name,
                        position,
                        value: codebook[position],
                    });
                }
            }
            if let Some((position, &index)) =
                indices.iter().enumerate().find(|(_, i)| **i as usize >= *k)
            {
                return Err(WriteError::IndexOutOfRange {
                    name,
                    position,
                    index,
                    k: *k,
                });
            }
        }
    }
    Ok(())
}

fn config_record(model: &PackedModel) -> Result<ConfigRecord, WriteError> {
    let c = &model.config;
    let p = &model.preprocess;
    let u = |v: usize| u32_of(v, "dimension");
    Ok(ConfigRecord {
        embed_dim: u(c.embed_dim)?,
        depth: u(c.depth)?,
        patch: u(c.patch)?,
        stride: u(c.stride)?,
        img_size: u(c.img_size)?,
        channels: u(c.channels)?,
        num_classes: u(c.num_classes)?,
        d_state: u(c.d_state)?,
        dt_rank: u(c.dt_rank)?,
        d_conv: u(c.d_conv)?,
        d_inner: u(c.d_inner)?,
        norm_eps: c.norm_eps,
        resize: p.resize,
        crop: p.crop,
        interpolation: match p.interpolation {
            Interpolation::Bicubic => 0,
            Interpolation::Bilinear => 1,
        },
        mean: p.mean,
        std: p.std,
        reserved: [0; 44],
    })
}

/// Layout of one tensor's ranges, before the bytes are written.
struct Placed<'m> {
    tensor: &'m PackedTensor,
    record: TensorRecord,
}

fn align(n: u64) -> Result<u64, WriteError> {
    align_up(n).ok_or(WriteError::TooLarge("file size"))
}

/// Serialises `model` after validating it against the schema of its config: every tensor present
/// once with its schema shape, VQ only on linear weights with `1 ≤ k ≤ 65536`, `1 ≤ d ≤ 16`,
/// every index `< k`, labels empty or `num_classes` long without newlines. The same model always
/// gives the same bytes.
pub fn to_bytes(model: &PackedModel) -> Result<Vec<u8>, WriteError> {
    let c = &model.config;
    c.check().map_err(WriteError::Config)?;
    check_preprocess(c, &model.preprocess).map_err(WriteError::Preprocess)?;
    if !model.labels.is_empty() && model.labels.len() != c.num_classes {
        return Err(WriteError::LabelCount {
            found: model.labels.len(),
            expected: c.num_classes,
        });
    }
    if let Some(i) = model.labels.iter().position(|l| l.contains('\n')) {
        return Err(WriteError::LabelNewline(i));
    }
    let tensors = canonical_tensors(model)?;
    let labels: Vec<u8> = model
        .labels
        .iter()
        .flat_map(|l| l.bytes().chain(std::iter::once(b'\n')))
        .collect();

    let count = tensors.len() as u64;
    let labels_offset = TABLE_OFFSET as u64 + count * TensorRecord::SIZE as u64;
    let labels_end = labels_offset + labels.len() as u64;
    let data_offset = align(labels_end)?;

    let mut cursor = data_offset;
    let mut required = 0u32;
    let mut placed = Vec::with_capacity(tensors.len());
    for t in tensors {
        let mut record = TensorRecord {
            role: t.role as u16,
            layer: u16::try_from(t.layer).map_err(|_| WriteError::TooLarge("layer index"))?,
            kind: KIND_DENSE,
            codebook_dtype: 0,
            index_bits: 0,
            index_layout: 0,
            rows: u32_of(t.rows, "rows")?,
            cols: u32_of(t.cols, "cols")?,
            k: 0,
            d: 0,
            data_offset: 0,
            data_bytes: 0,
            codebook_offset: 0,
            codebook_bytes: 0,
            reserved: [0; 8],
        };
        match &t.data {
            TensorData::F32(v) => {
                record.data_offset = align(cursor)?;
                record.data_bytes = v.len() as u64 * 4;
                cursor = record.data_offset + record.data_bytes;
            }
            TensorData::Vq {
                codebook,
                k,
                d,
                codebook_f16,
                ..
            } => {
                required |= FEATURE_VQ;
                let wide = *k > 256;
                record.kind = KIND_VQ;
                record.codebook_dtype = if *codebook_f16 {
                    required |= FEATURE_F16_CODEBOOK;
                    DTYPE_F16
                } else {
                    DTYPE_F32
                };
                record.index_bits = if wide { 16 } else { 8 };
                required |= FEATURE_ROWS16_LAYOUT;
                record.index_layout = LAYOUT_ROWS16;
                record.k = u32_of(*k, "k")?;
                record.d = u32_of(*d, "d")?;
                record.data_offset = align(cursor)?;
                let stored = IndexLayout::Rows16.len(t.rows, t.cols.div_ceil(*d));
                record.data_bytes = stored as u64 * if wide { 2 } else { 1 };
                record.codebook_offset = align(record.data_offset + record.data_bytes)?;
                record.codebook_bytes = codebook.len() as u64 * if *codebook_f16 { 2 } else { 4 };
                cursor = record.codebook_offset + record.codebook_bytes;
            }
        }
        placed.push(Placed { tensor: t, record });
    }
    let file_bytes = align(cursor)?;

    let mut header = FileHeader {
        magic: MAGIC,
        version_major: VERSION_MAJOR,
        version_minor: VERSION_MINOR,
        config_offset: CONFIG_OFFSET as u16,
        table_offset: TABLE_OFFSET as u16,
        required_features: required,
        optional_features: 0,
        tensor_count: u32_of(placed.len(), "tensor count")?,
        labels_offset: u32::try_from(labels_offset)
            .map_err(|_| WriteError::TooLarge("tensor table"))?,
        labels_len: u32_of(labels.len(), "labels")?,
        data_offset: u32::try_from(data_offset).map_err(|_| WriteError::TooLarge("metadata"))?,
        meta_crc32: 0,
        data_crc32: 0,
        data_bytes: file_bytes - data_offset,
        file_bytes,
    };
    let len = usize::try_from(file_bytes).map_err(|_| WriteError::TooLarge("file size"))?;
    let mut buf = vec![0u8; len];
    buf[CONFIG_OFFSET..TABLE_OFFSET].copy_from_slice(&config_record(model)?.encode());
    for (i, p) in placed.iter().enumerate() {
        let at = TABLE_OFFSET + i * TensorRecord::SIZE;
        buf[at..at + TensorRecord::SIZE].copy_from_slice(&p.record.encode());
        let r = &p.record;
        let data = &mut buf[r.data_offset as usize..(r.data_offset + r.data_bytes) as usize];
        match &p.tensor.data {
            TensorData::F32(v) => put_f32(data, v),
            TensorData::Vq {
                codebook, indices, ..
            } => {
                // Row-major input, Rows16 output; the padding rows keep index 0.
                let g = (p.tensor.cols).div_ceil(r.d as usize);
                for (at, i) in indices.iter().enumerate() {
                    let o = IndexLayout::Rows16.offset(at / g, at % g, g);
                    if r.index_bits == 8 {
                        data[o] = *i as u8;
                    } else {
                        data[2 * o..2 * o + 2].copy_from_slice(&(*i as u16).to_le_bytes());
                    }
                }
                let cb = &mut buf
                    [r.codebook_offset as usize..(r.codebook_offset + r.codebook_bytes) as usize];
                if r.codebook_dtype == DTYPE_F16 {
                    for (o, v) in cb.chunks_exact_mut(2).zip(codebook) {
                        o.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
                    }
                } else {
                    put_f32(cb, codebook);
                }
            }
        }
    }
    let lo = labels_offset as usize;
    buf[lo..lo + labels.len()].copy_from_slice(&labels);

    header.data_crc32 = crc32(&buf[data_offset as usize..]);
    let hb: [u8; FileHeader::SIZE] = header.encode();
    header.meta_crc32 = meta_crc32(&hb, &buf[CONFIG_OFFSET..labels_end as usize]);
    buf[..FileHeader::SIZE].copy_from_slice(&header.encode());
    Ok(buf)
}

fn put_f32(dst: &mut [u8], v: &[f32]) {
    for (o, x) in dst.chunks_exact_mut(4).zip(v) {
        o.copy_from_slice(&x.to_le_bytes());
    }
}
