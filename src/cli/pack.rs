//! `vimvq pack CHECKPOINT -o OUT.vimvq --calib DIR`: checkpoint → vector-quantized `.vimvq`
//! (ViM-VQ or a baseline), calibrated on images preprocessed exactly as `run`/`eval` do.
//!
//! Calibration set: every image below DIR (an ImageFolder or a flat folder; jpg, jpeg, png, bmp,
//! webp), sorted by path, shuffled with `--seed`; the first `--calib-count` that decode are used
//! (an image that does not decode is skipped with a warning and counted in the report). Same
//! inputs and seed → byte-identical output, for any `--threads`. After every block the run's
//! state is saved to `OUT.vimvq.resume`; the same command started again continues from it
//! (docs/QUANTIZATION.md, "Resuming a pack").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use vimvq_pack::quantize::{
    quantize_resumable, Method, Objective, ProgressEvent, QuantError, QuantOptions, StateFile,
};
use vimvq_pack::rng::SplitMix64;
use vimvq_pack::vq::VqConfig;
use vimvq_pack::{import, output};
use vimvq_rt::context::{ContextError, FramePlan};
use vimvq_rt::format::{to_bytes, AlignedBytes, PackedModel};
use vimvq_rt::model::Model;

use super::{io_error, print_line, progress_allowed, threads_parser, ModelOptionArgs};
use crate::image_io;

/// `--method`: the library's [`Method`], spelled and described by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodArg(pub Method);

impl ValueEnum for MethodArg {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [MethodArg; Method::ALL.len()] = {
            let mut out = [MethodArg(Method::VimVq); Method::ALL.len()];
            let mut i = 0;
            while i < out.len() {
                out[i] = MethodArg(Method::ALL[i]);
                i += 1;
            }
            out
        };
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name()).help(self.0.summary()))
    }
}

/// `--objective`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectiveArg {
    /// Block outputs, backprop through the whole Mamba block (the paper's setting)
    Block,
    /// Per-layer Hessian-weighted output error (fast)
    Layer,
}

/// `--codebook`: how VQ codebooks are stored.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodebookArg {
    /// IEEE binary32
    F32,
    /// IEEE binary16: half the codebook bytes (each layer's codebook is rounded before the next
    /// block calibrates on it)
    F16,
}

