//! `vimvq eval MODEL --data DIR`: top-1/top-5 accuracy on an ImageFolder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vimvq_rt::context::Top;

use super::classify::Classifier;
use super::{
    io_error, kl_logits, open_model, parse_model, print_line, progress_allowed, threads_parser,
};

/// Arguments of `vimvq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file
    #[arg(value_name = "MODEL.vimvq")]
    pub model: PathBuf,
    /// ImageFolder root: DIR/<class>/<image>; class index = position in the sorted folder names
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Evaluate only N images, spread evenly over the sorted dataset
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Images classified in parallel (one model context per thread)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = threads_parser())]
    pub threads: usize,
    /// Print JSON (fields in docs/CLI.md) instead of text
    #[arg(long)]
    pub json: bool,
    /// Also run this (usually the f32) model on every image and report the fidelity against it:
    /// top-1 agreement and mean KL(reference ‖ model) of the softmax outputs
    #[arg(long, value_name = "F32.vimvq")]
    pub reference: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    count: usize,
    top1: f64,
    top5: f64,
    images_per_second: f64,
    threads: usize,
    /// With `--reference`: fraction of images whose top-1 class equals the reference's.
    #[serde(skip_serializing_if = "Option::is_none")]
    top1_agreement: Option<f64>,
    /// With `--reference`: mean over images of KL(p_ref ‖ p) in nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_kl: Option<f64>,
}

/// One image of the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Class index.
    pub class: usize,
}

/// Lists an ImageFolder as torchvision does: classes = sorted sub-folder names; per class, every
/// file below its folder (recursively, following links, each folder and file once: see
/// [`super::folder::image_files`]) with an accepted extension, ordered by
/// (folder path, file name) as Python's `sorted(os.walk(...))` + `sorted(fnames)`.
pub fn list_image_folder(root: &Path) -> Result<(Vec<String>, Vec<Sample>)> {
    let entries = std::fs::read_dir(root).map_err(|e| io_error(root, &e))?;
    let mut classes = Vec::new();
    for e in entries {
        let e = e.map_err(|e| io_error(root, &e))?;
        if e.path().is_dir() {
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow!("{}: class folder name {n:?} is not UTF-8", root.display()))?;
            classes.push(name);
        }
    }
    classes.sort();
    if classes.is_empty() {
        bail!(
            "{}: no class sub-folders (expected DIR/<class>/<image>)",
            root.display()
        );
    }
    let mut samples = Vec::new();
    for (ci, name) in classes.iter().enumerate() {
        let dir = root.join(name);
        let files = super::folder::image_files(&dir)?;
        if files.is_empty() {
            bail!(
                "{}: no images ({}) in class folder",
                dir.display(),
                crate::image_io::EXTENSIONS.join(", ")
            );
        }
        samples.extend(files.into_iter().map(|f| Sample {
            path: f.path,
            class: ci,
        }));
    }
    Ok((classes, samples))
}

/// `n` indices spread evenly over `0..len` (all of them when `n ≥ len`).
fn spread(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    (0..n).map(|i| i * len / n).collect()
}

