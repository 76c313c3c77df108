//! The C ABI called from Rust exactly as C would: NULL handling, error codes and messages, and
//! results equal to the runtime's own pipeline (preprocess + infer) bit for bit. The C example
//! program itself (gcc + valgrind) is exercised by `scripts/capi.sh`.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use vimvq_capi::*;
use vimvq_rt::format::AlignedBytes;
use vimvq_rt::model::Model;
use vimvq_rt::preprocess::{self, ImageRef, PixelFormat};

fn model_bytes() -> Vec<u8> {
    let ck =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../vimvq-pack/tests/data/tiny.safetensors");
    let ck = vimvq_pack::import::load(&ck, None).unwrap();
    let packed = vimvq_pack::import::to_packed(&ck, &Default::default()).unwrap();
    vimvq_rt::format::to_bytes(&packed).unwrap()
}

fn model_path() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("tiny.vimvq");
    std::fs::write(&p, model_bytes()).unwrap();
    p
}

fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(vimvq_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A deterministic "photo".
fn rgb_frame(w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| ((i * 37 + (i / (w * 3)) * 11) % 256) as u8)
        .collect()
}

fn reference_logits(bytes: &[u8], rgb: &[u8], w: usize, h: usize) -> Vec<f32> {
    reference_logits_of(bytes, rgb, w, h, PixelFormat::Rgb8)
}

fn reference_logits_of(
    bytes: &[u8],
    pixels: &[u8],
    w: usize,
    h: usize,
    format: PixelFormat,
) -> Vec<f32> {
    let aligned = AlignedBytes::from_slice(bytes);
    let m = Model::parse(&aligned).unwrap();
    let c = *m.config();
    let img = ImageRef {
        data: pixels,
        width: w,
        height: h,
        format,
    };
    let mut input = vec![0f32; c.input_len()];
    let mut pre =
        vec![0u8; preprocess::scratch_bytes(w, h, format, m.preprocess(), c.channels).unwrap()];
    preprocess::preprocess(&img, m.preprocess(), c.channels, &mut input, &mut pre).unwrap();
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; m.scratch_bytes()];
    vimvq_rt::forward::infer(&m, &input, &mut logits, &mut scratch).unwrap();
    logits
}

