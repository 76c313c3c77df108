//! C ABI of the vimvq runtime: open a `.vimvq` model, classify RGB24 or I420 frames of any size
//! into caller-owned buffers. The header is `include/vimvq.h`; `examples/classify.c` shows use.
//!
//! # Contract (repeated in the header)
//! * Every function catches panics (`catch_unwind`) and checks its pointers; a failure returns a
//!   [`vimvq_status`] code and records a message for [`vimvq_last_error`] (thread-local).
//! * A model handle is immutable after opening: several threads may classify with the same
//!   handle at once, each with its own scratch buffer.
//! * `vimvq_classify` performs no heap allocation: everything it needs lives in the caller's
//!   scratch buffer, sized by `vimvq_scratch_bytes` for a frame size and format (any alignment).
//! * `vimvq_open` memory-maps the file (the file must not change while open);
//!   `vimvq_open_memory` copies the bytes into an internal 64-byte-aligned buffer, so the
//!   caller's buffer may be freed right after the call and needs no particular alignment.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vimvq_rt::context::{Context, ContextError, Input, Top};
use vimvq_rt::format::{AlignedBytes, ModelFile};
use vimvq_rt::forward::Features;
use vimvq_rt::frame::{self, FrameFormat};
use vimvq_rt::model::Model;

/// Status codes (`VIMVQ_OK` … in the header).
pub type vimvq_status = c_int;
/// Success.
pub const VIMVQ_OK: vimvq_status = 0;
/// A required pointer argument was NULL.
pub const VIMVQ_E_NULL: vimvq_status = 1;
/// The model file could not be opened or read.
pub const VIMVQ_E_IO: vimvq_status = 2;
/// The bytes are not a valid `.vimvq` model.
pub const VIMVQ_E_FORMAT: vimvq_status = 3;
/// A bad argument: frame size, pixel format, frame length, zero `k`, ….
pub const VIMVQ_E_ARG: vimvq_status = 4;
/// A caller buffer (scratch, logits) is too small.
pub const VIMVQ_E_BUFFER: vimvq_status = 5;
/// Inference failed (should not happen with a validated model).
pub const VIMVQ_E_INFER: vimvq_status = 6;
/// A bug: the library panicked; the panic was caught.
pub const VIMVQ_E_PANIC: vimvq_status = 7;

/// Pixel format of `vimvq_classify` frames.
pub const VIMVQ_FORMAT_RGB24: c_int = 0;
/// Planar 4:2:0, BT.601 limited range (see `vimvq_rt::frame`).
pub const VIMVQ_FORMAT_I420: c_int = 1;
/// One 8-bit luma sample per pixel.
pub const VIMVQ_FORMAT_GRAY8: c_int = 2;

/// One top-k entry: `{ uint32_t class_index; float prob; }` (the runtime's own type).
pub type vimvq_top = Top;

/// Model facts (`vimvq_model_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vimvq_info {
    /// Classifier outputs.
    pub num_classes: u32,
    /// Input channels (1 or 3).
    pub channels: u32,
    /// Input side of the network in pixels.
    pub img_size: u32,
    /// Shorter side after resizing (stored preprocessing).
    pub resize: u32,
    /// Centre crop side.
    pub crop: u32,
    /// Size of the model file.
    pub file_bytes: u64,
    /// Scratch of the network alone (`vimvq_scratch_bytes` adds conversion and preprocessing).
    pub infer_scratch_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<vimvq_info>() == 40);

/// An open model (opaque to C).
pub struct vimvq_model {
    /// Borrows `*file`; `'static` is a lie told to the type system, kept true by `Drop`, which
    /// frees `file` only after the last use of `model` (the handle is gone by then).
    model: Model<'static>,
    file: *mut ModelFile,
    labels: Vec<CString>,
}

impl Drop for vimvq_model {
    fn drop(&mut self) {
        // SAFETY: `file` came from `Box::into_raw` in `from_file` and is freed only here, once;
        // `model` (the only borrower) is not used after this point.
        drop(unsafe { Box::from_raw(self.file) });
    }
}