/// Arguments of `vimvq pack`.
#[derive(Args, Debug)]
pub struct PackArgs {
    /// PyTorch checkpoint (.pth) or .safetensors, f32 weights
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Output model; written to a temporary file and renamed, so it is never left partial. The
    /// run's state is saved after every block to OUT.vimvq.resume, and the same command started
    /// again resumes from it (delete that file to start over)
    #[arg(short = 'o', long = "output", value_name = "OUT.vimvq")]
    pub output: PathBuf,
    /// Calibration images: an ImageFolder (DIR/<class>/<image>) or a flat folder
    #[arg(long, value_name = "DIR")]
    pub calib: PathBuf,
    /// Quantization method
    #[arg(long, value_enum, default_value_t = MethodArg(Method::VimVq))]
    pub method: MethodArg,
    /// Nominal bits per weight: 3 → k=64 d=2, 2 → k=256 d=4, 1 → k=256 d=8 [default: 2]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3), conflicts_with_all = ["k", "d"])]
    pub bits: Option<u32>,
    /// Codewords per layer codebook (with --d; 1..=65536)
    #[arg(long, value_name = "K", requires = "d", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub k: Option<u64>,
    /// Sub-vector length (with --k; 1..=16)
    #[arg(long, value_name = "D", requires = "k", value_parser = clap::value_parser!(u64).range(1..=16))]
    pub d: Option<u64>,
    /// Reconstruction objective of vimvq and vq4dit
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Block)]
    pub objective: ObjectiveArg,
    /// Calibration images to use
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub calib_count: u64,
    /// Optimiser steps per block (block objective) or per layer (layer objective)
    #[arg(long, value_name = "N", default_value_t = VqConfig::default().steps as u64, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub steps: u64,
    /// FCCO hull size n (candidate codewords per sub-vector)
    #[arg(long, value_name = "N", default_value_t = VqConfig::default().hull as u64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub hull: u64,
    /// Seed of k-means++, the calibration subset and the minibatches
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (results do not depend on it) [default: all cores]
    #[arg(long, value_name = "N", value_parser = threads_parser())]
    pub threads: Option<usize>,
    /// Write the JSON report (docs/QUANTIZATION.md) to this file
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Calibration images per optimiser step (block objective)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Weight λ_r of the ratio regulariser
    #[arg(long, value_name = "X", default_value_t = VqConfig::default().lambda_r)]
    pub lambda_r: f32,
    /// Confirmation threshold τ on the largest ratio (1 disables threshold confirmation)
    #[arg(long, value_name = "X", default_value_t = VqConfig::default().confirm_threshold)]
    pub confirm_threshold: f32,
    /// RMSprop learning rate of the logits
    #[arg(long, value_name = "X", default_value_t = VqConfig::default().lr_logits)]
    pub lr_logits: f32,
    /// RMSprop learning rate of the codebooks
    #[arg(long, value_name = "X", default_value_t = VqConfig::default().lr_codebook)]
    pub lr_codebook: f32,
    /// RMSprop learning rate of the Δ biases (block objective)
    #[arg(long, value_name = "X", default_value_t = VqConfig::default().lr_bias)]
    pub lr_bias: f32,
    /// Hull update period T_h in steps (0 = never) [default: 10 for sub-vectors of up to 4
    /// weights (--bits 3, 2), 0 from 8 (--bits 1)]
    #[arg(long, value_name = "N")]
    pub hull_every: Option<u64>,
    /// Lloyd iterations of the k-means initialisation
    #[arg(long, value_name = "N", default_value_t = VqConfig::default().kmeans_iters as u64)]
    pub kmeans_iters: u64,
    /// Storage type of the VQ codebooks
    #[arg(long, value_enum, default_value_t = CodebookArg::F32)]
    pub codebook: CodebookArg,
    /// Steps of global fine-tuning after the blocks: codebooks, norms and Δ biases trained end
    /// to end on KL(f32 ‖ quantized) with the assignments fixed (0 = off; ignored by rtn)
    #[arg(long, value_name = "N", default_value_t = QuantOptions::default().finetune_steps as u64)]
    pub finetune_steps: u64,
    /// RMSprop learning rate of the fine-tuning stage (codebooks, norms and Δ biases)
    #[arg(long, value_name = "X", default_value_t = QuantOptions::default().finetune_lr)]
    pub finetune_lr: f32,
    /// Ablation: never replace hull members
    #[arg(long)]
    pub no_hull_update: bool,
    /// Ablation: no incremental confirmation (every assignment soft until argmax at the end;
    /// the default from sub-vectors of 8 weights, --bits 1)
    #[arg(long, conflicts_with = "ivq")]
    pub no_ivq: bool,
    /// Incremental confirmation also from sub-vectors of 8 weights (--bits 1), where it is off
    /// by default
    #[arg(long)]
    pub ivq: bool,
    /// After packing, evaluate the written file and the f32 model on this ImageFolder with the
    /// runtime (what `vimvq eval --reference` runs) and add accuracy and fidelity to the report
    #[arg(long, value_name = "DIR")]
    pub eval: Option<PathBuf>,
    /// With --eval: use only N images, spread evenly over the sorted dataset
    #[arg(long, value_name = "N", requires = "eval", value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_limit: Option<u64>,
    /// With --eval: keep the f32 model's logits in this file and reuse them when the model and
    /// the image list match (saves half of the evaluation when packing one model many times)
    #[arg(long, value_name = "FILE", requires = "eval")]
    pub eval_f32_cache: Option<PathBuf>,
    /// State dict to read from a .pth dict (usually `model` or `model_ema`) [default: model]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub model: ModelOptionArgs,
}

