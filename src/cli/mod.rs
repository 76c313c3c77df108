//! The subcommands and what they share: error reporting, model loading, labels, top-k.

pub mod bench;
pub mod classify;
pub mod eval;
pub mod folder;
pub mod import;
pub mod inspect;
pub mod pack;
pub mod run;
pub mod stream;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

pub use crate::io_error::io_error;
use anyhow::{anyhow, bail, Context, Result};
use vimvq_rt::format::ModelFile;
use vimvq_rt::model::Model;

/// Most threads `--threads` accepts.
pub const MAX_THREADS: u64 = 256;

/// `--threads N`: 1 ..= [`MAX_THREADS`].
pub fn threads_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS)
}

/// Resize filter names on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterpolationArg {
    /// PIL bicubic (a = −0.5, antialiased).
    Bicubic,
    /// PIL bilinear (antialiased).
    Bilinear,
}

impl From<InterpolationArg> for vimvq_rt::Interpolation {
    fn from(a: InterpolationArg) -> Self {
        match a {
            InterpolationArg::Bicubic => vimvq_rt::Interpolation::Bicubic,
            InterpolationArg::Bilinear => vimvq_rt::Interpolation::Bilinear,
        }
    }
}

/// The model options of `import` and `pack` (docs/CLI.md): override the checkpoint's metadata.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelOptionArgs {
    /// Input side in pixels [default: from the checkpoint, else 224]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub img_size: Option<u32>,
    /// Shorter image side after resizing [default: img-size / 0.875]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub resize: Option<u32>,
    /// Centre crop side [default: img-size]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub crop: Option<u32>,
    /// Per-channel mean on the [0, 1] scale, `a,b,c` (one value for all channels is fine)
    /// [default: ImageNet]
    #[arg(long, value_name = "a,b,c", value_parser = parse_triple, allow_hyphen_values = true)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel std on the [0, 1] scale, `a,b,c` [default: ImageNet]
    #[arg(long, value_name = "a,b,c", value_parser = parse_triple)]
    pub std: Option<[f32; 3]>,
    /// Resize filter [default: bicubic]
    #[arg(long, value_enum, value_name = "FILTER")]
    pub interpolation: Option<InterpolationArg>,
    /// Class names, one per line
    #[arg(long, value_name = "FILE")]
    pub labels: Option<std::path::PathBuf>,
}

impl ModelOptionArgs {
    /// The importer's options (reads the labels file).
    pub fn to_options(&self) -> Result<vimvq_pack::import::ModelOptions> {
        let labels = match &self.labels {
            Some(p) => {
                let l = read_labels(p)?;
                if l.is_empty() {
                    bail!("{}: labels file is empty", p.display());
                }
                Some(l)
            }
            None => None,
        };
        Ok(vimvq_pack::import::ModelOptions {
            img_size: self.img_size,
            resize: self.resize,
            crop: self.crop,
            mean: self.mean,
            std: self.std,
            interpolation: self.interpolation.map(Into::into),
            labels,
        })
    }
}

/// Parses `a,b,c` (or a single value, used for every channel) into finite f32s.
fn parse_triple(s: &str) -> std::result::Result<[f32; 3], String> {
    let vals: Vec<f32> = s
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|_| format!("{:?} is not a number", v.trim()))
        })
        .collect::<std::result::Result<_, _>>()?;
    if vals.iter().any(|v| !v.is_finite()) {
        return Err("values must be finite".into());
    }
    match vals[..] {
        [a] => Ok([a; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => Err(format!(
            "expected 1 or 3 comma-separated values, got {}",
            vals.len()
        )),
    }
}

/// Prints `error: <message>` as one line on stderr. The message is the whole `anyhow` context
/// chain (`outer: inner: cause`), with any line breaks folded.
pub fn print_error(e: &anyhow::Error) {
    let msg = escape_text(&one_line(&format!("{e:#}")));
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {msg}");
}

/// `s` with every control character (C0, DEL, C1: terminal escape sequences, line breaks) as a
/// `\u{..}` escape, for text output of labels and file names taken from files.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Largest `--labels` file read (16 MiB; 1000 ImageNet class names take 30 KB).
pub const MAX_LABELS_BYTES: u64 = 16 << 20;

/// Reads at most `limit` bytes of `path`; a longer input (a huge file, `/dev/zero`) is refused
/// without reading past the limit.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    if path.is_dir() {
        bail!("{}: is a directory, not a {what}", path.display());
    }
    let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, &e))?;
    if bytes.len() as u64 > limit {
        bail!(
            "{}: {what} is larger than the {limit}-byte limit",
            path.display()
        );
    }
    Ok(bytes)
}

