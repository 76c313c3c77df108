//! `vimvq inspect MODEL.vimvq|CHECKPOINT`: sizes, config, tensors and weight-outlier statistics.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use vimvq_pack::import::{self, config::schema_names, infer_config, torch_shape};
use vimvq_rt::format::{Role, MAGIC};
use vimvq_rt::model::{Model, TensorKind, Weight};
use vimvq_rt::{Interpolation, VimConfig};

use super::{io_error, open_model, parse_model, print_line};

/// Arguments of `vimvq inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A .vimvq model, or a .pth / .safetensors checkpoint (detected from the content)
    #[arg(value_name = "MODEL.vimvq|CHECKPOINT")]
    pub path: PathBuf,
    /// Print JSON (fields in docs/CLI.md) instead of text
    #[arg(long)]
    pub json: bool,
}

/// One row of `tensors`.
#[derive(Serialize, Debug)]
struct TensorRow {
    name: String,
    shape: Vec<usize>,
    kind: &'static str,
    bits_per_weight: f64,
    bytes: u64,
    k: Option<usize>,
    d: Option<usize>,
}

/// One row of `outliers`: statistics of a linear layer's weights.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Outliers {
    /// State-dict name.
    pub name: String,
    /// Number of weights.
    pub numel: usize,
    /// `max |w| / σ` (σ = population standard deviation of the weights).
    pub max_abs_over_std: f64,
    /// `E[(w − μ)⁴] / σ⁴ − 3` (0 for a Gaussian).
    pub excess_kurtosis: f64,
    /// Fraction of weights with `|w| > 6σ`.
    pub share_above_6sigma: f64,
}

/// Statistics of `w` (f64 accumulation, two passes).
pub fn outlier_stats(name: String, w: &[f32]) -> Outliers {
    let n = w.len().max(1) as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut m2, mut m4, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
    for &v in w {
        let d = v as f64 - mean;
        let d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
        max_abs = max_abs.max((v as f64).abs());
    }
    m2 /= n;
    m4 /= n;
    let std = m2.sqrt();
    let (ratio, kurt, share) = if std > 0.0 {
        let over = w.iter().filter(|&&v| (v as f64).abs() > 6.0 * std).count();
        (max_abs / std, m4 / (m2 * m2) - 3.0, over as f64 / n)
    } else {
        (0.0, 0.0, 0.0)
    };
    Outliers {
        name,
        numel: w.len(),
        max_abs_over_std: ratio,
        excess_kurtosis: kurt,
        share_above_6sigma: share,
    }
}

fn config_json(c: &VimConfig) -> Value {
    json!({
        "embed_dim": c.embed_dim,
        "depth": c.depth,
        "patch": c.patch,
        "stride": c.stride,
        "img_size": c.img_size,
        "channels": c.channels,
        "num_classes": c.num_classes,
        "d_state": c.d_state,
        "dt_rank": c.dt_rank,
        "d_conv": c.d_conv,
        "d_inner": c.d_inner,
        "norm_eps": c.norm_eps,
        "seq_len": c.seq_len(),
    })
}

fn config_text(c: &VimConfig) -> String {
    format!(
        "D={} depth={} patch={} stride={} img={} channels={} classes={} d_state={} dt_rank={} \
         d_conv={} d_inner={} (L={})",
        c.embed_dim,
        c.depth,
        c.patch,
        c.stride,
        c.img_size,
        c.channels,
        c.num_classes,
        c.d_state,
        c.dt_rank,
        c.d_conv,
        c.d_inner,
        c.seq_len()
    )
}

