//! Whole-block checks of the calibration forward/backward (`vimvq_pack::calib`):
//! parity with the float64 numpy reference, finite differences of every trainable tensor,
//! f32 vs f64 gradients, and (ignored) the timing on the bundled model's dimensions.
//!
//! The fixture `tests/data/block_fixture.{json,bin}` is written by
//! `tests/data/make_block_fixture.py` (numpy, `mixer_direct` of `vim_numpy_ref.py`).

use std::time::Instant;

use vimvq_pack::calib::ops::{
    conv_forward, linear_forward, silu_forward, ConvDims, Direction, LinearDims,
};
use vimvq_pack::calib::{
    backward, forward, rel_mse, BlockDims, BlockParams, Cache, Float, Grads, TRAINABLE_ROLES,
};
use vimvq_pack::rng::SplitMix64;
use vimvq_rt::format::Role;
use vimvq_rt::VimConfig;

/// f64 forward vs the numpy reference: `‖y − y_np‖∞ / ‖y_np‖∞`.
const PARITY_F64: f64 = 1e-10;
/// f32 forward vs the numpy reference, same metric.
const PARITY_F32: f64 = 1e-5;
/// Finite differences vs the analytic block gradient (relative, see `rel_err`).
const FD_TOL: f64 = 1e-4;
/// f32 vs f64 gradients: `‖g32 − g64‖₂ / ‖g64‖₂` per tensor.
const F32_GRAD_TOL: f64 = 1e-3;

// ---------------------------------------------------------------------------------------------
// helpers

/// `(B, L, D)` rows with unit RMS, like an RMSNorm output (gain 1 ± 0.1 per feature).
fn normalised_input(batch: usize, len: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let gain: Vec<f64> = (0..d).map(|_| 1.0 + 0.1 * rng.normal()).collect();
    let mut out = Vec::with_capacity(batch * len * d);
    for _ in 0..batch * len {
        let row: Vec<f64> = (0..d).map(|_| 2.0 * rng.normal()).collect();
        let rms = (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + 1e-5).sqrt();
        out.extend(row.iter().zip(&gain).map(|(v, g)| v / rms * g));
    }
    out
}

fn cfg_of(dims: BlockDims) -> VimConfig {
    VimConfig {
        embed_dim: dims.d_model,
        depth: 1,
        patch: 16,
        stride: 16,
        img_size: 224,
        channels: 3,
        num_classes: 1000,
        d_state: dims.d_state,
        dt_rank: dims.dt_rank,
        d_conv: dims.d_conv,
        d_inner: dims.d_inner,
        norm_eps: 1e-5,
    }
}

fn to<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|x| T::from_f64(*x)).collect()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    num / b.iter().fold(0.0f64, |m, y| m.max(y.abs()))
}

/// `|a − b| / max(|a|, |b|, floor)`.
fn rel_err(a: f64, b: f64, floor: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(floor)
}

/// Fourth-order central difference `f'(0) ≈ (−f(2h) + 8f(h) − 8f(−h) + f(−2h)) / 12h`.
///
/// Truncation is `O(h⁴)`, so `h` can be large enough that the loss's rounding noise (~1e-17
/// absolute) stays far below the smallest gradients checked (the Δ-path gradients are ~1e-9).
fn central_diff(h: f64, f: impl Fn(f64) -> f64) -> f64 {
    (-f(2.0 * h) + 8.0 * f(h) - 8.0 * f(-h) + f(-2.0 * h)) / (12.0 * h)
}

// ---------------------------------------------------------------------------------------------
// numpy parity

struct Fixture {
    dims: BlockDims,
    seq_len: usize,
    tensors: Vec<(String, Vec<f64>)>,
}

