//! PyTorch zip checkpoints (`torch.save`, PyTorch ≥ 1.6).
//!
//! Layout: a zip (entries stored, 64-byte aligned) holding `<archive>/data.pkl`, the pickled
//! object, and `<archive>/data/<key>`, the raw little-endian bytes of each storage, plus small
//! text entries (`byteorder`, `version`, ...). The pickle is read by the restricted reader in
//! [`super::pickle`]; only the storages of the selected state dict are read, and each one is
//! checked against the sizes the pickle claims before anything is allocated for it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::pickle::{self, Id, Obj, Pickle, TensorRef};
use super::{Checkpoint, HostTensor, ImportError, MAX_TENSORS, MAX_TENSOR_ELEMS, MAX_TOTAL_ELEMS};

/// Largest storage entry read (8 GiB); larger ones are refused before reading.
pub const MAX_STORAGE_BYTES: u64 = 8 << 30;

type Archive = zip::ZipArchive<BufReader<File>>;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F16,
    Bf16,
    F64,
}

impl Elem {
    fn bytes(self) -> u64 {
        match self {
            Elem::F32 => 4,
            Elem::F16 | Elem::Bf16 => 2,
            Elem::F64 => 8,
        }
    }
    fn from_dtype(name: &str) -> Option<Elem> {
        Some(match name {
            "float32" | "float" => Elem::F32,
            "float16" | "half" => Elem::F16,
            "bfloat16" => Elem::Bf16,
            "float64" | "double" => Elem::F64,
            _ => return None,
        })
    }
    fn from_storage(kind: &str) -> Option<Elem> {
        Some(match kind {
            "FloatStorage" => Elem::F32,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::Bf16,
            "DoubleStorage" => Elem::F64,
            _ => return None,
        })
    }
}

