//! One single-threaded inference whose per-op boundaries are visible in an instruction trace:
//! `inference_start` runs right before the inference, and each [`OpTimer::op_done`] calls a
//! separate never-inlined function named after the op (`op_done_scan`, …).
//! `scripts/predict_pi.py` runs this under `qemu-*-static -d exec` and attributes every block
//! executed after `inference_start` to the op whose marker follows it.
//!
//! ```text
//! cargo run -p vimvq-rt --example op_markers --release -- MODEL.vimvq
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use vimvq_rt::format::ModelFile;
use vimvq_rt::forward::{infer_profiled, InferOptions, Op, OpTimer};

/// Written by every marker (a distinct constant each, so no two markers fold into one symbol).
static LAST_OP: AtomicUsize = AtomicUsize::new(0);

macro_rules! markers {
    ($($f:ident = $n:expr),* $(,)?) => {
        $(
            #[inline(never)]
            #[no_mangle]
            extern "C" fn $f() {
                LAST_OP.store($n, Ordering::Relaxed);
            }
        )*
    };
}

markers!(
    inference_start = 10,
    op_done_patch_embed = 1,
    op_done_norm = 2,
    op_done_in_proj = 3,
    op_done_conv1d = 4,
    op_done_x_proj = 5,
    op_done_dt_proj = 6,
    op_done_scan = 7,
    op_done_out_proj = 8,
    op_done_head = 9,
);

struct Markers;

impl OpTimer for Markers {
    fn op_done(&mut self, op: Op) {
        match op {
            Op::PatchEmbed => op_done_patch_embed(),
            Op::Norm => op_done_norm(),
            Op::InProj => op_done_in_proj(),
            Op::Conv1d => op_done_conv1d(),
            Op::XProj => op_done_x_proj(),
            Op::DtProj => op_done_dt_proj(),
            Op::Scan => op_done_scan(),
            Op::OutProj => op_done_out_proj(),
            Op::Head => op_done_head(),
        }
    }
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: op_markers MODEL.vimvq");
        return ExitCode::FAILURE;
    };
    let file = match ModelFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("op_markers: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let model = match file.model() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("op_markers: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let c = *model.config();
    // The same input as `vimvq bench`: xorshift32 values in [-2, 2).
    let mut state = 0x9E37_79B9u32;
    let input: Vec<f32> = (0..c.input_len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect();
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; c.scratch_bytes()];
    let opts = InferOptions::default();
    inference_start();
    if let Err(e) = infer_profiled(
        &model,
        &input,
        &mut logits,
        &mut scratch,
        &opts,
        &mut Markers,
    ) {
        eprintln!("op_markers: inference failed: {e}");
        return ExitCode::FAILURE;
    }
    println!("last op {}", LAST_OP.load(Ordering::Relaxed));
    ExitCode::SUCCESS
}