impl PackArgs {
    /// The pipeline options.
    pub fn options(&self) -> Result<QuantOptions> {
        let usize_of = |v: u64, what: &str| {
            usize::try_from(v).map_err(|_| anyhow!("--{what} {v}: too large for this machine"))
        };
        let mut o = match (self.k, self.d) {
            (Some(k), Some(d)) => QuantOptions::with_kd(usize_of(k, "k")?, usize_of(d, "d")?),
            _ => QuantOptions::with_bits(self.bits.unwrap_or(2))?,
        };
        o.method = self.method.0;
        o.objective = match self.objective {
            ObjectiveArg::Block => Objective::Block,
            ObjectiveArg::Layer => Objective::Layer,
        };
        o.batch = usize_of(self.batch, "batch")?;
        o.hull_update = !self.no_hull_update;
        // Either switch overrides the width's default (they conflict with each other).
        o.ivq = (o.ivq || self.ivq) && !self.no_ivq;
        o.codebook_f16 = self.codebook == CodebookArg::F16;
        o.finetune_steps = usize_of(self.finetune_steps, "finetune-steps")?;
        o.finetune_lr = self.finetune_lr;
        o.threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let v = &mut o.vq;
        v.steps = usize_of(self.steps, "steps")?;
        v.hull = usize_of(self.hull, "hull")?;
        v.seed = self.seed;
        v.lambda_r = self.lambda_r;
        v.confirm_threshold = self.confirm_threshold;
        v.lr_logits = self.lr_logits;
        v.lr_codebook = self.lr_codebook;
        v.lr_bias = self.lr_bias;
        if let Some(n) = self.hull_every {
            v.hull_every = usize_of(n, "hull-every")?;
        }
        v.kmeans_iters = usize_of(self.kmeans_iters, "kmeans-iters")?;
        o.validate().map_err(|e| anyhow!("{e}"))?;
        Ok(o)
    }
}

/// Every image file below `dir` (recursively), sorted by path bytes.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let md = std::fs::metadata(dir).map_err(|e| io_error(dir, &e))?;
    if !md.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut out: Vec<PathBuf> = super::folder::image_files(dir)?
        .into_iter()
        .map(|f| f.path)
        .collect();
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    if out.is_empty() {
        bail!(
            "{}: no calibration images ({}) in the folder or its sub-folders",
            dir.display(),
            image_io::EXTENSIONS.join(", ")
        );
    }
    Ok(out)
}

/// The calibration images: decoded and preprocessed with the model's stored transform.
pub struct CalibSet {
    /// Normalised CHW images.
    pub images: Vec<Vec<f32>>,
    /// Their files, in the same order.
    pub files: Vec<PathBuf>,
    /// Files that did not decode or preprocess (warned about).
    pub skipped: Vec<(PathBuf, String)>,
    /// Image files found.
    pub found: usize,
}

/// Picks and preprocesses up to `count` images of `dir` for `model` (see the module docs).
pub fn load_calibration(
    dir: &Path,
    model: &PackedModel,
    count: usize,
    seed: u64,
    mut warn: impl FnMut(&Path, &str),
) -> Result<CalibSet> {
    let mut files = list_images(dir)?;
    let found = files.len();
    // Fisher–Yates with the run's seed: the subset covers every class of an ImageFolder.
    let mut rng = SplitMix64::new(seed ^ 0x0ca1_b1a7_e5e7_0000);
    for i in (1..files.len()).rev() {
        let j = rng.below(i + 1);
        files.swap(i, j);
    }
    let mut images = Vec::with_capacity(count.min(found));
    let mut used = Vec::with_capacity(count.min(found));
    let mut skipped = Vec::new();
    let mut scratch = Vec::new();
    for path in files {
        if images.len() >= count {
            break;
        }
        match preprocess_file(&path, model, &mut scratch) {
            Ok(x) => {
                images.push(x);
                used.push(path);
            }
            Err(e) => {
                let msg = super::one_line(&format!("{e:#}"));
                warn(&path, &msg);
                skipped.push((path, msg));
            }
        }
    }
    if images.is_empty() {
        bail!(
            "{}: none of the {found} calibration images could be decoded",
            dir.display()
        );
    }
    Ok(CalibSet {
        images,
        files: used,
        skipped,
        found,
    })
}

/// Decodes `path` and applies the model's stored preprocessing: the frame stage of the
/// inference context `vimvq run` uses.
fn preprocess_file(path: &Path, model: &PackedModel, scratch: &mut Vec<u8>) -> Result<Vec<f32>> {
    let img = image_io::decode(path)?;
    let what = |e: ContextError| anyhow!("{}: {e}", path.display());
    let c = &model.config;
    let fp = FramePlan::new(
        &model.preprocess,
        c,
        img.frame_format(),
        img.width,
        img.height,
    )
    .map_err(what)?;
    let bytes = fp
        .scratch_bytes()
        .ok_or(ContextError::TooLarge)
        .map_err(what)?;
    if scratch.len() < bytes {
        *scratch = super::alloc_scratch(bytes, "inference scratch")?;
    }
    let mut x = vec![0.0f32; c.input_len()];
    fp.run(&img.data, &mut x, scratch).map_err(what)?;
    Ok(x)
}