/// Bytes per element of a typed storage, `Some(1)` for untyped ones, `None` if unknown.
fn storage_elem_bytes(kind: &str) -> Option<u64> {
    Some(match kind {
        "UntypedStorage" | "ByteStorage" | "CharStorage" | "BoolStorage" | "QUInt8Storage"
        | "QInt8Storage" => 1,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "FloatStorage" | "IntStorage" | "QInt32Storage" => 4,
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

fn zip_err(path: &Path, e: impl std::fmt::Display) -> ImportError {
    ImportError::Zip {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> ImportError {
    ImportError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads the whole entry `name`, refusing entries larger than `cap` before reading.
fn read_entry(ar: &mut Archive, path: &Path, name: &str, cap: u64) -> Result<Vec<u8>, ImportError> {
    let entry = ar
        .by_name(name)
        .map_err(|e| zip_err(path, format!("{name}: {e}")))?;
    let size = entry.size();
    if size > cap {
        return Err(ImportError::TooLarge {
            path: path.to_path_buf(),
            what: format!("zip entry {name}"),
            size,
            limit: cap,
        });
    }
    // Never pre-allocate more than a modest amount on the header's word alone.
    let mut buf = Vec::with_capacity(size.min(64 << 20) as usize);
    // Reading to EOF (one byte past the declared size) also makes the zip reader check the CRC.
    entry
        .take(size + 1)
        .read_to_end(&mut buf)
        .map_err(|e| zip_err(path, format!("{name}: {e}")))?;
    if buf.len() as u64 != size {
        return Err(zip_err(
            path,
            format!("{name}: holds {} bytes, its header says {size}", buf.len()),
        ));
    }
    Ok(buf)
}

/// Loads a zip checkpoint. `key` selects the state dict (see [`super::load`]).
pub fn load(path: &Path, file: File, key: Option<&str>) -> Result<Checkpoint, ImportError> {
    let mut ar = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        zip_err(
            path,
            format!("not a readable zip archive (truncated or corrupt?): {e}"),
        )
    })?;

    let pkls: Vec<String> = ar
        .file_names()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .map(str::to_owned)
        .collect();
    let pkl_name = match pkls.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(bad(
                path,
                "zip archive has no <archive>/data.pkl: not a PyTorch checkpoint",
            ))
        }
        _ => {
            return Err(bad(
                path,
                format!(
                    "zip archive has several data.pkl entries: {}",
                    pkls.join(", ")
                ),
            ))
        }
    };
    let prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_owned();

    let byteorder_name = format!("{prefix}byteorder");
    if ar.index_for_name(&byteorder_name).is_some() {
        let bo = read_entry(&mut ar, path, &byteorder_name, 64)?;
        if bo.trim_ascii() != b"little" {
            return Err(bad(
                path,
                format!(
                    "byteorder is {:?}; only little-endian checkpoints are supported",
                    String::from_utf8_lossy(&bo)
                ),
            ));
        }
    }

    let bytes = read_entry(&mut ar, path, &pkl_name, pickle::MAX_PICKLE_BYTES)?;
    let pk = pickle::parse(&bytes).map_err(|e| ImportError::Pickle {
        path: path.to_path_buf(),
        offset: e.offset,
        msg: e.msg,
    })?;

    let (sd_name, sd) = select_state_dict(&pk, path, key)?;
    let mut meta = BTreeMap::new();
    read_meta(&pk, &mut meta);

    let entries = pk.dict_items(sd).unwrap_or_default();
    if entries.len() > MAX_TENSORS {
        return Err(bad(
            path,
            format!(
                "state dict has {} entries, the limit is {MAX_TENSORS}",
                entries.len()
            ),
        ));
    }
    let mut reader = StorageReader {
        ar: &mut ar,
        path,
        prefix: &prefix,
        cache: HashMap::new(),
    };
    let mut tensors = BTreeMap::new();
    let mut total: u64 = 0;
    for &(k, v) in entries {
        let Some(name) = pk.as_str(k) else {
            return Err(bad(
                path,
                format!(
                    "{sd_name} has a {} key; state dict keys are strings",
                    pk.get(k).type_name()
                ),
            ));
        };
        let t = match pk.get(v) {
            Obj::Tensor(t) => t,
            o => {
                return Err(bad(
                    path,
                    format!("{sd_name}['{name}'] is a {}, not a tensor", o.type_name()),
                ))
            }
        };
        let host = reader.materialize(name, t)?;
        total += host.data.len() as u64;
        if total > MAX_TOTAL_ELEMS {
            return Err(ImportError::TooLarge {
                path: path.to_path_buf(),
                what: "total tensor elements".into(),
                size: total,
                limit: MAX_TOTAL_ELEMS,
            });
        }
        tensors.insert(name.to_owned(), host);
    }
    Ok(Checkpoint { tensors, meta })
}

/// Python-style repr of a few top-level keys for messages.
fn available_keys(pk: &Pickle, dict: Id) -> Vec<String> {
    pk.dict_items(dict)
        .unwrap_or_default()
        .iter()
        .map(|(k, _)| match pk.get(*k) {
            Obj::Str(s) => s.clone(),
            Obj::Int(i) => i.to_string(),
            o => format!("<{}>", o.type_name()),
        })
        .collect()
}

fn is_state_dict(pk: &Pickle, id: Id) -> bool {
    match pk.dict_items(id) {
        Some(items) if !items.is_empty() => items
            .iter()
            .all(|&(k, v)| pk.as_str(k).is_some() && matches!(pk.get(v), Obj::Tensor(_))),
        _ => false,
    }
}

/// Picks the state dict: `key` if given, else `model`, else the root when it is a state dict,
/// else `state_dict`.
fn select_state_dict(
    pk: &Pickle,
    path: &Path,
    key: Option<&str>,
) -> Result<(String, Id), ImportError> {
    let root = pk.root;
    if pk.dict_items(root).is_none() {
        return Err(bad(
            path,
            format!(
                "the pickled object is a {}, not a dict of tensors",
                pk.get(root).type_name()
            ),
        ));
    }
    let check = |name: &str, id: Id| -> Result<(String, Id), ImportError> {
        match pk.get(id) {
            Obj::Dict(_) => Ok((format!("'{name}'"), id)),
            Obj::Instance { class, .. } => Err(bad(
                path,
                format!("'{name}' holds a pickled {class} object, not a state dict; save model.state_dict() instead"),
            )),
            o => Err(bad(path, format!("'{name}' is a {}, not a state dict", o.type_name()))),
        }
    };
    match key {
        Some(k) => match pk.dict_get(root, k) {
            Some(id) => check(k, id),
            None if is_state_dict(pk, root) => Err(ImportError::UnknownKey {
                path: path.to_path_buf(),
                key: k.to_owned(),
                available: "none: the file is a bare state dict, omit --key".into(),
            }),
            None => Err(ImportError::UnknownKey {
                path: path.to_path_buf(),
                key: k.to_owned(),
                available: available_keys(pk, root).join(", "),
            }),
        },
        None => {
            if let Some(id) = pk.dict_get(root, "model") {
                return check("model", id);
            }
            if is_state_dict(pk, root) {
                return Ok(("the state dict".into(), root));
            }
            if let Some(id) = pk.dict_get(root, "state_dict") {
                return check("state_dict", id);
            }
            Err(ImportError::NoStateDict {
                path: path.to_path_buf(),
                available: available_keys(pk, root).join(", "),
            })
        }
    }
}

/// Scalar as text, if it is one.
fn scalar(pk: &Pickle, id: Id) -> Option<String> {
    Some(match pk.get(id) {
        Obj::Int(i) => i.to_string(),
        Obj::Float(f) => f.to_string(),
        Obj::Bool(b) => b.to_string(),
        Obj::Str(s) => s.clone(),
        _ => return None,
    })
}

/// `epoch`, and the scalar fields of an `args` namespace (hustvl `main.py`), into `meta`:
/// every scalar field as `args.<name>`, plus `img_size` (from `input_size`), `resize`
/// (`int(input_size / eval_crop_ratio)`, as hustvl's eval transform computes it), `model`,
/// `num_classes` (from `nb_classes`), and `mean` / `std` when `args` has them as a number or a
/// sequence of 1 or 3 numbers (hustvl's own args do not; its transform uses ImageNet's).
fn read_meta(pk: &Pickle, meta: &mut BTreeMap<String, String>) {
    let root = pk.root;
    if let Some(e) = pk.dict_get(root, "epoch").and_then(|id| scalar(pk, id)) {
        meta.insert("epoch".into(), e);
    }
    let Some(args) = pk.dict_get(root, "args") else {
        return;
    };
    let fields = match pk.get(args) {
        Obj::Instance { state: Some(s), .. } => *s,
        Obj::Dict(_) => args,
        _ => return,
    };
    let Some(items) = pk.dict_items(fields) else {
        return;
    };
    for &(k, v) in items {
        if let (Some(k), Some(v)) = (pk.as_str(k), scalar(pk, v)) {
            meta.insert(format!("args.{k}"), v);
        }
    }
    let get = |name: &str| pk.dict_get(fields, name).map(|id| pk.get(id));
    if let Some(Obj::Int(n)) = get("input_size") {
        meta.insert("img_size".into(), n.to_string());
        if let Some(Obj::Float(r)) = get("eval_crop_ratio") {
            let size = (*n as f64 / r).floor();
            if r.is_finite() && *r > 0.0 && size >= 1.0 && size <= u32::MAX as f64 {
                meta.insert("resize".into(), (size as u32).to_string());
            }
        }
    }
    if let Some(Obj::Str(m)) = get("model") {
        meta.insert("model".into(), m.clone());
    }
    if let Some(Obj::Int(n)) = get("nb_classes") {
        meta.insert("num_classes".into(), n.to_string());
    }
    for key in ["mean", "std"] {
        if let Some(v) = pk.dict_get(fields, key).and_then(|id| numbers(pk, id)) {
            meta.insert(key.into(), v);
        }
    }
}

/// A number, or a tuple/list of 1 or 3 numbers, as comma-separated text.
fn numbers(pk: &Pickle, id: Id) -> Option<String> {
    let num = |id: Id| match pk.get(id) {
        Obj::Int(i) => Some(i.to_string()),
        Obj::Float(f) => Some(f.to_string()),
        _ => None,
    };
    match pk.get(id) {
        Obj::Tuple(v) | Obj::List(v) if v.len() == 1 || v.len() == 3 => v
            .iter()
            .map(|&i| num(i))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => num(id),
    }
}

struct StorageReader<'a> {
    ar: &'a mut Archive,
    path: &'a Path,
    prefix: &'a str,
    cache: HashMap<String, Vec<u8>>,
}

impl StorageReader<'_> {
    fn err(&self, tensor: &str, msg: impl Into<String>) -> ImportError {
        ImportError::Storage {
            path: self.path.to_path_buf(),
            tensor: tensor.to_owned(),
            msg: msg.into(),
        }
    }

    /// Validates the view against the storage and gathers it into a dense f32 tensor.
    fn materialize(&mut self, name: &str, t: &TensorRef) -> Result<HostTensor, ImportError> {
        let elem = match &t.dtype {
            Some(d) => Elem::from_dtype(d).ok_or_else(|| ImportError::Dtype {
                path: self.path.to_path_buf(),
                tensor: name.to_owned(),
                dtype: d.clone(),
            })?,
            None => Elem::from_storage(&t.storage_kind).ok_or_else(|| ImportError::Dtype {
                path: self.path.to_path_buf(),
                tensor: name.to_owned(),
                dtype: t.storage_kind.clone(),
            })?,
        };
        let unit = storage_elem_bytes(&t.storage_kind)
            .ok_or_else(|| self.err(name, format!("unknown storage type {}", t.storage_kind)))?;
        let storage_bytes = t
            .storage_numel
            .checked_mul(unit)
            .filter(|b| *b <= MAX_STORAGE_BYTES)
            .ok_or_else(|| {
                self.err(
                    name,
                    format!(
                        "storage claims {} elements, over the limit",
                        t.storage_numel
                    ),
                )
            })?;
        let storage_elems = storage_bytes / elem.bytes();

        let mut numel: u64 = 1;
        for &s in &t.size {
            numel = numel
                .checked_mul(s)
                .filter(|n| *n <= MAX_TENSOR_ELEMS)
                .ok_or_else(|| ImportError::TooLarge {
                    path: self.path.to_path_buf(),
                    what: format!("tensor '{name}' of shape {:?}", t.size),
                    size: u64::MAX,
                    limit: MAX_TENSOR_ELEMS,
                })?;
        }
        let shape: Vec<usize> = t.size.iter().map(|&s| s as usize).collect();
        if numel == 0 {
            return Ok(HostTensor {
                shape,
                data: Vec::new(),
            });
        }
        // last element touched: offset + Σ (size_i − 1)·stride_i
        let mut last = Some(t.offset);
        for (&s, &st) in t.size.iter().zip(&t.stride) {
            last = last.and_then(|l| (s - 1).checked_mul(st).and_then(|x| x.checked_add(l)));
        }
        match last {
            Some(l) if l < storage_elems => {}
            _ => {
                return Err(self.err(
                    name,
                    format!(
                        "view (offset {}, size {:?}, stride {:?}) reaches past the storage's {storage_elems} elements",
                        t.offset, t.size, t.stride
                    ),
                ))
            }
        }

        let entry = format!("{}data/{}", self.prefix, t.storage_key);
        if !self.cache.contains_key(&t.storage_key) {
            if self.ar.index_for_name(&entry).is_none() {
                return Err(self.err(
                    name,
                    format!("storage entry {entry} is missing from the archive"),
                ));
            }
            let bytes = read_entry(self.ar, self.path, &entry, MAX_STORAGE_BYTES)?;
            if (bytes.len() as u64) < storage_bytes {
                return Err(self.err(
                    name,
                    format!(
                        "storage {entry} holds {} bytes, the pickle says {storage_bytes}",
                        bytes.len()
                    ),
                ));
            }
            self.cache.insert(t.storage_key.clone(), bytes);
        }
        let bytes = &self.cache[&t.storage_key];
        let n = numel as usize;
        let mut data = Vec::with_capacity(n);
        let contiguous = {
            let mut expect = 1u64;
            let mut ok = true;
            for (&s, &st) in t.size.iter().zip(&t.stride).rev() {
                if s != 1 && st != expect {
                    ok = false;
                }
                expect *= s;
            }
            ok
        };
        let eb = elem.bytes() as usize;
        let read = |i: usize| -> f32 {
            let b = &bytes[i * eb..(i + 1) * eb];
            match elem {
                Elem::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Elem::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
                Elem::Bf16 => half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
                Elem::F64 => {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                }
            }
        };
        let off = t.offset as usize;
        if contiguous {
            data.extend((off..off + n).map(read));
        } else {
            // odometer over the multi-index, row-major
            let rank = shape.len();
            // a size-1 dim never moves: its stride may be anything, so drop it
            let stride: Vec<usize> = t
                .size
                .iter()
                .zip(&t.stride)
                .map(|(&s, &st)| if s == 1 { 0 } else { st as usize })
                .collect();
            let mut idx = vec![0usize; rank];
            let mut at = off;
            for _ in 0..n {
                data.push(read(at));
                for d in (0..rank).rev() {
                    idx[d] += 1;
                    at += stride[d];
                    if idx[d] < shape[d] {
                        break;
                    }
                    at -= stride[d] * shape[d];
                    idx[d] = 0;
                }
            }
        }
        Ok(HostTensor { shape, data })
    }
}
