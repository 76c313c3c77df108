//! Kernel benchmarks (issue 4): every group holds the competitors in the same run, so ratios are
//! meaningful. Throughput is `Elements` = multiply-accumulates (scan: state updates).
//!
//! * `gemm_L197/<shape>`: scalar oracle (first shape only), our dense f32, our VQ at 3/2/1 bit
//!   (k,d = 64,2 / 256,4 / 256,8), tract-linalg's f32 matmul (weights pre-packed as at load
//!   time, activations packed per call as tract does at run time).
//! * `gemv_L1/<shape>`: our dense GEMV, our LUT VQ GEMV at 3/2/1 bit, tract f32 mat-vec, and a
//!   memcpy of the f32 weight bytes (the bandwidth yardstick).
//! * `scan`: Vim-Ti layer scan (L=197, E=384, N=16), scalar vs SIMD.
//! * `conv1d_silu`: Vim-Ti layer conv1d + SiLU (L=197, E=384, K=4), scalar vs SIMD.
//!
//! `cargo bench --bench kernels` (≈ 2 min); `VIMVQ_KERNELS` is ignored here (levels are explicit).
//! `VIMVQ_GEMM_ROUNDS=N` runs the GEMM competitors in alternating rounds instead ([`gemm_rounds`]).
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tract_core::internal::*;
use tract_core::tract_linalg::mmm::{AsInputValue, FusedSpec};
use tract_core::tract_linalg::MmmDispatch;
use vimvq_rt::kernels::dispatch::{kernels, scratch_len, table, vq_gemv_scratch_len, Level};
use vimvq_rt::kernels::{Codebook, Direction, IndexLayout, Indices, MatMut, MatRef, VqMatrix};
use vimvq_rt::scan::{ScanInputs, ScanPlan, ScanWeights};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn v(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
    fn idx(&mut self, n: usize, k: usize) -> Vec<u8> {
        (0..n)
            .map(|_| ((self.f() + 0.5) * k as f32) as usize % k)
            .map(|i| i as u8)
            .collect()
    }
}

impl Rng {
    /// Random f32 codebook (`kk × d`) and u8 indices of an `n × k` VQ matrix in the packer's
    /// [`IndexLayout::Rows16`] order.
    fn vq(&mut self, n: usize, k: usize, kk: usize, d: usize) -> (Vec<f32>, Vec<u8>) {
        let g = k.div_ceil(d);
        (self.v(kk * d), self.idx(IndexLayout::Rows16.len(n, g), kk))
    }
}

/// The `n × k` VQ matrix over a codebook and indices from [`Rng::vq`].
fn vq_view<'a>(
    n: usize,
    k: usize,
    kk: usize,
    d: usize,
    cb: &'a [f32],
    ix: &'a [u8],
) -> VqMatrix<'a> {
    VqMatrix {
        rows: n,
        cols: k,
        k: kk,
        d,
        codebook: Codebook::F32(cb),
        indices: Indices::U8(ix),
        layout: IndexLayout::Rows16,
    }
}

/// (name, out rows, in cols) of Vim layer weights.
const GEMM_SHAPES: [(&str, usize, usize); 4] = [
    ("Ti.in_proj_768x192", 768, 192),
    ("Ti.out_proj_192x384", 192, 384),
    ("S.in_proj_1536x384", 1536, 384),
    ("B.in_proj_3072x768", 3072, 768),
];
/// (name, out rows, in cols, copies): each iteration multiplies the next of `copies` distinct
/// matrices, so with 48 copies of 4096×1024 (806 MB f32; 50 MB even as 2-bit VQ) no
/// competitor finds its weights in the 32 MB L3.
const GEMV_SHAPES: [(&str, usize, usize, usize); 4] = [
    ("Ti.in_proj_768x192", 768, 192, 1),
    ("B.in_proj_3072x768", 3072, 768, 1),
    ("big_4096x1024_16MB", 4096, 1024, 1),
    ("big_4096x1024_x48_out_of_cache", 4096, 1024, 48),
];
const VQ: [(&str, usize, usize); 3] = [
    ("vq3bit_k64d2", 64, 2),
    ("vq2bit_k256d4", 256, 4),
    ("vq1bit_k256d8", 256, 8),
];