#[test]
fn open_errors_are_codes_with_messages() {
    let mut m: *mut vimvq_model = ptr::null_mut();
    // SAFETY (all calls below): arguments are NULL or valid as the header requires.
    unsafe {
        assert_eq!(vimvq_open(ptr::null(), &mut m), VIMVQ_E_NULL);
        assert!(m.is_null());
        assert_eq!(last_error(), "path is NULL");
        let c = CString::new("/nonexistent/x.vimvq").unwrap();
        assert_eq!(vimvq_open(c.as_ptr(), ptr::null_mut()), VIMVQ_E_NULL);
        assert_eq!(vimvq_open(c.as_ptr(), &mut m), VIMVQ_E_IO);
        assert!(
            last_error().starts_with("/nonexistent/x.vimvq: "),
            "{}",
            last_error()
        );
        let junk = [7u8; 300];
        assert_eq!(
            vimvq_open_memory(junk.as_ptr().cast(), junk.len(), &mut m),
            VIMVQ_E_FORMAT
        );
        assert!(m.is_null());
        assert!(
            last_error().contains("invalid .vimvq model"),
            "{}",
            last_error()
        );
        assert_eq!(vimvq_open_memory(ptr::null(), 0, &mut m), VIMVQ_E_NULL);
        // Truncated model.
        let bytes = model_bytes();
        assert_eq!(
            vimvq_open_memory(bytes.as_ptr().cast(), bytes.len() / 2, &mut m),
            VIMVQ_E_FORMAT
        );
        vimvq_close(ptr::null_mut());
        for code in 0..=8 {
            assert!(!CStr::from_ptr(vimvq_strerror(code)).to_bytes().is_empty());
        }
        assert_eq!(
            CStr::from_ptr(vimvq_version()).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
    }
}

#[test]
fn classify_matches_the_runtime_and_checks_buffers() {
    let bytes = model_bytes();
    let path = CString::new(model_path().to_str().unwrap()).unwrap();
    let (w, h) = (37usize, 23usize);
    let rgb = rgb_frame(w, h);
    let want = reference_logits(&bytes, &rgb, w, h);
    // SAFETY (all calls below): arguments are NULL or valid for their stated lengths.
    unsafe {
        for from_memory in [false, true] {
            let mut m: *mut vimvq_model = ptr::null_mut();
            let rc = if from_memory {
                // Deliberately misaligned copy: the library must not care.
                let mut v = vec![0u8; bytes.len() + 1];
                v[1..].copy_from_slice(&bytes);
                let rc = vimvq_open_memory(v[1..].as_ptr().cast(), bytes.len(), &mut m);
                drop(v);
                rc
            } else {
                vimvq_open(path.as_ptr(), &mut m)
            };
            assert_eq!(rc, VIMVQ_OK, "{}", last_error());
            let mut info = vimvq_info::default();
            assert_eq!(vimvq_model_info(m, &mut info), VIMVQ_OK);
            assert_eq!(info.num_classes as usize, want.len());
            assert_eq!(info.file_bytes as usize, bytes.len());
            assert_eq!(CStr::from_ptr(vimvq_label(m, 0)).to_str().unwrap(), "cat");
            assert!(vimvq_label(m, 99).is_null());

            let n = vimvq_scratch_bytes(m, w as u32, h as u32, VIMVQ_FORMAT_RGB24);
            assert!(n > info.infer_scratch_bytes as usize);
            // Misaligned scratch on purpose.
            let mut scratch = vec![0u8; n + 3];
            let s = scratch[3..].as_mut_ptr().cast();
            let mut logits = vec![0f32; want.len()];
            let mut top = [vimvq_top::default(); 4];
            let rc = vimvq_classify(
                m,
                rgb.as_ptr(),
                rgb.len(),
                w as u32,
                h as u32,
                VIMVQ_FORMAT_RGB24,
                s,
                n,
                logits.as_mut_ptr(),
                logits.len(),
                top.as_mut_ptr(),
                4,
            );
            assert_eq!(rc, VIMVQ_OK, "{}", last_error());
            assert_eq!(logits, want, "bit-identical to preprocess + infer");
            let best = if want[0] >= want[1] { 0 } else { 1 };
            assert_eq!(top[0].class_index, best);
            assert!((top[0].prob + top[1].prob - 1.0).abs() < 1e-6);
            assert_eq!(
                top[2],
                vimvq_top::default(),
                "k is clamped to the class count"
            );

            // Buffer and argument errors.
            let call = |frame_len: usize,
                        scratch_len: usize,
                        fmt: i32,
                        lg: *mut f32,
                        lg_len: usize,
                        tp: *mut vimvq_top,
                        k: usize| {
                vimvq_classify(
                    m,
                    rgb.as_ptr(),
                    frame_len,
                    w as u32,
                    h as u32,
                    fmt,
                    s,
                    scratch_len,
                    lg,
                    lg_len,
                    tp,
                    k,
                )
            };
            let (lg, tp) = (logits.as_mut_ptr(), top.as_mut_ptr());
            assert_eq!(
                call(rgb.len(), n - 1, VIMVQ_FORMAT_RGB24, lg, 2, tp, 1),
                VIMVQ_E_BUFFER
            );
            assert!(
                last_error().contains("vimvq_scratch_bytes"),
                "{}",
                last_error()
            );
            assert_eq!(
                call(rgb.len() - 1, n, VIMVQ_FORMAT_RGB24, lg, 2, tp, 1),
                VIMVQ_E_ARG
            );
            assert_eq!(call(rgb.len(), n, 9, lg, 2, tp, 1), VIMVQ_E_ARG);
            assert_eq!(
                call(rgb.len(), n, VIMVQ_FORMAT_RGB24, lg, 1, tp, 1),
                VIMVQ_E_BUFFER
            );
            assert_eq!(
                call(
                    rgb.len(),
                    n,
                    VIMVQ_FORMAT_RGB24,
                    ptr::null_mut(),
                    0,
                    ptr::null_mut(),
                    0
                ),
                VIMVQ_E_NULL
            );
            assert_eq!(
                call(rgb.len(), n, VIMVQ_FORMAT_RGB24, ptr::null_mut(), 0, tp, 0),
                VIMVQ_E_ARG
            );
            assert_eq!(
                call(rgb.len(), n, VIMVQ_FORMAT_RGB24, ptr::null_mut(), 0, tp, 1),
                VIMVQ_OK
            );
            assert_eq!(
                vimvq_classify(
                    ptr::null(),
                    rgb.as_ptr(),
                    rgb.len(),
                    w as u32,
                    h as u32,
                    0,
                    s,
                    n,
                    lg,
                    2,
                    tp,
                    1
                ),
                VIMVQ_E_NULL
            );
            assert_eq!(
                vimvq_classify(
                    m,
                    ptr::null(),
                    rgb.len(),
                    w as u32,
                    h as u32,
                    0,
                    s,
                    n,
                    lg,
                    2,
                    tp,
                    1
                ),
                VIMVQ_E_NULL
            );
            assert_eq!(
                vimvq_classify(
                    m,
                    rgb.as_ptr(),
                    rgb.len(),
                    w as u32,
                    h as u32,
                    0,
                    ptr::null_mut(),
                    n,
                    lg,
                    2,
                    tp,
                    1
                ),
                VIMVQ_E_NULL
            );
            assert_eq!(vimvq_scratch_bytes(m, 0, 5, VIMVQ_FORMAT_RGB24), 0);
            assert_eq!(
                vimvq_scratch_bytes(ptr::null(), 5, 5, VIMVQ_FORMAT_RGB24),
                0
            );
            vimvq_close(m);
        }
    }
}

#[test]
fn i420_frames_equal_converted_rgb_and_threads_share_a_handle() {
    let bytes = model_bytes();
    let (w, h) = (33usize, 17usize);
    let n420 = vimvq_frame_bytes(w as u32, h as u32, VIMVQ_FORMAT_I420);
    assert_eq!(n420, w * h + 2 * 17 * 9);
    assert_eq!(
        vimvq_frame_bytes(w as u32, h as u32, VIMVQ_FORMAT_RGB24),
        w * h * 3
    );
    assert_eq!(vimvq_frame_bytes(0, 1, VIMVQ_FORMAT_RGB24), 0);
    let yuv: Vec<u8> = (0..n420).map(|i| (16 + (i * 29) % 220) as u8).collect();
    let mut rgb = vec![0u8; w * h * 3];
    vimvq_rt::frame::i420_to_rgb24(&yuv, w, h, &mut rgb).unwrap();
    let want = reference_logits(&bytes, &rgb, w, h);

    let mut m: *mut vimvq_model = ptr::null_mut();
    // SAFETY: valid buffer and out pointer.
    assert_eq!(
        unsafe { vimvq_open_memory(bytes.as_ptr().cast(), bytes.len(), &mut m) },
        VIMVQ_OK
    );
    struct Handle(*mut vimvq_model);
    // SAFETY: handles are documented as shareable across threads.
    unsafe impl Sync for Handle {}
    let handle = Handle(m);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                let hm = &handle;
                for _ in 0..20 {
                    // SAFETY: live handle, buffers sized as required.
                    unsafe {
                        let n = vimvq_scratch_bytes(hm.0, w as u32, h as u32, VIMVQ_FORMAT_I420);
                        let mut scratch = vec![0u8; n];
                        let mut logits = vec![0f32; want.len()];
                        let rc = vimvq_classify(
                            hm.0,
                            yuv.as_ptr(),
                            yuv.len(),
                            w as u32,
                            h as u32,
                            VIMVQ_FORMAT_I420,
                            scratch.as_mut_ptr().cast(),
                            n,
                            logits.as_mut_ptr(),
                            logits.len(),
                            ptr::null_mut(),
                            0,
                        );
                        assert_eq!(rc, VIMVQ_OK, "{}", last_error());
                        assert_eq!(logits, want);
                    }
                }
            });
        }
    });
    // SAFETY: live handle, closed once.
    unsafe { vimvq_close(m) };
}

