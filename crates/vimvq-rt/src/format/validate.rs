//! The one validation pass of the reader: everything `docs/FORMAT.md` §Validation lists, with
//! checked arithmetic only, no allocation, and no read outside `bytes`.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::error::{FormatError, RangeKind, TensorName, TensorProblem};
use super::records::{ConfigRecord, FileHeader, TensorRecord};
use super::role::Role;
use super::rules::*;
use crate::config::{Interpolation, Preprocess, VimConfig};

use FormatError as E;

/// What [`parse`] found valid: the decoded header, dimensions, preprocessing and labels text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Validated<'a> {
    pub header: FileHeader,
    pub config: VimConfig,
    pub preprocess: Preprocess,
    pub labels: &'a str,
}

fn layout(field: &'static str, value: u64, expected: u64) -> Result<(), FormatError> {
    if value == expected {
        Ok(())
    } else {
        Err(E::Layout {
            field,
            value,
            expected,
        })
    }
}

fn zero_padding(bytes: &[u8], from: usize, to: usize) -> Result<(), FormatError> {
    match bytes[from..to].iter().position(|b| *b != 0) {
        None => Ok(()),
        Some(p) => Err(E::NonZeroPadding {
            offset: (from + p) as u64,
        }),
    }
}

fn to_usize(v: u32) -> Result<usize, FormatError> {
    usize::try_from(v).map_err(|_| E::TooLarge)
}

/// The preprocessing rules of the format: `crop == img_size`, `resize ≥ crop`, finite `mean`,
/// finite positive `std`.
pub fn check_preprocess(config: &VimConfig, p: &Preprocess) -> Result<(), FormatError> {
    if p.crop as usize != config.img_size {
        return Err(E::Preprocess("crop differs from the model's img_size"));
    }
    if p.resize < p.crop {
        return Err(E::Preprocess("resize is smaller than crop"));
    }
    if !p.mean.iter().all(|m| m.is_finite()) {
        return Err(E::Preprocess("mean is not finite"));
    }
    if !p.std.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(E::Preprocess("std is not finite and positive"));
    }
    Ok(())
}

/// Decodes and checks the config record into the runtime's types.
fn decode_config(rec: &ConfigRecord, strict: bool) -> Result<(VimConfig, Preprocess), FormatError> {
    let config = VimConfig {
        embed_dim: to_usize(rec.embed_dim)?,
        depth: to_usize(rec.depth)?,
        patch: to_usize(rec.patch)?,
        stride: to_usize(rec.stride)?,
        img_size: to_usize(rec.img_size)?,
        channels: to_usize(rec.channels)?,
        num_classes: to_usize(rec.num_classes)?,
        d_state: to_usize(rec.d_state)?,
        dt_rank: to_usize(rec.dt_rank)?,
        d_conv: to_usize(rec.d_conv)?,
        d_inner: to_usize(rec.d_inner)?,
        norm_eps: rec.norm_eps,
    };
    config.check().map_err(E::Config)?;
    let interpolation = match rec.interpolation {
        0 => Interpolation::Bicubic,
        1 => Interpolation::Bilinear,
        _ => return Err(E::Preprocess("unknown interpolation id")),
    };
    let preprocess = Preprocess {
        resize: rec.resize,
        crop: rec.crop,
        interpolation,
        mean: rec.mean,
        std: rec.std,
    };
    check_preprocess(&config, &preprocess)?;
    if strict && rec.reserved.iter().any(|b| *b != 0) {
        return Err(E::Reserved {
            section: "config record",
        });
    }
    // Every buffer the forward pass derives must fit this target's usize.
    if config.scratch_bytes() == usize::MAX
        || config
            .channels
            .checked_mul(config.img_size)
            .and_then(|v| v.checked_mul(config.img_size))
            .is_none()
    {
        return Err(E::TooLarge);
    }
    Ok((config, preprocess))
}

/// Walks the packed data ranges in file order.
struct RangeCursor<'b> {
    bytes: &'b [u8],
    data_start: u64,
    data_end: u64,
    /// End of the previous range (starts at the data section's start).
    end: u64,
}

impl RangeCursor<'_> {
    fn take(
        &mut self,
        range: RangeKind,
        offset: u64,
        len: u64,
        expected: u64,
    ) -> Result<(), TensorProblem> {
        if len != expected {
            return Err(TensorProblem::RangeSize {
                range,
                bytes: len,
                expected,
            });
        }
        if !offset.is_multiple_of(ALIGN as u64) {
            return Err(TensorProblem::Misaligned { range, offset });
        }
        let end = offset.checked_add(len);
        if offset < self.data_start || end.is_none_or(|e| e > self.data_end) {
            return Err(TensorProblem::OutOfBounds {
                range,
                offset,
                bytes: len,
            });
        }
        if offset < self.end {
            return Err(TensorProblem::Overlap {
                range,
                offset,
                previous_end: self.end,
            });
        }
        // `self.end <= offset <= data_end`, so this cannot overflow.
        let want = align_up(self.end).unwrap_or(u64::MAX);
        if offset != want {
            return Err(TensorProblem::Gap {
                range,
                offset,
                expected: want,
            });
        }
        if let Some(p) = self.bytes[self.end as usize..offset as usize]
            .iter()
            .position(|b| *b != 0)
        {
            return Err(TensorProblem::Padding {
                offset: self.end + p as u64,
            });
        }
        self.end = offset + len;
        Ok(())
    }
}