fn tract_mm(m: usize, k: usize, n: usize, w: &[f32]) -> impl FnMut(&[f32]) {
    let mmm = MmmDispatch::native()
        .preferred_kernel(f32::datum_type(), Some(m), Some(k), Some(n))
        .unwrap();
    let packing = &mmm.packings()[0];
    let a = Tensor::from_shape(&[m, k], w).unwrap();
    let pa = packing.0.prepare_one(&a, 1, 0).unwrap();
    let mut c = Tensor::zero::<f32>(&[m, n]).unwrap();
    move |b: &[f32]| {
        let packing = &mmm.packings()[0];
        // Activations arrive token-major (n × k): view them as k × n with k_axis = 1, n_axis = 0.
        let bt = Tensor::from_shape(&[n, k], b).unwrap();
        let pb = packing.1.prepare_one(&bt, 1, 0).unwrap();
        // SAFETY: shapes match the packed operands and the output tensor.
        unsafe {
            mmm.run(
                m,
                n,
                &[
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&*pa),
                        b: AsInputValue::Borrowed(&*pb),
                        packing: 0,
                    },
                    FusedSpec::Store(mmm.c_view(Some(0), Some(1)).wrap(&c.view_mut())),
                ],
            )
            .unwrap();
        }
        black_box(&c);
    }
}

fn bench_gemm(c: &mut Criterion) {
    let simd = kernels();
    let scalar = table(Level::Scalar).unwrap();
    let mut rng = Rng(1);
    let l = 197;
    for (si, (name, n, k)) in GEMM_SHAPES.iter().copied().enumerate() {
        let mut g = c.benchmark_group(format!("gemm_L197/{name}"));
        g.throughput(Throughput::Elements((l * n * k) as u64));
        let a = rng.v(l * k);
        let w = rng.v(n * k);
        let mut out = vec![0f32; l * n];
        let mut scratch = vec![0f32; scratch_len(k)];
        let am = MatRef::new(&a, l, k, k);
        if si == 0 {
            g.bench_function("scalar_f32", |b| {
                b.iter(|| {
                    (scalar.gemm_f32)(am, &w, &mut MatMut::new(&mut out, l, n, n), &mut scratch)
                })
            });
        }
        g.bench_function(format!("{}_f32", simd.level.name()), |b| {
            b.iter(|| (simd.gemm_f32)(am, &w, &mut MatMut::new(&mut out, l, n, n), &mut scratch))
        });
        for (vn, kk, d) in VQ {
            let (cb, ix) = rng.vq(n, k, kk, d);
            let vq = vq_view(n, k, kk, d, &cb, &ix);
            g.bench_function(format!("{}_{vn}", simd.level.name()), |b| {
                b.iter(|| {
                    (simd.vq_gemm_f32)(am, &vq, &mut MatMut::new(&mut out, l, n, n), &mut scratch)
                })
            });
        }
        let mut t = tract_mm(n, k, l, &w);
        g.bench_function("tract_f32", |b| b.iter(|| t(&a)));
        g.finish();
    }
}

fn bench_gemv(c: &mut Criterion) {
    let simd = kernels();
    let mut rng = Rng(2);
    for (name, n, k, copies) in GEMV_SHAPES {
        let mut g = c.benchmark_group(format!("gemv_L1/{name}"));
        g.throughput(Throughput::Elements((n * k) as u64));
        let x = rng.v(k);
        let ws: Vec<Vec<f32>> = (0..copies).map(|_| rng.v(n * k)).collect();
        let mut out = vec![0f32; n];
        let mut i = 0;
        g.bench_function(format!("{}_f32", simd.level.name()), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                (simd.gemv_f32)(&x, &ws[i], &mut out)
            })
        });
        for (vn, kk, d) in VQ {
            let data: Vec<_> = (0..copies).map(|_| rng.vq(n, k, kk, d)).collect();
            let vqs: Vec<_> = data
                .iter()
                .map(|(cb, ix)| vq_view(n, k, kk, d, cb, ix))
                .collect();
            let mut lut = vec![0f32; vq_gemv_scratch_len(&vqs[0])];
            g.bench_function(format!("{}_{vn}", simd.level.name()), |b| {
                b.iter(|| {
                    i = (i + 1) % copies;
                    (simd.vq_gemv_f32)(&x, &vqs[i], &mut out, &mut lut)
                })
            });
        }
        let mut ts: Vec<_> = ws.iter().map(|w| tract_mm(n, k, 1, w)).collect();
        g.bench_function("tract_f32", |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                ts[i](&x)
            })
        });
        drop(ts);
        let mut dst = vec![0f32; n * k];
        g.bench_function("memcpy_f32_bytes", |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                dst.copy_from_slice(black_box(&ws[i]));
                black_box(&dst);
            })
        });
        g.finish();
    }
}