/// Runs `vimvq inspect`.
pub fn run(a: InspectArgs) -> Result<()> {
    if a.path.is_dir() {
        bail!(
            "{}: is a directory, not a model or checkpoint",
            a.path.display()
        );
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(&a.path)
        .and_then(|mut f| {
            let mut got = 0;
            while got < head.len() {
                match f.read(&mut head[got..])? {
                    0 => break,
                    k => got += k,
                }
            }
            Ok(got)
        })
        .map_err(|e| io_error(&a.path, &e))?;
    if n < head.len() && n > 0 && head[..n] == MAGIC[..n] {
        bail!(
            "{}: truncated .vimvq model ({n} bytes, shorter than its magic)",
            a.path.display()
        );
    }
    let (value, text) = if n == head.len() && head == MAGIC {
        inspect_model(&a.path)?
    } else {
        inspect_checkpoint(&a.path)?
    };
    if a.json {
        print_line(&serde_json::to_string(&value)?)
    } else {
        print_line(text.trim_end())
    }
}

fn tensors_text(rows: &[TensorRow], outliers: &[Outliers]) -> String {
    let mut t = String::from("tensors:\n");
    for r in rows {
        let shape = r
            .shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x");
        let vq = match (r.k, r.d) {
            (Some(k), Some(d)) => format!(" k={k} d={d}"),
            _ => String::new(),
        };
        t += &format!(
            "  {:<36} {:<14} {:<5} {:>6.3} bits/w {:>10} bytes{vq}\n",
            r.name, shape, r.kind, r.bits_per_weight, r.bytes
        );
    }
    t += "outliers (linear layers): max|w|/std, excess kurtosis, share |w| > 6 std\n";
    for o in outliers {
        t += &format!(
            "  {:<36} {:>8.2} {:>10.3} {:>10.3e}\n",
            o.name, o.max_abs_over_std, o.excess_kurtosis, o.share_above_6sigma
        );
    }
    t
}

fn inspect_model(path: &Path) -> Result<(Value, String)> {
    let file = open_model(path)?;
    let model = parse_model(path, &file)?;
    let c = *model.config();
    let mut rows = Vec::new();
    let mut outliers = Vec::new();
    let mut weight_bytes = 0u64;
    for t in model.tensors() {
        let name = t.name().to_string();
        let numel = t.numel().max(1);
        weight_bytes += t.bytes;
        let vq = t.kind == TensorKind::Vq;
        rows.push(TensorRow {
            name: name.clone(),
            shape: torch_shape(t.role, &c),
            kind: if vq { "vq" } else { "dense" },
            bits_per_weight: t.bytes as f64 * 8.0 / numel as f64,
            bytes: t.bytes,
            k: vq.then_some(t.k),
            d: vq.then_some(t.d),
        });
        if t.role.is_linear() {
            let w = weights(&model, t.role, t.layer)
                .map_err(|e| anyhow!("{}: tensor {name}: {e}", path.display()))?;
            outliers.push(outlier_stats(name, &w));
        }
    }
    let p = model.preprocess();
    let labels: Vec<&str> = model.labels().collect();
    let (major, minor) = model.version();
    let value = json!({
        "file_bytes": model.file_bytes(),
        "weight_bytes": weight_bytes,
        "format": "vimvq",
        "version": format!("{major}.{minor}"),
        "config": config_json(&c),
        "preprocess": {
            "resize": p.resize,
            "crop": p.crop,
            "interpolation": interpolation_name(p.interpolation),
            "mean": p.mean,
            "std": p.std,
        },
        "labels": labels,
        "scratch_bytes": model.scratch_bytes(),
        "tensors": rows,
        "outliers": outliers,
    });
    let mut text = format!(
        "{}: .vimvq v{major}.{minor}, {} bytes ({} bytes of weights), scratch {} bytes\n\
         config: {}\npreprocess: resize {} crop {} {} mean {:?} std {:?}; {} labels\n",
        path.display(),
        model.file_bytes(),
        weight_bytes,
        model.scratch_bytes(),
        config_text(&c),
        p.resize,
        p.crop,
        interpolation_name(p.interpolation),
        p.mean,
        p.std,
        labels.len()
    );
    text += &tensors_text(&rows, &outliers);
    Ok((value, text))
}

fn interpolation_name(i: Interpolation) -> &'static str {
    match i {
        Interpolation::Bicubic => "bicubic",
        Interpolation::Bilinear => "bilinear",
    }
}

/// Dense f32 values of a stored tensor (VQ decoded).
fn weights(model: &Model<'_>, role: Role, layer: usize) -> Result<Vec<f32>> {
    match model.weight(role, layer) {
        Some(Weight::Dense(v)) => Ok(v.to_vec()),
        Some(Weight::Vq(m)) => {
            let mut out = vec![0f32; m.rows * m.cols];
            vimvq_rt::kernels::scalar::vq_decode_rows_f32(&m, 0, m.rows, &mut out);
            Ok(out)
        }
        None => Err(anyhow!("not stored")),
    }
}

fn inspect_checkpoint(path: &Path) -> Result<(Value, String)> {
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| io_error(path, &e))?
        .len();
    let ck = import::load(path, None)?;
    let c = infer_config(&ck, None).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    let mut outliers = Vec::new();
    let mut weight_bytes = 0u64;
    for name in schema_names(c.depth) {
        let Some(t) = ck.tensors.get(&name) else {
            continue;
        };
        let bytes = t.data.len() as u64 * 4;
        weight_bytes += bytes;
        rows.push(TensorRow {
            name: name.clone(),
            shape: t.shape.clone(),
            kind: "dense",
            bits_per_weight: 32.0,
            bytes,
            k: None,
            d: None,
        });
        if Role::from_torch_name(&name).is_some_and(|(r, _)| r.is_linear()) {
            outliers.push(outlier_stats(name, &t.data));
        }
    }
    let value = json!({
        "file_bytes": file_bytes,
        "weight_bytes": weight_bytes,
        "format": "checkpoint",
        "config": config_json(&c),
        "metadata": ck.meta,
        "tensors": rows,
        "outliers": outliers,
    });
    let mut text = format!(
        "{}: checkpoint, {} bytes ({} bytes of f32 weights)\nconfig: {}\n",
        path.display(),
        file_bytes,
        weight_bytes,
        config_text(&c)
    );
    text += &tensors_text(&rows, &outliers);
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_like_stats() {
        // A symmetric two-point distribution: kurtosis 1 − 3 = −2, max|w|/σ = 1.
        let w: Vec<f32> = (0..1000)
            .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let s = outlier_stats("x".into(), &w);
        assert!((s.max_abs_over_std - 1.0).abs() < 1e-12);
        assert!((s.excess_kurtosis + 2.0).abs() < 1e-12);
        assert_eq!(s.share_above_6sigma, 0.0);
        // One huge outlier among zeros.
        let mut w = vec![0.0f32; 1000];
        w[7] = 100.0;
        let s = outlier_stats("y".into(), &w);
        assert!(s.max_abs_over_std > 30.0 && s.share_above_6sigma == 0.001);
    }
}
