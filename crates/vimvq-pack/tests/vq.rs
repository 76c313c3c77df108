//! Weight-side ViM-VQ machinery: sub-vectors, k-means, FCCO gradients, hull update, IVQ, the layer
//! objective and the baselines. Every check compares against an independent reference (brute
//! force, f64 finite differences, hand computation) with a named budget.

use std::time::Instant;

use vimvq_pack::rng::SplitMix64;
use vimvq_pack::vq::fcco::Fcco;
use vimvq_pack::vq::kmeans::{kmeans, kmeans_pp, lloyd, KMeansConfig};
use vimvq_pack::vq::layer_objective::{
    layer_fcco, layer_gptvq, layer_kmeans, HessianAccumulator, LayerObjective,
};
use vimvq_pack::vq::rtn::rtn;
use vimvq_pack::vq::search::{nearest_scalar, sq_dist};
use vimvq_pack::vq::train::{FccoSettings, FccoTrainer};
use vimvq_pack::vq::{bits_to_kd, RmsProp, SubVectors, VqConfig, VqError, VqLayer};
use vimvq_rt::format::TensorData;

/// Finite-difference gradient checks: max relative error (norm-wise and per element).
const FD_BUDGET: f64 = 1e-4;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| r.normal() as f32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// Sub-vectors, layers, configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn subvectors_round_trip_every_d_and_tail_length() {
    for d in 1..=16 {
        for cols in 1..=20 {
            let rows = 3;
            let w = gaussian(rows * cols, (d * 100 + cols) as u64);
            let sv = SubVectors::from_matrix(&w, rows, cols, d).unwrap();
            assert_eq!(sv.per_row, cols.div_ceil(d));
            assert_eq!(sv.len(), rows * sv.per_row);
            assert_eq!(sv.to_matrix(), w, "d {d} cols {cols}");
            for r in 0..rows {
                for c in 0..sv.per_row {
                    let s = sv.get(r * sv.per_row + c);
                    for (t, &got) in s.iter().enumerate() {
                        let col = c * d + t;
                        let want = if col < cols { w[r * cols + col] } else { 0.0 };
                        assert_eq!(got, want, "d {d} cols {cols} r {r} c {c} t {t}");
                    }
                }
            }
        }
    }
    assert!(matches!(
        SubVectors::from_matrix(&[1.0, f32::NAN], 1, 2, 1),
        Err(VqError::NonFinite { index: 1, .. })
    ));
    assert!(SubVectors::from_matrix(&[1.0; 3], 1, 2, 1).is_err());
    assert!(SubVectors::from_matrix(&[1.0; 2], 1, 2, 17).is_err());
}

#[test]
fn vq_layer_dequantizes_its_indices_and_fills_the_file_record() {
    // 2 rows × 5 cols, d = 2: 3 sub-vectors per row, the last padded.
    let layer = VqLayer {
        rows: 2,
        cols: 5,
        k: 3,
        d: 2,
        codebook: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        indices: vec![0, 2, 1, 2, 2, 0],
    };
    assert_eq!(
        layer.dequantize(),
        vec![1.0, 2.0, 5.0, 6.0, 3.0, 5.0, 6.0, 5.0, 6.0, 1.0]
    );
    assert!((layer.bits_per_weight() - 3f64.log2() / 2.0).abs() < 1e-12);
    match layer.into_tensor_data(false) {
        TensorData::Vq {
            k,
            d,
            indices,
            codebook,
            codebook_f16: false,
        } => {
            assert_eq!((k, d, indices.len(), codebook.len()), (3, 2, 6, 6));
        }
        other => panic!("not VQ: {other:?}"),
    }
}

#[test]
fn config_defaults_bits_table_and_validation() {
    let c = VqConfig::default();
    assert_eq!(
        (c.k, c.d, c.hull, c.steps, c.hull_every, c.seed),
        (256, 4, 2, 300, 10, 0)
    );
    assert_eq!((c.lr_logits, c.lr_codebook, c.lr_bias), (5e-2, 3e-4, 1e-4));
    assert_eq!(
        (c.rms_alpha, c.rms_eps, c.lambda_r, c.confirm_threshold),
        (0.9, 1e-8, 0.01, 0.99)
    );
    // The hull update follows the sub-vector length: every 10 steps at 3 and 2 bits, off at 1 bit.
    let periods: Vec<(usize, usize)> = [3, 2, 1]
        .iter()
        .map(|&b| {
            let c = VqConfig::with_bits(b).unwrap();
            (c.hull, c.hull_every)
        })
        .collect();
    assert_eq!(periods, [(2, 10), (2, 10), (2, 0)]);
    assert_eq!(c.schedule_at, [0.2, 0.4, 0.6, 0.8]);
    assert_eq!(c.schedule_floor, [0.25, 0.5, 0.75, 1.0]);
    assert_eq!(c.kmeans_iters, 100);
    c.validate().unwrap();
    assert_eq!(bits_to_kd(3), Some((64, 2)));
    assert_eq!(bits_to_kd(2), Some((256, 4)));
    assert_eq!(bits_to_kd(1), Some((256, 8)));
    assert_eq!(bits_to_kd(4), None);
    for b in 1..=3 {
        let c = VqConfig::with_bits(b).unwrap();
        assert!((c.bits_per_weight() - b as f64).abs() < 1e-12, "bits {b}");
    }
    assert!(VqConfig::with_bits(0).is_err());
    let bad = [
        VqConfig { k: 0, ..c.clone() },
        VqConfig {
            k: 65_537,
            ..c.clone()
        },
        VqConfig { d: 17, ..c.clone() },
        VqConfig {
            hull: 0,
            ..c.clone()
        },
        VqConfig {
            confirm_threshold: 1.5,
            ..c.clone()
        },
        VqConfig {
            rms_alpha: 1.0,
            ..c.clone()
        },
        VqConfig {
            lambda_r: -1.0,
            ..c.clone()
        },
        VqConfig {
            schedule_floor: [0.5, 0.25, 0.75, 1.0],
            ..c.clone()
        },
    ];
    for b in bad {
        assert!(b.validate().is_err(), "{b:?}");
    }
    VqConfig {
        k: 65_536,
        d: 16,
        ..c
    }
    .validate()
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// k-means
// ---------------------------------------------------------------------------------------------

#[test]
fn kmeans_recovers_well_separated_clusters() {
    let d = 4;
    let mut rng = SplitMix64::new(11);
    let centers: Vec<f32> = (0..8 * d).map(|_| (rng.normal() * 20.0) as f32).collect();
    let mut pts = Vec::new();
    let mut truth = Vec::new();
    for i in 0..1600 {
        let c = i % 8;
        truth.push(c);
        for t in 0..d {
            pts.push(centers[c * d + t] + (rng.normal() * 0.1) as f32);
        }
    }
    let cfg = KMeansConfig {
        k: 8,
        max_iters: 100,
        seed: 5,
    };
    let km = kmeans(&pts, d, &cfg).unwrap();
    assert!(km.converged);
    // Each true cluster maps to exactly one found cluster, one to one.
    let mut map = [u32::MAX; 8];
    for (i, &t) in truth.iter().enumerate() {
        if map[t] == u32::MAX {
            map[t] = km.assign[i];
        }
        assert_eq!(km.assign[i], map[t], "point {i} split from its cluster");
    }
    let mut seen = map.to_vec();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 8, "clusters merged: {map:?}");
    for t in 0..8 {
        let c = map[t] as usize;
        let err = sq_dist(
            &km.codebook[c * d..(c + 1) * d],
            &centers[t * d..(t + 1) * d],
        )
        .sqrt();
        assert!(err < 0.05, "centre {t} off by {err}");
    }
}

