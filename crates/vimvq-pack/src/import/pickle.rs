//! A restricted, non-executing pickle reader: just the subset `torch.save` emits.
//!
//! # What it does
//! The pickle is run on a small stack machine whose values live in an arena ([`Pickle::objs`]);
//! containers refer to their items by [`Id`]. The memo stores ids, so `BINGET` never copies
//! (no "billion laughs" through memo references) and aliasing behaves as in CPython.
//!
//! * `GLOBAL` / `STACK_GLOBAL` only record `module.name`; nothing is imported or called.
//! * `REDUCE` interprets a fixed whitelist of callables (see `Vm::reduce`):
//!   `collections.OrderedDict`, `torch._utils._rebuild_tensor{,_v2,_v3}`,
//!   `torch._utils._rebuild_parameter{,_with_state}`, `torch._tensor._rebuild_from_type_v2` and
//!   `torch.Size`. Any other call, and every `NEWOBJ`, gives an opaque [`Obj::Instance`] that
//!   records only its class name; `BUILD` attaches its state (that is how an
//!   `argparse.Namespace` keeps its fields). `BUILD` on dicts (a state dict's `_metadata`) and
//!   on other values is ignored.
//! * `BINPERSID` turns torch's `('storage', torch.FloatStorage, key, location, numel)` into an
//!   [`Obj::Storage`] reference; no bytes are read here.
//!
//! # Caps
//! Input is at most [`MAX_PICKLE_BYTES`]; the values take at most [`MAX_VALUE_BYTES`] (each
//! value's own size plus its string bytes and container slots, counted as it is built or
//! extended, so re-applying `OrderedDict` to a large list cannot multiply memory); at most
//! [`MAX_OBJECTS`] values, [`MAX_STACK`] stack
//! entries, [`MAX_MARKS`] open `MARK`s, [`MAX_MEMO`] memo entries, strings of at most
//! [`MAX_STR`] bytes, containers nested at most [`MAX_DEPTH`] deep when built, and tensors of
//! rank at most [`MAX_RANK`]. Every length is checked against the remaining input before any
//! allocation. Violations, unknown opcodes and malformed input are [`PickleError`]s that name
//! the byte offset of the opcode; nothing panics.

use std::collections::HashMap;

/// Largest `data.pkl` accepted (64 MiB). Tensor bytes live outside the pickle; a Vim-B full
/// training checkpoint's pickle is well under 1 MiB.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most bytes all values together may take (32 MiB): each value's inline size plus its string
/// bytes and container slots. A Vim-B training checkpoint's pickle needs about 2 MiB.
pub const MAX_VALUE_BYTES: usize = 32 << 20;
/// Most values (arena entries) one pickle may create.
pub const MAX_OBJECTS: usize = 1 << 22;
/// Deepest value stack.
pub const MAX_STACK: usize = 1 << 20;
/// Most `MARK`s open at once.
pub const MAX_MARKS: usize = 256;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Longest string, byte string or `GLOBAL` line.
pub const MAX_STR: usize = 1 << 20;
/// Deepest container nesting (measured when a container is built or filled).
pub const MAX_DEPTH: u16 = 64;
/// Highest tensor rank.
pub const MAX_RANK: usize = 8;

/// Index of a value in [`Pickle::objs`].
pub type Id = usize;

/// A malformed or hostile pickle, or one that uses something this reader does not support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Byte offset of the opcode being executed.
    pub offset: usize,
    /// What went wrong.
    pub msg: String,
}

/// A tensor view over a storage, as `_rebuild_tensor_v2/v3` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// `torch.FloatStorage` → `"FloatStorage"`, `torch.storage.UntypedStorage` → `"UntypedStorage"`.
    pub storage_kind: String,
    /// Archive key: the storage bytes are `<archive>/data/<key>`.
    pub storage_key: String,
    /// Storage length from the persistent id: elements for typed storages, bytes for untyped.
    pub storage_numel: u64,
    /// Element type given by `_rebuild_tensor_v3` (`"float32"`, ...), else `None`.
    pub dtype: Option<String>,
    /// Offset of element 0, in elements.
    pub offset: u64,
    /// Shape.
    pub size: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

