//! Resumable runs: the state [`super::quantize_resumable`] saves after every block, and reads
//! back to continue after the last finished block (docs/QUANTIZATION.md, "Resuming a pack").
//!
//! The state holds what the rest of the run needs: the residual stream of every calibration
//! image at the next block's input, the output tensors of the finished blocks (six quantized
//! layers and two Δ biases each), their report entries and the bit counts. No random state
//! crosses blocks (every block seeds its generators from the run seed and its index), so there
//! is none to save.
//!
//! File layout, little-endian: magic `VIMVQST\0`, `u32` format version, the fingerprint (what
//! the run was started with), the payload, then a CRC-32 of everything before it. A file that
//! fails any check gets a one-line error; every length is checked against the bytes behind it
//! before anything is allocated for it, so memory stays bounded by the file's size.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vimvq_rt::format::{crc32, to_bytes, PackedModel, TensorData};

use super::error::QuantError;
use super::options::QuantOptions;
use super::report::{BlockStat, LayerStat};
use super::roles::{BIAS_ROLES, QUANT_ROLES};
use super::tensors::find;

const MAGIC: &[u8; 8] = b"VIMVQST\0";
const VERSION: u32 = 1;
/// Output tensors saved per block: the quantized layers, then the Δ biases.
const PER_BLOCK: usize = QUANT_ROLES.len() + BIAS_ROLES.len();

/// Where a resumable run keeps its state, and the identity of its calibration images.
#[derive(Clone, Debug)]
pub struct StateFile {
    /// The state file (`vimvq pack` uses `OUT.vimvq.resume`).
    pub path: PathBuf,
    /// Names of the calibration images in the order used (file paths): part of the
    /// fingerprint, with the images' content.
    pub image_names: Vec<String>,
}

impl StateFile {
    /// The state file of output `out`: `out` with `.resume` appended.
    pub fn path_for(out: &Path) -> PathBuf {
        let mut p = out.as_os_str().to_owned();
        p.push(".resume");
        PathBuf::from(p)
    }
}

/// What a run was started with. Two runs may share a state only if all of it is equal.
#[derive(Debug, PartialEq)]
pub(super) struct Fingerprint {
    /// The program version.
    version: String,
    /// Hash of the f32 model's canonical `.vimvq` bytes (checkpoint and model options).
    model: u64,
    /// Number of calibration images.
    images: u64,
    /// Hash of the image names in order.
    names: u64,
    /// Hash of the preprocessed images.
    content: u64,
    /// Every result-affecting option, by its CLI name.
    settings: Vec<(String, String)>,
    /// Hash of all options (catches library fields without a CLI name).
    options: u64,
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The options that change the result, under their CLI names (`--threads` does not).
fn settings(o: &QuantOptions) -> Vec<(String, String)> {
    let v = &o.vq;
    let s = |name: &str, value: String| (name.to_owned(), value);
    vec![
        s("method", o.method.name().into()),
        s("objective", o.objective.name().into()),
        s("k", v.k.to_string()),
        s("d", v.d.to_string()),
        s("rtn bits", o.rtn_bits.to_string()),
        s(
            "codebook",
            if o.codebook_f16 { "f16" } else { "f32" }.into(),
        ),
        s("steps", v.steps.to_string()),
        s("batch", o.batch.to_string()),
        s("hull", v.hull.to_string()),
        s("hull-every", v.hull_every.to_string()),
        s("no-hull-update", (!o.hull_update).to_string()),
        s("no-ivq", (!o.ivq).to_string()),
        s("lambda-r", format!("{:?}", v.lambda_r)),
        s("confirm-threshold", format!("{:?}", v.confirm_threshold)),
        s("lr-logits", format!("{:?}", v.lr_logits)),
        s("lr-codebook", format!("{:?}", v.lr_codebook)),
        s("lr-bias", format!("{:?}", v.lr_bias)),
        s("kmeans-iters", v.kmeans_iters.to_string()),
        s("seed", v.seed.to_string()),
    ]
}

impl Fingerprint {
    pub(super) fn new(
        model: &PackedModel,
        calib: &[Vec<f32>],
        names: &[String],
        opts: &QuantOptions,
    ) -> Result<Self, QuantError> {
        let bytes = to_bytes(model).map_err(|e| QuantError::Model(e.to_string()))?;
        let mut h = FNV_OFFSET;
        for n in names {
            h = fnv1a(n.bytes().chain([0]), h);
        }
        let mut c = FNV_OFFSET;
        for img in calib {
            c = fnv1a(img.iter().flat_map(|v| v.to_le_bytes()), c);
        }
        let mut all = opts.clone();
        all.threads = 0;
        Ok(Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            model: fnv1a(bytes, FNV_OFFSET),
            images: calib.len() as u64,
            names: h,
            content: c,
            settings: settings(opts),
            options: fnv1a(format!("{all:?}").into_bytes(), FNV_OFFSET),
        })
    }

