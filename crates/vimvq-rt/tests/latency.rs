//! Latency report of the scalar forward pass (a measurement helper, not a timed test):
//! `cargo test -p vimvq-rt --release --test latency -- --ignored --nocapture`.
//! Criterion benchmarks with competitors belong in `benches/`.

mod common;

use std::time::Instant;

use common::*;
use vimvq_rt::forward::infer;
use vimvq_rt::model::Model;
use vimvq_rt::VimConfig;

fn report(name: &str, c: &VimConfig, storage: Storage, runs: usize) {
    let bytes = pack(&random_model(c, 1, storage));
    let t = Instant::now();
    let model = Model::parse(&bytes).unwrap();
    let parse_ms = t.elapsed().as_secs_f64() * 1e3;
    let img = random_image(c, 2);
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; model.scratch_bytes()];
    infer(&model, &img, &mut logits, &mut scratch).unwrap();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            infer(&model, &img, &mut logits, &mut scratch).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "{name}: median {:.2} ms, min {:.2} ms over {runs} runs; parse {parse_ms:.2} ms; \
         file {} B, scratch {} B",
        times[runs / 2],
        times[0],
        model.file_bytes(),
        model.scratch_bytes()
    );
}

#[test]
#[ignore = "measurement helper; run with --ignored --nocapture in release"]
fn latency_report() {
    report(
        "fashion-mnist shapes (D=128, depth 4, L=50), f32",
        &vim_config(128, 4, 4, 4, 28, 1, 10),
        Storage::Dense,
        50,
    );
    report(
        "fashion-mnist shapes, all linear VQ k=256 d=4",
        &vim_config(128, 4, 4, 4, 28, 1, 10),
        Storage::Vq(256, 4),
        50,
    );
    report(
        "Vim-Ti (D=192, depth 24, L=197), f32",
        &vim_config(192, 24, 16, 16, 224, 3, 1000),
        Storage::Dense,
        5,
    );
    report(
        "Vim-Ti, all linear VQ k=256 d=4",
        &vim_config(192, 24, 16, 16, 224, 3, 1000),
        Storage::Vq(256, 4),
        5,
    );
}