impl Fixture {
    fn load() -> Fixture {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{dir}block_fixture.json")).expect("fixture json"),
        )
        .unwrap();
        let bin = std::fs::read(format!("{dir}block_fixture.bin")).expect("fixture bin");
        let all: Vec<f64> = bin
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let d = &meta["dims"];
        let u = |k: &str| d[k].as_u64().unwrap() as usize;
        let dims = BlockDims {
            d_model: u("d_model"),
            d_inner: u("d_inner"),
            dt_rank: u("dt_rank"),
            d_state: u("d_state"),
            d_conv: u("d_conv"),
        };
        let tensors = meta["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let off = t["offset"].as_u64().unwrap() as usize;
                let len = t["len"].as_u64().unwrap() as usize;
                (
                    t["name"].as_str().unwrap().to_string(),
                    all[off..off + len].to_vec(),
                )
            })
            .collect();
        Fixture {
            dims,
            seq_len: u("seq_len"),
            tensors,
        }
    }

    fn get(&self, name: &str) -> &[f64] {
        &self
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
    }

    /// Parameters through the `from_torch` constructor (the fixture values are f32-exact).
    fn params<T: Float>(&self) -> BlockParams<T> {
        let f32s: Vec<(String, Vec<f32>)> = self
            .tensors
            .iter()
            .filter(|(n, _)| n.starts_with("layers."))
            .map(|(n, v)| {
                let w: Vec<f32> = v.iter().map(|x| *x as f32).collect();
                assert!(
                    v.iter().zip(&w).all(|(a, b)| *a == *b as f64),
                    "{n} is not f32-exact"
                );
                (n.clone(), w)
            })
            .collect();
        BlockParams::from_torch(&cfg_of(self.dims), 0, |name| {
            f32s.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        })
        .expect("fixture params")
    }
}

/// Runs `f` on a rayon pool of `threads` workers.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn fixture_parity<T: Float>(threads: usize) -> f64 {
    let fx = Fixture::load();
    let params = fx.params::<T>();
    let hn: Vec<T> = to(fx.get("hn"));
    let y = on_threads(threads, || {
        forward(&params, &hn, fx.seq_len, &mut Cache::new())
    });
    let y: Vec<f64> = y.iter().map(|v| v.to_f64()).collect();
    max_rel(&y, fx.get("y"))
}

#[test]
fn forward_f64_matches_numpy_reference() {
    let e1 = fixture_parity::<f64>(1);
    let e2 = fixture_parity::<f64>(2);
    eprintln!(
        "f64 forward vs numpy mixer_direct: max rel err {e1:.2e} (1 thread), {e2:.2e} (2 threads)"
    );
    assert!(e1 <= PARITY_F64 && e2 <= PARITY_F64, "{e1} {e2}");
}

#[test]
fn forward_f32_matches_numpy_reference() {
    let e = fixture_parity::<f32>(2);
    eprintln!("f32 forward vs numpy mixer_direct: max rel err {e:.2e}");
    assert!(e <= PARITY_F32, "{e}");
}

// ---------------------------------------------------------------------------------------------
// finite differences of the whole block

/// A calibration-like problem: `params` are "quantized" (perturbed) weights, `y_ref` the output
/// of the original block on the same normalised input.
struct Problem<T> {
    params: BlockParams<T>,
    hn: Vec<T>,
    y_ref: Vec<T>,
    len: usize,
    /// Channels `(branch, e)` whose Δ pre-activation is above the softplus threshold.
    hot: Vec<(Role, usize)>,
}

fn problem(dims: BlockDims, len: usize, batch: usize, seed: u64) -> Problem<f64> {
    let mut orig = BlockParams::<f64>::random_vim_like(dims, seed);
    // Softplus threshold branch: Δ biases far above 20 on a few channels (checked below).
    let hot = vec![
        (Role::DtProjB, 1),
        (Role::DtProjB, dims.d_inner - 2),
        (Role::DtProjBBack, 3),
    ];
    for (i, (role, e)) in hot.iter().enumerate() {
        orig.tensor_mut(*role).unwrap()[*e] = 25.0 + 3.0 * i as f64;
    }
    let mut params = orig.clone();
    let mut rng = SplitMix64::new(seed ^ 0xabcd);
    for role in TRAINABLE_ROLES {
        for (e, w) in params.tensor_mut(role).unwrap().iter_mut().enumerate() {
            if !hot.contains(&(role, e)) {
                *w += 0.2 * w.abs().max(0.01) * rng.normal();
            }
        }
    }
    let hn = normalised_input(batch, len, dims.d_model, seed + 1);
    let y_ref = forward(&orig, &hn, len, &mut Cache::new());
    // Make sure the hot channels really take the identity branch, for every image and token.
    for (role, e) in &hot {
        let dir = if *role == Role::DtProjB {
            Direction::Forward
        } else {
            Direction::Backward
        };
        let pre = delta_pre(&params, &hn, len, dir);
        let lo = pre
            .iter()
            .skip(*e)
            .step_by(dims.d_inner)
            .fold(f64::INFINITY, |m, v| m.min(*v));
        assert!(lo > 21.0, "{role:?}[{e}]: min pre-activation {lo}");
    }
    Problem {
        params,
        hn,
        y_ref,
        len,
        hot,
    }
}

