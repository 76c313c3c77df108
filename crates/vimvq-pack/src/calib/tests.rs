//! Unit tests: every op's backward against central finite differences in f64, fast kernels against
//! their oracles, threading determinism, and the parameter constructors.

use std::collections::BTreeMap;

use vimvq_rt::format::Role;
use vimvq_rt::VimConfig;

use super::float::exp_f32;
use super::ops::*;
use super::{backward, forward, rel_mse, BlockDims, BlockParams, Cache, CalibError, MIXER_ROLES};
use crate::rng::SplitMix64;

/// Finite-difference budget of the per-op checks (relative, see [`rel_err`]).
const FD_TOL: f64 = 1e-6;
/// Fast kernel vs oracle in f64 (only the summation order differs).
const ORACLE_TOL: f64 = 1e-13;

/// Uniform test data from the crate's generator.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.next_f64()
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// `|a − b| / max(|a|, |b|, floor)`.
fn rel_err(a: f64, b: f64, floor: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(floor)
}

/// Checks `analytic = d loss / d x` at every coordinate of `x` (all of them: the ops are small)
/// and along 3 random directions; returns the worst relative error.
fn fd_check(x: &[f64], analytic: &[f64], seed: u64, loss: &dyn Fn(&[f64]) -> f64) -> f64 {
    assert_eq!(x.len(), analytic.len());
    let floor = 1e-6
        * analytic
            .iter()
            .fold(0.0f64, |m, g| m.max(g.abs()))
            .max(1e-30);
    let mut xp = x.to_vec();
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let h = 1e-6 * x[i].abs().max(1.0);
        xp[i] = x[i] + h;
        let lp = loss(&xp);
        xp[i] = x[i] - h;
        let lm = loss(&xp);
        xp[i] = x[i];
        worst = worst.max(rel_err((lp - lm) / (2.0 * h), analytic[i], floor));
    }
    let mut rng = Rng::new(seed);
    for _ in 0..3 {
        let v = rng.vec(x.len(), -1.0, 1.0);
        let h = 1e-6;
        let at = |s: f64| loss(&x.iter().zip(&v).map(|(a, b)| a + s * b).collect::<Vec<_>>());
        let fd = (at(h) - at(-h)) / (2.0 * h);
        let an: f64 = analytic.iter().zip(&v).map(|(a, b)| a * b).sum();
        worst = worst.max(rel_err(fd, an, 1e-30));
    }
    worst
}

/// `[1.2e-9, …]`.
fn sci(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.1e}")).collect();
    format!("[{}]", parts.join(", "))
}