// SAFETY: the handle is immutable after construction; `ModelFile` (mmap or owned bytes) and
// `Model` are plain read-only data, so sharing across threads is sound.
unsafe impl Send for vimvq_model {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for vimvq_model {}

struct Error {
    code: vimvq_status,
    msg: String,
}

fn err(code: vimvq_status, msg: impl Into<String>) -> Error {
    Error {
        code,
        msg: msg.into(),
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning an error or a panic into a status code plus the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), Error>) -> vimvq_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => VIMVQ_OK,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic): {what}"));
            VIMVQ_E_PANIC
        }
    }
}

impl vimvq_model {
    fn from_file(file: ModelFile, what: &str) -> Result<Box<vimvq_model>, Error> {
        let file = Box::into_raw(Box::new(file));
        // SAFETY: `file` is a valid, uniquely owned allocation until `Drop` frees it; the
        // reference does not outlive the handle (see the `model` field).
        let file_ref: &'static ModelFile = unsafe { &*file };
        let model = match file_ref.model() {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: nothing borrows `file` any more; freed exactly once.
                drop(unsafe { Box::from_raw(file) });
                return Err(err(
                    VIMVQ_E_FORMAT,
                    format!("{what}: invalid .vimvq model: {e}"),
                ));
            }
        };
        let c = model.config();
        if c.channels != 1 && c.channels != 3 {
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(file) });
            return Err(err(
                VIMVQ_E_FORMAT,
                format!(
                    "{what}: models with {} input channels are not supported",
                    c.channels
                ),
            ));
        }
        let labels = model
            .labels()
            .map(|l| CString::new(l.replace('\0', " ")).unwrap_or_default())
            .collect();
        Ok(Box::new(vimvq_model {
            model,
            file,
            labels,
        }))
    }
}

/// Reads a C string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
unsafe fn c_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(err(VIMVQ_E_NULL, format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| err(VIMVQ_E_ARG, format!("{name} is not UTF-8")))
}

/// Opens a `.vimvq` file (memory-mapped) and validates it. On success `*out` receives a handle
/// to free with [`vimvq_close`].
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn vimvq_open(
    path: *const c_char,
    out: *mut *mut vimvq_model,
) -> vimvq_status {
    guard(|| {
        if out.is_null() {
            return Err(err(VIMVQ_E_NULL, "out is NULL"));
        }
        // SAFETY: `out` is non-NULL and writable per the contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: per the contract.
        let path = unsafe { c_str(path, "path") }?;
        let file = ModelFile::open(path).map_err(|e| err(VIMVQ_E_IO, format!("{path}: {e}")))?;
        let m = vimvq_model::from_file(file, path)?;
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(m) };
        Ok(())
    })
}

/// Opens a model from `len` bytes at `data`. The bytes are copied into an internal 64-byte-aligned
/// buffer: `data` needs no alignment and may be freed as soon as this returns.
///
/// # Safety
/// `data` is NULL or valid for `len` bytes of reads; `out` is NULL or valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn vimvq_open_memory(
    data: *const c_void,
    len: usize,
    out: *mut *mut vimvq_model,
) -> vimvq_status {
    guard(|| {
        if out.is_null() {
            return Err(err(VIMVQ_E_NULL, "out is NULL"));
        }
        // SAFETY: `out` is non-NULL and writable per the contract.
        unsafe { *out = std::ptr::null_mut() };
        if data.is_null() {
            return Err(err(VIMVQ_E_NULL, "data is NULL"));
        }
        // SAFETY: non-NULL, `len` readable bytes per the contract.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        let file = ModelFile::from_bytes(AlignedBytes::from_slice(bytes));
        let m = vimvq_model::from_file(file, "model buffer")?;
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(m) };
        Ok(())
    })
}

