//! `vimvq stream MODEL --size WxH --format rgb24|i420`: classify raw camera frames from stdin,
//! one JSON line per frame on stdout.
//!
//! * Input: back-to-back frames of exactly `frame_len(format, W, H)` bytes (see
//!   `vimvq_rt::frame`), e.g. `ffmpeg … -f rawvideo -pix_fmt rgb24 -` or
//!   `rpicam-vid --codec yuv420 -o -`.
//! * Output, per frame: `{"frame": i, "top": [{"class", "label", "prob"}…], "latency_ms": x}`,
//!   flushed line by line. `latency_ms` covers conversion, preprocessing and inference (not the
//!   wait for the frame's bytes).
//! * Memory is constant: every buffer (frame, RGB, preprocessing scratch, input, logits,
//!   inference scratch, output line, latency histogram) is allocated once before the first frame.
//! * End of input at a frame boundary, or a closed stdout (`EPIPE`, e.g. `| head`), ends cleanly
//!   (exit 0) with a summary line on stderr: `stream: N frames, mean X ms, p90 Y ms, Z fps`.
//! * A short final frame is an error: the complete frames' lines are written and flushed, the
//!   summary is printed, then `error: truncated frame …` and exit status 1 — a camera pipe that
//!   breaks mid-frame is worth noticing.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use vimvq_rt::forward;
use vimvq_rt::frame::{self, FrameFormat};
use vimvq_rt::preprocess::{ImageRef, PixelFormat, Plan};

use super::{alloc_scratch, open_model, output_labels, parse_model, threads_parser};

/// Largest accepted frame side (a 16K frame; keeps buffers sane).
const MAX_SIDE: usize = 16384;

/// Raw frame pixel formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// Interleaved 8-bit R, G, B (`-pix_fmt rgb24`).
    Rgb24,
    /// Planar 4:2:0 Y, U, V, BT.601 limited range (`-pix_fmt yuv420p`, `--codec yuv420`).
    I420,
}

impl FormatArg {
    fn frame_format(self) -> FrameFormat {
        match self {
            FormatArg::Rgb24 => FrameFormat::Rgb24,
            FormatArg::I420 => FrameFormat::I420,
        }
    }
    fn name(self) -> &'static str {
        match self {
            FormatArg::Rgb24 => "rgb24",
            FormatArg::I420 => "i420",
        }
    }
}

/// A frame size `WxH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// Parses `WxH` (`640x480`; `X` and `×` also accepted), each side 1 ..= 16384.
pub fn parse_size(s: &str) -> std::result::Result<FrameSize, String> {
    let bad = || format!("{s:?} is not a frame size WIDTHxHEIGHT such as 640x480");
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let side = |v: &str| -> std::result::Result<usize, String> {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match v.parse::<usize>() {
            Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
            _ => Err(format!("{s:?}: each side must be 1 to {MAX_SIDE} pixels")),
        }
    };
    Ok(FrameSize {
        width: side(w)?,
        height: side(h)?,
    })
}

/// Arguments of `vimvq stream`.
#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Model file
    #[arg(value_name = "MODEL.vimvq")]
    pub model: PathBuf,
    /// Frame size, WIDTHxHEIGHT (e.g. 640x480)
    #[arg(long, value_name = "WxH", value_parser = parse_size, allow_hyphen_values = true)]
    pub size: FrameSize,
    /// Pixel format of the raw frames on stdin
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: FormatArg,
    /// Classes to report per frame
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub topk: u64,
    /// Threads per inference (layers split across them; results are identical for any count)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = threads_parser())]
    pub threads: usize,
}

/// Log-spaced latency histogram (1 % wide buckets from 1 µs): constant memory, percentiles
/// accurate to 1 %.
struct Histogram {
    counts: Vec<u64>,
    n: u64,
    sum_ms: f64,
}

