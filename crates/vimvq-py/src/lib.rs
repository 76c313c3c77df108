//! The Python module `vimvq`: classify images and extract features with a `.vimvq` model
//! (`vimvq.Model`), and pack or import checkpoints (`vimvq.pack`, `vimvq.import_checkpoint`)
//! through the command line's own code. Inference runs with the GIL released, on numpy arrays
//! viewed in place when they are C-contiguous. Errors raise `ValueError` (bad input or model)
//! or `OSError` (files) with the command line's one-line messages.

use std::sync::Mutex;

use clap::Parser;
use numpy::{PyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use vimvq_cli::cli::{self, one_line};
use vimvq_rt::context::{Context, Input, Top};
use vimvq_rt::format::ModelFile;
use vimvq_rt::forward::Features;
use vimvq_rt::frame::FrameFormat;

type Parsed<'a> = vimvq_rt::model::Model<'a>;

self_cell::self_cell!(
    /// A model file with its validated view.
    struct Loaded {
        owner: ModelFile,
        #[covariant]
        dependent: Parsed,
    }
);

/// `ValueError` with the one-line message of an error chain.
fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(one_line(&format!("{e:#}")))
}

/// `OSError` for file problems (an I/O error in the chain, or the command line's file
/// messages), `ValueError` otherwise.
fn cli_error(e: anyhow::Error) -> PyErr {
    let msg = one_line(&format!("{e:#}"));
    let io = e.chain().any(|c| c.is::<std::io::Error>())
        || [": no such file", ": permission denied", ": is a directory"]
            .iter()
            .any(|s| msg.contains(s));
    if io {
        PyOSError::new_err(msg)
    } else {
        PyValueError::new_err(msg)
    }
}

/// A `.vimvq` model ready to classify images: `Model(path, threads=1)`.
#[pyclass(frozen, module = "vimvq")]
struct Model {
    loaded: Loaded,
    threads: usize,
    labels: Vec<String>,
    /// The inference context's scratch, grown on demand and reused.
    scratch: Mutex<Vec<u8>>,
}

/// What one inference returns.
struct Outputs {
    logits: Vec<f32>,
    top: Vec<Top>,
    features: Vec<f32>,
}

impl Model {
    /// Runs one frame (`Input::Frame`) with the GIL released.
    fn infer(
        &self,
        py: Python<'_>,
        frame: &[u8],
        input: Input,
        k: usize,
        features: bool,
    ) -> PyResult<Outputs> {
        py.detach(|| {
            let model = *self.loaded.borrow_dependent();
            let c = *model.config();
            let mut out = Outputs {
                logits: vec![0.0; c.num_classes],
                top: vec![Top::default(); k.min(c.num_classes)],
                features: vec![0.0; if features { c.embed_dim } else { 0 }],
            };
            let bytes = Context::scratch_bytes(&model, input, self.threads).map_err(value_error)?;
            let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
            if scratch.len() < bytes {
                *scratch = cli::alloc_scratch(bytes, "inference scratch").map_err(value_error)?;
            }
            let mut ctx =
                Context::new(model, input, self.threads, &mut scratch).map_err(value_error)?;
            let f = Features {
                pooled: features.then_some(&mut out.features[..]),
                tokens: None,
            };
            ctx.classify_features(frame, &mut out.top, f)
                .map_err(value_error)?;
            out.logits.copy_from_slice(ctx.logits());
            Ok(out)
        })
    }

    /// Runs an image array: H×W×3 uint8 RGB, or H×W uint8 gray.
    fn infer_image(
        &self,
        py: Python<'_>,
        img: &Bound<'_, PyAny>,
        k: usize,
        features: bool,
    ) -> PyResult<Outputs> {
        let arr: PyReadonlyArrayDyn<'_, u8> = img.extract().map_err(|_| {
            PyValueError::new_err("image must be a numpy uint8 array (H×W×3 RGB or H×W gray)")
        })?;
        let (format, height, width) = match arr.shape() {
            [h, w, 3] => (FrameFormat::Rgb24, *h, *w),
            [h, w] => (FrameFormat::Gray8, *h, *w),
            s => {
                return Err(PyValueError::new_err(format!(
                    "image has shape {s:?}, expected (H, W, 3) RGB or (H, W) gray"
                )))
            }
        };
        let input = Input::Frame {
            format,
            width,
            height,
        };
        // A view when C-contiguous; a strided array (a crop, a BGR→RGB flip) is copied once.
        match arr.as_slice() {
            Ok(s) => self.infer(py, s, input, k, features),
            Err(_) => {
                let owned: Vec<u8> = arr.as_array().iter().copied().collect();
                self.infer(py, &owned, input, k, features)
            }
        }
    }

    /// `(index, label, probability)` tuples of a top-k list.
    fn top_list(&self, top: &[Top]) -> Vec<(u32, Option<String>, f32)> {
        top.iter()
            .map(|t| {
                let label = self.labels.get(t.class_index as usize).cloned();
                (t.class_index, label, t.prob)
            })
            .collect()
    }
}

