//! PyTorch zip checkpoints (`torch.save`, PyTorch ≥ 1.6).
//!
//! Layout: a zip (entries stored, 64-byte aligned) holding `<archive>/data.pkl`, the pickled
//! object, and `<archive>/data/<key>`, the raw little-endian bytes of each storage, plus small
//! text entries (`byteorder`, `version`, ...). The pickle is read by the restricted reader in
//! [`super::pickle`]; only the storages of the selected state dict are read. Every view is
//! checked against its storage's declared size, and the total against [`MAX_TOTAL_ELEMS`],
//! before any storage is read; a storage entry smaller than declared is refused before reading,
//! and only the bytes the views reach are read (so a compressed entry is inflated no further).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::error::ImportError;
use super::pickle::{self, Id, Obj, Pickle, TensorRef};
use super::tensor::{Checkpoint, HostTensor, MAX_TENSORS, MAX_TENSOR_ELEMS, MAX_TOTAL_ELEMS};

/// Largest storage entry read (8 GiB); larger ones are refused before reading.
pub const MAX_STORAGE_BYTES: u64 = 8 << 30;
/// Most elements of a view that repeats stored elements (a stride of 0, as `expand` makes, or
/// overlapping rows): 2^22, 16 MiB of f32. Such a view can be far larger than the bytes the file
/// supplies; no Vim tensor is stored that way.
pub const MAX_REPEATED_VIEW_ELEMS: u64 = 1 << 22;

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
            size: size.into(),
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
    // Every view is checked, and the total size of the result known, before any storage is read.
    let mut views = Vec::with_capacity(entries.len());
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
        let view = View::check(path, name, t)?;
        total += view.numel;
        if total > MAX_TOTAL_ELEMS {
            return Err(ImportError::TooLarge {
                path: path.to_path_buf(),
                what: "total tensor elements".into(),
                size: total.into(),
                limit: MAX_TOTAL_ELEMS,
            });
        }
        views.push((name, t, view));
    }
    let mut reader = StorageReader {
        ar: &mut ar,
        path,
        prefix: &prefix,
        cache: HashMap::new(),
    };
    let mut tensors = BTreeMap::new();
    for (name, t, view) in views {
        let host = reader.materialize(name, t, &view)?;
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

/// A view checked against its storage's declared size: element type, element count, and the
/// storage elements it reaches.
struct View {
    elem: Elem,
    numel: u64,
    /// Bytes of the storage the view reads: `(last element touched + 1) · element size`.
    need_bytes: u64,
    /// The storage's size as the pickle declares it, in bytes.
    storage_bytes: u64,
}

impl View {
    fn check(path: &Path, name: &str, t: &TensorRef) -> Result<View, ImportError> {
        let err = |msg: String| ImportError::Storage {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            msg,
        };
        let dtype = t.dtype.as_deref().unwrap_or(&t.storage_kind);
        let elem = match &t.dtype {
            Some(d) => Elem::from_dtype(d),
            None => Elem::from_storage(&t.storage_kind),
        }
        .ok_or_else(|| ImportError::Dtype {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            dtype: dtype.to_owned(),
        })?;
        let unit = storage_elem_bytes(&t.storage_kind)
            .ok_or_else(|| err(format!("unknown storage type {}", t.storage_kind)))?;
        let storage_bytes = t
            .storage_numel
            .checked_mul(unit)
            .filter(|b| *b <= MAX_STORAGE_BYTES)
            .ok_or_else(|| {
                err(format!(
                    "storage claims {} elements of {unit} bytes, over the limit of {MAX_STORAGE_BYTES} bytes",
                    t.storage_numel
                ))
            })?;
        let storage_elems = storage_bytes / elem.bytes();

        let numel = t
            .size
            .iter()
            .fold(1u128, |a, &s| a.saturating_mul(s as u128));
        if numel > MAX_TENSOR_ELEMS as u128 {
            return Err(ImportError::TooLarge {
                path: path.to_path_buf(),
                what: format!("tensor '{name}' of shape {:?}", t.size),
                size: numel,
                limit: MAX_TENSOR_ELEMS,
            });
        }
        let numel = numel as u64;
        if numel == 0 {
            return Ok(View {
                elem,
                numel,
                need_bytes: 0,
                storage_bytes,
            });
        }
        // last element touched: offset + Σ (size_i − 1)·stride_i
        let mut last = Some(t.offset);
        for (&s, &st) in t.size.iter().zip(&t.stride) {
            last = last.and_then(|l| (s - 1).checked_mul(st).and_then(|x| x.checked_add(l)));
        }
        let last = match last {
            Some(l) if l < storage_elems => l,
            _ => {
                return Err(err(format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches past the storage's {storage_elems} elements",
                    t.offset, t.size, t.stride
                )))
            }
        };
        // A view with more elements than the storage range it reads repeats elements (a stride
        // of 0, or overlapping rows): memory would grow beyond what the file supplies.
        let span = last + 1 - t.offset;
        if numel > span && numel > MAX_REPEATED_VIEW_ELEMS {
            return Err(err(format!(
                "view (size {:?}, stride {:?}) repeats {span} stored elements as {numel}; \
                 views that expand storage are accepted up to {MAX_REPEATED_VIEW_ELEMS} elements",
                t.size, t.stride
            )));
        }
        Ok(View {
            elem,
            numel,
            need_bytes: (last + 1) * elem.bytes(),
            storage_bytes,
        })
    }
}