impl Histogram {
    const BUCKETS: usize = 2400; // 1 µs · 1.01^2400 ≈ 2·10⁷ ms
    const MIN_MS: f64 = 1e-3;

    fn new() -> Self {
        Histogram {
            counts: vec![0; Self::BUCKETS],
            n: 0,
            sum_ms: 0.0,
        }
    }

    fn add(&mut self, ms: f64) {
        let b = if ms <= Self::MIN_MS {
            0
        } else {
            ((ms / Self::MIN_MS).ln() / 1.01f64.ln()) as usize
        };
        self.counts[b.min(Self::BUCKETS - 1)] += 1;
        self.n += 1;
        self.sum_ms += ms;
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum_ms / self.n as f64
        }
    }

    /// Upper edge of the bucket holding the `q`-quantile.
    fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::MIN_MS * 1.01f64.powi(i as i32 + 1);
            }
        }
        f64::NAN
    }
}

/// Fills `buf` from `r`; returns the bytes read (less than `buf.len()` only at end of input).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Runs `vimvq stream`.
pub fn run(a: StreamArgs) -> Result<()> {
    let file = open_model(&a.model)?;
    let model = parse_model(&a.model, &file)?;
    let labels = output_labels(&model, None)?;
    let c = *model.config();
    let (w, h) = (a.size.width, a.size.height);
    let fmt = a.format.frame_format();
    let frame_bytes = frame::frame_len(fmt, w, h)
        .ok_or_else(|| anyhow!("--size {w}x{h}: frame too large for this machine"))?;
    let k = usize::try_from(a.topk)
        .unwrap_or(usize::MAX)
        .min(c.num_classes);
    let plan = Plan::new(w, h, PixelFormat::Rgb8, model.preprocess(), c.channels)
        .map_err(|e| anyhow!("--size {w}x{h}: cannot preprocess frames of this size: {e}"))?;
    if plan.output_len() != c.input_len() {
        bail!(
            "preprocessing yields {} values, the model takes {}",
            plan.output_len(),
            c.input_len()
        );
    }
    let scratch_len = c.scratch_bytes_threaded(a.threads);

    // Every buffer, once.
    let mut frame_buf = vec![0u8; frame_bytes];
    let mut rgb = match fmt {
        FrameFormat::Rgb24 => Vec::new(),
        FrameFormat::I420 => vec![0u8; w * h * 3],
    };
    let mut pre_scratch = vec![0u8; plan.scratch_bytes()];
    let mut input: Vec<f32> = alloc_scratch(c.input_len(), "input tensor")?;
    let mut logits = vec![0f32; c.num_classes];
    let mut probs = vec![0f32; c.num_classes];
    let mut order: Vec<usize> = Vec::with_capacity(c.num_classes);
    let mut scratch: Vec<u8> = alloc_scratch(scratch_len, "inference scratch")?;
    let opts = forward::InferOptions::default();
    let mut line = String::with_capacity(64 + k * 96);
    let mut hist = Histogram::new();
    // Labels as JSON values, escaped once.
    let label_json: Vec<String> = (0..c.num_classes)
        .map(|i| {
            labels.get(i).map_or_else(
                || "null".to_owned(),
                |l| serde_json::Value::from(l.as_str()).to_string(),
            )
        })
        .collect();

    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let started = Instant::now();
    let mut frames: u64 = 0;
    let mut truncated: Option<usize> = None;
    let mut pipe_closed = false;
    loop {
        let got = read_full(&mut stdin, &mut frame_buf).context("reading frames from stdin")?;
        if got == 0 {
            break;
        }
        if got < frame_bytes {
            truncated = Some(got);
            break;
        }
        let t0 = Instant::now();
        let pixels: &[u8] = match fmt {
            FrameFormat::Rgb24 => &frame_buf,
            FrameFormat::I420 => {
                frame::i420_to_rgb24(&frame_buf, w, h, &mut rgb)
                    .map_err(|e| anyhow!("frame {frames}: {e}"))?;
                &rgb
            }
        };
        let img = ImageRef {
            data: pixels,
            width: w,
            height: h,
            format: PixelFormat::Rgb8,
        };
        plan.run(&img, &mut input, &mut pre_scratch)
            .map_err(|e| anyhow!("frame {frames}: {e}"))?;
        forward::infer_threaded(&model, &input, &mut logits, &mut scratch, &opts, a.threads)
            .map_err(|e| anyhow!("frame {frames}: inference failed: {e}"))?;
        softmax_into(&logits, &mut probs);
        top_k_into(&logits, k, &mut order);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        hist.add(ms);

        line.clear();
        let _ = write!(line, "{{\"frame\":{frames},\"top\":[");
        for (j, &i) in order.iter().enumerate() {
            if j > 0 {
                line.push(',');
            }
            let _ = write!(
                line,
                "{{\"class\":{i},\"label\":{},\"prob\":",
                label_json[i]
            );
            push_json_f32(&mut line, probs[i]);
            line.push('}');
        }
        let _ = writeln!(line, "],\"latency_ms\":{ms:.3}}}");
        frames += 1;
        match stdout
            .write_all(line.as_bytes())
            .and_then(|_| stdout.flush())
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                pipe_closed = true;
                break;
            }
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    if !pipe_closed {
        match stdout.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let fps = if secs > 0.0 {
        frames as f64 / secs
    } else {
        0.0
    };
    let _ = writeln!(
        std::io::stderr().lock(),
        "stream: {frames} frames, mean {:.3} ms, p90 {:.3} ms, {fps:.1} fps{}",
        hist.mean(),
        hist.quantile(0.9),
        if pipe_closed { " (stdout closed)" } else { "" }
    );
    if let Some(got) = truncated {
        bail!(
            "truncated frame {frames}: stdin ended after {got} of {frame_bytes} bytes \
             (--size {w}x{h} --format {} frames are {frame_bytes} bytes)",
            a.format.name()
        );
    }
    Ok(())
}

/// Softmax in f64 into `out` (as [`super::softmax`], without allocating).
fn softmax_into(logits: &[f32], out: &mut [f32]) {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = ((v as f64 - max).exp() / sum) as f32;
    }
}

