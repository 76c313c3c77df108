//! `vimvq run MODEL (IMAGE... | --tensor X.npy)`: classify and print the top-k classes.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::classify::Classifier;
use super::{
    escape_text, open_model, output_labels, parse_model, print_line, softmax, threads_parser, top_k,
};

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
    /// Print JSON (cli.md) instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Top<'a> {
    class: usize,
    label: Option<&'a str>,
    prob: f32,
}

#[derive(Serialize)]
struct Output<'a> {
    logits: Vec<f32>,
    top: Vec<Top<'a>>,
}

#[derive(Serialize)]
struct Report<'a> {
    outputs: Vec<Output<'a>>,
}

/// Runs `vimvq run`.
pub fn run(a: RunArgs) -> Result<()> {
    let file = open_model(&a.model)?;
    let model = parse_model(&a.model, &file)?;
    let labels = output_labels(&model, a.labels.as_deref())?;
    let c = *model.config();
    let k = usize::try_from(a.topk)
        .unwrap_or(usize::MAX)
        .min(c.num_classes);
    let mut clf = Classifier::new(model, a.threads)?;

    // (display name, logits) per input, in input order.
    let mut results: Vec<(String, Vec<f32>)> = Vec::new();
    let emit = |name: String, logits: &[f32], results: &mut Vec<(String, Vec<f32>)>| {
        if a.json {
            results.push((name, logits.to_vec()));
            Ok(())
        } else {
            print_line(&text_line(&name, logits, k, &labels))
        }
    };
    if let Some(t) = &a.tensor {
        let batch = crate::npy::read_batch(t, c.channels, c.img_size)?;
        for (i, x) in batch.data.chunks_exact(c.input_len()).enumerate() {
            let name = format!("{}[{i}]", t.display());
            let logits = clf.classify_tensor(x)?;
            emit(name, logits, &mut results)?;
        }
    } else {
        for p in &a.images {
            let logits = clf.classify_image(p)?;
            emit(p.display().to_string(), logits, &mut results)?;
        }
    }
    if a.json {
        let outputs = results
            .into_iter()
            .map(|(_, logits)| {
                let probs = softmax(&logits);
                let top = top_k(&logits, k)
                    .into_iter()
                    .map(|i| Top {
                        class: i,
                        label: labels.get(i).map(String::as_str),
                        prob: probs[i],
                    })
                    .collect();
                Output { logits, top }
            })
            .collect();
        print_line(&serde_json::to_string(&Report { outputs })?)?;
    }
    Ok(())
}

/// `name: label (class) prob, …` for the top `k` classes.
fn text_line(name: &str, logits: &[f32], k: usize, labels: &[String]) -> String {
    let probs = softmax(logits);
    let tops: Vec<String> = top_k(logits, k)
        .into_iter()
        .map(|i| {
            let label = labels.get(i).map_or("-", String::as_str);
            format!("{} ({i}) {:.4}", escape_text(label), probs[i])
        })
        .collect();
    format!("{}: {}", escape_text(name), tops.join(", "))
}