#[test]
fn gray_frames_are_luma_images() {
    let bytes = model_bytes();
    let (w, h) = (29usize, 41usize);
    let gray: Vec<u8> = (0..w * h).map(|i| ((i * 53) % 256) as u8).collect();
    let want = reference_logits_of(&bytes, &gray, w, h, PixelFormat::L8);
    assert_eq!(
        vimvq_frame_bytes(w as u32, h as u32, VIMVQ_FORMAT_GRAY8),
        w * h
    );
    let mut m: *mut vimvq_model = ptr::null_mut();
    // SAFETY (all calls below): valid buffers and handle, lengths as stated.
    unsafe {
        assert_eq!(
            vimvq_open_memory(bytes.as_ptr().cast(), bytes.len(), &mut m),
            VIMVQ_OK
        );
        let n = vimvq_scratch_bytes(m, w as u32, h as u32, VIMVQ_FORMAT_GRAY8);
        assert!(n > 0, "{}", last_error());
        let mut scratch = vec![0u8; n];
        let mut logits = vec![0f32; want.len()];
        let rc = vimvq_classify(
            m,
            gray.as_ptr(),
            gray.len(),
            w as u32,
            h as u32,
            VIMVQ_FORMAT_GRAY8,
            scratch.as_mut_ptr().cast(),
            n,
            logits.as_mut_ptr(),
            logits.len(),
            ptr::null_mut(),
            0,
        );
        assert_eq!(rc, VIMVQ_OK, "{}", last_error());
        assert_eq!(logits, want);
        vimvq_close(m);
    }
}

