//! `.safetensors` checkpoints, read with the `safetensors` crate (which validates the header,
//! every offset and every shape against the data section). F32/F16/BF16/F64 become f32;
//! `__metadata__` entries are copied to [`Checkpoint::meta`] verbatim.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::error::ImportError;
use super::tensor::{Checkpoint, HostTensor, MAX_TENSORS, MAX_TENSOR_ELEMS};

/// Largest safetensors file read (16 GiB; it is read into memory whole).
pub const MAX_FILE_BYTES: u64 = 16 << 30;
/// Largest JSON header accepted (the `safetensors` crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

fn st_err(path: &Path, msg: impl std::fmt::Display) -> ImportError {
    ImportError::Safetensors {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// The `safetensors` crate's error as a sentence (its `Debug` form, e.g. `InvalidOffset("b")`,
/// means little to a user).
fn explain(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor '{name}': its data_offsets do not start where the previous tensor ends, \
             or run past the end of the file"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's data_offsets do not span its shape times its element size".into()
        }
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape times its element size overflows".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors do not cover the data section exactly (truncated or padded file?)".into()
        }
        other => other.to_string(),
    }
}

/// Loads a safetensors file of `len` bytes.
pub fn load(path: &Path, mut file: File, len: u64) -> Result<Checkpoint, ImportError> {
    if len > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge {
            path: path.to_path_buf(),
            what: "safetensors file".into(),
            size: len.into(),
            limit: MAX_FILE_BYTES,
        });
    }
    let mut head = [0u8; 8];
    if len < 8 {
        return Err(st_err(
            path,
            format!("a {len}-byte file has no room for the header length"),
        ));
    }
    file.read_exact(&mut head).map_err(|e| st_err(path, e))?;
    let n = u64::from_le_bytes(head);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(st_err(
            path,
            format!("header length {n} does not fit in a {len}-byte file (truncated?)"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    buf.extend_from_slice(&head);
    file.take(len - 8)
        .read_to_end(&mut buf)
        .map_err(|e| st_err(path, e))?;
    if buf.len() as u64 != len {
        return Err(st_err(path, "file changed while reading"));
    }

    let (_, md) = SafeTensors::read_metadata(&buf).map_err(|e| st_err(path, explain(&e)))?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| st_err(path, explain(&e)))?;
    if st.len() > MAX_TENSORS {
        return Err(st_err(
            path,
            format!("{} tensors, the limit is {MAX_TENSORS}", st.len()),
        ));
    }
    let meta: BTreeMap<String, String> = md
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();

    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let shape = view.shape().to_vec();
        let numel = shape
            .iter()
            .fold(1u128, |a, &s| a.saturating_mul(s as u128));
        if numel > MAX_TENSOR_ELEMS as u128 {
            return Err(ImportError::TooLarge {
                path: path.to_path_buf(),
                what: format!("tensor '{name}' of shape {shape:?}"),
                size: numel,
                limit: MAX_TENSOR_ELEMS,
            });
        }
        let b = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            other => {
                return Err(ImportError::Dtype {
                    path: path.to_path_buf(),
                    tensor: name.to_owned(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        tensors.insert(name.to_owned(), HostTensor { shape, data });
    }
    Ok(Checkpoint { tensors, meta })
}
