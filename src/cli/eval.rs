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
use vimvq_rt::model::Model;

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

/// The reference an evaluation compares the model with (`--reference`).
pub enum Reference<'m> {
    /// No reference.
    None,
    /// Run this model on every image.
    Model(Box<Model<'m>>),
    /// Its logits on every sample, already known (`sample × classes`, from an earlier run of
    /// the same reference model on the same samples).
    Logits(&'m [f32]),
}

/// What [`evaluate`] measured.
pub struct Scores {
    /// Images evaluated.
    pub count: usize,
    /// Top-1 accuracy of the model.
    pub top1: f64,
    /// Top-5 accuracy of the model.
    pub top5: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Worker threads used.
    pub threads: usize,
    /// With a reference.
    pub reference: Option<ReferenceScores>,
}

/// The model against the reference.
pub struct ReferenceScores {
    /// Top-1 accuracy of the reference.
    pub top1: f64,
    /// Top-5 accuracy of the reference.
    pub top5: f64,
    /// Fraction of images whose top-1 class equals the reference's.
    pub top1_agreement: f64,
    /// Mean over images of KL(p_ref ‖ p), nats.
    pub mean_kl: f64,
    /// The reference's logits, `count × classes` (empty unless asked for).
    pub logits: Vec<f32>,
}

/// Classifies every sample with `model` (and `reference`) on `threads` workers, each image with
/// its own single-threaded inference context: accuracy, and against the reference top-1
/// agreement and mean KL (summed in sample order: the same numbers for any thread count).
/// `keep_logits` returns the reference's logits (when it is a model).
pub fn evaluate(
    model: Model<'_>,
    reference: Reference<'_>,
    samples: &[&Sample],
    threads: usize,
    keep_logits: bool,
    bar: &ProgressBar,
) -> Result<Scores> {
    let classes = model.config().num_classes;
    let count = samples.len();
    let threads = threads.min(count).max(1);
    if let Reference::Model(m) = &reference {
        if m.config().num_classes != classes || m.config().input_len() != model.config().input_len()
        {
            bail!("the reference model has another input size or class count");
        }
    }
    if let Reference::Logits(l) = &reference {
        if l.len() != count * classes {
            bail!("the reference logits do not match the samples");
        }
    }
    let with_ref = !matches!(reference, Reference::None);
    let k5 = 5.min(classes);
    // Per sample: (KL, agreement, reference top-1 hit, reference top-5 hit), added in sample
    // order at the end; the reference logits when kept.
    let per: Mutex<Vec<(f64, bool, bool, bool)>> = Mutex::new(if with_ref {
        vec![(0.0, false, false, false); count]
    } else {
        Vec::new()
    });
    let ref_logits: Mutex<Vec<f32>> =
        Mutex::new(if keep_logits && matches!(reference, Reference::Model(_)) {
            vec![0.0; count * classes]
        } else {
            Vec::new()
        });
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
                let ref_model = match &reference {
                    Reference::Model(m) => Some(**m),
                    _ => None,
                };
                let mut ref_clf = match ref_model.map(|m| Classifier::new(m, 1, k5)).transpose() {
                    Ok(c) => c,
                    Err(e) => {
                        record(&failure, &stop, 0, e);
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sample) = samples.get(i) else { break };
                    let hit = |t: &Top| t.class_index as usize == sample.class;
                    let r = match clf.classify_image(&sample.path) {
                        Ok(r) => r,
                        Err(e) => {
                            record(&failure, &stop, i, e);
                            continue;
                        }
                    };
                    let compare = |rl: &[f32], rtop: &[Top]| {
                        (
                            kl_logits(rl, r.logits),
                            rtop.first().map(|t| t.class_index)
                                == r.top.first().map(|t| t.class_index),
                            rtop.first().is_some_and(hit),
                            rtop.iter().any(hit),
                        )
                    };
                    let entry = match (&reference, ref_clf.as_mut()) {
                        (_, Some(rc)) => match rc.classify_image(&sample.path) {
                            Ok(rr) => {
                                let mut kept = ref_logits.lock().unwrap_or_else(|p| p.into_inner());
                                if !kept.is_empty() {
                                    kept[i * classes..(i + 1) * classes].copy_from_slice(rr.logits);
                                }
                                Some(compare(rr.logits, rr.top))
                            }
                            Err(e) => {
                                record(&failure, &stop, i, e);
                                continue;
                            }
                        },
                        (Reference::Logits(l), None) => {
                            let rl = &l[i * classes..(i + 1) * classes];
                            Some(compare(rl, &super::top_classes(rl, k5)))
                        }
                        _ => None,
                    };
                    if let Some(e) = entry {
                        per.lock().unwrap_or_else(|p| p.into_inner())[i] = e;
                    }
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
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let failure = failure
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, e)) = failure {
        return Err(e);
    }
    let c = count as f64;
    let reference = with_ref.then(|| {
        let per = per.into_inner().unwrap_or_else(|p| p.into_inner());
        let frac = |f: fn(&(f64, bool, bool, bool)) -> bool| {
            per.iter().filter(|e| f(e)).count() as f64 / c
        };
        ReferenceScores {
            top1: frac(|e| e.2),
            top5: frac(|e| e.3),
            top1_agreement: frac(|e| e.1),
            mean_kl: per.iter().map(|e| e.0).sum::<f64>() / c,
            logits: ref_logits.into_inner().unwrap_or_else(|p| p.into_inner()),
        }
    });
    Ok(Scores {
        count,
        top1: top1.into_inner() as f64 / c,
        top5: top5.into_inner() as f64 / c,
        seconds,
        threads,
        reference,
    })
}

/// The samples `eval --limit N` and `pack --eval-limit N` evaluate: `limit` spread evenly over
/// the sorted dataset (all without a limit).
pub fn pick(all: &[Sample], limit: Option<u64>) -> Vec<&Sample> {
    let limit = limit.map_or(all.len(), |l| usize::try_from(l).unwrap_or(usize::MAX));
    spread(all.len(), limit)
        .into_iter()
        .map(|i| &all[i])
        .collect()
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
    let samples = pick(&all, a.limit);
    let ref_file = a.reference.as_deref().map(open_model).transpose()?;
    let reference = match (&ref_file, &a.reference) {
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
            Reference::Model(Box::new(m))
        }
        _ => Reference::None,
    };
    let bar = if progress_allowed(a.json) {
        let b = ProgressBar::new(samples.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images, {per_sec}, eta {eta} (top-1 {msg})",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let scores = evaluate(model, reference, &samples, a.threads, false, &bar);
    bar.finish_and_clear();
    let scores = scores?;
    let report = Report {
        count: scores.count,
        top1: scores.top1,
        top5: scores.top5,
        images_per_second: if scores.seconds > 0.0 {
            scores.count as f64 / scores.seconds
        } else {
            0.0
        },
        threads: scores.threads,
        top1_agreement: scores.reference.as_ref().map(|r| r.top1_agreement),
        mean_kl: scores.reference.as_ref().map(|r| r.mean_kl),
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
        let threads = report.threads;
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