fn wdot(w: &[f64], y: &[f64]) -> f64 {
    w.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn linear_fast_matches_oracle() {
    let mut rng = Rng::new(1);
    // m covers the 4-row blocks and a tail, k an 8-lane body and tails (incl. k < 8).
    for &(m, k, n) in &[(7, 13, 5), (8, 16, 3), (1, 3, 4), (13, 40, 9), (4, 8, 1)] {
        let dims = LinearDims { m, k, n };
        let x = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let b = rng.vec(n, -1.0, 1.0);
        let dy = rng.vec(m * n, -1.0, 1.0);
        for bias in [None, Some(&b[..])] {
            let mut y1 = vec![0.0; m * n];
            let mut y2 = vec![0.0; m * n];
            linear_forward(&x, &w, bias, dims, &mut y1);
            linear_forward_ref(&x, &w, bias, dims, &mut y2);
            // Same summation order as the oracle: bit-identical.
            assert_eq!(y1, y2, "forward {dims:?}");
        }
        let seed = rng.vec(m * k + n * k + n, -1.0, 1.0);
        let (mut dx1, mut dw1, mut db1) = (
            seed[..m * k].to_vec(),
            seed[m * k..m * k + n * k].to_vec(),
            seed[m * k + n * k..].to_vec(),
        );
        let (mut dx2, mut dw2, mut db2) = (dx1.clone(), dw1.clone(), db1.clone());
        linear_backward(
            &x,
            &w,
            &dy,
            dims,
            LinearGrads {
                dx: Some(&mut dx1),
                dw: Some(&mut dw1),
                db: Some(&mut db1),
            },
        );
        linear_backward_ref(
            &x,
            &w,
            &dy,
            dims,
            LinearGrads {
                dx: Some(&mut dx2),
                dw: Some(&mut dw2),
                db: Some(&mut db2),
            },
        );
        assert!(max_abs_diff(&dx1, &dx2) < ORACLE_TOL, "dx {dims:?}");
        assert!(max_abs_diff(&dw1, &dw2) < ORACLE_TOL, "dw {dims:?}");
        assert!(max_abs_diff(&db1, &db2) < ORACLE_TOL, "db {dims:?}");
    }
}

#[test]
fn linear_fd() {
    let mut rng = Rng::new(2);
    let dims = LinearDims { m: 6, k: 11, n: 5 };
    let x = rng.vec(66, -1.0, 1.0);
    let w = rng.vec(55, -1.0, 1.0);
    let b = rng.vec(5, -1.0, 1.0);
    let r = rng.vec(30, -1.0, 1.0);
    let f = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; 30];
        linear_forward(x, w, Some(b), dims, &mut y);
        wdot(&r, &y)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; 66], vec![0.0; 55], vec![0.0; 5]);
    linear_backward(
        &x,
        &w,
        &r,
        dims,
        LinearGrads {
            dx: Some(&mut dx),
            dw: Some(&mut dw),
            db: Some(&mut db),
        },
    );
    let e = [
        fd_check(&x, &dx, 1, &|v| f(v, &w, &b)),
        fd_check(&w, &dw, 2, &|v| f(&x, v, &b)),
        fd_check(&b, &db, 3, &|v| f(&x, &w, v)),
    ];
    eprintln!("linear FD rel err (x, w, b): {}", sci(&e));
    assert!(e.iter().all(|v| *v < FD_TOL), "{e:?}");
}

#[test]
fn conv_fd_both_directions() {
    let mut rng = Rng::new(3);
    for dir in [Direction::Forward, Direction::Backward] {
        // len < taps exercises padding on both ends.
        for len in [9usize, 2] {
            let dims = ConvDims {
                len,
                channels: 6,
                taps: 4,
                dir,
            };
            let x = rng.vec(len * 6, -1.0, 1.0);
            let w = rng.vec(24, -0.5, 0.5);
            let b = rng.vec(6, -0.2, 0.2);
            let r = rng.vec(len * 6, -1.0, 1.0);
            let f = |x: &[f64], w: &[f64], b: &[f64]| {
                let mut s = vec![0.0; len * 6];
                conv_forward(x, w, b, dims, &mut s);
                wdot(&r, &s)
            };
            let (mut dx, mut dw, mut db) = (vec![0.0; len * 6], vec![0.0; 24], vec![0.0; 6]);
            conv_backward(
                &x,
                &w,
                &r,
                dims,
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
            );
            let e = [
                fd_check(&x, &dx, 1, &|v| f(v, &w, &b)),
                fd_check(&w, &dw, 2, &|v| f(&x, v, &b)),
                fd_check(&b, &db, 3, &|v| f(&x, &w, v)),
            ];
            eprintln!("conv {dir:?} L={len} FD rel err (x, w, b): {}", sci(&e));
            assert!(e.iter().all(|v| *v < FD_TOL), "{dir:?} {e:?}");
        }
    }
}