/// One unpickled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in `i64`.
    Int(i64),
    /// An int wider than 64 bits (value not kept).
    BigInt,
    /// A float.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes` (or Python 2 `str`) value; only its length is kept.
    Bytes(usize),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list (also sets and frozensets).
    List(Vec<Id>),
    /// A dict or `OrderedDict`, in insertion order. Repeated keys are all kept; readers take the
    /// last one, as Python would.
    Dict(Vec<(Id, Id)>),
    /// A class or function reference, `module.name`; never resolved.
    Global {
        /// Module path.
        module: String,
        /// Qualified name.
        name: String,
    },
    /// A storage reference from a persistent id.
    Storage {
        /// e.g. `FloatStorage`.
        kind: String,
        /// Archive key.
        key: String,
        /// Elements (typed) or bytes (untyped).
        numel: u64,
    },
    /// A tensor view.
    Tensor(TensorRef),
    /// Any other object: the result of an uninterpreted call or `NEWOBJ`, plus its `BUILD` state.
    Instance {
        /// `module.name` of the class or callable.
        class: String,
        /// Argument of `BUILD`, if any.
        state: Option<Id>,
    },
}

impl Obj {
    /// Python-ish type name for error messages.
    pub fn type_name(&self) -> String {
        match self {
            Obj::None => "None".into(),
            Obj::Bool(_) => "bool".into(),
            Obj::Int(_) | Obj::BigInt => "int".into(),
            Obj::Float(_) => "float".into(),
            Obj::Str(_) => "str".into(),
            Obj::Bytes(_) => "bytes".into(),
            Obj::Tuple(_) => "tuple".into(),
            Obj::List(_) => "list".into(),
            Obj::Dict(_) => "dict".into(),
            Obj::Global { module, name } => format!("{module}.{name}"),
            Obj::Storage { kind, .. } => format!("torch.{kind}"),
            Obj::Tensor(_) => "tensor".into(),
            Obj::Instance { class, .. } => class.clone(),
        }
    }
}

/// A parsed pickle: the value arena and the root value.
#[derive(Debug)]
pub struct Pickle {
    /// Every value created, by id.
    pub objs: Vec<Obj>,
    /// The value `STOP` returned.
    pub root: Id,
}

impl Pickle {
    /// The value with id `id`.
    pub fn get(&self, id: Id) -> &Obj {
        &self.objs[id]
    }

    /// The string value of `id`, if it is a `str`.
    pub fn as_str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Items of a dict value (`None` if `id` is not a dict).
    pub fn dict_items(&self, id: Id) -> Option<&[(Id, Id)]> {
        match self.get(id) {
            Obj::Dict(items) => Some(items),
            _ => None,
        }
    }

    /// `d[key]` for a dict with string keys (last occurrence wins).
    pub fn dict_get(&self, id: Id, key: &str) -> Option<Id> {
        self.dict_items(id)?
            .iter()
            .rev()
            .find(|(k, _)| self.as_str(*k) == Some(key))
            .map(|(_, v)| *v)
    }
}

/// Parses a complete pickle (protocol 2–5) held in memory.
pub fn parse(data: &[u8]) -> Result<Pickle, PickleError> {
    if data.len() as u64 > MAX_PICKLE_BYTES {
        return Err(PickleError {
            offset: 0,
            msg: format!(
                "pickle is {} bytes, the limit is {MAX_PICKLE_BYTES}",
                data.len()
            ),
        });
    }
    let mut vm = Vm {
        data,
        pos: 0,
        op_at: 0,
        objs: Vec::new(),
        depth: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        value_bytes: 0,
    };
    let root = vm.run()?;
    Ok(Pickle {
        objs: vm.objs,
        root,
    })
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    op_at: usize,
    objs: Vec<Obj>,
    depth: Vec<u16>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    /// Bytes charged against [`MAX_VALUE_BYTES`] so far.
    value_bytes: usize,
}

