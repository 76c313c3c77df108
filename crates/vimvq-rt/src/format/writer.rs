//! Writes a [`PackedModel`] as a `.vimvq` v1 file image (`docs/FORMAT.md`), following the
//! rules of [`super::rules`] that the reader checks.
//!
//! The output is canonical, hence deterministic: tensors in [`Role::table_index`] order, every
//! data range at the next 64-byte boundary (a VQ tensor's indices, then its codebook), zero
//! padding, no timestamps. Indices are stored as u8 when `k ≤ 256`, else u16, in the
//! [`IndexLayout::Rows16`] order the kernels read; codebooks as f32 or, when asked, f16.
//! Writing the bytes to a file is the packer's job (`vimvq-pack`).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::error::{FormatError, TensorName};
use super::packed::{PackedModel, PackedTensor, TensorData};
use super::records::{ConfigRecord, FileHeader, TensorRecord};
use super::role::Role;
use super::rules::*;
use super::validate::check_preprocess;
use crate::config::{ConfigError, Interpolation, VimConfig};

/// Why a model cannot be written.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriteError {
    /// The dimensions are invalid.
    Config(ConfigError),
    /// The preprocessing is invalid (see [`check_preprocess`]).
    Preprocess(FormatError),
    /// A tensor that the schema of this config does not have (e.g. `layer ≥ depth`).
    Unexpected {
        /// Its role.
        role: Role,
        /// Its layer.
        layer: usize,
        /// The model depth.
        depth: usize,
    },
    /// The same `(role, layer)` twice.
    Duplicate(TensorName),
    /// A tensor of the schema is absent.
    Missing(TensorName),
    /// `rows`/`cols` differ from [`Role::shape`].
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
    F16Range {
        /// The tensor.
        name: TensorName,
        /// Its position in the codebook.
        position: usize,
        /// The value.
        value: f32,
    },
    /// VQ storage on a role that is not a linear weight.
    VqNotAllowed(TensorName),
    /// `k` or `d` out of range.
    VqParams {
        /// The tensor.
        name: TensorName,
        /// Given k.
        k: usize,
        /// Given d.
        d: usize,
    },
    /// A VQ index `≥ k`.
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
    LabelCount {
        /// Given.
        found: usize,
        /// `num_classes`.
        expected: usize,
    },
    /// A label contains a newline.
    LabelNewline(usize),
    /// A size exceeds what the format can describe.
    TooLarge(&'static str),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WriteError::*;
        match self {
            Config(e) => write!(f, "invalid model config: {e}"),
            Preprocess(e) => write!(f, "{e}"),
            Unexpected { role, layer, depth } => write!(
                f,
                "tensor {role:?} of layer {layer} is not part of a depth-{depth} model"
            ),
            Duplicate(name) => write!(f, "tensor {name}: given more than once"),
            Missing(name) => write!(f, "tensor {name}: missing"),
            Shape {
                name,
                rows,
                cols,
                expected_rows,
                expected_cols,
            } => write!(
                f,
                "tensor {name}: shape ({rows}, {cols}) expected ({expected_rows}, {expected_cols})"
            ),
            Length {
                name,
                what,
                len,
                expected,
            } => write!(f, "tensor {name}: {what} has {len} values, expected {expected}"),
            F16Range {
                name,
                position,
                value,
            } => write!(
                f,
                "tensor {name}: codebook value {value} at {position} does not fit in f16"
            ),
            VqNotAllowed(name) => write!(
                f,
                "tensor {name}: vector quantization is only allowed on linear weights"
            ),
            VqParams { name, k, d } => write!(
                f,
                "tensor {name}: codebook k={k} d={d} out of range (1 ≤ k ≤ {MAX_K}, 1 ≤ d ≤ {MAX_D})"
            ),
            IndexOutOfRange {
                name,
                position,
                index,
                k,
            } => write!(f, "tensor {name}: index #{position} is {index}, not < k={k}"),
            LabelCount { found, expected } => {
                write!(f, "{found} labels, expected {expected} or none")
            }
            LabelNewline(i) => write!(f, "label #{i} contains a newline"),
            TooLarge(what) => write!(f, "model too large for the format: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WriteError {}

fn u32_of(v: usize, what: &'static str) -> Result<u32, WriteError> {
    u32::try_from(v).map_err(|_| WriteError::TooLarge(what))
}

/// Validated tensors in canonical order.
fn canonical_tensors(model: &PackedModel) -> Result<Vec<&PackedTensor>, WriteError> {
    let c = &model.config;
    let n = Role::table_len(c.depth);
    let mut slots: Vec<Option<&PackedTensor>> = vec![None; n];
    for t in &model.tensors {
        if !t.role.in_model(t.layer, c.depth) {
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
                let (role, layer) = Role::table_entry(i);
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
            if !vq_params_ok(*k as u64, *d as u64) {
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
        .flat_map(|l| l.bytes().chain(core::iter::once(b'\n')))
        .collect();

    let count = u32_of(tensors.len(), "tensor count")?;
    let labels_offset = labels_offset(count);
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
            TensorData::F32(_) => {
                record.data_offset = align(cursor)?;
                record.data_bytes = dense_bytes(t.rows as u64, t.cols as u64);
                cursor = record.data_offset + record.data_bytes;
            }
            TensorData::Vq {
                k, d, codebook_f16, ..
            } => {
                record.kind = KIND_VQ;
                record.codebook_dtype = if *codebook_f16 { DTYPE_F16 } else { DTYPE_F32 };
                record.k = u32_of(*k, "k")?;
                record.d = u32_of(*d, "d")?;
                record.index_bits = index_bits_for(record.k);
                record.index_layout = IndexLayout::Rows16.id();
                // Checked by `check_tensor`: k and d are in range, so this cannot fail.
                let vq = vq_storage(&record).map_err(|_| WriteError::VqParams {
                    name: TensorName {
                        role: t.role,
                        layer: t.layer,
                    },
                    k: *k,
                    d: *d,
                })?;
                required |= vq.features;
                record.data_offset = align(cursor)?;
                record.data_bytes = vq.data_bytes;
                record.codebook_offset = align(record.data_offset + record.data_bytes)?;
                record.codebook_bytes = vq.codebook_bytes;
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
        tensor_count: count,
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
            TensorData::F32(v) => LE::write_f32_into(v, data),
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
                        LE::write_u16(&mut data[2 * o..], *i as u16);
                    }
                }
                let cb = &mut buf
                    [r.codebook_offset as usize..(r.codebook_offset + r.codebook_bytes) as usize];
                if r.codebook_dtype == DTYPE_F16 {
                    for (o, v) in cb.chunks_exact_mut(2).zip(codebook) {
                        LE::write_u16(o, half::f16::from_f32(*v).to_bits());
                    }
                } else {
                    LE::write_f32_into(codebook, cb);
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