#[pymethods]
impl Model {
    /// Opens and validates a `.vimvq` file (memory-mapped); each inference runs on `threads`
    /// threads (results are identical for any count).
    #[new]
    #[pyo3(signature = (path, threads = 1))]
    fn new(path: std::path::PathBuf, threads: usize) -> PyResult<Self> {
        if !(1..=cli::MAX_THREADS as usize).contains(&threads) {
            return Err(PyValueError::new_err(format!(
                "threads must be 1..={}, got {threads}",
                cli::MAX_THREADS
            )));
        }
        let file = cli::open_model(&path).map_err(cli_error)?;
        let loaded = Loaded::try_new(file, |f| cli::parse_model(&path, f)).map_err(cli_error)?;
        let labels = cli::output_labels(loaded.borrow_dependent(), None).map_err(cli_error)?;
        Ok(Model {
            loaded,
            threads,
            labels,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The `topk` most probable classes of an H×W×3 uint8 RGB image (any size; H×W gray also
    /// works), best first: a list of `(index, label, probability)`.
    #[pyo3(signature = (img, topk = 5))]
    fn classify(
        &self,
        py: Python<'_>,
        img: &Bound<'_, PyAny>,
        topk: usize,
    ) -> PyResult<Vec<(u32, Option<String>, f32)>> {
        if topk == 0 {
            return Err(PyValueError::new_err("topk must be at least 1"));
        }
        let out = self.infer_image(py, img, topk, false)?;
        Ok(self.top_list(&out.top))
    }

    /// Every class's logit for an image: float32[classes].
    fn logits<'py>(
        &self,
        py: Python<'py>,
        img: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let out = self.infer_image(py, img, 0, false)?;
        Ok(PyArray1::from_vec(py, out.logits))
    }

    /// The pooled feature vector the classifier head reads (the normalised class token):
    /// float32[embed_dim]. `logits = features @ head.T + bias`.
    fn features<'py>(
        &self,
        py: Python<'py>,
        img: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let out = self.infer_image(py, img, 0, true)?;
        Ok(PyArray1::from_vec(py, out.features))
    }

    /// Classifies one I420 (YUV 4:2:0 planar) frame of `width × height` given as bytes or a
    /// uint8 array, like [`Model::classify`].
    #[pyo3(signature = (buf, width, height, topk = 5))]
    fn classify_i420(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        width: usize,
        height: usize,
        topk: usize,
    ) -> PyResult<Vec<(u32, Option<String>, f32)>> {
        if topk == 0 {
            return Err(PyValueError::new_err("topk must be at least 1"));
        }
        let input = Input::Frame {
            format: FrameFormat::I420,
            width,
            height,
        };
        let out = if let Ok(b) = buf.cast::<PyBytes>() {
            self.infer(py, b.as_bytes(), input, topk, false)?
        } else {
            let arr: PyReadonlyArrayDyn<'_, u8> = buf.extract().map_err(|_| {
                PyValueError::new_err("I420 frame must be bytes or a numpy uint8 array")
            })?;
            match arr.as_slice() {
                Ok(s) => self.infer(py, s, input, topk, false)?,
                Err(_) => {
                    let owned: Vec<u8> = arr.as_array().iter().copied().collect();
                    self.infer(py, &owned, input, topk, false)?
                }
            }
        };
        Ok(self.top_list(&out.top))
    }