#[test]
fn kmeans_loss_never_increases() {
    let d = 4;
    let pts = gaussian(6000 * d, 21);
    let cfg = KMeansConfig {
        k: 64,
        max_iters: 60,
        seed: 1,
    };
    let km = kmeans(&pts, d, &cfg).unwrap();
    assert!(km.loss_history.len() > 10, "{:?}", km.loss_history);
    for w in km.loss_history.windows(2) {
        assert!(
            w[1] <= w[0] * (1.0 + 1e-6),
            "loss rose: {} -> {}",
            w[0],
            w[1]
        );
    }
    // Lloyd actually improves on the seeding.
    assert!(km.loss() < 0.8 * km.loss_history[0]);
    // The reported loss is the SSE of (codebook, assign).
    let sse: f64 = pts
        .chunks_exact(d)
        .zip(&km.assign)
        .map(|(x, &a)| sq_dist(x, &km.codebook[a as usize * d..(a as usize + 1) * d]) as f64)
        .sum();
    assert!((sse - km.loss()).abs() <= 1e-9 * sse);
}

#[test]
fn kmeans_reseeds_an_empty_cluster_from_the_worst_point() {
    // 1-D: the centre at 1000 gets no point; after the first update the worst point (10, error
    // (10 − 2.575)²) re-seeds it.
    let pts = [0.0f32, 0.1, 0.2, 10.0];
    let km = lloyd(&pts, 1, vec![0.1, 1000.0], 100);
    assert_eq!(km.reseeded, 1);
    assert!(km.converged);
    assert_eq!(km.assign, vec![0, 0, 0, 1]);
    assert!((km.codebook[0] - 0.1).abs() < 1e-6);
    assert_eq!(km.codebook[1], 10.0);
    // Duplicate data with more centres than distinct points: no NaN, no panic, loss 0.
    let dup = [1.0f32, 1.0, 1.0, 2.0, 2.0];
    let km = kmeans(
        &dup,
        1,
        &KMeansConfig {
            k: 4,
            max_iters: 10,
            seed: 0,
        },
    )
    .unwrap();
    assert!(km.codebook.iter().all(|v| v.is_finite()));
    assert_eq!(km.loss(), 0.0);
}

/// Runs `f` on a rayon pool of `threads` workers.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn kmeans_is_deterministic_for_a_seed_whatever_the_thread_count() {
    let d = 3;
    let pts = gaussian(9000 * d, 4);
    let run = |seed, threads| {
        on_threads(threads, || {
            kmeans(
                &pts,
                d,
                &KMeansConfig {
                    k: 50,
                    max_iters: 30,
                    seed,
                },
            )
            .unwrap()
        })
    };
    let a = run(3, 1);
    for t in [1, 2, 3] {
        let b = run(3, t);
        assert_eq!(bits(&a.codebook), bits(&b.codebook), "threads {t}");
        assert_eq!(a.assign, b.assign);
        assert_eq!(a.loss_history, b.loss_history);
    }
    assert_ne!(bits(&a.codebook), bits(&run(4, 1).codebook), "seed ignored");
}