    /// Why a state saved with `self` cannot continue a run started with `now`, or `None`.
    fn mismatch(&self, now: &Self) -> Option<String> {
        if self.version != now.version {
            return Some(format!(
                "it was written by vimvq {} (this is {})",
                self.version, now.version
            ));
        }
        let mut diff = String::new();
        for ((name, a), (_, b)) in self.settings.iter().zip(&now.settings) {
            if a != b {
                let sep = if diff.is_empty() { "" } else { ", " };
                let _ = write!(diff, "{sep}{name} {a} then, {b} now");
            }
        }
        if !diff.is_empty() || self.settings.len() != now.settings.len() {
            return Some(format!("the options differ ({diff})"));
        }
        if self.options != now.options {
            return Some("the quantization options differ".into());
        }
        if self.model != now.model {
            return Some("the checkpoint or the model options differ".into());
        }
        if self.images != now.images {
            return Some(format!(
                "it used {} calibration images, this run {}",
                self.images, now.images
            ));
        }
        if self.names != now.names {
            return Some("the calibration images are other files".into());
        }
        if self.content != now.content {
            return Some("the calibration images' content differs".into());
        }
        None
    }

    fn encode(&self, w: &mut Vec<u8>) {
        put_str(w, &self.version);
        for v in [self.model, self.images, self.names, self.content] {
            put_u64(w, v);
        }
        put_u64(w, self.settings.len() as u64);
        for (k, v) in &self.settings {
            put_str(w, k);
            put_str(w, v);
        }
        put_u64(w, self.options);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, String> {
        let version = r.string()?;
        let (model, images, names, content) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let n = r.len(2 * 8)?;
        let mut settings = Vec::with_capacity(n);
        for _ in 0..n {
            settings.push((r.string()?, r.string()?));
        }
        Ok(Self {
            version,
            model,
            images,
            names,
            content,
            settings,
            options: r.u64()?,
        })
    }
}

/// The progress of a run after `blocks` finished blocks.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Residual stream of every image at the input of block `blocks`, `(images, L, D)`.
    pub residual: Vec<f32>,
    /// Output tensors of the finished blocks: per block, [`QUANT_ROLES`] then the Δ biases of
    /// [`BIAS_ROLES`].
    pub tensors: Vec<TensorData>,
    /// Report entries of the finished layers and blocks.
    pub layers: Vec<LayerStat>,
    /// See `layers`.
    pub blocks: Vec<BlockStat>,
    /// Index bits, codebook bits (f32), codebook bits (f16), weights of the finished layers.
    pub bits: [f64; 3],
    /// See `bits`.
    pub weights: u64,
}

/// What [`save`] writes: a [`State`] by reference.
pub(super) struct Snapshot<'a> {
    /// See [`State::residual`].
    pub residual: &'a [f32],
    /// See [`State::tensors`].
    pub tensors: Vec<&'a TensorData>,
    /// See [`State::layers`].
    pub layers: &'a [LayerStat],
    /// See [`State::blocks`].
    pub blocks: &'a [BlockStat],
    /// See [`State::bits`].
    pub bits: [f64; 3],
    /// See [`State::weights`].
    pub weights: u64,
}