    /// The model: `config` (dict of dimensions), `bits` (stored bits per weight of the linear
    /// layers), `file_bytes`, `scratch_bytes` (network scratch for this thread count), `threads`,
    /// `labels`.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = self.loaded.borrow_dependent();
        let c = model.config();
        let p = model.preprocess();
        let config = PyDict::new(py);
        for (k, v) in [
            ("img_size", c.img_size),
            ("channels", c.channels),
            ("patch", c.patch),
            ("stride", c.stride),
            ("embed_dim", c.embed_dim),
            ("depth", c.depth),
            ("d_state", c.d_state),
            ("d_inner", c.d_inner),
            ("dt_rank", c.dt_rank),
            ("seq_len", c.seq_len()),
            ("num_classes", c.num_classes),
            ("resize", p.resize as usize),
            ("crop", p.crop as usize),
        ] {
            config.set_item(k, v)?;
        }
        let (mut bits, mut weights) = (0f64, 0f64);
        for t in model.tensors().filter(|t| t.role.is_linear()) {
            bits += t.bytes as f64 * 8.0;
            weights += t.numel() as f64;
        }
        let scratch =
            Context::scratch_bytes(model, Input::Tensor, self.threads).map_err(value_error)?;
        let d = PyDict::new(py);
        d.set_item("config", config)?;
        d.set_item("bits", if weights > 0.0 { bits / weights } else { 0.0 })?;
        d.set_item("file_bytes", model.file_bytes())?;
        d.set_item("scratch_bytes", scratch)?;
        d.set_item("threads", self.threads)?;
        d.set_item("labels", self.labels.clone())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = self.loaded.borrow_dependent().config();
        format!(
            "vimvq.Model(D={}, depth={}, img={}, classes={}, threads={})",
            c.embed_dim, c.depth, c.img_size, c.num_classes, self.threads
        )
    }
}

/// Runs one command-line subcommand (`args` without the program name) with the GIL released.
fn run_cli(py: Python<'_>, args: Vec<String>) -> PyResult<()> {
    let cli = vimvq_cli::Cli::try_parse_from(std::iter::once("vimvq".to_owned()).chain(args))
        .map_err(|e| PyValueError::new_err(cli::usage_message(&e)))?;
    py.detach(|| cli.run()).map_err(cli_error)
}

/// `--name value` arguments of keyword options (`snake_case` → `--kebab-case`; `True` is a
/// bare flag, `False`/`None` leave the option out).
fn option_args(options: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<String>> {
    let mut args = Vec::new();
    for (k, v) in options.into_iter().flat_map(|d| d.iter()) {
        let flag = format!("--{}", k.extract::<String>()?.replace('_', "-"));
        if v.is_none() {
            continue;
        }
        if let Ok(b) = v.extract::<bool>() {
            if b {
                args.push(flag);
            }
            continue;
        }
        args.push(flag);
        args.push(v.str()?.to_string());
    }
    Ok(args)
}

/// Vector-quantizes `checkpoint` into `output`, calibrated on the images under `calib`, like
/// `vimvq pack` (same options as keywords, e.g. `steps=100`, `objective="layer"`, `k=256, d=4`);
/// prints the command line's progress and summary.
#[pyfunction]
#[pyo3(signature = (checkpoint, output, calib, bits = 2, method = "vimvq", **options))]
fn pack(
    py: Python<'_>,
    checkpoint: std::path::PathBuf,
    output: std::path::PathBuf,
    calib: std::path::PathBuf,
    bits: u32,
    method: &str,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let mut args = vec!["pack".to_owned(), path_arg(&checkpoint)?, "-o".into()];
    args.extend([path_arg(&output)?, "--calib".into(), path_arg(&calib)?]);
    args.extend(["--method".into(), method.to_owned()]);
    let explicit_kd = options
        .is_some_and(|o| o.contains("k").unwrap_or(false) || o.contains("d").unwrap_or(false));
    if !explicit_kd {
        args.extend(["--bits".into(), bits.to_string()]);
    }
    args.extend(option_args(options)?);
    run_cli(py, args)
}

/// Converts a checkpoint (.pth or .safetensors) into an f32 `.vimvq` model like `vimvq import`
/// (same options as keywords, e.g. `img_size=28`, `key="model"`).
#[pyfunction]
#[pyo3(signature = (checkpoint, output, **options))]
fn import_checkpoint(
    py: Python<'_>,
    checkpoint: std::path::PathBuf,
    output: std::path::PathBuf,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let mut args = vec!["import".to_owned(), path_arg(&checkpoint)?, "-o".into()];
    args.push(path_arg(&output)?);
    args.extend(option_args(options)?);
    run_cli(py, args)
}

/// A path as a command-line argument (must be valid UTF-8).
fn path_arg(p: &std::path::Path) -> PyResult<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| PyValueError::new_err(format!("{}: not valid UTF-8", p.display())))
}

/// vimvq: vector-quantized Vision Mamba classifiers on CPUs.
#[pymodule]
fn vimvq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(import_checkpoint, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
