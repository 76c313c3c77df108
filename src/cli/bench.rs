//! `vimvq bench MODEL`: inference latency, per-op breakdown and memory on this machine.
//!
//! The input is a fixed pseudo-random normalised image (the weights, not the pixels, decide the
//! cost). After `--warmup` untimed runs, each of `--iters` runs is timed end to end and, through
//! [`vimvq_rt::forward::OpTimer`], step by step: `ops_ms` holds the mean milliseconds per run of
//! each op, and since every interval of a run is attributed to exactly one op the ops sum to the
//! mean latency (`latency_ms.mean`) up to the clock reads.
//!
//! JSON (docs/CLI.md): `{"threads", "iters", "latency_ms": {"min", "median", "p90", "max", "mean"},
//! "ops_ms": {"patch_embed", …, "head"}, "peak_rss_bytes", "model_bytes", "scratch_bytes",
//! "warmup", "input_bytes"}`. `peak_rss_bytes` is the process's `VmHWM` (Linux; 0 elsewhere):
//! with a memory-mapped model it counts only the model pages actually touched.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Args;
use serde::Serialize;
use vimvq_pack::quantize::peak_rss_bytes;
use vimvq_rt::forward::{self, InferOptions, Op, OpTimer};

use super::{alloc_scratch, open_model, parse_model, print_line, threads_parser};

/// Arguments of `vimvq bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model file
    #[arg(value_name = "MODEL.vimvq")]
    pub model: PathBuf,
    /// Threads per inference (layers split across them; results are identical for any count)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = threads_parser())]
    pub threads: usize,
    /// Timed runs
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub iters: u64,
    /// Untimed runs first
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub warmup: u64,
    /// Print JSON (fields in docs/CLI.md) instead of text
    #[arg(long)]
    pub json: bool,
}

/// Accumulates the time between `op_done` calls per op.
struct Clock {
    last: Instant,
    ns: [u128; Op::ALL.len()],
}

impl OpTimer for Clock {
    fn op_done(&mut self, op: Op) {
        let now = Instant::now();
        self.ns[op as usize] += now.duration_since(self.last).as_nanos();
        self.last = now;
    }
}

#[derive(Serialize)]
struct Latency {
    min: f64,
    median: f64,
    p90: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize)]
struct OpsMs {
    patch_embed: f64,
    in_proj: f64,
    conv1d: f64,
    x_proj: f64,
    dt_proj: f64,
    scan: f64,
    out_proj: f64,
    norm: f64,
    head: f64,
}

#[derive(Serialize)]
struct Report {
    threads: usize,
    iters: u64,
    latency_ms: Latency,
    ops_ms: OpsMs,
    peak_rss_bytes: u64,
    model_bytes: usize,
    scratch_bytes: usize,
    warmup: u64,
    input_bytes: usize,
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs `vimvq bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let file = open_model(&a.model)?;
    let model = parse_model(&a.model, &file)?;
    let c = *model.config();
    let scratch_len = c.scratch_bytes_threaded(a.threads);
    let iters = usize::try_from(a.iters).map_err(|_| anyhow!("--iters too large"))?;
    let mut input: Vec<f32> = alloc_scratch(c.input_len(), "input tensor")?;
    // xorshift32 → roughly uniform in [-2, 2): a plausible normalised image.
    let mut state = 0x9E37_79B9u32;
    for v in &mut input {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *v = (state as f32 / u32::MAX as f32) * 4.0 - 2.0;
    }
    let mut logits: Vec<f32> = alloc_scratch(c.num_classes, "logits")?;
    let mut scratch: Vec<u8> = alloc_scratch(scratch_len, "inference scratch")?;
    let opts = InferOptions::default();
    let fail = |e: forward::InferError| anyhow!("inference failed: {e}");

    for _ in 0..a.warmup {
        forward::infer_threaded(&model, &input, &mut logits, &mut scratch, &opts, a.threads)
            .map_err(fail)?;
    }
    let mut lat = Vec::with_capacity(iters);
    let mut clock = Clock {
        last: Instant::now(),
        ns: [0; Op::ALL.len()],
    };
    for _ in 0..iters {
        let t0 = Instant::now();
        clock.last = t0;
        forward::infer_threaded_profiled(
            &model,
            &input,
            &mut logits,
            &mut scratch,
            &opts,
            a.threads,
            &mut clock,
        )
        .map_err(fail)?;
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mean = lat.iter().sum::<f64>() / iters as f64;
    lat.sort_by(f64::total_cmp);
    let op_ms = |op: Op| clock.ns[op as usize] as f64 / 1e6 / iters as f64;
    let report = Report {
        threads: a.threads,
        iters: a.iters,
        latency_ms: Latency {
            min: lat[0],
            median: quantile(&lat, 0.5),
            p90: quantile(&lat, 0.9),
            max: lat[iters - 1],
            mean,
        },
        ops_ms: OpsMs {
            patch_embed: op_ms(Op::PatchEmbed),
            in_proj: op_ms(Op::InProj),
            conv1d: op_ms(Op::Conv1d),
            x_proj: op_ms(Op::XProj),
            dt_proj: op_ms(Op::DtProj),
            scan: op_ms(Op::Scan),
            out_proj: op_ms(Op::OutProj),
            norm: op_ms(Op::Norm),
            head: op_ms(Op::Head),
        },
        peak_rss_bytes: peak_rss_bytes(),
        model_bytes: model.file_bytes(),
        scratch_bytes: scratch_len,
        warmup: a.warmup,
        input_bytes: c.input_len() * 4,
    };
    if a.json {
        return print_line(&serde_json::to_string(&report)?);
    }
    let l = &report.latency_ms;
    let mut out = format!(
        "{}: {} iters ({} warm-up), {} thread(s)\n\
         latency ms: min {:.3}  median {:.3}  p90 {:.3}  max {:.3}  mean {:.3}\n\
         per op (ms per run, share of mean):",
        a.model.display(),
        a.iters,
        a.warmup,
        a.threads,
        l.min,
        l.median,
        l.p90,
        l.max,
        l.mean
    );
    for op in Op::ALL {
        let ms = op_ms(op);
        let share = if mean > 0.0 { 100.0 * ms / mean } else { 0.0 };
        out.push_str(&format!("\n  {:<12} {ms:>10.4}  {share:5.1} %", op.name()));
    }
    out.push_str(&format!(
        "\nmemory: peak RSS {} bytes, model {} bytes, scratch {} bytes",
        report.peak_rss_bytes, report.model_bytes, report.scratch_bytes
    ));
    print_line(&out)
}