#[test]
fn conv_matches_definition() {
    // Tap K−1 multiplies the current token; forward looks back, backward looks ahead.
    let x: Vec<f64> = (0..5).map(|t| (t + 1) as f64).collect(); // one channel
    let w = [1000.0, 100.0, 10.0, 1.0];
    let mut s = vec![0.0; 5];
    conv_forward(
        &x,
        &w,
        &[0.0],
        ConvDims {
            len: 5,
            channels: 1,
            taps: 4,
            dir: Direction::Forward,
        },
        &mut s,
    );
    assert_eq!(s, [1.0, 12.0, 123.0, 1234.0, 2345.0]);
    conv_forward(
        &x,
        &w,
        &[0.5],
        ConvDims {
            len: 5,
            channels: 1,
            taps: 4,
            dir: Direction::Backward,
        },
        &mut s,
    );
    assert_eq!(s, [4321.5, 5432.5, 543.5, 54.5, 5.5]);
}

#[test]
fn activations_fd() {
    let mut rng = Rng::new(4);
    let mut x = rng.vec(200, -8.0, 8.0);
    // Extremes and both sides of the softplus threshold (away from the kink itself).
    x.extend_from_slice(&[-40.0, -20.5, 19.5, 20.5, 25.0, 60.0, 0.0, 1e-4, -1.2785]);
    type Fwd = fn(&[f64], &mut [f64]);
    type Bwd = fn(&[f64], &[f64], &mut [f64]);
    for (name, f, fwd, bwd) in [
        (
            "silu",
            silu::<f64> as fn(f64) -> f64,
            silu_forward as Fwd,
            silu_backward as Bwd,
        ),
        (
            "softplus",
            softplus::<f64> as fn(f64) -> f64,
            softplus_forward as Fwd,
            softplus_backward as Bwd,
        ),
    ] {
        // Elementwise: check each coordinate against the scalar central difference, with the
        // backward's accumulate semantics (dx starts at 1, dy = 2).
        let mut y = vec![0.0; x.len()];
        fwd(&x, &mut y);
        let mut dx = vec![1.0; x.len()];
        bwd(&x, &vec![2.0; x.len()], &mut dx);
        let mut worst = 0.0f64;
        for i in 0..x.len() {
            assert_eq!(y[i], f(x[i]));
            let h = 1e-5 * x[i].abs().max(1.0);
            let fd = (f(x[i] + h) - f(x[i] - h)) / (2.0 * h);
            worst = worst.max(rel_err(fd, (dx[i] - 1.0) / 2.0, 1e-6));
        }
        eprintln!("{name} FD rel err: {worst:.1e}");
        assert!(worst < FD_TOL * 10.0, "{name}: {worst}");
    }
    // The threshold rule itself (PyTorch's F.softplus(threshold=20)).
    assert_eq!(softplus(25.0f64), 25.0);
    assert_eq!(softplus(20.0f64), 20.0f64.exp().ln_1p());
    assert_eq!(softplus_grad(20.5f64), 1.0);
    assert!((softplus(-3.0f64) - (1.0 + (-3.0f64).exp()).ln()).abs() < 1e-15);
    assert!((silu(-2.0f64) - (-2.0 / (1.0 + 2.0f64.exp()))).abs() < 1e-15);
}

#[test]
fn gate_combine_fd() {
    let mut rng = Rng::new(5);
    let n = 24;
    let (yf, yb, z) = (
        rng.vec(n, -1.0, 1.0),
        rng.vec(n, -1.0, 1.0),
        rng.vec(n, -4.0, 4.0),
    );
    let r = rng.vec(n, -1.0, 1.0);
    let f = |a: &[f64], b: &[f64], z: &[f64]| {
        let mut m = vec![0.0; n];
        gate_combine_forward(a, b, z, &mut m);
        wdot(&r, &m)
    };
    let (mut da, mut db, mut dz) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    gate_combine_backward(&yf, &yb, &z, &r, &mut da, &mut db, &mut dz);
    let e = [
        fd_check(&yf, &da, 1, &|v| f(v, &yb, &z)),
        fd_check(&yb, &db, 2, &|v| f(&yf, v, &z)),
        fd_check(&z, &dz, 3, &|v| f(&yf, &yb, v)),
    ];
    eprintln!("gate/combine FD rel err (y_f, y_b, z): {}", sci(&e));
    assert!(e.iter().all(|v| *v < FD_TOL), "{e:?}");
}