/// A zeroed buffer of `len` elements for a model-sized need (inference scratch, input, logits).
/// The need is checked before allocating, against the memory the system reports available
/// (Linux `MemAvailable`), and the allocation is fallible: a model whose dimensions need more
/// memory than the machine has gets an error naming the bytes, not an abort.
pub fn alloc_scratch<T: Clone + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let bytes = len.saturating_mul(std::mem::size_of::<T>());
    let too_much = |avail: &str| {
        anyhow!("the model's {what} needs {bytes} bytes, more than this machine has{avail}")
    };
    if len == usize::MAX || bytes == usize::MAX {
        return Err(too_much(""));
    }
    if let Some(avail) = available_memory().filter(|&a| bytes as u64 > a) {
        return Err(too_much(&format!(" available ({avail} bytes)")));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| too_much(""))?;
    v.resize(len, T::default());
    Ok(v)
}

/// Bytes of memory available to new allocations, if the system says (`/proc/meminfo`).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `s` with its line breaks folded into spaces (an error chain as one line).
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Handles a clap error: `--help`/`--version` print normally (exit 0); a usage error becomes one
/// `error: …` line (exit 2), keeping clap's explanation but not its usage block.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        _ => {}
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "error: {} (see --help)",
        usage_message(&e)
    );
    ExitCode::from(2)
}

/// A usage error as one line: clap's explanation without its usage block.
pub fn usage_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(
                line.strip_prefix("error:")
                    .unwrap_or(line)
                    .trim()
                    .to_owned(),
            );
        }
    }
    let msg = parts.join(" ");
    if msg.is_empty() {
        "invalid command line".into()
    } else {
        msg
    }
}

/// Opens a `.vimvq` file with the memory-mapping, 64-byte-aligned loader.
pub fn open_model(path: &Path) -> Result<ModelFile> {
    if path.is_dir() {
        bail!("{}: is a directory, not a .vimvq model", path.display());
    }
    ModelFile::open(path).map_err(|e| io_error(path, &e))
}

/// Validates the file (checksums included) and returns the model view.
pub fn parse_model<'f>(path: &Path, file: &'f ModelFile) -> Result<Model<'f>> {
    file.model()
        .map_err(|e| anyhow!("{}: invalid .vimvq model: {e}", path.display()))
}

/// Reads class names, one per line (a trailing newline and `\r` line ends are fine).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let bytes = read_bounded(path, MAX_LABELS_BYTES, "labels file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{}: labels file is not UTF-8 text", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect())
}

/// Labels for output: a `--labels` file (which must have one name per class) or the model's.
pub fn output_labels(model: &Model<'_>, file: Option<&Path>) -> Result<Vec<String>> {
    let classes = model.config().num_classes;
    match file {
        Some(p) => {
            let l = read_labels(p)?;
            if l.len() != classes {
                bail!(
                    "{}: {} labels, but the model has {classes} classes",
                    p.display(),
                    l.len()
                );
            }
            Ok(l)
        }
        None => Ok(model.labels().map(str::to_owned).collect()),
    }
}

/// KL(p ‖ q) in nats of the softmax distributions of two logit vectors (f64).
pub fn kl_logits(p: &[f32], q: &[f32]) -> f64 {
    let lse = |l: &[f32]| {
        let m = l
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        m + l.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum::<f64>()
        .max(0.0)
}

/// The best `k` classes of `logits` with their probabilities, by the runtime's one top-k rule
/// ([`vimvq_rt::context::top_k`]).
pub fn top_classes(logits: &[f32], k: usize) -> Vec<vimvq_rt::context::Top> {
    let mut top = vec![vimvq_rt::context::Top::default(); k.min(logits.len())];
    vimvq_rt::context::top_k(logits, &mut top);
    top
}

/// True if progress bars may be drawn (stderr is a terminal and JSON was not asked for).
pub fn progress_allowed(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// Writes `s` plus a newline to stdout; a closed pipe is not an error worth a panic.
pub fn print_line(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}").and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fold_to_one_line() {
        assert_eq!(one_line("a\n  b\r\nc\n"), "a b c");
    }
}