/// The Δ pre-activations `(B·L, E)` of one branch, recomputed with the per-op API.
fn delta_pre(p: &BlockParams<f64>, hn: &[f64], len: usize, dir: Direction) -> Vec<f64> {
    let BlockDims {
        d_model: d,
        d_inner: e,
        dt_rank: r,
        d_conv: k,
        ..
    } = p.dims;
    let rows = p.dims.x_proj_rows();
    let bp = if dir == Direction::Forward {
        &p.fwd
    } else {
        &p.bwd
    };
    let mut out = Vec::new();
    for h in hn.chunks_exact(len * d) {
        let mut x = vec![0.0; len * e];
        linear_forward(
            h,
            &p.in_proj[..e * d],
            None,
            LinearDims { m: len, k: d, n: e },
            &mut x,
        );
        let mut s = vec![0.0; len * e];
        conv_forward(
            &x,
            &bp.conv_w,
            &bp.conv_b,
            ConvDims {
                len,
                channels: e,
                taps: k,
                dir,
            },
            &mut s,
        );
        let mut u = vec![0.0; len * e];
        silu_forward(&s, &mut u);
        let mut xd = vec![0.0; len * rows];
        linear_forward(
            &u,
            &bp.x_proj,
            None,
            LinearDims {
                m: len,
                k: e,
                n: rows,
            },
            &mut xd,
        );
        let dtl: Vec<f64> = xd
            .chunks_exact(rows)
            .flat_map(|row| row[..r].to_vec())
            .collect();
        let mut pre = vec![0.0; len * e];
        linear_forward(
            &dtl,
            &bp.dt_proj_w,
            Some(&bp.dt_proj_b),
            LinearDims { m: len, k: r, n: e },
            &mut pre,
        );
        out.extend(pre);
    }
    out
}

impl Problem<f64> {
    fn loss(&self, p: &BlockParams<f64>) -> f64 {
        let y = forward(p, &self.hn, self.len, &mut Cache::new());
        rel_mse(&y, &self.y_ref, None)
    }

    fn grads(&self, threads: usize) -> (f64, Grads<f64>) {
        on_threads(threads, || {
            let mut cache = Cache::new();
            let y = forward(&self.params, &self.hn, self.len, &mut cache);
            let mut dy = vec![0.0; y.len()];
            let l = rel_mse(&y, &self.y_ref, Some(&mut dy));
            (l, backward(&self.params, &mut cache, &dy))
        })
    }

    /// Derivative of the loss along `dir` (one vector per moved trainable role), by [`central_diff`].
    fn directional(&self, dir: &[(Role, Vec<f64>)], h: f64) -> f64 {
        central_diff(h, |s| {
            let mut p = self.params.clone();
            for (role, v) in dir {
                for (w, d) in p.tensor_mut(*role).unwrap().iter_mut().zip(v) {
                    *w += s * d;
                }
            }
            self.loss(&p)
        })
    }
}