/// Frees a handle from [`vimvq_open`] / [`vimvq_open_memory`]. NULL is a no-op.
///
/// # Safety
/// `model` is NULL or a handle not yet closed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn vimvq_close(model: *mut vimvq_model) {
    let _ = guard(|| {
        if !model.is_null() {
            // SAFETY: a live handle from `Box::into_raw`, closed once per the contract.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Borrows the handle.
///
/// # Safety
/// `m` is NULL or a live handle.
unsafe fn handle<'a>(m: *const vimvq_model) -> Result<&'a vimvq_model, Error> {
    // SAFETY: NULL or live per the contract.
    unsafe { m.as_ref() }.ok_or_else(|| err(VIMVQ_E_NULL, "model is NULL"))
}

/// Fills `*out` with the model's dimensions.
///
/// # Safety
/// `model` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vimvq_model_info(
    model: *const vimvq_model,
    out: *mut vimvq_info,
) -> vimvq_status {
    guard(|| {
        // SAFETY: per the contract.
        let m = unsafe { handle(model) }?;
        if out.is_null() {
            return Err(err(VIMVQ_E_NULL, "out is NULL"));
        }
        let c = m.model.config();
        let p = m.model.preprocess();
        let info = vimvq_info {
            num_classes: c.num_classes as u32,
            channels: c.channels as u32,
            img_size: c.img_size as u32,
            resize: p.resize,
            crop: p.crop,
            file_bytes: m.model.file_bytes() as u64,
            infer_scratch_bytes: m.model.scratch_bytes() as u64,
        };
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Name of class `index`, or NULL if the model has no labels (or `index` is out of range). The
/// string lives as long as the handle.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vimvq_label(model: *const vimvq_model, index: u32) -> *const c_char {
    let mut p = std::ptr::null();
    let _ = guard(|| {
        // SAFETY: per the contract.
        let m = unsafe { handle(model) }?;
        if let Some(l) = m.labels.get(index as usize) {
            p = l.as_ptr();
        }
        Ok(())
    });
    p
}

/// Floats of the feature vector [`vimvq_features`] writes (the model's embedding width), or 0
/// for a NULL handle.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vimvq_feature_dim(model: *const vimvq_model) -> usize {
    let mut dim = 0;
    let _ = guard(|| {
        // SAFETY: per the contract.
        dim = unsafe { handle(model) }?.model.config().embed_dim;
        Ok(())
    });
    dim
}

fn frame_format(f: c_int) -> Result<FrameFormat, Error> {
    match f {
        VIMVQ_FORMAT_RGB24 => Ok(FrameFormat::Rgb24),
        VIMVQ_FORMAT_I420 => Ok(FrameFormat::I420),
        VIMVQ_FORMAT_GRAY8 => Ok(FrameFormat::Gray8),
        _ => Err(err(VIMVQ_E_ARG, format!("unknown pixel format {f}"))),
    }
}

/// Bytes of one `width × height` frame in `format`: `W·H·3` (RGB24), `W·H + 2·⌈W/2⌉·⌈H/2⌉`
/// (I420) or `W·H` (gray). 0 on a zero side, overflow or unknown format.
#[no_mangle]
pub extern "C" fn vimvq_frame_bytes(width: u32, height: u32, format: c_int) -> usize {
    let mut n = 0;
    let _ = guard(|| {
        let f = frame_format(format)?;
        n = frame::frame_len(f, width as usize, height as usize).unwrap_or(0);
        Ok(())
    });
    n
}

/// The context input for `width × height` frames in `format`.
fn frame_input(width: u32, height: u32, format: c_int) -> Result<Input, Error> {
    Ok(Input::Frame {
        format: frame_format(format)?,
        width: width as usize,
        height: height as usize,
    })
}

/// The frame of a `vimvq_classify`/`vimvq_features` call as bytes, and a one-thread context for
/// it built in the caller's scratch.
///
/// # Safety
/// `frame` is non-NULL with `frame_len` readable bytes; `scratch` is non-NULL with `scratch_len`
/// writable bytes, not overlapping `frame`; both outlive `'a`.
#[allow(clippy::too_many_arguments)]
unsafe fn frame_context<'a>(
    m: &vimvq_model,
    frame: *const u8,
    frame_len: usize,
    width: u32,
    height: u32,
    format: c_int,
    scratch: *mut c_void,
    scratch_len: usize,
) -> Result<(Context<'static, 'a>, &'a [u8]), Error> {
    let input = frame_input(width, height, format)?;
    // SAFETY: non-NULL, `frame_len` readable bytes per this function's contract.
    let src = unsafe { std::slice::from_raw_parts(frame, frame_len) };
    // SAFETY: non-NULL, `scratch_len` writable bytes, not overlapping `frame`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(scratch.cast::<u8>(), scratch_len) };
    let ctx =
        Context::new(m.model, input, 1, bytes).map_err(|e| context_error(e, width, height))?;
    Ok((ctx, src))
}

/// A context error as a status code and message.
fn context_error(e: ContextError, width: u32, height: u32) -> Error {
    let code = match e {
        ContextError::Channels(_) | ContextError::PlanMismatch { .. } => VIMVQ_E_FORMAT,
        ContextError::ScratchTooSmall { .. } => VIMVQ_E_BUFFER,
        ContextError::Infer(_) => VIMVQ_E_INFER,
        _ => VIMVQ_E_ARG,
    };
    let msg = match e {
        ContextError::ScratchTooSmall { .. } => format!("{e} (vimvq_scratch_bytes)"),
        ContextError::Frame(_) | ContextError::Preprocess(_) | ContextError::TooLarge => {
            format!("frame {width}x{height}: {e}")
        }
        _ => e.to_string(),
    };
    err(code, msg)
}

/// Scratch bytes [`vimvq_classify`] needs for `width × height` frames in `format` (any alignment;
/// includes the slack to align internally). 0 on error (see [`vimvq_last_error`]).
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vimvq_scratch_bytes(
    model: *const vimvq_model,
    width: u32,
    height: u32,
    format: c_int,
) -> usize {
    let mut n = 0;
    let _ = guard(|| {
        // SAFETY: per the contract.
        let m = unsafe { handle(model) }?;
        n = Context::scratch_bytes(&m.model, frame_input(width, height, format)?, 1)
            .map_err(|e| context_error(e, width, height))?;
        Ok(())
    });
    n
}

/// Classifies one frame: converts (I420 → RGB), resizes and crops with the model's stored
/// preprocessing, runs the network. Writes `logits_len` (= number of classes) logits if `logits`
/// is not NULL, and the `k` most probable classes (largest first, ties to the lower index) if
/// `top` is not NULL (`k` ≤ number of classes, else clamped). No heap allocation.
///
/// # Safety
/// Every non-NULL pointer is valid for its stated length: `frame` for `frame_len` bytes of
/// reads, `scratch` for `scratch_len` bytes of writes, `logits` for `logits_len` floats,
/// `top` for `k` entries; `model` is NULL or a live handle. Buffers must not overlap.
#[no_mangle]
pub unsafe extern "C" fn vimvq_classify(
    model: *const vimvq_model,
    frame: *const u8,
    frame_len: usize,
    width: u32,
    height: u32,
    format: c_int,
    scratch: *mut c_void,
    scratch_len: usize,
    logits: *mut f32,
    logits_len: usize,
    top: *mut vimvq_top,
    k: usize,
) -> vimvq_status {
    guard(|| {
        // SAFETY: per the contract.
        let m = unsafe { handle(model) }?;
        if frame.is_null() {
            return Err(err(VIMVQ_E_NULL, "frame is NULL"));
        }
        if scratch.is_null() {
            return Err(err(VIMVQ_E_NULL, "scratch is NULL"));
        }
        if logits.is_null() && top.is_null() {
            return Err(err(
                VIMVQ_E_NULL,
                "both logits and top are NULL: nothing to return",
            ));
        }
        let classes = m.model.config().num_classes;
        if !logits.is_null() && logits_len < classes {
            return Err(err(
                VIMVQ_E_BUFFER,
                format!("logits holds {logits_len} floats, the model has {classes} classes"),
            ));
        }
        if !top.is_null() && k == 0 {
            return Err(err(VIMVQ_E_ARG, "k is 0"));
        }
        // SAFETY: non-NULL (checked above), sizes per the contract.
        let (mut ctx, src) = unsafe {
            frame_context(
                m,
                frame,
                frame_len,
                width,
                height,
                format,
                scratch,
                scratch_len,
            )
        }?;
        let out: &mut [vimvq_top] = if top.is_null() {
            &mut []
        } else {
            // SAFETY: non-NULL, `k` writable entries per the contract (k only shrinks).
            unsafe { std::slice::from_raw_parts_mut(top, k.min(classes)) }
        };
        ctx.classify(src, out)
            .map_err(|e| context_error(e, width, height))?;
        if !logits.is_null() {
            // SAFETY: non-NULL, at least `classes` writable floats (checked above).
            unsafe { std::ptr::copy_nonoverlapping(ctx.logits().as_ptr(), logits, classes) };
        }
        Ok(())
    })
}

/// Writes one frame's pooled feature vector (what the head reads: `embed_dim` floats, the
/// normalised class token) into `features`; same inputs and rules as [`vimvq_classify`].
///
/// # Safety
/// As [`vimvq_classify`]; `features` has `features_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn vimvq_features(
    model: *const vimvq_model,
    frame: *const u8,
    frame_len: usize,
    width: u32,
    height: u32,
    format: c_int,
    scratch: *mut c_void,
    scratch_len: usize,
    features: *mut f32,
    features_len: usize,
) -> vimvq_status {
    guard(|| {
        // SAFETY: per the contract.
        let m = unsafe { handle(model) }?;
        if frame.is_null() {
            return Err(err(VIMVQ_E_NULL, "frame is NULL"));
        }
        if scratch.is_null() {
            return Err(err(VIMVQ_E_NULL, "scratch is NULL"));
        }
        if features.is_null() {
            return Err(err(VIMVQ_E_NULL, "features is NULL"));
        }
        let dim = m.model.config().embed_dim;
        if features_len < dim {
            return Err(err(
                VIMVQ_E_BUFFER,
                format!("features holds {features_len} floats, the model gives {dim}"),
            ));
        }
        // SAFETY: non-NULL (checked above), sizes per the contract.
        let (mut ctx, src) = unsafe {
            frame_context(
                m,
                frame,
                frame_len,
                width,
                height,
                format,
                scratch,
                scratch_len,
            )
        }?;
        // SAFETY: non-NULL, at least `dim` writable floats (checked above), not overlapping.
        let out = unsafe { std::slice::from_raw_parts_mut(features, dim) };
        let f = Features {
            pooled: Some(out),
            tokens: None,
        };
        ctx.classify_features(src, &mut [], f)
            .map_err(|e| context_error(e, width, height))?;
        Ok(())
    })
}

/// Static description of a status code.
#[no_mangle]
pub extern "C" fn vimvq_strerror(code: vimvq_status) -> *const c_char {
    let s: &'static CStr = match code {
        VIMVQ_OK => c"success",
        VIMVQ_E_NULL => c"a required pointer argument is NULL",
        VIMVQ_E_IO => c"cannot read the model file",
        VIMVQ_E_FORMAT => c"not a valid .vimvq model",
        VIMVQ_E_ARG => c"invalid argument",
        VIMVQ_E_BUFFER => c"buffer too small",
        VIMVQ_E_INFER => c"inference failed",
        VIMVQ_E_PANIC => c"internal error (panic caught)",
        _ => c"unknown status code",
    };
    s.as_ptr()
}

/// Message of the last failed call on this thread ("" if none). Valid until the next failing call
/// on the same thread.
#[no_mangle]
pub extern "C" fn vimvq_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Library version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn vimvq_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}
