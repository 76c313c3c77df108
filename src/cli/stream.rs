//! `vimvq stream MODEL --size WxH --format rgb24|i420`: classify raw camera frames from stdin,
//! one JSON line per frame on stdout.
//!
//! * Input: back-to-back frames of exactly `frame_len(format, W, H)` bytes (see
//!   `vimvq_rt::frame`), e.g. `ffmpeg … -f rawvideo -pix_fmt rgb24 -` or
//!   `rpicam-vid --codec yuv420 -o -`.
//! * Output, per frame: `{"frame": i, "top": [{"class", "label", "prob"}…], "latency_ms": x}`
//!   (with `--features`, a `"features"` array of D numbers before `latency_ms`),
//!   flushed line by line. `latency_ms` covers conversion, preprocessing and inference (not the
//!   wait for the frame's bytes).
//! * Memory is constant: every buffer (frame, the inference context's scratch, output line,
//!   latency histogram) is allocated once before the first frame.
//! * End of input at a frame boundary, or a closed stdout (`EPIPE`, e.g. `| head`), ends cleanly
//!   (exit 0) with a summary line on stderr: `stream: N frames, mean X ms, p90 Y ms, Z fps`.
//! * A short final frame is an error: the complete frames' lines are written and flushed, the
//!   summary is printed, then `error: truncated frame …` and exit status 1 — a camera pipe that
//!   breaks mid-frame is worth noticing.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use vimvq_rt::context::{Context, ContextError, Input, Top};
use vimvq_rt::forward::Features;
use vimvq_rt::frame::FrameFormat;

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
    /// One 8-bit luma sample per pixel (`-pix_fmt gray`).
    Gray8,
}

impl FormatArg {
    fn frame_format(self) -> FrameFormat {
        match self {
            FormatArg::Rgb24 => FrameFormat::Rgb24,
            FormatArg::I420 => FrameFormat::I420,
            FormatArg::Gray8 => FrameFormat::Gray8,
        }
    }
    fn name(self) -> &'static str {
        match self {
            FormatArg::Rgb24 => "rgb24",
            FormatArg::I420 => "i420",
            FormatArg::Gray8 => "gray8",
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
    /// Add each frame's pooled feature vector (D values, what the head reads) to its JSON line
    /// as "features"
    #[arg(long)]
    pub features: bool,
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
    let k = usize::try_from(a.topk)
        .unwrap_or(usize::MAX)
        .min(c.num_classes);
    let input = Input::Frame {
        format: a.format.frame_format(),
        width: w,
        height: h,
    };
    let cannot =
        |e: ContextError| anyhow!("--size {w}x{h}: cannot classify frames of this size: {e}");
    let bytes = Context::scratch_bytes(&model, input, a.threads).map_err(cannot)?;

    // Every buffer, once.
    let mut scratch = alloc_scratch(bytes, "inference scratch")?;
    let mut ctx = Context::new(model, input, a.threads, &mut scratch).map_err(cannot)?;
    let frame_bytes = ctx.frame_bytes();
    let mut frame_buf = alloc_scratch(frame_bytes, "frame buffer")?;
    let mut top = vec![Top::default(); k];
    let mut pooled = vec![0.0f32; if a.features { c.embed_dim } else { 0 }];
    let mut line = String::with_capacity(64 + k * 96 + pooled.len() * 16);
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
        let features = Features {
            pooled: a.features.then_some(&mut pooled[..]),
            tokens: None,
        };
        ctx.classify_features(&frame_buf, &mut top, features)
            .map_err(|e| anyhow!("frame {frames}: {e}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        hist.add(ms);

        line.clear();
        let _ = write!(line, "{{\"frame\":{frames},\"top\":[");
        for (j, t) in top.iter().enumerate() {
            if j > 0 {
                line.push(',');
            }
            let i = t.class_index as usize;
            let _ = write!(
                line,
                "{{\"class\":{i},\"label\":{},\"prob\":",
                label_json[i]
            );
            push_json_f32(&mut line, t.prob);
            line.push('}');
        }
        line.push(']');
        if a.features {
            line.push_str(",\"features\":[");
            for (j, &v) in pooled.iter().enumerate() {
                if j > 0 {
                    line.push(',');
                }
                push_json_f32(&mut line, v);
            }
            line.push(']');
        }
        let _ = writeln!(line, ",\"latency_ms\":{ms:.3}}}");
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
}