struct ScanCase {
    dims: ScanDims,
    u: Vec<f64>,
    delta: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    d: Vec<f64>,
}

impl ScanCase {
    fn new(dir: Direction, seed: u64) -> Self {
        let (len, e, n) = (7, 5, 4);
        let mut rng = Rng::new(seed);
        // Δ log-uniform in [1e-3, 0.1] (Vim's dt init), one channel with a large Δ (softplus
        // identity branch upstream), A = −exp(log(1..N) + noise).
        let mut delta: Vec<f64> = (0..len * e)
            .map(|_| rng.uniform(1e-3f64.ln(), 0.1f64.ln()).exp())
            .collect();
        for t in 0..len {
            delta[t * e + 2] = rng.uniform(20.0, 30.0) * 0.05; // Δ ≈ 1–1.5: strong decay
        }
        let a = (0..e * n)
            .map(|i| -((i % n + 1) as f64 * rng.uniform(0.9, 1.1)))
            .collect();
        ScanCase {
            dims: ScanDims {
                len,
                channels: e,
                state: n,
                dir,
            },
            u: rng.vec(len * e, -2.0, 2.0),
            delta,
            a,
            b: rng.vec(len * n, -1.0, 1.0),
            c: rng.vec(len * n, -1.0, 1.0),
            d: rng.vec(e, 0.8, 1.2),
        }
    }
    fn inputs(&self) -> ScanInputs<'_, f64> {
        ScanInputs {
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: &self.d,
        }
    }
    fn run(&self, inp: ScanInputs<'_, f64>) -> Vec<f64> {
        let ScanDims {
            len,
            channels: e,
            state: n,
            ..
        } = self.dims;
        let mut y = vec![0.0; len * e];
        let mut da = vec![0.0; len * e * n];
        scan_forward(inp, self.dims, &mut y, &mut da);
        y
    }
}

#[test]
fn scan_fast_matches_oracle() {
    for dir in [Direction::Forward, Direction::Backward] {
        let s = ScanCase::new(dir, 11);
        let y = s.run(s.inputs());
        let mut y2 = vec![0.0; y.len()];
        scan_forward_ref(s.inputs(), s.dims, &mut y2);
        assert!(max_abs_diff(&y, &y2) < ORACLE_TOL, "{dir:?}");
    }
}

#[test]
fn scan_direction_is_reversed_time() {
    // The backward scan on a sequence equals the forward scan on the time-reversed sequence.
    let s = ScanCase::new(Direction::Backward, 12);
    let ScanDims {
        len,
        channels: e,
        state: n,
        ..
    } = s.dims;
    let rev = |v: &[f64], w: usize| -> Vec<f64> {
        (0..len)
            .rev()
            .flat_map(|t| v[t * w..(t + 1) * w].to_vec())
            .collect()
    };
    let (u, dl, b, c) = (rev(&s.u, e), rev(&s.delta, e), rev(&s.b, n), rev(&s.c, n));
    let inp = ScanInputs {
        u: &u,
        delta: &dl,
        a: &s.a,
        b: &b,
        c: &c,
        d: &s.d,
    };
    let mut yf = vec![0.0; len * e];
    scan_forward_ref(
        inp,
        ScanDims {
            dir: Direction::Forward,
            ..s.dims
        },
        &mut yf,
    );
    let yb = s.run(s.inputs());
    assert!(max_abs_diff(&rev(&yf, e), &yb) < ORACLE_TOL);
}