/// `--eval DIR`: what `vimvq eval Q --data DIR --reference F32 [--limit N]` reports, run by the
/// same code on the bytes of the quantized file (`q`) and of the f32 model `vimvq import` writes
/// (`f32`), plus the reference's own accuracy. `cache` keeps the reference's logits, keyed by
/// the f32 bytes and the image list.
fn evaluate(
    dir: &Path,
    limit: Option<u64>,
    cache: Option<&Path>,
    f32: &[u8],
    q: &[u8],
    threads: usize,
) -> Result<serde_json::Value> {
    use super::eval::{evaluate, pick, Reference};
    let start = Instant::now();
    let (f32_bytes, q_bytes) = (AlignedBytes::from_slice(f32), AlignedBytes::from_slice(q));
    fn parse(b: &AlignedBytes) -> Result<Model<'_>> {
        Model::parse(b.as_bytes()).map_err(|e| anyhow!("--eval: invalid .vimvq model: {e}"))
    }
    let (f32_model, q_model) = (parse(&f32_bytes)?, parse(&q_bytes)?);
    let (names, all) = super::eval::list_image_folder(dir)?;
    let classes = q_model.config().num_classes;
    if names.len() > classes {
        bail!(
            "{}: {} class folders, but the model has only {classes} classes",
            dir.display(),
            names.len()
        );
    }
    let picked = pick(&all, limit);
    // Cache key: the f32 model's bytes and the image list.
    let key = {
        let mut k = f32.to_vec();
        for s in &picked {
            k.extend_from_slice(s.path.as_os_str().as_encoded_bytes());
            k.push(0);
        }
        vimvq_rt::format::crc32(&k).to_le_bytes()
    };
    let want_len = 8 + 4 * picked.len() * classes;
    let cached = cache
        .and_then(|p| std::fs::read(p).ok())
        .filter(|b| b.len() == want_len && b[..4] == *CACHE_MAGIC && b[4..8] == key)
        .map(|b| {
            b[8..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>()
        });
    let reference = match &cached {
        Some(l) => Reference::Logits(l),
        None => Reference::Model(Box::new(f32_model)),
    };
    let bar = if progress_allowed(false) {
        let b = ProgressBar::new(picked.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("eval {bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
        {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let scores = evaluate(q_model, reference, &picked, threads, cache.is_some(), &bar);
    bar.finish_and_clear();
    let scores = scores.map_err(|e| anyhow!("--eval: {e:#}"))?;
    let r = scores
        .reference
        .ok_or_else(|| anyhow!("--eval: no reference scores"))?;
    if let (Some(p), None) = (cache, &cached) {
        let mut b = Vec::with_capacity(want_len);
        b.extend_from_slice(CACHE_MAGIC);
        b.extend_from_slice(&key);
        for v in &r.logits {
            b.extend_from_slice(&v.to_le_bytes());
        }
        output::write_atomic(p, &b).map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    Ok(serde_json::json!({
        "data": dir.display().to_string(),
        "count": scores.count,
        "top1": scores.top1,
        "top5": scores.top5,
        "f32_top1": r.top1,
        "f32_top5": r.top5,
        "top1_agreement": r.top1_agreement,
        "mean_kl": r.mean_kl,
        "seconds": start.elapsed().as_secs_f64(),
    }))
}

/// First bytes of an `--eval-f32-cache` file (the runtime's logits; a cache of the former
/// host-side evaluator, `VQLG`, is not reused).
const CACHE_MAGIC: &[u8; 4] = b"VQLR";

/// Progress on stderr: bars when it is a terminal; otherwise (a log, a pipe) one line per
/// block, so a long run can be followed and scripts can tell which block is running.
struct Bars {
    terminal: bool,
    state: PathBuf,
    bar: Option<ProgressBar>,
    units: Option<ProgressBar>,
    /// Minibatch KL of the first fine-tuning step.
    first_kl: f64,
    /// When the fine-tuning stage started (its first step's end).
    finetune_start: Option<Instant>,
}

/// A terminal bar over `steps` optimiser steps (a block's, or the fine-tuning stage's).
fn steps_bar(steps: usize, prefix: String) -> ProgressBar {
    let b = ProgressBar::new(steps as u64);
    if let Ok(s) = ProgressStyle::with_template(
        "{prefix:>10} {bar:30} {pos}/{len} steps {per_sec} eta {eta} {msg}",
    ) {
        b.set_style(s);
    }
    b.set_prefix(prefix);
    b
}

/// `s` seconds as `12.3 s`, `4 min 05 s` or `1 h 02 min`.
fn duration(s: f64) -> String {
    let t = s.max(0.0).round() as u64;
    if s < 60.0 {
        format!("{s:.1} s")
    } else if t < 3600 {
        format!("{} min {:02} s", t / 60, t % 60)
    } else {
        format!("{} h {:02} min", t / 3600, t % 3600 / 60)
    }
}

impl Bars {
    /// Prints a line above the bars (terminal) or on its own (otherwise).
    fn line(&self, s: &str) {
        match self.bar.as_ref().or(self.units.as_ref()) {
            Some(b) if self.terminal => b.println(s),
            _ => {
                let _ = writeln!(std::io::stderr().lock(), "{s}");
            }
        }
    }

    fn event(&mut self, e: ProgressEvent) {
        match e {
            ProgressEvent::Resumed { done, count } => self.line(&format!(
                "resuming from {}: {done}/{count} blocks already done",
                super::escape_text(&self.state.display().to_string())
            )),
            ProgressEvent::Start {
                unit,
                index,
                count,
                steps,
            } if self.terminal => {
                if steps > 0 {
                    self.bar = Some(steps_bar(steps, format!("{unit} ({}/{count})", index + 1)));
                } else {
                    let b = self.units.get_or_insert_with(|| {
                        let b = ProgressBar::new(count as u64);
                        if let Ok(s) =
                            ProgressStyle::with_template("{bar:30} {pos}/{len} blocks {msg}")
                        {
                            b.set_style(s);
                        }
                        b
                    });
                    b.set_position(index as u64);
                    b.set_message(unit);
                }
            }
            ProgressEvent::Step {
                step,
                loss,
                confirmed,
                ..
            } => {
                if let Some(b) = &self.bar {
                    b.set_position(step as u64);
                    b.set_message(format!(
                        "loss {loss:.3e} confirmed {:.0}%",
                        100.0 * confirmed
                    ));
                }
            }
            ProgressEvent::FinetuneStep { step, steps, loss } => {
                if step == 1 {
                    self.first_kl = loss;
                    self.finetune_start = Some(Instant::now());
                    if self.terminal {
                        self.bar = Some(steps_bar(steps, "fine-tune".into()));
                    }
                }
                if let Some(b) = &self.bar {
                    b.set_position(step as u64);
                    b.set_message(format!("KL {loss:.3e}"));
                } else if step % (steps / 10).max(1) == 0 && step < steps {
                    // A log gets a line every tenth of the stage, with its ETA.
                    let elapsed = self
                        .finetune_start
                        .map_or(0.0, |t| t.elapsed().as_secs_f64());
                    let left = elapsed / (step - 1).max(1) as f64 * (steps - step) as f64;
                    self.line(&format!(
                        "fine-tune: step {step}/{steps}, minibatch KL {loss:.4e}, ETA {}",
                        duration(left)
                    ));
                }
                if step == steps {
                    if let Some(b) = self.bar.take() {
                        b.finish_and_clear();
                    }
                    self.line(&format!(
                        "fine-tune: minibatch KL {:.4e} (first step) → {loss:.4e} (last)",
                        self.first_kl
                    ));
                }
            }
            ProgressEvent::Done {
                unit,
                loss,
                seconds,
                eta,
            } => {
                let text = format!(
                    "{unit}: block loss {loss:.4e} ({}); {}/{} blocks, elapsed {}, ETA {}",
                    duration(seconds),
                    eta.done,
                    eta.total,
                    duration(eta.elapsed),
                    duration(eta.remaining),
                );
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                self.line(&text);
                if let Some(b) = &self.units {
                    b.inc(1);
                }
            }
            ProgressEvent::Start { .. } => {}
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(b) = self.units.take() {
            b.finish_and_clear();
        }
    }
}

/// Runs `vimvq pack`.
pub fn run(a: PackArgs) -> Result<()> {
    let start = Instant::now();
    let opts = a.options()?;
    let mopts = a.model.to_options()?;
    let state = StateFile::path_for(&a.output);
    // Output folders are checked before the long work.
    for p in [&a.output, &state]
        .into_iter()
        .chain(&a.report)
        .chain(&a.eval_f32_cache)
    {
        output::check_target(p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    let ck = import::load(&a.checkpoint, a.key.as_deref())?;
    let f32_model =
        import::to_packed(&ck, &mopts).map_err(|e| anyhow!("{}: {e}", a.checkpoint.display()))?;
    drop(ck);
    let count = usize::try_from(a.calib_count).unwrap_or(usize::MAX);
    let calib = load_calibration(&a.calib, &f32_model, count, a.seed, |p, msg| {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: skipping calibration image {}: {}",
            super::escape_text(&p.display().to_string()),
            super::escape_text(msg)
        );
    })?;
    let mut bars = Bars {
        terminal: progress_allowed(false),
        state: state.clone(),
        bar: None,
        units: None,
        first_kl: 0.0,
        finetune_start: None,
    };
    if opts.method == Method::Rtn && opts.finetune_steps > 0 {
        eprintln!("note: rtn has no codebooks; --finetune-steps is ignored");
    }
    let state_file = StateFile {
        path: state.clone(),
        image_names: calib
            .files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    };
    let result = quantize_resumable(&f32_model, &calib.images, &opts, &state_file, &mut |e| {
        bars.event(e)
    });
    bars.finish();
    let (q, report) = result.map_err(|e| match e {
        QuantError::Resume(m) => anyhow!("{m}"),
        e => anyhow!("{}: {e}", a.checkpoint.display()),
    })?;
    let bytes = to_bytes(&q).map_err(|e| anyhow!("{}: {e}", a.output.display()))?;
    drop(q);
    let eval = match &a.eval {
        Some(dir) => {
            let f32_bytes = to_bytes(&f32_model).map_err(|e| anyhow!("--eval: {e}"))?;
            Some(evaluate(
                dir,
                a.eval_limit,
                a.eval_f32_cache.as_deref(),
                &f32_bytes,
                &bytes,
                opts.threads,
            )?)
        }
        None => None,
    };
    drop(f32_model);

    let seconds = start.elapsed().as_secs_f64();
    let mut json = report.to_json();
    if let Some(obj) = json.as_object_mut() {
        obj.insert("seconds".into(), seconds.into());
        obj.insert("quantize_seconds".into(), report.seconds.into());
        obj.insert(
            "peak_rss_bytes".into(),
            vimvq_pack::quantize::peak_rss_bytes().into(),
        );
        obj.insert("skipped_images".into(), calib.skipped.len().into());
        obj.insert("found_images".into(), calib.found.into());
        obj.insert("file_bytes".into(), bytes.len().into());
        obj.insert(
            "checkpoint".into(),
            a.checkpoint.display().to_string().into(),
        );
        if let Some(e) = &eval {
            obj.insert("eval".into(), e.clone());
        }
    }
    let report_text = serde_json::to_string_pretty(&json)? + "\n";
    // Both files are staged before either replaces anything: a failure leaves the old ones.
    let model = output::stage(&a.output, &bytes)
        .map_err(|e| anyhow!("{}: cannot write the model: {e}", a.output.display()))?;
    let report_file = match &a.report {
        Some(p) => Some((
            p,
            output::stage(p, report_text.as_bytes())
                .map_err(|e| anyhow!("{}: cannot write the report: {e}", p.display()))?,
        )),
        None => None,
    };
    model
        .commit()
        .map_err(|e| anyhow!("{}: cannot write the model: {e}", a.output.display()))?;
    if let Some((p, r)) = report_file {
        r.commit()
            .map_err(|e| anyhow!("{}: cannot write the report: {e}", p.display()))?;
    }
    // The output is complete: the saved state has served its purpose.
    match std::fs::remove_file(&state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            bail!("{}: cannot remove the pack state: {e}", state.display())
        }
        _ => {}
    }
    if let Some(e) = &eval {
        print_line(&format!(
            "eval on {} images: top-1 {:.2}% (f32 {:.2}%), top-5 {:.2}%, top-1 agreement {:.2}%, mean KL {:.4}",
            e["count"],
            100.0 * e["top1"].as_f64().unwrap_or(0.0),
            100.0 * e["f32_top1"].as_f64().unwrap_or(0.0),
            100.0 * e["top5"].as_f64().unwrap_or(0.0),
            100.0 * e["top1_agreement"].as_f64().unwrap_or(0.0),
            e["mean_kl"].as_f64().unwrap_or(0.0),
        ))?;
    }
    let (k, d) = report.k_d();
    let objective = opts
        .effective_objective()
        .map_or("no calibration", |o| match o {
            Objective::Block => "block objective",
            Objective::Layer => "layer objective",
        });
    print_line(&format!(
        "wrote {}: {} k={k} d={d} ({objective}), {} weights at {:.2} bits ({:.2} incl. {} codebooks{}); \
         {} calibration images ({} skipped); {:.1} s; {} bytes",
        a.output.display(),
        opts.method.name(),
        report.quantized_weights,
        report.bits_per_weight(),
        report.true_bits_per_weight,
        if opts.codebook_f16 { "f16" } else { "f32" },
        if opts.codebook_f16 {
            String::new()
        } else {
            format!(", {:.2} with --codebook f16", report.true_bits_per_weight_f16)
        },
        calib.images.len(),
        calib.skipped.len(),
        seconds,
        bytes.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: PackArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<PackArgs, clap::Error> {
        let mut v = vec!["t", "ck.safetensors", "-o", "o.vimvq", "--calib", "dir"];
        v.extend_from_slice(args);
        T::try_parse_from(v).map(|t| t.a)
    }

    #[test]
    fn defaults_are_the_documented_defaults() {
        let o = parse(&[]).unwrap().options().unwrap();
        let d = QuantOptions::with_bits(2).unwrap();
        assert_eq!(o.method, Method::VimVq);
        assert_eq!(o.objective, Objective::Block);
        assert_eq!((o.vq.k, o.vq.d, o.vq.hull, o.vq.steps), (256, 4, 2, 300));
        assert_eq!((o.vq.lambda_r, o.vq.lr_codebook), (0.01, 3e-4));
        assert_eq!(o.batch, 8);
        assert_eq!(o.vq, d.vq);
        assert_eq!(o.finetune_steps, 100);
        let o = parse(&["--finetune-steps", "0"])
            .unwrap()
            .options()
            .unwrap();
        assert_eq!(o.finetune_steps, 0);
    }

    #[test]
    fn bits_k_d_and_switches() {
        let o = parse(&["--bits", "1", "--method", "rtn"])
            .unwrap()
            .options()
            .unwrap();
        assert_eq!((o.vq.k, o.vq.d, o.vq.hull, o.rtn_bits), (256, 8, 2, 1));
        assert_eq!(o.vq.hull_every, 0);
        assert!(!o.ivq);
        let o = parse(&["--bits", "1", "--ivq"]).unwrap().options().unwrap();
        assert!(o.ivq);
        assert!(parse(&["--ivq", "--no-ivq"]).is_err());
        let o = parse(&["--bits", "1", "--hull-every", "5"])
            .unwrap()
            .options()
            .unwrap();
        assert_eq!(o.vq.hull_every, 5);
        let o = parse(&["--bits", "3"]).unwrap().options().unwrap();
        assert_eq!((o.vq.hull, o.vq.hull_every, o.ivq), (2, 10, true));
        let o = parse(&["--k", "16", "--d", "2", "--no-ivq", "--no-hull-update"])
            .unwrap()
            .options()
            .unwrap();
        assert_eq!(
            (o.vq.k, o.vq.d, o.rtn_bits, o.ivq, o.hull_update),
            (16, 2, 2, false, false)
        );
        assert!(!o.codebook_f16);
        let o = parse(&["--codebook", "f16"]).unwrap().options().unwrap();
        assert!(o.codebook_f16);
        assert!(parse(&["--codebook", "f8"]).is_err());
        for m in Method::ALL {
            let o = parse(&["--method", m.name()]).unwrap().options().unwrap();
            assert_eq!(o.method, m);
        }
        assert!(parse(&["--method", "vim-vq"]).is_err());
        assert!(parse(&["--bits", "2", "--k", "16", "--d", "2"]).is_err());
        assert!(parse(&["--k", "16"]).is_err());
        assert!(parse(&["--bits", "4"]).is_err());
        assert!(parse(&["--lambda-r=-1"]).unwrap().options().is_err());
    }
}