/// [`super::top_k`] into a reused vector (same order: largest first, ties to the lower index,
/// NaN last).
fn top_k_into(logits: &[f32], k: usize, idx: &mut Vec<usize>) {
    idx.clear();
    idx.extend(0..logits.len());
    idx.sort_unstable_by(|&a, &b| {
        let (x, y) = (logits[a], logits[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.total_cmp(&x).then(a.cmp(&b)),
        }
    });
    idx.truncate(k);
}

/// Appends `v` as a JSON number (shortest round-trip form), or `null` if not finite.
fn push_json_f32(s: &mut String, v: f32) {
    if v.is_finite() {
        let _ = write!(s, "{v}");
    } else {
        s.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(
            parse_size("640x480"),
            Ok(FrameSize {
                width: 640,
                height: 480
            })
        );
        assert!(parse_size("640X480").is_ok());
        for bad in [
            "",
            "640",
            "x480",
            "640x",
            "0x480",
            "-1x2",
            "640x480x3",
            "abc",
            "1e3x2",
            "99999x2",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for i in 1..=100 {
            h.add(i as f64);
        }
        let p90 = h.quantile(0.9);
        assert!((p90 / 90.0 - 1.0).abs() < 0.011, "{p90}");
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn topk_matches_shared_helper() {
        let l = [1.0, 3.0, f32::NAN, 3.0, -2.0];
        let mut v = Vec::new();
        top_k_into(&l, 3, &mut v);
        assert_eq!(v, super::super::top_k(&l, 3));
        let mut p = [0f32; 5];
        softmax_into(&l[..2], &mut p[..2]);
        assert_eq!(&p[..2], &super::super::softmax(&l[..2])[..]);
    }
}