/// Saves `state` atomically (temporary file + rename, `crate::output`).
pub(super) fn save(
    file: &StateFile,
    fp: &Fingerprint,
    state: &Snapshot<'_>,
) -> Result<(), QuantError> {
    let mut w = Vec::new();
    w.extend_from_slice(MAGIC);
    put_u32(&mut w, VERSION);
    fp.encode(&mut w);
    put_u64(&mut w, state.blocks.len() as u64);
    put_f32s(&mut w, state.residual);
    put_u64(&mut w, state.tensors.len() as u64);
    for t in &state.tensors {
        match *t {
            TensorData::F32(v) => {
                w.push(0);
                put_f32s(&mut w, v);
            }
            TensorData::Vq {
                codebook,
                k,
                d,
                indices,
                codebook_f16,
            } => {
                w.push(1 + u8::from(*codebook_f16));
                put_u64(&mut w, *k as u64);
                put_u64(&mut w, *d as u64);
                put_f32s(&mut w, codebook);
                put_u64(&mut w, indices.len() as u64);
                for &i in indices {
                    put_u32(&mut w, i);
                }
            }
        }
    }
    put_u64(&mut w, state.layers.len() as u64);
    for l in state.layers {
        put_str(&mut w, &l.name);
        put_u64(&mut w, l.rows as u64);
        put_u64(&mut w, l.cols as u64);
        put_f64(&mut w, l.rel_weight_error);
        put_f64(&mut w, l.rel_output_error);
    }
    for b in state.blocks {
        put_u64(&mut w, b.block as u64);
        put_f64(&mut w, b.loss);
        for o in [b.kmeans_loss, b.train_loss_first, b.train_loss_last] {
            w.push(u8::from(o.is_some()));
            put_f64(&mut w, o.unwrap_or(0.0));
        }
        for h in [&b.loss_history, &b.confirmed_history] {
            put_u64(&mut w, h.len() as u64);
            for &v in h.iter() {
                put_f64(&mut w, v);
            }
        }
        put_u64(&mut w, b.replaced as u64);
        put_u64(&mut w, b.steps as u64);
        put_f64(&mut w, b.train_seconds);
        put_f64(&mut w, b.images_steps_per_second);
        put_f64(&mut w, b.seconds);
    }
    for v in state.bits {
        put_f64(&mut w, v);
    }
    put_u64(&mut w, state.weights);
    let crc = crc32(&w);
    put_u32(&mut w, crc);
    crate::output::write_atomic(&file.path, &w).map_err(|e| {
        QuantError::Resume(format!(
            "{}: cannot write the pack state: {e}",
            file.path.display()
        ))
    })
}

/// Reads the state of `file` if it exists. A state from another run (`fp` differs), or one
/// that is corrupt or does not fit `model` and `images`, is an error telling the user to
/// delete the file.
pub(super) fn load(
    file: &StateFile,
    fp: &Fingerprint,
    model: &PackedModel,
    images: usize,
) -> Result<Option<State>, QuantError> {
    let p = &file.path;
    let fail = |why: String| {
        QuantError::Resume(format!(
            "{}: {why}; delete it to start the pack over",
            p.display()
        ))
    };
    let md = match std::fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read the saved pack state: {e}"))),
    };
    if !md.is_file() {
        return Err(QuantError::Resume(format!(
            "{}: the pack state path is not a regular file; refusing to use it",
            p.display()
        )));
    }
    let bytes =
        std::fs::read(p).map_err(|e| fail(format!("cannot read the saved pack state: {e}")))?;
    let corrupt = |why: &str| fail(format!("the saved pack state is corrupt ({why})"));
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a vimvq pack state"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let mut r = Reader {
        b: &body[MAGIC.len()..],
    };
    let version = r.u32().map_err(|e| corrupt(&e))?;
    if version != VERSION {
        return Err(fail(format!(
            "the saved pack state has format version {version}, this vimvq reads {VERSION}"
        )));
    }
    if crc32(body).to_le_bytes() != tail {
        return Err(corrupt("checksum mismatch: truncated or damaged"));
    }
    let saved = Fingerprint::decode(&mut r).map_err(|e| corrupt(&e))?;
    if let Some(why) = saved.mismatch(fp) {
        return Err(fail(format!(
            "the saved pack state is from another run: {why}"
        )));
    }
    let state = decode_state(&mut r, model, images).map_err(|e| corrupt(&e))?;
    if !r.b.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Some(state))
}