#[test]
fn scan_fd_both_directions() {
    for (dir, seed) in [(Direction::Forward, 21), (Direction::Backward, 22)] {
        let s = ScanCase::new(dir, seed);
        let ScanDims {
            len,
            channels: e,
            state: n,
            ..
        } = s.dims;
        let r = Rng::new(seed + 100).vec(len * e, -1.0, 1.0);
        let mut da = vec![0.0; len * e * n];
        let mut y = vec![0.0; len * e];
        scan_forward(s.inputs(), s.dims, &mut y, &mut da);
        let (mut du, mut dd, mut db, mut dc) = (
            vec![0.0; len * e],
            vec![0.0; len * e],
            vec![0.0; len * n],
            vec![0.0; len * n],
        );
        let mut h = vec![0.0; len * e * n];
        scan_backward(
            s.inputs(),
            s.dims,
            &da,
            &r,
            &mut h,
            ScanGrads {
                du: &mut du,
                ddelta: &mut dd,
                db: &mut db,
                dc: &mut dc,
            },
        );
        let e_u = fd_check(&s.u, &du, 1, &|v| {
            wdot(&r, &s.run(ScanInputs { u: v, ..s.inputs() }))
        });
        let e_d = fd_check(&s.delta, &dd, 2, &|v| {
            wdot(
                &r,
                &s.run(ScanInputs {
                    delta: v,
                    ..s.inputs()
                }),
            )
        });
        let e_b = fd_check(&s.b, &db, 3, &|v| {
            wdot(&r, &s.run(ScanInputs { b: v, ..s.inputs() }))
        });
        let e_c = fd_check(&s.c, &dc, 4, &|v| {
            wdot(&r, &s.run(ScanInputs { c: v, ..s.inputs() }))
        });
        let e = [e_u, e_d, e_b, e_c];
        eprintln!("scan {dir:?} FD rel err (u, Δ, B, C): {}", sci(&e));
        assert!(e.iter().all(|v| *v < FD_TOL), "{dir:?} {e:?}");
    }
}

fn test_cfg(dims: BlockDims) -> VimConfig {
    VimConfig {
        embed_dim: dims.d_model,
        depth: 1,
        patch: 4,
        stride: 4,
        img_size: 8,
        channels: 3,
        num_classes: 10,
        d_state: dims.d_state,
        dt_rank: dims.dt_rank,
        d_conv: dims.d_conv,
        d_inner: dims.d_inner,
        norm_eps: 1e-5,
    }
}

const SMALL: BlockDims = BlockDims {
    d_model: 8,
    d_inner: 16,
    dt_rank: 2,
    d_state: 4,
    d_conv: 4,
};

#[test]
fn numel_agrees_with_role_shape() {
    let cfg = test_cfg(BlockDims {
        d_model: 12,
        d_inner: 20,
        dt_rank: 3,
        d_state: 5,
        d_conv: 3,
    });
    let dims = BlockDims::from_config(&cfg);
    for role in MIXER_ROLES {
        let (r, c) = role.shape(&cfg);
        assert_eq!(dims.numel(role), Some(r * c), "{role:?}");
    }
    assert_eq!(dims.numel(Role::Norm), None);
    assert_eq!(dims.numel(Role::HeadWeight), None);
}

#[test]
fn from_torch_round_trip_and_errors() {
    let cfg = test_cfg(SMALL);
    let p = BlockParams::<f32>::random_vim_like(SMALL, 3);
    let mut map: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for role in MIXER_ROLES {
        map.insert(
            format!("layers.2.{}", role.torch_name()),
            p.tensor(role).unwrap().to_vec(),
        );
    }
    let q = BlockParams::<f32>::from_torch(&cfg, 2, |n| map.get(n).map(|v| v.as_slice())).unwrap();
    assert_eq!(p, q);
    let q64 = BlockParams::<f64>::from_roles(&cfg, |r| p.tensor(r)).unwrap();
    assert_eq!(q64.cast::<f32>(), p);
    assert!(matches!(
        BlockParams::<f32>::from_torch(&cfg, 1, |n| map.get(n).map(|v| v.as_slice())),
        Err(CalibError::Missing(_))
    ));
    map.get_mut("layers.2.mixer.x_proj_b.weight").unwrap().pop();
    let err =
        BlockParams::<f32>::from_torch(&cfg, 2, |n| map.get(n).map(|v| v.as_slice())).unwrap_err();
    assert_eq!(
        err,
        CalibError::Shape {
            name: "mixer.x_proj_b.weight",
            expected: 10 * 16,
            got: 159
        }
    );
}