fn bench_scan(c: &mut Criterion) {
    let (l, e, n, r) = (197usize, 384usize, 16usize, 12usize);
    let xr = r + 2 * n;
    let mut rng = Rng(3);
    let a: Vec<f32> = (0..e * n).map(|i| -((1 + i % n) as f32)).collect();
    let (d_skip, dt_bias) = (rng.v(e), rng.v(e));
    let (u, delta, x_dbl) = (rng.v(l * e), rng.v(l * e), rng.v(l * xr));
    let w = ScanWeights {
        a: &a,
        d_skip: &d_skip,
        dt_bias: &dt_bias,
        dt_rank: r,
        d_state: n,
    };
    let x = ScanInputs {
        u: MatRef::new(&u, l, e, e),
        delta: MatRef::new(&delta, l, e, e),
        x_dbl: MatRef::new(&x_dbl, l, xr, xr),
    };
    let plan = ScanPlan {
        dir: Direction::Forward,
        steps: 0..l,
        emit: 0..l,
        accumulate: false,
    };
    let mut acc = vec![0f32; l * e];
    let mut h = vec![0f32; e * n];
    let mut g = c.benchmark_group("scan/Ti_L197_E384_N16");
    g.throughput(Throughput::Elements((l * e * n) as u64));
    for lv in [Level::Scalar, kernels().level] {
        let k = table(lv).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(lv.name()), &lv, |b, _| {
            b.iter(|| (k.scan_f32)(&w, &x, &plan, &mut MatMut::new(&mut acc, l, e, e), &mut h))
        });
    }
    g.finish();
}

fn bench_conv(c: &mut Criterion) {
    let (l, e, k) = (197usize, 384usize, 4usize);
    let mut rng = Rng(4);
    let (xz, w, bias) = (rng.v(l * 2 * e), rng.v(e * k), rng.v(e));
    let mut out = vec![0f32; l * e];
    let mut g = c.benchmark_group("conv1d_silu/Ti_L197_E384_K4");
    g.throughput(Throughput::Elements((l * e * k) as u64));
    for lv in [Level::Scalar, kernels().level] {
        let kern = table(lv).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(lv.name()), &lv, |b, _| {
            b.iter(|| {
                (kern.conv1d_silu_f32)(
                    Direction::Forward,
                    MatRef::new(&xz, l, e, 2 * e),
                    &w,
                    &bias,
                    0..l,
                    &mut MatMut::new(&mut out, l, e, e),
                )
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
}

/// `VIMVQ_GEMM_ROUNDS=N cargo bench --bench kernels`: instead of criterion, the `gemm_L197`
/// competitors (same data) in `N` alternating rounds of ≥ 20 ms of calls each; prints each one's
/// fastest call and tract's time divided by it. On a loaded, shared machine the minimum is the
/// figure other jobs cannot inflate, and alternating exposes every competitor to the same load.
fn gemm_rounds(rounds: usize) {
    let simd = kernels();
    let mut rng = Rng(1);
    let l = 197;
    for (name, n, k) in GEMM_SHAPES {
        let a = rng.v(l * k);
        let w = rng.v(n * k);
        let data: Vec<_> = VQ.iter().map(|&(_, kk, d)| rng.vq(n, k, kk, d)).collect();
        let vqs: Vec<_> = VQ
            .iter()
            .zip(&data)
            .map(|(&(_, kk, d), (cb, ix))| vq_view(n, k, kk, d, cb, ix))
            .collect();
        let mut out = vec![0f32; l * n];
        let mut scratch = vec![0f32; scratch_len(k)];
        let am = MatRef::new(&a, l, k, k);
        let mut t = tract_mm(n, k, l, &w);
        let mut best = [f64::MAX; 5];
        for _ in 0..rounds {
            for (c, b) in best.iter_mut().enumerate() {
                let start = std::time::Instant::now();
                let mut calls = 0;
                while calls < 3 || start.elapsed() < Duration::from_millis(20) {
                    let t0 = std::time::Instant::now();
                    let mut o = MatMut::new(&mut out, l, n, n);
                    match c {
                        0 => (simd.gemm_f32)(am, &w, &mut o, &mut scratch),
                        1..=3 => (simd.vq_gemm_f32)(am, &vqs[c - 1], &mut o, &mut scratch),
                        _ => t(&a),
                    }
                    black_box(&out);
                    *b = b.min(t0.elapsed().as_secs_f64());
                    calls += 1;
                }
            }
        }
        let lv = simd.level.name();
        print!("gemm_L197/{name}:");
        for (c, what) in ["f32", VQ[0].0, VQ[1].0, VQ[2].0].iter().enumerate() {
            print!(
                " {lv}_{what} {:.1} µs {:.3}× |",
                best[c] * 1e6,
                best[4] / best[c]
            );
        }
        println!(" tract_f32 {:.1} µs", best[4] * 1e6);
    }
}

criterion_group! { name = benches; config = config(); targets = bench_gemm, bench_gemv, bench_scan, bench_conv }

fn main() {
    match std::env::var("VIMVQ_GEMM_ROUNDS") {
        Ok(r) => gemm_rounds(r.parse().expect("VIMVQ_GEMM_ROUNDS: a number of rounds")),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
