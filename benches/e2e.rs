//! End-to-end Vim-Ti 224 (random weights): f32 vs VQ 3/2/1-bit, 1 and 2 threads, at the active
//! kernel level.
//! `cargo bench --bench e2e`. Throughput is `Elements` = MACs of one image (≈ 1.48 GMAC).
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[allow(unused_imports)]
#[path = "../crates/vimvq-rt/tests/common/mod.rs"]
mod common;

use common::{pack, random_image, random_model, vim_config, Storage};
use vimvq_rt::forward::{infer_threaded, InferOptions};
use vimvq_rt::kernels::dispatch::kernels;
use vimvq_rt::model::Model;

fn bench_e2e(c: &mut Criterion) {
    let cfg = vim_config(192, 24, 16, 16, 224, 3, 1000);
    let img = random_image(&cfg, 1);
    let mut g = c.benchmark_group(format!("e2e/Vim-Ti_224_{}", kernels().level.name()));
    g.throughput(Throughput::Elements(1_480_000_000));
    for (name, s) in [
        ("f32", Storage::Dense),
        ("vq3bit_k64d2", Storage::Vq(64, 2)),
        ("vq2bit_k256d4", Storage::Vq(256, 4)),
        ("vq1bit_k256d8", Storage::Vq(256, 8)),
    ] {
        let bytes = pack(&random_model(&cfg, 2, s));
        let model = Model::parse(bytes.as_bytes()).unwrap();
        let mut logits = vec![0f32; 1000];
        let opts = InferOptions::default();
        for threads in [1, 2] {
            let mut scratch = vec![0u8; cfg.scratch_bytes_threaded(threads)];
            g.bench_function(format!("{name}_{threads}thread"), |b| {
                b.iter(|| {
                    infer_threaded(&model, &img, &mut logits, &mut scratch, &opts, threads).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = bench_e2e }
criterion_main!(benches);