#[test]
fn threads_do_not_change_results() {
    let p = BlockParams::<f32>::random_vim_like(SMALL, 4);
    let t = BlockParams::<f32>::random_vim_like(SMALL, 5);
    let (len, batch) = (9, 5);
    let hn: Vec<f32> = Rng::new(6)
        .vec(batch * len * 8, -2.0, 2.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let mut cache = Cache::new();
    let y_ref = forward(&t, &hn, len, &mut cache);
    let mut results = Vec::new();
    for threads in [1, 2, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        results.push(pool.install(|| {
            let y = forward(&p, &hn, len, &mut cache);
            let mut dy = vec![0.0; y.len()];
            rel_mse(&y, &y_ref, Some(&mut dy));
            let g = backward(&p, &mut cache, &dy);
            (y, g)
        }));
    }
    for r in &results[1..] {
        assert!(r.0 == results[0].0, "forward differs across thread counts");
        assert!(r.1 == results[0].1, "gradients differ across thread counts");
    }
}

#[test]
fn cache_reuse_across_batch_sizes() {
    let p = BlockParams::<f64>::random_vim_like(SMALL, 7);
    let hn = Rng::new(8).vec(4 * 6 * 8, -2.0, 2.0);
    let dy = Rng::new(9).vec(4 * 6 * 8, -1.0, 1.0);
    let mut shared = Cache::new();
    // Fill the shared cache with a bigger batch and longer sequence first.
    let _ = forward(
        &p,
        &Rng::new(10).vec(5 * 11 * 8, -2.0, 2.0),
        11,
        &mut shared,
    );
    let _ = backward(&p, &mut shared, &Rng::new(11).vec(5 * 11 * 8, -1.0, 1.0));
    let y1 = forward(&p, &hn, 6, &mut shared);
    let g1 = backward(&p, &mut shared, &dy);
    let mut fresh = Cache::new();
    let y2 = forward(&p, &hn, 6, &mut fresh);
    let g2 = backward(&p, &mut fresh, &dy);
    assert_eq!(y1, y2);
    assert_eq!(g1, g2);
    assert_eq!(shared.batch(), 4);
    assert_eq!(shared.seq_len(), 6);
}

#[test]
fn rel_mse_value_and_grad() {
    let y = [1.0f64, 2.0, 3.0];
    let r = [1.0f64, 1.0, 1.0];
    let mut dy = [0.0; 3];
    let l = rel_mse(&y, &r, Some(&mut dy));
    assert!((l - 5.0 / 3.0).abs() < 1e-15);
    assert_eq!(dy, [0.0, 2.0 / 3.0, 4.0 / 3.0]);
}

#[test]
fn exp_f32_matches_f64_exp() {
    // Dense sweep of the whole normal-result range (≈ 7.6 M points) plus the special cases.
    let (lo, hi) = (-87.33f32, 88.72f32);
    let steps = 1 << 23;
    let mut worst = 0.0f64;
    for i in 0..=steps {
        let x = lo + (hi - lo) * (i as f32 / steps as f32);
        let exact = (x as f64).exp();
        let e = ((exp_f32(x) as f64 - exact) / exact).abs();
        worst = worst.max(e);
    }
    eprintln!("exp_f32 max rel err over [{lo}, {hi}]: {worst:.2e}");
    assert!(worst < 1e-7, "{worst}");
    assert_eq!(exp_f32(0.0), 1.0);
    assert_eq!(exp_f32(88.8), f32::INFINITY);
    assert_eq!(exp_f32(1000.0), f32::INFINITY);
    assert_eq!(exp_f32(-87.34), 0.0);
    assert_eq!(exp_f32(-1e30), 0.0);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert!(exp_f32(f32::NAN).is_nan());
}