/// All set partitions of `0..n` (restricted growth strings).
fn partitions(n: usize) -> Vec<Vec<usize>> {
    fn rec(i: usize, n: usize, cur: &mut Vec<usize>, max: usize, out: &mut Vec<Vec<usize>>) {
        if i == n {
            out.push(cur.clone());
            return;
        }
        for b in 0..=max + 1 {
            cur.push(b);
            rec(i + 1, n, cur, max.max(b), out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    let mut cur = vec![0];
    rec(1, n, &mut cur, 0, &mut out);
    out
}

/// Sum of squared distances to the block means.
fn partition_sse(pts: &[f32], d: usize, labels: &[usize]) -> f64 {
    let nb = labels.iter().max().unwrap() + 1;
    let mut sum = vec![0.0f64; nb * d];
    let mut cnt = vec![0usize; nb];
    for (x, &l) in pts.chunks_exact(d).zip(labels) {
        cnt[l] += 1;
        for t in 0..d {
            sum[l * d + t] += x[t] as f64;
        }
    }
    pts.chunks_exact(d)
        .zip(labels)
        .map(|(x, &l)| {
            (0..d)
                .map(|t| (x[t] as f64 - sum[l * d + t] / cnt[l] as f64).powi(2))
                .sum::<f64>()
        })
        .sum()
}

#[test]
fn kmeans_exhaustive_small_cases_against_brute_force() {
    let n = 8;
    let parts = partitions(n);
    assert_eq!(parts.len(), 4140, "Bell(8)");
    for d in 1..=3 {
        let pts = gaussian(n * d, 100 + d as u64);
        for k in 1..=8 {
            // Global optimum over every partition into at most k blocks.
            let opt = parts
                .iter()
                .filter(|p| *p.iter().max().unwrap() < k)
                .map(|p| partition_sse(&pts, d, p))
                .fold(f64::INFINITY, f64::min);
            let mut best = f64::INFINITY;
            for seed in 0..20 {
                let cfg = KMeansConfig {
                    k,
                    max_iters: 100,
                    seed,
                };
                let km = kmeans(&pts, d, &cfg).unwrap();
                assert!(km.converged, "d {d} k {k} seed {seed}");
                // Assignment step: every point at its brute-force nearest centre.
                let (brute, _) = nearest_scalar(&pts, &km.codebook, d);
                assert_eq!(km.assign, brute, "d {d} k {k} seed {seed}");
                // Update step: every non-empty centre is its cluster's mean.
                for c in 0..k {
                    let members: Vec<usize> =
                        (0..n).filter(|&i| km.assign[i] as usize == c).collect();
                    if members.is_empty() {
                        continue;
                    }
                    for t in 0..d {
                        let mean = members.iter().map(|&i| pts[i * d + t] as f64).sum::<f64>()
                            / members.len() as f64;
                        assert!((km.codebook[c * d + t] as f64 - mean).abs() < 1e-5);
                    }
                }
                let labels: Vec<usize> = km.assign.iter().map(|&a| a as usize).collect();
                let mut relabel = vec![usize::MAX; k];
                let mut next = 0;
                let labels: Vec<usize> = labels
                    .iter()
                    .map(|&l| {
                        if relabel[l] == usize::MAX {
                            relabel[l] = next;
                            next += 1;
                        }
                        relabel[l]
                    })
                    .collect();
                let sse = partition_sse(&pts, d, &labels);
                assert!((km.loss() - sse).abs() <= 1e-5 * (1.0 + sse));
                assert!(km.loss() >= opt - 1e-5 * (1.0 + opt), "below the optimum?");
                best = best.min(km.loss());
            }
            assert!(
                best <= opt + 1e-5 * (1.0 + opt),
                "d {d} k {k}: best of 20 seeds {best} vs optimum {opt}"
            );
            if k == n {
                assert!(best < 1e-10);
            }
        }
    }
}

#[test]
fn kmeans_accepts_the_extreme_sizes_and_rejects_bad_ones() {
    let d = 16;
    let pts = gaussian(100 * d, 9);
    let km = kmeans(
        &pts,
        d,
        &KMeansConfig {
            k: 65_536,
            max_iters: 3,
            seed: 0,
        },
    )
    .unwrap();
    assert_eq!(km.codebook.len(), 65_536 * d);
    assert!(km.assign.iter().all(|&a| a < 65_536));
    assert!(km.loss() < 1e-9, "every point is a centre: {}", km.loss());
    let cfg = |k| KMeansConfig {
        k,
        max_iters: 3,
        seed: 0,
    };
    assert!(kmeans(&pts, d, &cfg(0)).is_err());
    assert!(kmeans(&pts, d, &cfg(65_537)).is_err());
    assert!(kmeans(&pts, 17, &cfg(4)).is_err());
    assert!(kmeans(&[], 4, &cfg(4)).is_err());
}

/// Vim-S `in_proj` at 2 bits: 1536 × 384, d = 4 → 147 456 sub-vectors, k = 256, one thread.
/// Budget: well under 1 s per Lloyd iteration.
#[test]
fn kmeans_lloyd_iteration_speed_on_vim_s_in_proj() {
    let (rows, cols, d, k) = (1536, 384, 4, 256);
    let w: Vec<f32> = gaussian(rows * cols, 77).iter().map(|v| v * 0.02).collect();
    let sv = SubVectors::from_matrix(&w, rows, cols, d).unwrap();
    assert_eq!(sv.len(), 147_456);
    for threads in [1, 2] {
        let t0 = Instant::now();
        let init = on_threads(threads, || kmeans_pp(&sv.data, d, k, 0));
        let t_pp = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let km = on_threads(threads, || lloyd(&sv.data, d, init, 5));
        let t_lloyd = t1.elapsed().as_secs_f64();
        let per_iter = t_lloyd / km.loss_history.len() as f64;
        println!(
            "kmeans timing (threads {threads}): k-means++ {:.1} ms, {} assignment+update rounds, \
             {:.1} ms per Lloyd iteration",
            t_pp * 1e3,
            km.loss_history.len(),
            per_iter * 1e3
        );
        assert!(per_iter < 1.0, "{per_iter} s per Lloyd iteration");
    }
}

// ---------------------------------------------------------------------------------------------
// FCCO
// ---------------------------------------------------------------------------------------------

/// f64 reference of the FCCO forward: `Ŵ` from hulls, logits, codebook and confirmations.
struct Reference {
    rows: usize,
    cols: usize,
    d: usize,
    n: usize,
    hull: Vec<u32>,
    confirmed: Vec<bool>,
    assign: Vec<u32>,
}

impl Reference {
    fn of(f: &Fcco) -> Self {
        Self {
            rows: f.rows(),
            cols: f.cols(),
            d: f.d(),
            n: f.hull_size(),
            hull: f.hull().to_vec(),
            confirmed: f.confirmed_flags().to_vec(),
            assign: f.hard_indices(),
        }
    }

    fn ratios(&self, z: &[f64]) -> Vec<f64> {
        let mut r = vec![0.0; z.len()];
        for (zj, rj) in z.chunks_exact(self.n).zip(r.chunks_exact_mut(self.n)) {
            let m = zj.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = zj.iter().map(|v| (v - m).exp()).sum();
            for (ri, zi) in rj.iter_mut().zip(zj) {
                *ri = (zi - m).exp() / s;
            }
        }
        r
    }

    fn w_hat(&self, z: &[f64], cb: &[f64]) -> Vec<f64> {
        let per_row = self.cols.div_ceil(self.d);
        let r = self.ratios(z);
        let mut out = vec![0.0; self.rows * self.cols];
        for j in 0..self.rows * per_row {
            let (row, c0) = (j / per_row, (j % per_row) * self.d);
            for t in 0..self.d.min(self.cols - c0) {
                let v = if self.confirmed[j] {
                    cb[self.assign[j] as usize * self.d + t]
                } else {
                    (0..self.n)
                        .map(|m| {
                            r[j * self.n + m] * cb[self.hull[j * self.n + m] as usize * self.d + t]
                        })
                        .sum()
                };
                out[row * self.cols + c0 + t] = v;
            }
        }
        out
    }

    fn regulariser(&self, z: &[f64]) -> f64 {
        let r = self.ratios(z);
        let u = self.confirmed.iter().filter(|c| !**c).count();
        let s: f64 = (0..self.confirmed.len())
            .filter(|&j| !self.confirmed[j])
            .map(|j| {
                (0..self.n)
                    .map(|m| r[j * self.n + m] * (1.0 - r[j * self.n + m]))
                    .sum::<f64>()
            })
            .sum();
        self.n as f64 * s / u as f64
    }
}

/// Relative error of `got` against `want`, norm-wise, plus the worst element relative to the
/// largest gradient entry.
fn rel_err(got: &[f64], want: &[f64]) -> (f64, f64) {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    (num / den.max(1e-300), worst / scale.max(1e-300))
}

fn small_fcco(seed: u64) -> (Fcco, Vec<f32>) {
    // 3 × 7 weight, d = 3 (last sub-vector of each row padded), k = 6, hull 4.
    let (rows, cols) = (3, 7);
    let cfg = VqConfig {
        k: 6,
        d: 3,
        hull: 4,
        ..VqConfig::default()
    };
    let w = gaussian(rows * cols, seed);
    let cb = gaussian(6 * 3, seed + 1);
    let mut f = Fcco::new(&w, rows, cols, cb, cfg.hull, &cfg).unwrap();
    // Move the logits away from their initial values, confirm two sub-vectors.
    let z = gaussian(f.logits().len(), seed + 2);
    f.logits_mut().copy_from_slice(&z);
    f.refresh_ratios();
    f.confirm_to(1, 5);
    f.confirm(4);
    (f, gaussian(rows * cols, seed + 3))
}

#[test]
fn fcco_gradients_match_f64_finite_differences() {
    for seed in [1u64, 2, 3] {
        let (mut f, target) = small_fcco(seed * 10);
        let re = Reference::of(&f);
        let z: Vec<f64> = f.logits().iter().map(|&v| v as f64).collect();
        let cb: Vec<f64> = f.codebook().iter().map(|&v| v as f64).collect();
        let weights: Vec<f64> = (0..target.len())
            .map(|i| 0.5 + (i % 5) as f64 * 0.3)
            .collect();
        let lambda = 0.7f64;
        // L = Σ α (Ŵ − T)² + λ L_r.
        let loss_rec = |z: &[f64], cb: &[f64]| {
            re.w_hat(z, cb)
                .iter()
                .zip(&target)
                .zip(&weights)
                .map(|((w, &t), a)| a * (w - t as f64).powi(2))
                .sum::<f64>()
        };
        // Forward agreement (f32 state vs f64 reference).
        let ref_w = re.w_hat(&z, &cb);
        for (a, b) in f.reconstruct().iter().zip(&ref_w) {
            assert!((*a as f64 - b).abs() < 1e-5, "forward {a} vs {b}");
        }
        assert!((f.regulariser() - re.regulariser(&z)).abs() < 1e-6);

        let d_w: Vec<f32> = ref_w
            .iter()
            .zip(&target)
            .zip(&weights)
            .map(|((w, &t), a)| (2.0 * a * (w - t as f64)) as f32)
            .collect();
        let h = 1e-6;
        let fd = |fun: &dyn Fn(&[f64], &[f64]) -> f64, which: u8| -> Vec<f64> {
            let len = if which == 0 { z.len() } else { cb.len() };
            (0..len)
                .map(|i| {
                    let (mut zp, mut zm, mut cp, mut cm) =
                        (z.clone(), z.clone(), cb.clone(), cb.clone());
                    if which == 0 {
                        zp[i] += h;
                        zm[i] -= h;
                    } else {
                        cp[i] += h;
                        cm[i] -= h;
                    }
                    (fun(&zp, &cp) - fun(&zm, &cm)) / (2.0 * h)
                })
                .collect()
        };

        // Reconstruction term only.
        f.zero_grad();
        f.accumulate(&d_w).unwrap();
        let gz: Vec<f64> = f.grad_logits().iter().map(|&v| v as f64).collect();
        let gc = f.grad_codebook().to_vec();
        let (n1, e1) = rel_err(&gz, &fd(&loss_rec, 0));
        let (n2, e2) = rel_err(&gc, &fd(&loss_rec, 1));
        println!("seed {seed}: logits rel {n1:.2e} / {e1:.2e}, codebook rel {n2:.2e} / {e2:.2e}");
        assert!(
            n1 <= FD_BUDGET && e1 <= FD_BUDGET,
            "logit gradient: {n1} {e1}"
        );
        assert!(
            n2 <= FD_BUDGET && e2 <= FD_BUDGET,
            "codebook gradient: {n2} {e2}"
        );
        // Frozen logits of confirmed sub-vectors get no gradient.
        let n = f.hull_size();
        for j in [1usize, 4] {
            assert!(f.grad_logits()[j * n..(j + 1) * n]
                .iter()
                .all(|&g| g == 0.0));
        }

        // Regulariser only.
        f.zero_grad();
        let val = f.accumulate_regulariser(lambda as f32);
        assert!((val - lambda * re.regulariser(&z)).abs() < 1e-6);
        let reg = |z: &[f64], _cb: &[f64]| lambda * re.regulariser(z);
        let gz: Vec<f64> = f.grad_logits().iter().map(|&v| v as f64).collect();
        let (n3, e3) = rel_err(&gz, &fd(&reg, 0));
        println!("seed {seed}: regulariser rel {n3:.2e} / {e3:.2e}");
        assert!(
            n3 <= FD_BUDGET && e3 <= FD_BUDGET,
            "regulariser gradient: {n3} {e3}"
        );
        assert!(f.grad_codebook().iter().all(|&g| g == 0.0));

        // Both together accumulate.
        f.zero_grad();
        f.accumulate(&d_w).unwrap();
        f.accumulate_regulariser(lambda as f32);
        let both = |z: &[f64], cb: &[f64]| loss_rec(z, cb) + reg(z, cb);
        let gz: Vec<f64> = f.grad_logits().iter().map(|&v| v as f64).collect();
        let (n4, e4) = rel_err(&gz, &fd(&both, 0));
        assert!(
            n4 <= FD_BUDGET && e4 <= FD_BUDGET,
            "combined gradient: {n4} {e4}"
        );
    }
}

#[test]
fn fcco_initial_hull_and_logits_follow_the_documented_init() {
    let cfg = VqConfig {
        k: 16,
        d: 2,
        hull: 4,
        ..VqConfig::default()
    };
    let w = gaussian(4 * 6, 31);
    let cb = gaussian(16 * 2, 32);
    let f = Fcco::new(&w, 4, 6, cb.clone(), 4, &cfg).unwrap();
    let sv = SubVectors::from_matrix(&w, 4, 6, 2).unwrap();
    for j in 0..sv.len() {
        let x = sv.get(j);
        let mut all: Vec<(f32, u32)> = (0..16)
            .map(|c| (sq_dist(x, &cb[c * 2..c * 2 + 2]), c as u32))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<u32> = all[..4].iter().map(|p| p.1).collect();
        assert_eq!(&f.hull()[j * 4..j * 4 + 4], &want[..], "hull of {j}");
        for (m, &(dist, _)) in all.iter().take(4).enumerate() {
            let z = -(dist.sqrt() + 1e-5).ln();
            assert!((f.logits()[j * 4 + m] - z).abs() < 1e-5);
        }
        // Ratios ∝ 1/(dist + 1e-5), so the nearest member has the largest ratio.
        let r = &f.ratios()[j * 4..j * 4 + 4];
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[0] >= r[1] && r[1] >= r[2] && r[2] >= r[3]);
    }
    // Hull larger than k is clamped.
    let f = Fcco::new(&w, 4, 6, cb[..6].to_vec(), 8, &VqConfig { k: 3, ..cfg }).unwrap();
    assert_eq!(f.hull_size(), 3);
}

#[test]
fn rmsprop_matches_hand_computation() {
    let mut opt = RmsProp::new(2, 0.1, 0.9, 1e-8);
    let mut p = [1.0f32, -2.0];
    opt.step(&mut p, &[0.5, -1.0]);
    // v = 0.1 g², step = lr g / sqrt(v) = 0.1 · sign(g) / sqrt(0.1).
    let s = 0.1 / 0.1f32.sqrt();
    assert!(
        (p[0] - (1.0 - s)).abs() < 1e-6 && (p[1] - (-2.0 + s)).abs() < 1e-6,
        "{p:?}"
    );
    opt.step(&mut p, &[0.5, 0.0]);
    let v0 = 0.9 * 0.025 + 0.1 * 0.25;
    assert!((opt.state(0) - v0).abs() < 1e-7);
    assert!((p[0] - (1.0 - s - 0.1 * 0.5 / v0.sqrt())).abs() < 1e-6);
    assert!(
        (p[1] - (-2.0 + s)).abs() < 1e-6,
        "zero gradient moved the parameter"
    );
    opt.reset(0);
    assert_eq!(opt.state(0), 0.0);
    let cfg = VqConfig::default();
    assert_eq!(RmsProp::for_bias(3, &cfg).lr, 1e-4);
}

#[test]
fn hull_update_replaces_the_lowest_ratio_member_when_closer() {
    let cfg = VqConfig {
        k: 5,
        d: 1,
        hull: 2,
        ..VqConfig::default()
    };
    // One weight 0.4; codebook 0, 1, 1.3, 3, 10 → hull {0, 1}.
    let mut f = Fcco::new(&[0.4, 3.1], 1, 2, vec![0.0, 1.0, 1.3, 3.0, 10.0], 2, &cfg).unwrap();
    assert_eq!(&f.hull()[..2], &[0, 1]);
    // Give the logit optimiser some state, then set r = (0.1, 0.9): p = 0.9, c* = 1.3 (0.4 away)
    // beats member 0 (0.9 away), the lowest-ratio one.
    f.zero_grad();
    f.accumulate(&[1.0, 1.0]).unwrap();
    f.step();
    assert!(f.logit_optimizer().state(0) > 0.0 && f.logit_optimizer().state(1) > 0.0);
    let z = [0.1f32.ln(), 0.9f32.ln()];
    f.logits_mut()[..2].copy_from_slice(&z);
    f.refresh_ratios();
    // Sub-vector 1 (3.1, hull {3, 1.3}) is confirmed: never touched.
    f.confirm(1);
    let hull1 = f.hull()[2..4].to_vec();
    assert_eq!(f.update_hulls(), 1);
    assert_eq!(&f.hull()[..2], &[2, 1]);
    assert_eq!(&f.logits()[..2], &z, "logits must be kept");
    assert_eq!(
        f.logit_optimizer().state(0),
        0.0,
        "replaced member's state not reset"
    );
    assert!(f.logit_optimizer().state(1) > 0.0);
    assert_eq!(&f.hull()[2..4], &hull1[..]);
    // Now p = 0.1·1.3 + 0.9·1 = 1.03; nearest outside {1.3, 1} is 0 (1.03 away), lowest-ratio
    // member 1.3 is 0.27 away: no replacement.
    assert_eq!(f.update_hulls(), 0);
    assert_eq!(f.replaced_total(), 1);
}

#[test]
fn ivq_confirms_above_tau_freezes_and_forces_the_floor() {
    let cfg = VqConfig {
        k: 16,
        d: 2,
        hull: 4,
        ..VqConfig::default()
    };
    let (rows, cols) = (8, 10);
    let w = gaussian(rows * cols, 41);
    let mut f = Fcco::new(&w, rows, cols, gaussian(32, 42), 4, &cfg).unwrap();
    let n = f.len();
    // Sub-vectors 0, 3, 7 get a dominant logit (r > 0.99), the rest random.
    let mut z = gaussian(n * 4, 43);
    for &j in &[0usize, 3, 7] {
        z[j * 4 + 2] = 10.0;
    }
    f.logits_mut().copy_from_slice(&z);
    f.refresh_ratios();
    assert_eq!(f.confirm_above(0.99), 3);
    for j in 0..n {
        assert_eq!(f.is_confirmed(j), [0, 3, 7].contains(&j), "sub-vector {j}");
    }
    assert_eq!(f.hard_indices()[3], f.hull()[3 * 4 + 2]);
    // Confirmed sub-vectors are exactly their codeword, and their logits stay frozen.
    let cb = f.codebook().to_vec();
    let w_hat = f.reconstruct();
    let a = f.hard_indices()[3] as usize;
    assert_eq!(&w_hat[6..8], &cb[a * 2..a * 2 + 2]);
    f.zero_grad();
    f.accumulate(&gaussian(rows * cols, 44)).unwrap();
    f.accumulate_regulariser(0.1);
    f.step();
    assert_eq!(&f.logits()[3 * 4..3 * 4 + 4], &z[3 * 4..3 * 4 + 4]);
    assert_ne!(
        &f.logits()[4..8],
        &z[4..8],
        "unconfirmed logits did not move"
    );
    // Floor: at least 50 % → the highest max-r unconfirmed ones are forced.
    let before: Vec<f32> = (0..n).map(|j| f.max_ratio(j)).collect();
    let was: Vec<bool> = (0..n).map(|j| f.is_confirmed(j)).collect();
    let forced = f.confirm_at_least(0.5);
    assert_eq!(forced, n / 2 - 3);
    assert!((f.confirmed_fraction() - 0.5).abs() < 1e-12);
    let forced_min = (0..n)
        .filter(|&j| !was[j] && f.is_confirmed(j))
        .map(|j| before[j])
        .fold(f32::INFINITY, f32::min);
    let left_max = (0..n)
        .filter(|&j| !f.is_confirmed(j))
        .map(|j| before[j])
        .fold(f32::NEG_INFINITY, f32::max);
    assert!(
        forced_min >= left_max,
        "forced {forced_min} < left {left_max}"
    );
    assert_eq!(f.confirm_at_least(0.5), 0);
    assert_eq!(f.confirm_at_least(1.0), n - n / 2);
    assert_eq!(f.regulariser(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Layer objective
// ---------------------------------------------------------------------------------------------

/// A random layer with heavy-tailed weights and a random SPD `H = XᵀX / m` from correlated,
/// unevenly scaled inputs (a few outlier channels, as in Mamba blocks).
fn random_layer(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = SplitMix64::new(seed);
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let g = r.normal();
            let s = if r.next_f64() < 0.02 { 4.0 } else { 1.0 };
            (0.05 * g * s) as f32
        })
        .collect();
    let scale: Vec<f64> = (0..cols).map(|_| (0.8 * r.normal()).exp()).collect();
    let mix: Vec<f64> = (0..cols * cols)
        .map(|i| {
            if i % (cols + 1) == 0 {
                1.0
            } else {
                0.3 * r.normal() / (cols as f64).sqrt()
            }
        })
        .collect();
    let m = 4 * cols;
    let mut acc = HessianAccumulator::new(cols);
    let mut x = vec![0.0f32; m * cols];
    for row in x.chunks_exact_mut(cols) {
        let z: Vec<f64> = (0..cols).map(|_| r.normal()).collect();
        for (b, v) in row.iter_mut().enumerate() {
            *v = ((0..cols).map(|a| z[a] * mix[a * cols + b]).sum::<f64>() * scale[b]) as f32;
        }
    }
    acc.add(&x).unwrap();
    assert_eq!(acc.rows_seen(), m);
    let h: Vec<f32> = acc.finish().iter().map(|v| v / m as f32).collect();
    (w, h)
}

#[test]
fn hessian_accumulator_matches_direct_xtx_across_batches_and_threads() {
    let cols = 9;
    let x = gaussian(50 * cols, 51);
    let mut one = HessianAccumulator::new(cols);
    on_threads(1, || {
        one.add(&x[..20 * cols]).unwrap();
        one.add(&x[20 * cols..]).unwrap();
    });
    let mut two = HessianAccumulator::new(cols);
    on_threads(2, || two.add(&x)).unwrap();
    let (h1, h2) = (one.finish(), two.finish());
    for a in 0..cols {
        for b in 0..cols {
            let want: f64 = x
                .chunks_exact(cols)
                .map(|r| r[a] as f64 * r[b] as f64)
                .sum();
            assert!((h1[a * cols + b] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            assert!((h2[a * cols + b] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
        }
    }
    assert!(one.add(&x[..cols + 1]).is_err());
}

#[test]
fn layer_objective_loss_and_gradient_match_f64_references() {
    let (rows, cols) = (5, 8);
    let (w, h) = random_layer(rows, cols, 61);
    let obj = LayerObjective::new(&w, rows, cols, &h).unwrap();
    let w_hat: Vec<f32> = w
        .iter()
        .zip(gaussian(rows * cols, 62))
        .map(|(a, b)| a + 0.01 * b)
        .collect();
    let loss64 = |wh: &[f64]| {
        let e: Vec<f64> = w.iter().zip(wh).map(|(&a, b)| a as f64 - b).collect();
        let q = |e: &[f64]| {
            let mut s = 0.0;
            for r in 0..rows {
                for a in 0..cols {
                    for b in 0..cols {
                        s += e[r * cols + a] * h[a * cols + b] as f64 * e[r * cols + b];
                    }
                }
            }
            s
        };
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        q(&e) / q(&w64)
    };
    let wh64: Vec<f64> = w_hat.iter().map(|&v| v as f64).collect();
    let mut g = vec![0.0f32; rows * cols];
    let l = obj.loss_and_grad(&w_hat, &mut g);
    assert!(
        (l - loss64(&wh64)).abs() <= 1e-5 * loss64(&wh64),
        "{l} vs {}",
        loss64(&wh64)
    );
    assert!((obj.loss(&w) - 0.0).abs() < 1e-12);
    let step = 1e-7;
    let fd: Vec<f64> = (0..wh64.len())
        .map(|i| {
            let (mut p, mut m) = (wh64.clone(), wh64.clone());
            p[i] += step;
            m[i] -= step;
            (loss64(&p) - loss64(&m)) / (2.0 * step)
        })
        .collect();
    let got: Vec<f64> = g.iter().map(|&v| v as f64).collect();
    let (nrm, worst) = rel_err(&got, &fd);
    assert!(
        nrm <= FD_BUDGET && worst <= FD_BUDGET,
        "layer gradient: {nrm} {worst}"
    );
    assert!(LayerObjective::new(&w, rows, cols, &h[1..]).is_err());
}

/// One method's hard losses over the seeds of a comparison.
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Runs every method on `seeds` random layers; ViM-VQ must beat k-means on every layer and beat
/// k-means and VQ4DiT on the mean over the layers (single layers can go either way against
/// VQ4DiT, see the printed table).
fn compare_methods(rows: usize, cols: usize, bits: u32, seeds: &[u64]) {
    let (mut km_l, mut gpt_l, mut vq4_l, mut vim_l, mut n2_l, mut n8_l) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for &seed in seeds {
        let (w, h) = random_layer(rows, cols, seed);
        let obj = LayerObjective::new(&w, rows, cols, &h).unwrap();
        let cfg = VqConfig {
            seed,
            ..VqConfig::with_bits(bits).unwrap()
        };
        let t = Instant::now();
        let vim = layer_fcco(&obj, &cfg, FccoSettings::from_config(&cfg)).unwrap();
        let t_vim = t.elapsed().as_secs_f64();
        let vq4 = layer_fcco(&obj, &cfg, FccoSettings::VQ4DIT).unwrap();
        let km = layer_kmeans(&obj, &cfg).unwrap();
        let gpt = layer_gptvq(&obj, &cfg).unwrap();
        let cfg_n2 = VqConfig {
            hull: 2,
            ..cfg.clone()
        };
        let n2 = layer_fcco(&obj, &cfg_n2, FccoSettings::from_config(&cfg_n2)).unwrap();
        let cfg_n8 = VqConfig {
            hull: 8,
            ..cfg.clone()
        };
        let n8 = layer_fcco(&obj, &cfg_n8, FccoSettings::from_config(&cfg_n8)).unwrap();
        let rt = rtn(&w, rows, cols, bits).unwrap();
        println!(
            "{bits}-bit {rows}x{cols} (k {}, d {}) seed {seed}: rtn {:.3e}  kmeans {:.3e}  gptvq {:.3e}  \
             vq4dit {:.3e}  vim-vq {:.3e} (n=2 {:.3e}, n=8 {:.3e}; replaced {}, by threshold {}, \
             forced {}, all confirmed after step {}) {t_vim:.2} s",
            cfg.k,
            cfg.d,
            obj.loss(&rt.w_hat),
            km.loss,
            gpt.loss,
            vq4.loss,
            vim.loss,
            n2.loss,
            n8.loss,
            vim.replaced,
            vim.confirmed_by_threshold,
            vim.forced,
            vim.confirmed_history.iter().position(|&c| c == 1.0).unwrap() + 1,
        );
        assert_eq!(km.loss, vim.kmeans_loss);
        assert!(
            vim.loss < km.loss,
            "ViM-VQ {} not below k-means {}",
            vim.loss,
            km.loss
        );
        assert!(
            gpt.loss < km.loss,
            "GPTVQ {} not below k-means {}",
            gpt.loss,
            km.loss
        );
        // Every sub-vector confirmed by the schedule, none hardened at the end.
        assert_eq!(vim.hardened_at_end, 0);
        assert_eq!(vq4.hardened_at_end, vq4.layer.indices.len());
        let step_100 = (cfg.schedule_at[3] * cfg.steps as f32).round() as usize;
        assert!(vim.confirmed_history[step_100 - 1..]
            .iter()
            .all(|&c| c == 1.0));
        assert_eq!(
            vim.confirmed_by_threshold + vim.forced,
            vim.layer.indices.len()
        );
        assert!(vim.replaced > 0, "the hull update never acted");
        for l in [&vim.layer, &vq4.layer, &km.layer, &gpt.layer] {
            assert_eq!(l.indices.len(), rows * cols.div_ceil(cfg.d));
            assert!(l.indices.iter().all(|&a| (a as usize) < cfg.k));
            assert_eq!(l.codebook.len(), cfg.k * cfg.d);
        }
        // The reported loss is the loss of the returned hard layer.
        assert_eq!(vim.loss, obj.loss(&vim.layer.dequantize()));
        km_l.push(km.loss);
        gpt_l.push(gpt.loss);
        vq4_l.push(vq4.loss);
        vim_l.push(vim.loss);
        n2_l.push(n2.loss);
        n8_l.push(n8.loss);
    }
    println!(
        "{bits}-bit mean over {} layers: kmeans {:.3e}  gptvq {:.3e}  vq4dit {:.3e}  vim-vq {:.3e} \
         (n=2 {:.3e}, n=8 {:.3e})",
        seeds.len(),
        mean(&km_l),
        mean(&gpt_l),
        mean(&vq4_l),
        mean(&vim_l),
        mean(&n2_l),
        mean(&n8_l)
    );
    assert!(mean(&vim_l) < mean(&km_l));
    assert!(
        mean(&vim_l) < mean(&vq4_l),
        "ViM-VQ mean {} not below VQ4DiT mean {}",
        mean(&vim_l),
        mean(&vq4_l)
    );
}

#[test]
fn layer_objective_vimvq_beats_kmeans_and_vq4dit_at_2_bits() {
    compare_methods(64, 128, 2, &[7, 17, 27, 37, 47]);
}

#[test]
fn layer_objective_vimvq_beats_kmeans_and_vq4dit_at_3_bits() {
    compare_methods(64, 64, 3, &[8, 18, 28, 38, 48]);
}

#[test]
fn layer_objective_1_bit_pads_rows_and_still_confirms_everything() {
    // dt_proj-like: 12 input columns, d = 8 → rows padded to 16.
    let (rows, cols) = (48, 12);
    let (w, h) = random_layer(rows, cols, 71);
    let obj = LayerObjective::new(&w, rows, cols, &h).unwrap();
    let cfg = VqConfig {
        k: 32,
        steps: 100,
        ..VqConfig::with_bits(1).unwrap()
    };
    let vim = layer_fcco(&obj, &cfg, FccoSettings::from_config(&cfg)).unwrap();
    assert_eq!(vim.layer.indices.len(), rows * 2);
    assert_eq!(vim.hardened_at_end, 0);
    assert!(
        vim.loss < vim.kmeans_loss,
        "{} vs {}",
        vim.loss,
        vim.kmeans_loss
    );
}

#[test]
fn layer_fcco_is_bit_identical_across_runs_and_thread_counts() {
    let (rows, cols) = (64, 96);
    let (w, h) = random_layer(rows, cols, 81);
    let run = |threads| {
        on_threads(threads, || {
            let obj = LayerObjective::new(&w, rows, cols, &h).unwrap();
            let cfg = VqConfig {
                steps: 60,
                seed: 9,
                ..VqConfig::default()
            };
            layer_fcco(&obj, &cfg, FccoSettings::from_config(&cfg)).unwrap()
        })
    };
    let a = run(1);
    for t in [1, 2, 3] {
        let b = run(t);
        assert_eq!(
            bits(&a.layer.codebook),
            bits(&b.layer.codebook),
            "threads {t}"
        );
        assert_eq!(a.layer.indices, b.layer.indices, "threads {t}");
        assert_eq!(a.loss_history, b.loss_history, "threads {t}");
    }
}

#[test]
fn trainer_drives_a_block_style_loop() {
    // The block objective's loop shape: the caller owns the loss (here a column-weighted relative
    // MSE that plain k-means ignores) and hands dL/dŴ back every step.
    let (rows, cols) = (32, 24);
    let w = gaussian(rows * cols, 91);
    let mut rng = SplitMix64::new(92);
    let alpha: Vec<f32> = (0..cols)
        .map(|_| 10f32.powf((rng.next_f64() * 4.0 - 2.0) as f32))
        .collect();
    let norm: f64 = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (alpha[i % cols] * v * v) as f64)
        .sum();
    let loss = |wh: &[f32]| {
        wh.iter()
            .zip(&w)
            .enumerate()
            .map(|(i, (a, b))| (alpha[i % cols] * (a - b) * (a - b)) as f64)
            .sum::<f64>()
            / norm
    };
    let cfg = VqConfig {
        k: 16,
        d: 4,
        steps: 100,
        ..VqConfig::default()
    };
    let (mut tr, base) = FccoTrainer::from_kmeans(
        &w,
        rows,
        cols,
        &cfg,
        FccoSettings::from_config(&cfg),
        cfg.steps,
    )
    .unwrap();
    let mut last = None;
    for _ in 0..cfg.steps {
        let wh = tr.w_hat();
        let g: Vec<f32> = wh
            .iter()
            .zip(&w)
            .enumerate()
            .map(|(i, (a, b))| (2.0 * alpha[i % cols] as f64 * (a - b) as f64 / norm) as f32)
            .collect();
        last = Some(tr.step(&g).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.steps_done, 100);
    assert_eq!(tr.steps_done(), 100);
    assert_eq!(last.confirmed_fraction, 1.0);
    assert_eq!(tr.settings(), FccoSettings::from_config(&cfg));
    let layer = tr.finish();
    assert_eq!((layer.rows, layer.cols), (rows, cols));
    assert_eq!(layer.indices.len(), rows * cols.div_ceil(4));
    let (start, end) = (loss(&base.dequantize()), loss(&layer.dequantize()));
    println!("block-style loop: k-means {start:.4e} → ViM-VQ {end:.4e}");
    assert!(end < 0.9 * start, "{end} vs {start}");
    let (mut tr, _) =
        FccoTrainer::from_kmeans(&w, rows, cols, &cfg, FccoSettings::from_config(&cfg), 10)
            .unwrap();
    assert!(tr.step(&[0.0; 3]).is_err());
}

// ---------------------------------------------------------------------------------------------
// RTN
// ---------------------------------------------------------------------------------------------

#[test]
fn rtn_error_is_within_half_a_step_per_channel() {
    let (rows, cols) = (6, 50);
    let mut w = gaussian(rows * cols, 101);
    for v in &mut w[2 * cols..3 * cols] {
        *v = 0.75; // a constant row is exact
    }
    w[4 * cols + 7] = 40.0; // an outlier widens its row's step
    for b in 1..=8 {
        let q = rtn(&w, rows, cols, b).unwrap();
        for r in 0..rows {
            let step = q.steps[r];
            let mut levels: Vec<u32> = Vec::new();
            for c in 0..cols {
                let (x, y) = (w[r * cols + c], q.w_hat[r * cols + c]);
                let tol = step / 2.0 + 4.0 * f32::EPSILON * x.abs().max(1.0);
                assert!(
                    (x - y).abs() <= tol,
                    "b {b} r {r} c {c}: |{x} − {y}| > {tol}"
                );
                levels.push(y.to_bits());
            }
            levels.sort_unstable();
            levels.dedup();
            assert!(
                levels.len() <= 1 << b,
                "b {b} row {r}: {} levels",
                levels.len()
            );
        }
        assert_eq!(q.steps[2], 0.0);
        assert!(q.w_hat[2 * cols..3 * cols].iter().all(|&v| v == 0.75));
        assert_eq!(
            q.ideal_bits(),
            (rows * cols * b as usize + rows * 32) as u64
        );
    }
    assert!(rtn(&w, rows, cols, 0).is_err());
    assert!(rtn(&w, rows, cols + 1, 2).is_err());
}