#[test]
fn features_match_the_runtime_and_the_head() {
    let bytes = model_bytes();
    let (w, h) = (37usize, 23usize);
    let rgb = rgb_frame(w, h);
    let logits = reference_logits(&bytes, &rgb, w, h);
    let aligned = AlignedBytes::from_slice(&bytes);
    let model = Model::parse(&aligned).unwrap();
    let d = model.config().embed_dim;
    // SAFETY (all calls below): arguments are NULL or valid for their stated lengths.
    unsafe {
        let mut m: *mut vimvq_model = ptr::null_mut();
        assert_eq!(
            vimvq_open_memory(bytes.as_ptr().cast(), bytes.len(), &mut m),
            VIMVQ_OK
        );
        assert_eq!(vimvq_feature_dim(ptr::null()), 0);
        assert_eq!(vimvq_feature_dim(m), d);
        let n = vimvq_scratch_bytes(m, w as u32, h as u32, VIMVQ_FORMAT_RGB24);
        let mut scratch = vec![0u8; n];
        let mut features = vec![0f32; d + 1];
        let call = |out: *mut f32, len: usize, scratch: &mut [u8]| {
            vimvq_features(
                m,
                rgb.as_ptr(),
                rgb.len(),
                w as u32,
                h as u32,
                VIMVQ_FORMAT_RGB24,
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                out,
                len,
            )
        };
        let rc = call(features.as_mut_ptr(), features.len(), &mut scratch);
        assert_eq!(rc, VIMVQ_OK, "{}", last_error());
        assert_eq!(features[d], 0.0, "writes exactly embed_dim floats");
        // logits = features · headᵀ + bias, to float rounding.
        let wh = model.dense(vimvq_rt::format::Role::HeadWeight, 0).unwrap();
        let b = model.dense(vimvq_rt::format::Role::HeadBias, 0).unwrap();
        for (j, &l) in logits.iter().enumerate() {
            let row = &wh[j * d..(j + 1) * d];
            let exact: f64 = features[..d]
                .iter()
                .zip(row)
                .map(|(f, w)| *f as f64 * *w as f64)
                .sum::<f64>()
                + b[j] as f64;
            let size: f64 = features[..d]
                .iter()
                .zip(row)
                .map(|(f, w)| (*f as f64 * *w as f64).abs())
                .sum::<f64>()
                + b[j].abs() as f64;
            let bound = (d + 1) as f64 * f32::EPSILON as f64 * size;
            assert!((l as f64 - exact).abs() <= bound, "class {j}");
        }
        assert_eq!(
            call(ptr::null_mut(), d, &mut scratch),
            VIMVQ_E_NULL,
            "NULL features"
        );
        assert_eq!(last_error(), "features is NULL");
        assert_eq!(
            call(features.as_mut_ptr(), d - 1, &mut scratch),
            VIMVQ_E_BUFFER
        );
        assert_eq!(
            last_error(),
            format!("features holds {} floats, the model gives {d}", d - 1)
        );
        vimvq_close(m);
    }
}