#[test]
fn block_gradients_match_finite_differences() {
    let dims = BlockDims {
        d_model: 16,
        d_inner: 32,
        dt_rank: 2,
        d_state: 8,
        d_conv: 4,
    };
    let pb = problem(dims, 11, 3, 42);
    let (loss, g) = pb.grads(2);
    eprintln!("loss {loss:.4e}");
    assert!(loss > 1e-3, "degenerate problem");
    let mut rng = SplitMix64::new(7);
    let mut worst_all = 0.0f64;
    for role in TRAINABLE_ROLES {
        let ga = g.tensor(role).unwrap();
        let n = ga.len();
        let gmax = ga.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(gmax > 0.0, "{role:?}: zero gradient");
        // Entries below 1 % of the tensor's largest are judged against that 1 % (so at most
        // 1e-6·max absolute): their finite differences are dominated by the loss's rounding noise.
        let floor = 1e-2 * gmax;
        // 24 random coordinates, plus the channels in the softplus identity branch.
        let mut coords: Vec<usize> = (0..24).map(|_| rng.below(n)).collect();
        coords.extend(pb.hot.iter().filter(|(r, _)| *r == role).map(|(_, e)| *e));
        let mut worst = 0.0f64;
        // Δ enters through softplus ≈ exp for small Δ, so the `dt_proj` weight gradients are tiny
        // (~1e-10 against a loss of ~0.1) but the loss is very smooth in them: a larger step keeps
        // the loss change far above its rounding noise (~1e-16) while the O(h⁴) truncation stays
        // below 1e-6 relative (measured: FD converges to the analytic value as h grows to 3e-2).
        let dt_w = matches!(role, Role::DtProjW | Role::DtProjWBack);
        let (step, dir_step) = if dt_w { (3e-2, 1e-2) } else { (1e-3, 1e-4) };
        for &i in &coords {
            let w0 = pb.params.tensor(role).unwrap()[i];
            let fd = central_diff(step * w0.abs().max(1.0), |s| {
                let mut p = pb.params.clone();
                p.tensor_mut(role).unwrap()[i] = w0 + s;
                pb.loss(&p)
            });
            let e = rel_err(fd, ga[i], floor);
            if e > FD_TOL {
                eprintln!(
                    "  {role:?}[{i}] fd {fd:.6e} analytic {:.6e} (max {gmax:.3e})",
                    ga[i]
                );
            }
            worst = worst.max(e);
        }
        // Full directional derivatives along two random directions of this tensor.
        let mut worst_dir = 0.0f64;
        for _ in 0..2 {
            let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let an: f64 = v.iter().zip(ga).map(|(a, b)| a * b).sum();
            let fd = pb.directional(&[(role, v)], dir_step);
            worst_dir = worst_dir.max(rel_err(fd, an, 1e-30));
        }
        eprintln!(
            "{role:?}: {} coords max rel err {worst:.2e}; directional {worst_dir:.2e}",
            coords.len()
        );
        assert!(
            worst <= FD_TOL && worst_dir <= FD_TOL,
            "{role:?}: coords {worst}, directional {worst_dir}"
        );
        worst_all = worst_all.max(worst).max(worst_dir);
    }
    // One direction moving all trainable tensors at once.
    let dir: Vec<(Role, Vec<f64>)> = TRAINABLE_ROLES
        .iter()
        .map(|r| {
            (
                *r,
                (0..g.tensor(*r).unwrap().len())
                    .map(|_| rng.normal())
                    .collect(),
            )
        })
        .collect();
    let an: f64 = dir
        .iter()
        .map(|(r, v)| {
            v.iter()
                .zip(g.tensor(*r).unwrap())
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .sum();
    let fd = pb.directional(&dir, 1e-4);
    let e = rel_err(fd, an, 1e-30);
    eprintln!(
        "all trainable tensors, one direction: rel err {e:.2e}; overall worst {:.2e}",
        worst_all.max(e)
    );
    assert!(e <= FD_TOL, "{e}");
}

#[test]
fn softplus_identity_branch_gradients_match_finite_differences() {
    // Channels whose Δ bias is 25–31 (pre-activation > 21 for every token, checked in `problem`)
    // run softplus's identity branch, Δ = pre, with Δ·A ≈ −25…−500 (state fully reset each step).
    // Their bias gradients, through that branch only, must match a finite difference taken far
    // from the threshold kink.
    let dims = BlockDims {
        d_model: 8,
        d_inner: 16,
        dt_rank: 1,
        d_state: 4,
        d_conv: 4,
    };
    let pb = problem(dims, 7, 2, 9);
    let (_, g) = pb.grads(1);
    for (role, e) in &pb.hot {
        let w0 = pb.params.tensor(*role).unwrap()[*e];
        assert!(w0 > 24.0);
        let an = g.tensor(*role).unwrap()[*e];
        let h = 1e-4; // far from the kink at 20, so a large step is exact up to O(h²) curvature
        let mut p = pb.params.clone();
        p.tensor_mut(*role).unwrap()[*e] = w0 + h;
        let lp = pb.loss(&p);
        p.tensor_mut(*role).unwrap()[*e] = w0 - h;
        let lm = pb.loss(&p);
        let fd = (lp - lm) / (2.0 * h);
        eprintln!("{role:?}[{e}] (bias {w0}): analytic {an:.6e} fd {fd:.6e}");
        assert!(
            an != 0.0 && rel_err(fd, an, 1e-12) <= FD_TOL,
            "{role:?}[{e}] {an} {fd}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// f32 vs f64

#[test]
fn f32_gradients_agree_with_f64() {
    let dims = BlockDims {
        d_model: 64,
        d_inner: 128,
        dt_rank: 4,
        d_state: 16,
        d_conv: 4,
    };
    let pb = problem(dims, 25, 4, 77);
    let (l64, g64) = pb.grads(2);
    let p32: BlockParams<f32> = pb.params.cast();
    let hn32: Vec<f32> = to(&pb.hn);
    let yref32: Vec<f32> = to(&pb.y_ref);
    let mut cache = Cache::new();
    let y = forward(&p32, &hn32, pb.len, &mut cache);
    let mut dy = vec![0.0f32; y.len()];
    let l32 = rel_mse(&y, &yref32, Some(&mut dy));
    let g32 = backward(&p32, &mut cache, &dy);
    let el = (l32 - l64).abs() / l64;
    eprintln!("loss f64 {l64:.6e}, f32 {l32:.6e}, rel diff {el:.1e}");
    assert!(el < F32_GRAD_TOL);
    for role in TRAINABLE_ROLES {
        let (a, b) = (g32.tensor(role).unwrap(), g64.tensor(role).unwrap());
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - y).powi(2))
            .sum::<f64>()
            .sqrt();
        let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        eprintln!("{role:?}: ‖g32 − g64‖/‖g64‖ = {:.2e}", num / den);
        assert!(num / den <= F32_GRAD_TOL, "{role:?}: {}", num / den);
    }
}

// ---------------------------------------------------------------------------------------------
// timing

/// Nanoseconds the calling thread has spent on a CPU (Linux `schedstat`), if available.
///
/// On a shared machine the wall time of a single-threaded run includes time spent waiting for a
/// core; the on-CPU time does not.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Forward + loss + backward for one minibatch of 8 at the bundled model's dimensions
/// (D = 128, E = 256, R = 8, N = 16, L = 50). Run with
/// `cargo test --release -p vimvq-pack --test block_grad -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_bundled_dims() {
    let dims = BlockDims {
        d_model: 128,
        d_inner: 256,
        dt_rank: 8,
        d_state: 16,
        d_conv: 4,
    };
    let (len, batch) = (50, 8);
    let params = BlockParams::<f32>::random_vim_like(dims, 1);
    let target = BlockParams::<f32>::random_vim_like(dims, 2);
    let hn: Vec<f32> = to(&normalised_input(batch, len, dims.d_model, 3));
    let mut cache = Cache::new();
    let y_ref = forward(&target, &hn, len, &mut cache);
    let mut dy = vec![0.0f32; y_ref.len()];
    for threads in [1, 2] {
        let mut fwd = Vec::new();
        let mut total = Vec::new();
        let mut cpu = Vec::new();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // Timed on a worker of the pool: its CPU time is the "calling thread" figure.
        pool.install(|| {
            for it in 0..22 {
                let c0 = thread_cpu_ns();
                let t0 = Instant::now();
                let y = forward(&params, &hn, len, &mut cache);
                let t1 = Instant::now();
                rel_mse(&y, &y_ref, Some(&mut dy));
                let g = backward(&params, &mut cache, &dy);
                let t2 = Instant::now();
                let c1 = thread_cpu_ns();
                assert!(g.in_proj[0].is_finite());
                if it >= 2 {
                    fwd.push((t1 - t0).as_secs_f64() * 1e3);
                    total.push((t2 - t0).as_secs_f64() * 1e3);
                    if let (Some(a), Some(b)) = (c0, c1) {
                        cpu.push((b - a) as f64 / 1e6);
                    }
                }
            }
        });
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            if v.is_empty() {
                f64::NAN
            } else {
                v[v.len() / 2]
            }
        };
        let min = total.iter().copied().fold(f64::INFINITY, f64::min);
        eprintln!(
            "B={batch} L={len} D=128 E=256 N=16, {threads} thread(s): wall forward median {:.1} ms, \
             forward+loss+backward median {:.1} ms (min {min:.1}); calling thread on-CPU median \
             {:.1} ms; cache {:.1} MB",
            med(&mut fwd),
            med(&mut total),
            med(&mut cpu),
            cache.bytes() as f64 / 1e6
        );
    }
}