/// Heap bytes a value owns besides its inline size.
fn heap_bytes(obj: &Obj) -> usize {
    let id = std::mem::size_of::<Id>();
    match obj {
        Obj::Str(s) => s.len(),
        Obj::Tuple(v) | Obj::List(v) => v.len() * id,
        Obj::Dict(v) => v.len() * 2 * id,
        Obj::Global { module, name } => module.len() + name.len(),
        Obj::Storage { kind, key, .. } => kind.len() + key.len(),
        Obj::Tensor(t) => {
            t.storage_kind.len()
                + t.storage_key.len()
                + t.dtype.as_ref().map_or(0, String::len)
                + 8 * (t.size.len() + t.stride.len())
        }
        Obj::Instance { class, .. } => class.len(),
        Obj::None | Obj::Bool(_) | Obj::Int(_) | Obj::BigInt | Obj::Float(_) | Obj::Bytes(_) => 0,
    }
}

type R<T> = Result<T, PickleError>;

impl Vm<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(PickleError {
            offset: self.op_at,
            msg: msg.into(),
        })
    }

    // ---- input ----------------------------------------------------------------------------

    fn take(&mut self, n: usize) -> R<&[u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => self.err(format!(
                "unexpected end of pickle: needs {n} more bytes, {} left",
                self.data.len() - self.pos
            )),
        }
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len_checked(&self, n: u64) -> R<usize> {
        if n > MAX_STR as u64 {
            return self.err(format!(
                "string of {n} bytes exceeds the {MAX_STR}-byte limit"
            ));
        }
        Ok(n as usize)
    }
    fn utf8(&mut self, n: usize) -> R<String> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }
    fn line(&mut self) -> R<String> {
        let rest = &self.data[self.pos..];
        let limit = rest.len().min(256);
        let Some(nl) = rest[..limit].iter().position(|&b| b == b'\n') else {
            return self.err("GLOBAL name is not a newline-terminated line of at most 256 bytes");
        };
        let s = self.utf8(nl)?;
        self.pos += 1;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return self.err(format!("invalid GLOBAL name {s:?}"));
        }
        Ok(s)
    }

    // ---- arena and stack -----------------------------------------------------------------

    /// Charges `n` bytes against [`MAX_VALUE_BYTES`].
    fn charge(&mut self, n: usize) -> R<()> {
        match self.value_bytes.checked_add(n) {
            Some(total) if total <= MAX_VALUE_BYTES => {
                self.value_bytes = total;
                Ok(())
            }
            _ => self.err(format!(
                "values would take more than {MAX_VALUE_BYTES} bytes of memory"
            )),
        }
    }

    fn alloc(&mut self, obj: Obj, depth: u16) -> R<Id> {
        if self.objs.len() >= MAX_OBJECTS {
            return self.err(format!("more than {MAX_OBJECTS} objects"));
        }
        self.charge(std::mem::size_of::<Obj>() + 2 + heap_bytes(&obj))?;
        if depth > MAX_DEPTH {
            return self.err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        self.objs.push(obj);
        self.depth.push(depth);
        Ok(self.objs.len() - 1)
    }
    fn push_id(&mut self, id: Id) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("stack deeper than {MAX_STACK} entries"));
        }
        self.stack.push(id);
        Ok(())
    }
    fn push(&mut self, obj: Obj) -> R<()> {
        let id = self.alloc(obj, 0)?;
        self.push_id(id)
    }
    fn push_container(&mut self, obj: Obj, items: &[Id]) -> R<()> {
        let depth = self.depth_of(items)?;
        let id = self.alloc(obj, depth)?;
        self.push_id(id)
    }
    fn depth_of(&self, items: &[Id]) -> R<u16> {
        let d = items.iter().map(|&i| self.depth[i]).max().unwrap_or(0);
        Ok(d.saturating_add(1))
    }
    fn pop(&mut self) -> R<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        Ok(self.stack.pop().unwrap_or_default())
    }
    fn top(&self) -> R<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        Ok(self.stack[self.stack.len() - 1])
    }
    fn pop_mark(&mut self) -> R<Vec<Id>> {
        let Some(m) = self.marks.pop() else {
            return self.err("no MARK to pop to");
        };
        Ok(self.stack.split_off(m))
    }
    fn memo_put(&mut self, idx: u32) -> R<()> {
        let top = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
            return self.err(format!("more than {MAX_MEMO} memo entries"));
        }
        self.memo.insert(idx, top);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> R<()> {
        match self.memo.get(&idx) {
            Some(&id) => self.push_id(id),
            None => self.err(format!("memo entry {idx} is not defined")),
        }
    }

    /// Adds `items` to the container at the top of the stack and updates its depth.
    fn extend_top(&mut self, items: Vec<Id>, what: &str) -> R<()> {
        let target = self.top()?;
        let d = self.depth_of(&items)?.max(self.depth[target]);
        if d > MAX_DEPTH {
            return self.err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth[target] = d;
        if matches!(self.objs[target], Obj::List(_) | Obj::Dict(_)) {
            self.charge(items.len() * std::mem::size_of::<Id>())?;
        }
        match &mut self.objs[target] {
            Obj::List(v) => v.extend(items),
            Obj::Dict(v) => {
                if !items.len().is_multiple_of(2) {
                    return self.err(format!("{what}: odd number of items for a dict"));
                }
                v.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
            }
            // list/dict subclasses pickled as opaque objects: their items are not needed
            Obj::Instance { .. } => {}
            other => {
                let t = other.type_name();
                return self.err(format!("{what} on a {t}"));
            }
        }
        Ok(())
    }

    // ---- values used by the interpreted calls ---------------------------------------------

    fn int_arg(&self, id: Id, what: &str) -> R<u64> {
        match self.objs[id] {
            Obj::Int(v) if v >= 0 => Ok(v as u64),
            Obj::Bool(b) => Ok(b as u64),
            Obj::Int(v) => self.err(format!("{what} must be a non-negative int, found {v}")),
            ref o => self.err(format!(
                "{what} must be a non-negative int, found a {}",
                o.type_name()
            )),
        }
    }
    fn int_seq(&self, id: Id, what: &str) -> R<Vec<u64>> {
        let items = match &self.objs[id] {
            Obj::Tuple(v) | Obj::List(v) => v,
            o => return self.err(format!("{what} must be a tuple, found {}", o.type_name())),
        };
        if items.len() > MAX_RANK {
            return self.err(format!("tensor rank {} exceeds {MAX_RANK}", items.len()));
        }
        items.iter().map(|&i| self.int_arg(i, what)).collect()
    }
    fn tuple_items(&self, id: Id) -> Option<&[Id]> {
        match &self.objs[id] {
            Obj::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// Applies `callable(*args)` for the whitelisted callables; anything else is opaque.
    fn reduce(&mut self, callable: Id, args: Id, nesting: u8) -> R<Id> {
        let (module, name) = match &self.objs[callable] {
            Obj::Global { module, name } => (module.clone(), name.clone()),
            o => {
                let class = format!("<call of {}>", o.type_name());
                return self.alloc(Obj::Instance { class, state: None }, 0);
            }
        };
        let a: Vec<Id> = self
            .tuple_items(args)
            .map(<[Id]>::to_vec)
            .unwrap_or_default();
        if !matches!(self.objs[args], Obj::Tuple(_)) {
            return self.err(format!("arguments of {module}.{name} are not a tuple"));
        }
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") => {
                let mut pairs = Vec::new();
                if let Some(&seq) = a.first() {
                    let items = match &self.objs[seq] {
                        Obj::List(v) | Obj::Tuple(v) => v.clone(),
                        o => return self.err(format!("OrderedDict({})", o.type_name())),
                    };
                    for it in items {
                        match self.tuple_items(it) {
                            Some(&[k, v]) => pairs.push((k, v)),
                            _ => return self.err("OrderedDict items must be (key, value) pairs"),
                        }
                    }
                }
                let flat: Vec<Id> = pairs.iter().flat_map(|&(k, v)| [k, v]).collect();
                let depth = self.depth_of(&flat)?;
                self.alloc(Obj::Dict(pairs), depth)
            }
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
                let need = if name == "_rebuild_tensor_v3" { 7 } else { 4 };
                if a.len() < need {
                    return self.err(format!(
                        "{name} takes at least {need} arguments, got {}",
                        a.len()
                    ));
                }
                let (kind, key, numel) = match &self.objs[a[0]] {
                    Obj::Storage { kind, key, numel } => (kind.clone(), key.clone(), *numel),
                    o => {
                        return self.err(format!(
                            "{name}: first argument is a {}, not a storage",
                            o.type_name()
                        ))
                    }
                };
                let offset = self.int_arg(a[1], "storage offset")?;
                let size = self.int_seq(a[2], "tensor size")?;
                let stride = self.int_seq(a[3], "tensor stride")?;
                if size.len() != stride.len() {
                    return self.err(format!(
                        "{name}: size has {} dims, stride {}",
                        size.len(),
                        stride.len()
                    ));
                }
                let dtype = if name == "_rebuild_tensor_v3" {
                    match &self.objs[a[6]] {
                        Obj::Global { module, name } if module == "torch" => Some(name.clone()),
                        o => {
                            return self.err(format!(
                                "{name}: dtype is a {}, not torch.<dtype>",
                                o.type_name()
                            ))
                        }
                    }
                } else {
                    None
                };
                let t = TensorRef {
                    storage_kind: kind,
                    storage_key: key,
                    storage_numel: numel,
                    dtype,
                    offset,
                    size,
                    stride,
                };
                self.alloc(Obj::Tensor(t), 0)
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match a.first() {
                    Some(&t) if matches!(self.objs[t], Obj::Tensor(_)) => Ok(t),
                    _ => self.err(format!("{name}: first argument is not a tensor")),
                }
            }
            ("torch._tensor", "_rebuild_from_type_v2") if nesting == 0 => {
                if a.len() < 3 {
                    return self.err("_rebuild_from_type_v2 takes 4 arguments");
                }
                self.reduce(a[0], a[2], 1)
            }
            ("torch", "Size") => match a.first() {
                Some(&t) if matches!(self.objs[t], Obj::Tuple(_)) => Ok(t),
                _ => self.err("torch.Size expects a tuple"),
            },
            _ => self.alloc(
                Obj::Instance {
                    class: format!("{module}.{name}"),
                    state: None,
                },
                0,
            ),
        }
    }

    /// torch's persistent id: `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&mut self, pid: Id) -> R<Id> {
        let Some(items) = self.tuple_items(pid).map(<[Id]>::to_vec) else {
            return self.err("persistent id is not a tuple");
        };
        if items.len() != 5 || self.objs[items[0]] != Obj::Str("storage".into()) {
            return self.err("persistent id is not ('storage', type, key, location, numel)");
        }
        let kind = match &self.objs[items[1]] {
            Obj::Global { module, name }
                if (module == "torch" || module == "torch.storage")
                    && name.ends_with("Storage") =>
            {
                name.clone()
            }
            o => {
                return self.err(format!(
                    "persistent id names {}, not a torch storage type",
                    o.type_name()
                ))
            }
        };
        let key = match &self.objs[items[2]] {
            Obj::Str(s) => s.clone(),
            Obj::Int(i) => i.to_string(),
            o => return self.err(format!("storage key is a {}", o.type_name())),
        };
        let numel = self.int_arg(items[4], "storage size")?;
        self.alloc(Obj::Storage { kind, key, numel }, 0)
    }

    // ---- the machine ----------------------------------------------------------------------

    fn run(&mut self) -> R<Id> {
        loop {
            self.op_at = self.pos;
            let op = match self.u8() {
                Ok(op) => op,
                Err(_) => return self.err("pickle ends without STOP"),
            };
            match op {
                0x80 => {
                    // PROTO
                    let v = self.u8()?;
                    if !(2..=5).contains(&v) {
                        return self.err(format!("unsupported pickle protocol {v}"));
                    }
                }
                0x95 => {
                    // FRAME: framing is only a hint for buffered readers
                    self.u64()?;
                }
                b'.' => {
                    // STOP
                    let id = self.pop()?;
                    return Ok(id);
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return self.err(format!("more than {MAX_MARKS} nested MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.push_id(t)?;
                }
                b'N' => self.push(Obj::None)?,
                0x88 => self.push(Obj::Bool(true))?,
                0x89 => self.push(Obj::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Obj::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Obj::Int(v as i64))?
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement
                    let n = if op == 0x8a {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let n = self.len_checked(n)?;
                    let b = self.take(n)?;
                    let obj = if n == 0 {
                        Obj::Int(0)
                    } else if n <= 8 {
                        let fill = if b[n - 1] & 0x80 != 0 { 0xff } else { 0 };
                        let mut a = [fill; 8];
                        a[..n].copy_from_slice(b);
                        Obj::Int(i64::from_le_bytes(a))
                    } else {
                        Obj::BigInt
                    };
                    self.push(obj)?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Obj::Float(f64::from_be_bytes(a)))?
                }
                b'X' | 0x8c | 0x8d => {
                    // BINUNICODE / SHORT_BINUNICODE / BINUNICODE8
                    let n = match op {
                        b'X' => self.u32()? as u64,
                        0x8c => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_checked(n)?;
                    let s = self.utf8(n)?;
                    self.push(Obj::Str(s))?
                }
                b'B' | b'C' | 0x8e | b'T' | b'U' => {
                    // BINBYTES / SHORT_BINBYTES / BINBYTES8 / BINSTRING / SHORT_BINSTRING
                    let n = match op {
                        b'B' | b'T' => self.u32()? as u64,
                        b'C' | b'U' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_checked(n)?;
                    self.take(n)?;
                    self.push(Obj::Bytes(n))?
                }
                b'}' => self.push(Obj::Dict(Vec::new()))?,
                b']' | 0x8f => self.push(Obj::List(Vec::new()))?,
                b')' => self.push(Obj::Tuple(Vec::new()))?,
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_container(Obj::Tuple(items.clone()), &items)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_container(Obj::Tuple(items.clone()), &items)?
                }
                b'l' | 0x91 => {
                    // LIST / FROZENSET
                    let items = self.pop_mark()?;
                    self.push_container(Obj::List(items.clone()), &items)?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.err("DICT: odd number of items");
                    }
                    let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    self.push_container(Obj::Dict(pairs), &items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], "APPEND")?
                }
                b'e' | 0x90 => {
                    // APPENDS / ADDITEMS
                    let items = self.pop_mark()?;
                    self.extend_top(items, "APPENDS")?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], "SETITEM")?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, "SETITEMS")?
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    // MEMOIZE
                    let i = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global { module, name })?
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.objs[module], &self.objs[name]) {
                        (Obj::Str(m), Obj::Str(n)) => {
                            let g = Obj::Global {
                                module: m.clone(),
                                name: n.clone(),
                            };
                            self.push(g)?
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let id = self.reduce(callable, args, 0)?;
                    self.push_id(id)?
                }
                0x81 | 0x92 => {
                    // NEWOBJ / NEWOBJ_EX: cls.__new__(cls, *args[, **kwargs]) → opaque instance
                    if op == 0x92 {
                        self.pop()?;
                    }
                    self.pop()?;
                    let cls = self.pop()?;
                    let class = match &self.objs[cls] {
                        Obj::Global { module, name } => format!("{module}.{name}"),
                        o => o.type_name(),
                    };
                    self.push(Obj::Instance { class, state: None })?
                }
                b'b' => {
                    // BUILD: only opaque instances keep their state
                    let state = self.pop()?;
                    let target = self.top()?;
                    let d = self.depth[state].saturating_add(1).max(self.depth[target]);
                    if let Obj::Instance { state: s, .. } = &mut self.objs[target] {
                        *s = Some(state);
                        if d > MAX_DEPTH {
                            return self
                                .err(format!("containers nested deeper than {MAX_DEPTH} levels"));
                        }
                        self.depth[target] = d;
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let id = self.persistent_load(pid)?;
                    self.push_id(id)?
                }
                _ => {
                    return self.err(format!(
                        "unsupported pickle opcode 0x{op:02x} (not one torch.save emits)"
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bytes: &[u8]) -> Result<Pickle, PickleError> {
        parse(bytes)
    }

    #[test]
    fn scalars_and_containers() {
        // {'a': 1, 'b': [True, None, 2.5], 'c': (-2, 70000)}
        let mut b = vec![0x80, 2, b'}', b'q', 0, b'('];
        b.extend([b'X', 1, 0, 0, 0, b'a', b'K', 1]);
        b.extend([b'X', 1, 0, 0, 0, b'b', b']', b'(', 0x88, b'N', b'G']);
        b.extend(2.5f64.to_be_bytes());
        b.extend([b'e', b'X', 1, 0, 0, 0, b'c', b'J']);
        b.extend((-2i32).to_le_bytes());
        b.extend([0x8a, 3, 0x70, 0x11, 0x01, 0x86, b'u', b'.']);
        let pk = p(&b).unwrap();
        let a = pk.dict_get(pk.root, "a").unwrap();
        assert_eq!(pk.get(a), &Obj::Int(1));
        let l = pk.dict_get(pk.root, "b").unwrap();
        let Obj::List(items) = pk.get(l) else {
            panic!()
        };
        assert_eq!(pk.get(items[2]), &Obj::Float(2.5));
        let c = pk.dict_get(pk.root, "c").unwrap();
        let Obj::Tuple(items) = pk.get(c) else {
            panic!()
        };
        assert_eq!(pk.get(items[0]), &Obj::Int(-2));
        assert_eq!(pk.get(items[1]), &Obj::Int(70000));
    }

    #[test]
    fn globals_are_never_called() {
        // os.system('x') → an opaque instance
        let b = b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R.";
        let pk = p(b).unwrap();
        assert_eq!(
            pk.get(pk.root),
            &Obj::Instance {
                class: "os.system".into(),
                state: None
            }
        );
    }

    #[test]
    fn namespace_keeps_state() {
        let b = b"\x80\x02cargparse\nNamespace\nq\x00)\x81}(X\x0a\x00\x00\x00input_sizeK\x08ub.";
        let pk = p(b).unwrap();
        let Obj::Instance {
            class,
            state: Some(s),
        } = pk.get(pk.root)
        else {
            panic!()
        };
        assert_eq!(class, "argparse.Namespace");
        assert_eq!(pk.get(pk.dict_get(*s, "input_size").unwrap()), &Obj::Int(8));
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "without STOP"),
            (vec![0x80, 2], "without STOP"),
            (vec![0x80, 9, b'.'], "protocol"),
            (vec![0x80, 2, b'.'], "underflow"),
            (vec![0x80, 2, b'h', 5, b'.'], "memo entry 5"),
            (vec![0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f, b'.'], "limit"),
            (vec![0x80, 2, b'X', 9, 0, 0, 0, b'a'], "end of pickle"),
            (vec![0x80, 2, b'i', b'.'], "opcode 0x69"),
            (vec![0x80, 2, b'N', b'N', b'a', b'.'], "APPEND on a None"),
            (vec![0x80, 2, b'c', b'o', b's', b'.'], "GLOBAL"),
            (vec![0x80, 2, b'N', b'Q', b'.'], "persistent id"),
            (vec![0x80, 2, b'e', b'.'], "MARK"),
        ];
        for (bytes, want) in cases {
            let e = p(&bytes).unwrap_err();
            assert!(e.msg.contains(want), "{bytes:?}: {e:?}");
        }
    }

    #[test]
    fn deep_nesting_is_capped() {
        let mut b = vec![0x80, 2];
        b.extend(std::iter::repeat_n(b']', 200));
        b.extend(std::iter::repeat_n(b'a', 199));
        b.push(b'.');
        // appending lists into lists only measures each append: build a tuple chain instead
        let mut t = vec![0x80, 2, b'N'];
        t.extend(std::iter::repeat_n(0x85, 100));
        t.push(b'.');
        assert!(p(&t).unwrap_err().msg.contains("nested"));
        let mut m = vec![0x80, 2];
        m.extend(std::iter::repeat_n(b'(', 300));
        assert!(p(&m).unwrap_err().msg.contains("MARK"));
        // list-in-list nesting through APPEND
        assert!(p(&b).unwrap_err().msg.contains("nested"));
    }

    #[test]
    fn memo_references_do_not_copy() {
        // l = []; l2 = [l, l]; ... 40 doublings would be 2^40 copies if GET copied
        let mut b = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            b.extend([b']', b'(', b'h', 0, b'h', 0, b'e', b'q', 0]);
        }
        b.push(b'.');
        let pk = p(&b).unwrap();
        assert!(pk.objs.len() < 100);
    }
}