/// Checks that every VQ index is `< k` (`data` holds `index_bits`-wide little-endian indices).
fn check_indices(data: &[u8], bits: u8, k: u32) -> Result<(), TensorProblem> {
    let bad = |position: usize, index: u32| TensorProblem::IndexOutOfRange {
        position: position as u64,
        index,
        k,
    };
    if bits == 8 {
        if k < 256 {
            if let Some(p) = data.iter().position(|i| u32::from(*i) >= k) {
                return Err(bad(p, data[p].into()));
            }
        }
    } else if k < 65536 {
        for (p, c) in data.chunks_exact(2).enumerate() {
            let i = u32::from(LE::read_u16(c));
            if i >= k {
                return Err(bad(p, i));
            }
        }
    }
    Ok(())
}

/// Validates one record and its ranges; returns the feature bits the tensor uses.
fn check_tensor(
    rec: &TensorRecord,
    expected: (Role, usize),
    config: &VimConfig,
    strict: bool,
    cursor: &mut RangeCursor<'_>,
) -> Result<u32, TensorProblem> {
    use TensorProblem as P;
    let (role, layer) = expected;
    if rec.role != role as u16 || usize::from(rec.layer) != layer {
        return Err(P::WrongTensor {
            role: rec.role,
            layer: rec.layer,
        });
    }
    let (er, ec) = role.shape(config);
    if rec.rows as usize != er || rec.cols as usize != ec {
        return Err(P::Shape {
            rows: rec.rows,
            cols: rec.cols,
            expected_rows: er,
            expected_cols: ec,
        });
    }
    if strict && rec.reserved != [0; 8] {
        return Err(P::Reserved);
    }
    let (rows, cols) = (u64::from(rec.rows), u64::from(rec.cols));
    match rec.kind {
        KIND_DENSE => {
            let fields = [
                ("codebook_dtype", u64::from(rec.codebook_dtype)),
                ("index_bits", u64::from(rec.index_bits)),
                ("index_layout", u64::from(rec.index_layout)),
                ("k", u64::from(rec.k)),
                ("d", u64::from(rec.d)),
                ("codebook_offset", rec.codebook_offset),
                ("codebook_bytes", rec.codebook_bytes),
            ];
            if let Some((name, _)) = fields.iter().find(|(_, v)| *v != 0) {
                return Err(P::DenseField(name));
            }
            // Checked although the schema bounds rows·cols far below 2^62: an overflow maps to
            // an impossible length, i.e. a RangeSize error.
            cursor.take(
                RangeKind::Data,
                rec.data_offset,
                rec.data_bytes,
                dense_bytes(rows, cols),
            )?;
            Ok(0)
        }
        KIND_VQ => {
            if !role.is_linear() {
                return Err(P::VqNotAllowed);
            }
            let vq = vq_storage(rec)?;
            cursor.take(
                RangeKind::Data,
                rec.data_offset,
                rec.data_bytes,
                vq.data_bytes,
            )?;
            let idx_range = (rec.data_offset as usize)..(rec.data_offset + rec.data_bytes) as usize;
            cursor.take(
                RangeKind::Codebook,
                rec.codebook_offset,
                rec.codebook_bytes,
                vq.codebook_bytes,
            )?;
            check_indices(&cursor.bytes[idx_range], rec.index_bits, rec.k)?;
            Ok(vq.features)
        }
        k => Err(P::Kind(k)),
    }
}