/// Storage prefixes read so far, by key.
struct StorageReader<'a> {
    ar: &'a mut Archive,
    path: &'a Path,
    prefix: &'a str,
    cache: HashMap<String, Vec<u8>>,
}

impl StorageReader<'_> {
    /// The first `view.need_bytes` bytes of the view's storage. The entry's size is checked
    /// against the storage size the pickle declares before reading, and only the bytes the
    /// view reaches are read (a compressed entry is inflated no further). Two tensors may share
    /// a storage; a later one that reaches further re-reads the entry.
    fn storage(&mut self, name: &str, key: &str, view: &View) -> Result<&[u8], ImportError> {
        let cached = self.cache.get(key).map_or(0, Vec::len) as u64;
        if cached < view.need_bytes {
            let entry = format!("{}data/{key}", self.prefix);
            let path = self.path;
            let e = match self.ar.by_name(&entry) {
                Ok(e) => e,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(ImportError::Storage {
                        path: path.to_path_buf(),
                        tensor: name.to_owned(),
                        msg: format!("storage entry {entry} is missing from the archive"),
                    })
                }
                Err(e) => return Err(zip_err(path, format!("{entry}: {e}"))),
            };
            let size = e.size();
            if size < view.storage_bytes {
                return Err(ImportError::Storage {
                    path: path.to_path_buf(),
                    tensor: name.to_owned(),
                    msg: format!(
                        "storage {entry} holds {size} bytes, the pickle says {}",
                        view.storage_bytes
                    ),
                });
            }
            // Reading a whole entry to its end (one byte past its size) makes the zip reader
            // check its CRC; a prefix is read as is.
            let take = if view.need_bytes == size {
                size + 1
            } else {
                view.need_bytes
            };
            let mut buf = Vec::new();
            let got = e
                .take(take)
                .read_to_end(&mut buf)
                .map_err(|err| zip_err(path, format!("{entry}: {err}")))?;
            if got as u64 != view.need_bytes {
                return Err(zip_err(
                    path,
                    format!(
                        "{entry}: holds {got} bytes, its header says {size} and tensor '{name}' needs {}",
                        view.need_bytes
                    ),
                ));
            }
            self.cache.insert(key.to_owned(), buf);
        }
        Ok(self.cache.get(key).map_or(&[], Vec::as_slice))
    }

    /// Gathers a checked view into a dense f32 tensor.
    fn materialize(
        &mut self,
        name: &str,
        t: &TensorRef,
        view: &View,
    ) -> Result<HostTensor, ImportError> {
        let shape: Vec<usize> = t.size.iter().map(|&s| s as usize).collect();
        if view.numel == 0 {
            return Ok(HostTensor {
                shape,
                data: Vec::new(),
            });
        }
        let elem = view.elem;
        let bytes = self.storage(name, &t.storage_key, view)?;
        let n = view.numel as usize;
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