/// The payload after the fingerprint, checked against the model it continues.
fn decode_state(r: &mut Reader<'_>, model: &PackedModel, images: usize) -> Result<State, String> {
    let cfg = model.config;
    let blocks = usize::try_from(r.u64()?).map_err(|_| "block count")?;
    if blocks > cfg.depth {
        return Err(format!(
            "{blocks} blocks saved, the model has {}",
            cfg.depth
        ));
    }
    let residual = r.f32s()?;
    if residual.len() != images * cfg.seq_len() * cfg.embed_dim {
        return Err("residual stream of the wrong size".into());
    }
    if residual.iter().any(|v| !v.is_finite()) {
        return Err("non-finite residual stream".into());
    }
    let n = r.len(1)?;
    if n != blocks * PER_BLOCK {
        return Err(format!("{n} tensors for {blocks} blocks"));
    }
    let roles = QUANT_ROLES.iter().chain(BIAS_ROLES.iter().map(|(_, b)| b));
    let mut tensors = Vec::with_capacity(n);
    for (i, &role) in (0..n).zip(roles.cycle()) {
        let layer = i / PER_BLOCK;
        let t = find(model, role, layer)
            .ok_or_else(|| format!("the model has no tensor {role:?} of block {layer}"))?;
        let bad = |what: &str| format!("tensor {role:?} of block {layer}: {what}");
        let data = match r.u8()? {
            0 => {
                let v = r.f32s()?;
                if v.len() != t.rows * t.cols || v.iter().any(|x| !x.is_finite()) {
                    return Err(bad("wrong size or non-finite values"));
                }
                TensorData::F32(v)
            }
            tag @ (1 | 2) => {
                let (k, d) = (r.u64()?, r.u64()?);
                if !(1..=65536).contains(&k) || !(1..=16).contains(&d) {
                    return Err(bad("codebook shape out of range"));
                }
                let (k, d) = (k as usize, d as usize);
                let codebook = r.f32s()?;
                if codebook.len() != k * d || codebook.iter().any(|x| !x.is_finite()) {
                    return Err(bad("wrong codebook size or non-finite values"));
                }
                let count = r.len(4)?;
                if count != t.rows * t.cols.div_ceil(d) {
                    return Err(bad("wrong index count"));
                }
                let mut indices = Vec::with_capacity(count);
                for _ in 0..count {
                    let i = r.u32()?;
                    if i as usize >= k {
                        return Err(bad("index out of range"));
                    }
                    indices.push(i);
                }
                TensorData::Vq {
                    codebook,
                    k,
                    d,
                    indices,
                    codebook_f16: tag == 2,
                }
            }
            _ => return Err(bad("unknown storage")),
        };
        tensors.push(data);
    }
    let n = r.len(8)?;
    if n != blocks * QUANT_ROLES.len() {
        return Err(format!("{n} layer entries for {blocks} blocks"));
    }
    let mut layers = Vec::with_capacity(n);
    for _ in 0..n {
        layers.push(LayerStat {
            name: r.string()?,
            rows: r.usize()?,
            cols: r.usize()?,
            rel_weight_error: r.f64()?,
            rel_output_error: r.f64()?,
        });
    }
    let mut stats = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let block = r.usize()?;
        let loss = r.f64()?;
        let mut opt = [None; 3];
        for o in &mut opt {
            let some = r.u8()? != 0;
            let v = r.f64()?;
            *o = some.then_some(v);
        }
        let mut hist = [Vec::new(), Vec::new()];
        for h in &mut hist {
            let n = r.len(8)?;
            h.reserve_exact(n);
            for _ in 0..n {
                h.push(r.f64()?);
            }
        }
        let [loss_history, confirmed_history] = hist;
        stats.push(BlockStat {
            block,
            loss,
            kmeans_loss: opt[0],
            train_loss_first: opt[1],
            train_loss_last: opt[2],
            loss_history,
            confirmed_history,
            replaced: r.usize()?,
            steps: r.usize()?,
            train_seconds: r.f64()?,
            images_steps_per_second: r.f64()?,
            seconds: r.f64()?,
        });
    }
    let bits = [r.f64()?, r.f64()?, r.f64()?];
    let weights = r.u64()?;
    Ok(State {
        residual,
        tensors,
        layers,
        blocks: stats,
        bits,
        weights,
    })
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_f64(w: &mut Vec<u8>, v: f64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u64(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

fn put_f32s(w: &mut Vec<u8>, v: &[f32]) {
    put_u64(w, v.len() as u64);
    w.reserve(4 * v.len());
    for x in v {
        w.extend_from_slice(&x.to_le_bytes());
    }
}

/// A bounds-checked cursor: every read fails cleanly past the end.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.b.len() {
            return Err("truncated".into());
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn f64(&mut self) -> Result<f64, String> {
        self.array().map(f64::from_le_bytes)
    }

    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "value too large".to_string())
    }

    /// A count of items of at least `item` bytes each, checked against the bytes left.
    fn len(&mut self, item: usize) -> Result<usize, String> {
        let n = self.usize()?;
        if n.checked_mul(item).is_none_or(|b| b > self.b.len()) {
            return Err("truncated (a length runs past the end)".into());
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "text is not UTF-8".to_string())
    }

    fn f32s(&mut self) -> Result<Vec<f32>, String> {
        let n = self.len(4)?;
        Ok(self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