/// Validates `bytes` as a `.vimvq` file (see `docs/FORMAT.md` §Validation); the data CRC is
/// checked only if `verify_data_checksum`.
pub(crate) fn parse(
    bytes: &[u8],
    verify_data_checksum: bool,
) -> Result<Validated<'_>, FormatError> {
    let addr = bytes.as_ptr() as usize;
    if !addr.is_multiple_of(4) {
        return Err(E::Misaligned {
            address_mod_64: addr % 64,
        });
    }
    let actual = bytes.len() as u64;
    if bytes.len() >= 8 && bytes[..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&bytes[..8]);
        return Err(E::BadMagic { found });
    }
    let Some(hb) = bytes.first_chunk::<{ FileHeader::SIZE }>() else {
        return Err(E::Truncated {
            needed: FileHeader::SIZE as u64,
            actual,
        });
    };
    let h = FileHeader::decode(hb);
    if h.version_major != VERSION_MAJOR {
        return Err(E::UnsupportedVersion {
            major: h.version_major,
            minor: h.version_minor,
        });
    }
    let unknown = h.required_features & !KNOWN_REQUIRED_FEATURES;
    if unknown != 0 {
        return Err(E::UnknownRequiredFeatures { bits: unknown });
    }
    // Reserved bytes must be zero unless a newer minor version may have given them a meaning.
    // (Always `== 0` today; stays right when VERSION_MINOR grows.)
    #[allow(clippy::absurd_extreme_comparisons)]
    let strict = h.version_minor <= VERSION_MINOR;

    // Section layout: header, config, table, labels, zero padding, data; nothing else.
    layout(
        "config_offset",
        h.config_offset.into(),
        CONFIG_OFFSET as u64,
    )?;
    layout("table_offset", h.table_offset.into(), TABLE_OFFSET as u64)?;
    let table_end = labels_offset(h.tensor_count);
    layout("labels_offset", h.labels_offset.into(), table_end)?;
    let labels_end = table_end + u64::from(h.labels_len);
    let data_start = align_up(labels_end).ok_or(E::TooLarge)?;
    layout("data_offset", h.data_offset.into(), data_start)?;
    layout(
        "data_bytes",
        h.data_bytes,
        h.data_bytes - h.data_bytes % ALIGN as u64,
    )?;
    let file_end = data_start.checked_add(h.data_bytes).ok_or(E::TooLarge)?;
    layout("file_bytes", h.file_bytes, file_end)?;
    if actual < file_end {
        return Err(E::Truncated {
            needed: file_end,
            actual,
        });
    }
    if actual > file_end {
        return Err(E::TrailingBytes {
            expected: file_end,
            actual,
        });
    }
    // From here on every offset up to `file_end` indexes `bytes`.
    let (labels_end, data_start) = (labels_end as usize, data_start as usize);

    let computed = meta_crc32(hb, &bytes[CONFIG_OFFSET..labels_end]);
    if computed != h.meta_crc32 {
        return Err(E::MetaChecksum {
            stored: h.meta_crc32,
            computed,
        });
    }
    zero_padding(bytes, labels_end, data_start)?;

    let crec = ConfigRecord::decode(
        bytes[CONFIG_OFFSET..TABLE_OFFSET]
            .try_into()
            .map_err(|_| E::TooLarge)?,
    );
    let (config, preprocess) = decode_config(&crec, strict)?;
    let expected_count = Role::table_len(config.depth) as u64;
    if u64::from(h.tensor_count) != expected_count {
        return Err(E::TensorCount {
            found: h.tensor_count,
            expected: expected_count,
        });
    }

    let labels_start = h.labels_offset as usize;
    let labels =
        core::str::from_utf8(&bytes[labels_start..labels_end]).map_err(|_| E::LabelsNotUtf8)?;
    if !labels.is_empty() {
        let lines = labels.bytes().filter(|b| *b == b'\n').count();
        let found = lines + usize::from(!labels.ends_with('\n'));
        if found != config.num_classes || !labels.ends_with('\n') {
            return Err(E::LabelCount {
                found,
                expected: config.num_classes,
            });
        }
    }

    let mut cursor = RangeCursor {
        bytes,
        data_start: data_start as u64,
        data_end: file_end,
        end: data_start as u64,
    };
    let mut used = 0u32;
    for i in 0..h.tensor_count as usize {
        let at = TABLE_OFFSET + i * TensorRecord::SIZE;
        let rec = TensorRecord::decode(
            bytes[at..at + TensorRecord::SIZE]
                .try_into()
                .map_err(|_| E::TooLarge)?,
        );
        let (role, layer) = Role::table_entry(i);
        used |=
            check_tensor(&rec, (role, layer), &config, strict, &mut cursor).map_err(|problem| {
                E::Tensor {
                    name: TensorName { role, layer },
                    problem,
                }
            })?;
    }
    let packed_end = align_up(cursor.end).ok_or(E::TooLarge)?;
    layout("data_bytes", h.data_bytes, packed_end - data_start as u64)?;
    zero_padding(bytes, cursor.end as usize, file_end as usize)?;
    let missing = used & !h.required_features;
    if missing != 0 {
        return Err(E::UndeclaredFeature {
            bit: 1 << missing.trailing_zeros(),
        });
    }

    if verify_data_checksum {
        let computed = crc32(&bytes[data_start..]);
        if computed != h.data_crc32 {
            return Err(E::DataChecksum {
                stored: h.data_crc32,
                computed,
            });
        }
    }
    Ok(Validated {
        header: h,
        config,
        preprocess,
        labels,
    })
}