/// Runs `vimvq eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let file = open_model(&a.model)?;
    let model = parse_model(&a.model, &file)?;
    let classes = model.config().num_classes;
    let (names, all) = list_image_folder(&a.data)?;
    if names.len() > classes {
        bail!(
            "{}: {} class folders, but the model has only {classes} classes",
            a.data.display(),
            names.len()
        );
    }
    let limit = a
        .limit
        .map_or(all.len(), |l| usize::try_from(l).unwrap_or(usize::MAX));
    let samples: Vec<&Sample> = spread(all.len(), limit)
        .into_iter()
        .map(|i| &all[i])
        .collect();
    let count = samples.len();
    let threads = a.threads.min(count).max(1);
    let ref_file = a.reference.as_deref().map(open_model).transpose()?;
    let ref_model = match (&ref_file, &a.reference) {
        (Some(f), Some(p)) => {
            let m = parse_model(p, f)?;
            if m.config().num_classes != classes
                || m.config().input_len() != model.config().input_len()
            {
                bail!(
                    "{}: reference model has another input size or class count",
                    p.display()
                );
            }
            Some(m)
        }
        _ => None,
    };
    let agree = AtomicUsize::new(0);
    // KL sums per sample, added in sample order at the end (deterministic for any thread count).
    let kls: Mutex<Vec<f64>> = Mutex::new(if ref_model.is_some() {
        vec![0.0; count]
    } else {
        Vec::new()
    });
    let k5 = 5.min(classes);

    let bar = if progress_allowed(a.json) {
        let b = ProgressBar::new(count as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images, {per_sec}, eta {eta} (top-1 {msg})",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };

    let next = AtomicUsize::new(0);
    let top1 = AtomicUsize::new(0);
    let top5 = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The failure with the smallest sample index wins, so the message does not depend on timing.
    let failure: Mutex<Option<(usize, anyhow::Error)>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut clf = match Classifier::new(model, 1, k5) {
                    Ok(c) => c,
                    Err(e) => {
                        record(&failure, &stop, 0, e);
                        return;
                    }
                };
                let mut ref_clf = match ref_model.map(|m| Classifier::new(m, 1, 1)).transpose() {
                    Ok(c) => c,
                    Err(e) => {
                        record(&failure, &stop, 0, e);
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sample) = samples.get(i) else { break };
                    match clf.classify_image(&sample.path) {
                        Ok(r) => {
                            if let Some(rc) = ref_clf.as_mut() {
                                match rc.classify_image(&sample.path) {
                                    Ok(rr) => {
                                        if rr.top.first().map(|t| t.class_index)
                                            == r.top.first().map(|t| t.class_index)
                                        {
                                            agree.fetch_add(1, Ordering::Relaxed);
                                        }
                                        let kl = kl_logits(rr.logits, r.logits);
                                        kls.lock().unwrap_or_else(|p| p.into_inner())[i] = kl;
                                    }
                                    Err(e) => {
                                        record(&failure, &stop, i, e);
                                        continue;
                                    }
                                }
                            }
                            let hit = |t: &Top| t.class_index as usize == sample.class;
                            if r.top.first().is_some_and(hit) {
                                top1.fetch_add(1, Ordering::Relaxed);
                            }
                            if r.top.iter().any(hit) {
                                top5.fetch_add(1, Ordering::Relaxed);
                            }
                            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                            bar.inc(1);
                            if n.is_multiple_of(64) {
                                let acc = top1.load(Ordering::Relaxed) as f64 / n as f64;
                                bar.set_message(format!("{:.2}%", 100.0 * acc));
                            }
                        }
                        Err(e) => record(&failure, &stop, i, e),
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let failure = failure
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, e)) = failure {
        return Err(e);
    }

    let report = Report {
        count,
        top1: top1.into_inner() as f64 / count as f64,
        top5: top5.into_inner() as f64 / count as f64,
        images_per_second: if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        },
        threads,
        top1_agreement: ref_model.map(|_| agree.into_inner() as f64 / count as f64),
        mean_kl: ref_model.map(|_| {
            let k = kls.into_inner().unwrap_or_else(|p| p.into_inner());
            k.iter().sum::<f64>() / count as f64
        }),
    };
    if a.json {
        print_line(&serde_json::to_string(&report)?)
    } else {
        if let (Some(ag), Some(kl)) = (report.top1_agreement, report.mean_kl) {
            print_line(&format!(
                "vs reference: top-1 agreement {:.2}%  mean KL {kl:.3e} nats",
                100.0 * ag
            ))?;
        }
        print_line(&format!(
            "top-1 {:.2}%  top-5 {:.2}%  ({} images, {} classes, {:.1} images/s, {} thread{})",
            100.0 * report.top1,
            100.0 * report.top5,
            report.count,
            names.len(),
            report.images_per_second,
            threads,
            if threads == 1 { "" } else { "s" }
        ))
    }
}

fn record(
    failure: &Mutex<Option<(usize, anyhow::Error)>>,
    stop: &AtomicBool,
    i: usize,
    e: anyhow::Error,
) {
    stop.store(true, Ordering::Relaxed);
    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
    if f.as_ref().is_none_or(|(j, _)| i < *j) {
        *f = Some((i, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        assert_eq!(kl_logits(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        // shift invariance
        assert!(kl_logits(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]) < 1e-12);
        // KL([1/2, 1/2] ‖ [e/(1+e), 1/(1+e)]) by hand
        let q1 = 1f64.exp() / (1.0 + 1f64.exp());
        let want = 0.5 * (0.5 / q1).ln() + 0.5 * (0.5 / (1.0 - q1)).ln();
        assert!((kl_logits(&[0.0, 0.0], &[1.0, 0.0]) - want).abs() < 1e-12);
    }

    #[test]
    fn spread_is_even_and_bounded() {
        assert_eq!(spread(10, 3), vec![0, 3, 6]);
        assert_eq!(spread(3, 10), vec![0, 1, 2]);
        assert_eq!(spread(10_000, 10).last(), Some(&9000));
    }
}
