//! `vimvq run MODEL (IMAGE... | --tensor X.npy)`: classify and print the top-k classes.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use serde::Serialize;

use super::classify::{Classified, Classifier};
use vimvq_rt::context::Top;

use super::{escape_text, open_model, output_labels, parse_model, print_line, threads_parser};

/// Arguments of `vimvq run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model file
    #[arg(value_name = "MODEL.vimvq")]
    pub model: PathBuf,
    /// Images to classify (jpg, jpeg, png, bmp, webp); preprocessed as stored in the model
    #[arg(value_name = "IMAGE", required_unless_present = "tensor")]
    pub images: Vec<PathBuf>,
    /// Already-normalised float32 input of shape (N, C, H, W) or (C, H, W) instead of images
    #[arg(long, value_name = "X.npy", conflicts_with = "images")]
    pub tensor: Option<PathBuf>,
    /// Classes to report per input
    #[arg(long, value_name = "K", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub topk: u64,
    /// Class names to print instead of the model's, one per line
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Threads per inference (layers split across them; results are identical for any count)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = threads_parser())]
    pub threads: usize,
    /// Print JSON (fields in docs/CLI.md) instead of text
    #[arg(long)]
    pub json: bool,
    /// Also write every input's pooled feature vector (what the head reads) to this float32
    /// .npy file, shape (N, D)
    #[arg(long, value_name = "OUT.npy")]
    pub features: Option<PathBuf>,
    /// Also write every input's token states after the final norm to this float32 .npy file,
    /// shape (N, L, D)
    #[arg(long, value_name = "OUT.npy")]
    pub tokens: Option<PathBuf>,
}

#[derive(Serialize)]
struct TopJson<'a> {
    class: usize,
    label: Option<&'a str>,
    prob: f32,
}

#[derive(Serialize)]
struct Output<'a> {
    logits: Vec<f32>,
    top: Vec<TopJson<'a>>,
}

#[derive(Serialize)]
struct Report<'a> {
    outputs: Vec<Output<'a>>,
}

/// Runs `vimvq run`.
pub fn run(a: RunArgs) -> Result<()> {
    // Output files are checked before any work (folder exists, not a device, FIFO or symlink).
    for p in a.features.iter().chain(&a.tokens) {
        vimvq_pack::output::check_target(p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    let file = open_model(&a.model)?;
    let model = parse_model(&a.model, &file)?;
    let labels = output_labels(&model, a.labels.as_deref())?;
    let c = *model.config();
    let k = usize::try_from(a.topk)
        .unwrap_or(usize::MAX)
        .min(c.num_classes);
    let mut clf = Classifier::new(model, a.threads, k)?
        .with_features(a.features.is_some(), a.tokens.is_some());

    let mut outputs: Vec<Output> = Vec::new();
    let (mut pooled, mut tokens) = (Vec::new(), Vec::new());
    let mut n = 0;
    let mut emit = |name: String, r: Classified<'_>| {
        pooled.extend_from_slice(r.pooled);
        tokens.extend_from_slice(r.tokens);
        n += 1;
        if a.json {
            let top = r
                .top
                .iter()
                .map(|t| TopJson {
                    class: t.class_index as usize,
                    label: labels.get(t.class_index as usize).map(String::as_str),
                    prob: t.prob,
                })
                .collect();
            outputs.push(Output {
                logits: r.logits.to_vec(),
                top,
            });
            Ok(())
        } else {
            print_line(&text_line(&name, r.top, &labels))
        }
    };
    if let Some(t) = &a.tensor {
        let batch = crate::npy::read_batch(t, c.channels, c.img_size)?;
        for (i, x) in batch.data.chunks_exact(c.input_len()).enumerate() {
            emit(format!("{}[{i}]", t.display()), clf.classify_tensor(x)?)?;
        }
    } else {
        for p in &a.images {
            emit(p.display().to_string(), clf.classify_image(p)?)?;
        }
    }
    let (l, d) = (c.seq_len(), c.embed_dim);
    if let Some(p) = &a.features {
        crate::npy::write_f32(p, &[n, d], &pooled)?;
    }
    if let Some(p) = &a.tokens {
        crate::npy::write_f32(p, &[n, l, d], &tokens)?;
    }
    if a.json {
        print_line(&serde_json::to_string(&Report { outputs })?)?;
    }
    Ok(())
}

/// `name: label (class) prob, …` for the top classes.
fn text_line(name: &str, top: &[Top], labels: &[String]) -> String {
    let tops: Vec<String> = top
        .iter()
        .map(|t| {
            let i = t.class_index as usize;
            let label = labels.get(i).map_or("-", String::as_str);
            format!("{} ({i}) {:.4}", escape_text(label), t.prob)
        })
        .collect();
    format!("{}: {}", escape_text(name), tops.join(", "))
}
