//! Conformance suite of the kernels against naive float64 implementations, on random shapes with
//! odd tails. `kernel_suite!` instantiates the whole suite for one kernel module; SIMD modules
//! (same function names) get one line each when they land.
//!
//! Error budgets (named): `GEMM_REL` for dot products relative to `Σ|a·w|`, `ELEM_REL` for
//! elementwise transcendental kernels, `SCAN_REL` for the selective scan.

mod common;

use common::Rng;
use vimvq_rt::kernels::{
    f16_to_f32, Codebook, Direction, IndexLayout, Indices, MatMut, MatRef, VqMatrix, Weight,
};

/// |Δ| ≤ GEMM_REL · Σ|a_c·w_c| for every dot product (f32 accumulation of ≤ 1000 terms).
const GEMM_REL: f64 = 1e-6 * 8.0;
/// Relative error of f32 elementwise kernels (libm is < 1 ulp; a few roundings on top).
const ELEM_REL: f64 = 4e-7;
/// Selective scan, relative to the output scale.
const SCAN_REL: f64 = 2e-5;

/// Odd-tail sizes: below, at and around multiples of 8 (lanes) and 4 (panel rows).
const SIZES: [usize; 12] = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33];

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

/// The documented dot-product order, written out independently of the kernel.
fn contract_dot(a: &[f32], w: &[f32]) -> f32 {
    let n = a.len();
    let n8 = n / 8 * 8;
    let mut s = [0f32; 8];
    for c in 0..n8 {
        s[c % 8] += a[c] * w[c];
    }
    let mut r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    for c in n8..n {
        r += a[c] * w[c];
    }
    r
}

macro_rules! kernel_suite {
    ($name:ident, $k:path) => {
        mod $name {
            use super::*;
            use $k as k;

            /// Builds strided operands with sentinel padding, runs `f`, checks each output
            /// against f64 within budget, checks the padding is untouched.
            fn check_gemm(
                m: usize,
                kk: usize,
                n: usize,
                rng: &mut Rng,
                vq: Option<(usize, usize, bool, bool)>,
            ) {
                let (lda, ldo) = (kk + 3, n + 2);
                let a = rng.normals(m.saturating_sub(1) * lda + kk, 0.0, 1.0);
                let (w_dense, codebook_f32, codebook_f16, idx_u8, idx_u16, params);
                match vq {
                    None => {
                        w_dense = rng.normals(n * kk, 0.0, 1.0);
                        codebook_f32 = vec![];
                        codebook_f16 = vec![];
                        idx_u8 = vec![];
                        idx_u16 = vec![];
                        params = (0, 1);
                    }
                    Some((kc, d, f16, wide)) => {
                        let g = kk.div_ceil(d);
                        // f16 codewords: random halves in a sane range (exact in f32).
                        codebook_f16 = (0..kc * d)
                            .map(|_| {
                                0x3000u16 + (rng.below(0x1000) as u16)
                                    | ((rng.below(2) as u16) << 15)
                            })
                            .collect();
                        codebook_f32 = if f16 {
                            codebook_f16.iter().map(|h| f16_to_f32(*h)).collect()
                        } else {
                            rng.normals(kc * d, 0.0, 1.0)
                        };
                        let idx: Vec<usize> = (0..n * g).map(|_| rng.below(kc)).collect();
                        idx_u8 = if wide {
                            vec![]
                        } else {
                            idx.iter().map(|i| *i as u8).collect()
                        };
                        idx_u16 = idx.iter().map(|i| *i as u16).collect();
                        // Independent decode.
                        let mut w = vec![0f32; n * kk];
                        for r in 0..n {
                            for c in 0..kk {
                                w[r * kk + c] = codebook_f32[idx[r * g + c / d] * d + c % d];
                            }
                        }
                        w_dense = w;
                        params = (kc, d);
                    }
                }
                let weight = match vq {
                    None => Weight::Dense(&w_dense),
                    Some((_, _, f16, wide)) => Weight::Vq(VqMatrix {
                        rows: n,
                        cols: kk,
                        k: params.0,
                        d: params.1,
                        codebook: if f16 {
                            Codebook::F16(&codebook_f16)
                        } else {
                            Codebook::F32(&codebook_f32)
                        },
                        indices: if wide {
                            Indices::U16(&idx_u16)
                        } else {
                            Indices::U8(&idx_u8)
                        },
                        layout: IndexLayout::RowMajor,
                    }),
                };
                let sentinel = -12345.5f32;
                let mut out = vec![sentinel; m.saturating_sub(1) * ldo + n];
                let mut panel = vec![f32::NAN; k::vq_panel_len(kk)];
                k::linear_f32(
                    MatRef::new(&a, m, kk, lda),
                    &weight,
                    &mut MatMut::new(&mut out, m, n, ldo),
                    &mut panel,
                );
                for t in 0..m {
                    for r in 0..n {
                        let (ar, wr) = (&a[t * lda..t * lda + kk], &w_dense[r * kk..(r + 1) * kk]);
                        let exact: f64 =
                            ar.iter().zip(wr).map(|(x, y)| *x as f64 * *y as f64).sum();
                        let mag: f64 = ar
                            .iter()
                            .zip(wr)
                            .map(|(x, y)| (*x as f64 * *y as f64).abs())
                            .sum();
                        let got = out[t * ldo + r];
                        assert!(
                            (got as f64 - exact).abs() <= GEMM_REL * mag + 1e-30,
                            "m={m} k={kk} n={n} vq={vq:?} ({t},{r}): {got} vs {exact}"
                        );
                        // The numerical contract: exactly the documented summation order.
                        assert_eq!(
                            got.to_bits(),
                            contract_dot(ar, wr).to_bits(),
                            "order m={m} k={kk} n={n}"
                        );
                    }
                    for pad in n..ldo.min(out.len() - t * ldo) {
                        assert_eq!(out[t * ldo + pad], sentinel, "padding overwritten");
                    }
                }
            }

            #[test]
            fn gemm_dense_odd_shapes() {
                let mut rng = Rng::new(1);
                for &m in &[1usize, 2, 5, 17] {
                    for &kk in &SIZES {
                        for &n in &[1usize, 3, 4, 5, 9] {
                            check_gemm(m, kk, n, &mut rng, None);
                        }
                    }
                }
                check_gemm(7, 192 + 5, 13, &mut rng, None);
            }

            #[test]
            fn gemm_vq_all_index_and_codebook_types() {
                let mut rng = Rng::new(2);
                for &(kc, wide) in &[
                    (1usize, false),
                    (3, false),
                    (256, false),
                    (2, true),
                    (300, true),
                    (65536, true),
                ] {
                    for &d in &[1usize, 2, 3, 4, 8, 16] {
                        for f16 in [false, true] {
                            for &kk in &[1usize, 5, 12, 17, 33] {
                                check_gemm(3, kk, 5, &mut rng, Some((kc, d, f16, wide)));
                            }
                        }
                    }
                }
            }

            #[test]
            fn vq_gemm_is_bit_identical_to_gemm_on_decoded_rows() {
                let mut rng = Rng::new(3);
                let (n, kk, d, kc) = (37usize, 29usize, 3usize, 40usize);
                let g = kk.div_ceil(d);
                let cb = rng.normals(kc * d, 0.0, 1.0);
                let idx: Vec<u8> = (0..n * g).map(|_| rng.below(kc) as u8).collect();
                let vq = VqMatrix {
                    rows: n,
                    cols: kk,
                    k: kc,
                    d,
                    codebook: Codebook::F32(&cb),
                    indices: Indices::U8(&idx),
                    layout: IndexLayout::RowMajor,
                };
                let mut dense = vec![0f32; n * kk];
                k::vq_decode_rows_f32(&vq, 0, n, &mut dense);
                // The same indices in 16-row blocks (padding rows hold index 0) decode alike,
                // and so do the rows a thread selects from them.
                let mut idx16 = vec![0u8; n.div_ceil(16) * 16 * g];
                for r in 0..n {
                    for c in 0..g {
                        idx16[(r / 16) * 16 * g + c * 16 + r % 16] = idx[r * g + c];
                    }
                }
                let vq16 = VqMatrix {
                    indices: Indices::U8(&idx16),
                    layout: IndexLayout::Rows16,
                    ..vq
                };
                let mut dense16 = vec![0f32; n * kk];
                k::vq_decode_rows_f32(&vq16, 0, n, &mut dense16);
                assert_eq!(dense16, dense);
                let Weight::Vq(tail) = Weight::Vq(vq16).rows(16..n, kk) else {
                    unreachable!()
                };
                k::vq_decode_rows_f32(&tail, 0, n - 16, &mut dense16[..(n - 16) * kk]);
                assert_eq!(&dense16[..(n - 16) * kk], &dense[16 * kk..]);
                let a = rng.normals(6 * kk, 0.0, 1.0);
                let mut o1 = vec![0f32; 6 * n];
                let mut o2 = vec![0f32; 6 * n];
                let mut panel = vec![0f32; k::vq_panel_len(kk)];
                k::vq_gemm_f32(
                    MatRef::new(&a, 6, kk, kk),
                    &vq,
                    &mut MatMut::new(&mut o1, 6, n, n),
                    &mut panel,
                );
                k::gemm_f32(
                    MatRef::new(&a, 6, kk, kk),
                    &dense,
                    &mut MatMut::new(&mut o2, 6, n, n),
                );
                assert_eq!(
                    o1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    o2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
                // Decoding a sub-range of rows gives the same rows.
                let mut part = vec![0f32; 3 * kk];
                k::vq_decode_rows_f32(&vq, 5, 3, &mut part);
                assert_eq!(&part[..], &dense[5 * kk..8 * kk]);
            }

            #[test]
            fn gemv_equals_one_row_gemm() {
                let mut rng = Rng::new(7);
                for &kk in &SIZES {
                    for &n in &[1usize, 4, 7, 1000] {
                        let x = rng.normals(kk, 0.0, 1.0);
                        let w = rng.normals(n * kk, 0.0, 1.0);
                        let mut y = vec![0f32; n];
                        let mut panel = vec![0f32; k::vq_panel_len(kk)];
                        k::gemv_f32(&x, &Weight::Dense(&w), &mut y, &mut panel);
                        for r in 0..n {
                            assert_eq!(
                                y[r].to_bits(),
                                contract_dot(&x, &w[r * kk..(r + 1) * kk]).to_bits()
                            );
                        }
                        let idx: Vec<u8> = (0..n * kk).map(|_| rng.below(3) as u8).collect();
                        let cb = rng.normals(3, 0.0, 1.0);
                        let vq = VqMatrix {
                            rows: n,
                            cols: kk,
                            k: 3,
                            d: 1,
                            codebook: Codebook::F32(&cb),
                            indices: Indices::U8(&idx),
                            layout: IndexLayout::RowMajor,
                        };
                        k::gemv_f32(&x, &Weight::Vq(vq), &mut y, &mut panel);
                        for r in 0..n {
                            let wr: Vec<f32> = idx[r * kk..(r + 1) * kk]
                                .iter()
                                .map(|i| cb[*i as usize])
                                .collect();
                            assert_eq!(y[r].to_bits(), contract_dot(&x, &wr).to_bits());
                        }
                    }
                }
            }

            #[test]
            fn rmsnorm_and_fused_add() {
                let mut rng = Rng::new(4);
                for &n in &SIZES {
                    let x = rng.normals(n, 0.3, 2.0);
                    let w = rng.normals(n, 1.0, 0.2);
                    let h = rng.normals(n, 0.0, 1.0);
                    let eps = 1e-5f32;
                    let xr: Vec<f64> = x
                        .iter()
                        .zip(&h)
                        .map(|(a, b)| *a as f64 + *b as f64)
                        .collect();
                    let rstd = 1.0
                        / (xr.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps as f64).sqrt();
                    let mut res = x.clone();
                    let mut hid = h.clone();
                    k::add_rmsnorm_f32(&mut res, &mut hid, &w, eps);
                    for i in 0..n {
                        assert!((res[i] as f64 - xr[i]).abs() <= 1e-6 * xr[i].abs());
                        let want = xr[i] * rstd * w[i] as f64;
                        assert!(
                            (hid[i] as f64 - want).abs() <= 1e-5 * want.abs() + 1e-7,
                            "n={n} i={i}"
                        );
                    }
                    let mut out = vec![0f32; n];
                    k::rmsnorm_f32(&x, &w, eps, &mut out);
                    let rstd = 1.0
                        / (f64s(&x).iter().map(|v| v * v).sum::<f64>() / n as f64 + eps as f64)
                            .sqrt();
                    for i in 0..n {
                        let want = x[i] as f64 * rstd * w[i] as f64;
                        assert!((out[i] as f64 - want).abs() <= 1e-5 * want.abs() + 1e-7);
                    }
                }
            }

            #[test]
            fn silu_softplus_exp_pointwise() {
                let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.01).collect();
                xs.extend([
                    -100.0, -88.0, -30.0, 19.999, 20.0, 20.0001, 25.0, 88.0, 1e-30, -1e-30, 0.0,
                ]);
                for &x in &xs {
                    let xd = x as f64;
                    let silu = xd / (1.0 + (-xd).exp());
                    let got = k::silu_f32(x) as f64;
                    assert!(
                        (got - silu).abs() <= ELEM_REL * silu.abs() + 1e-37,
                        "silu({x}) = {got} vs {silu}"
                    );
                    let sp = if xd > 20.0 { xd } else { xd.exp().ln_1p() };
                    let got = k::softplus_f32(x) as f64;
                    assert!(
                        (got - sp).abs() <= ELEM_REL * sp.abs() + 1e-37,
                        "softplus({x}) = {got} vs {sp}"
                    );
                }
                // Threshold rule: identity above 20 (without it, exp overflows to inf here).
                assert_eq!(k::softplus_f32(100.0), 100.0);
                assert_eq!(k::softplus_f32(1e30), 1e30);
                let a_log: Vec<f32> = (0..37).map(|i| (i as f32 - 10.0) * 0.3).collect();
                let mut a = vec![0f32; 37];
                k::neg_exp_f32(&a_log, &mut a);
                for (g, l) in a.iter().zip(&a_log) {
                    let want = -(*l as f64).exp();
                    assert!((*g as f64 - want).abs() <= ELEM_REL * want.abs());
                }
                let mut v = xs.clone();
                k::silu_inplace_f32(&mut v);
                for (o, x) in v.iter().zip(&xs) {
                    assert_eq!(o.to_bits(), k::silu_f32(*x).to_bits());
                }
                // The combine step: acc·silu(z)·½ (one rounding more than silu).
                let acc: Vec<f32> = (0..xs.len()).map(|i| (i % 7) as f32 - 3.3).collect();
                let mut v = acc.clone();
                k::combine_gate_f32(&mut v, &xs);
                for ((o, a), z) in v.iter().zip(&acc).zip(&xs) {
                    let zd = *z as f64;
                    let want = *a as f64 * zd / (1.0 + (-zd).exp()) * 0.5;
                    assert!(
                        (*o as f64 - want).abs() <= 2.0 * ELEM_REL * want.abs() + 1e-37,
                        "combine_gate({a}, {z}) = {o} vs {want}"
                    );
                }
            }

            #[test]
            fn conv1d_causal_and_anticausal() {
                let mut rng = Rng::new(5);
                for &kk in &[1usize, 2, 3, 4, 5] {
                    for &l in &[1usize, 2, 3, 6, 11] {
                        for &e in &[1usize, 3, 8, 13] {
                            let ldx = 2 * e + 1;
                            let x = rng.normals((l - 1) * ldx + e, 0.0, 1.0);
                            let w = rng.normals(e * kk, 0.0, 0.5);
                            let b = rng.normals(e, 0.0, 0.1);
                            for dir in [Direction::Forward, Direction::Backward] {
                                for steps in [0..l, l / 2..l, 0..l.div_ceil(2)] {
                                    let sentinel = 777.0f32;
                                    let mut out = vec![sentinel; l * e];
                                    k::conv1d_silu_f32(
                                        dir,
                                        MatRef::new(&x, l, e, ldx),
                                        &w,
                                        &b,
                                        steps.clone(),
                                        &mut MatMut::new(&mut out, l, e, e),
                                    );
                                    for t in 0..l {
                                        for ch in 0..e {
                                            let got = out[t * e + ch];
                                            if !steps.contains(&t) {
                                                assert_eq!(got, sentinel);
                                                continue;
                                            }
                                            let mut s = b[ch] as f64;
                                            for j in 0..kk {
                                                let src = match dir {
                                                    Direction::Forward => {
                                                        t as isize - (kk - 1 - j) as isize
                                                    }
                                                    Direction::Backward => {
                                                        (t + kk - 1 - j) as isize
                                                    }
                                                };
                                                if src >= 0 && (src as usize) < l {
                                                    s += w[ch * kk + j] as f64
                                                        * x[src as usize * ldx + ch] as f64;
                                                }
                                            }
                                            let want = s / (1.0 + (-s).exp());
                                            assert!(
                                                (got as f64 - want).abs()
                                                    <= 1e-6 * (1.0 + want.abs()),
                                                "K={kk} L={l} E={e} {dir:?} t={t}"
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
}

kernel_suite!(scalar, vimvq_rt::kernels::scalar);

/// Every binary16 value widens exactly (compared with an f64 evaluation of the IEEE formula).
#[test]
fn f16_to_f32_exhaustive() {
    for h in 0..=u16::MAX {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let e = ((h >> 10) & 0x1f) as i32;
        let m = (h & 0x3ff) as f64;
        let got = f16_to_f32(h);
        if e == 0x1f {
            if m == 0.0 {
                assert_eq!(got as f64, sign * f64::INFINITY);
            } else {
                assert!(got.is_nan());
            }
            continue;
        }
        let want = if e == 0 {
            sign * m * 2f64.powi(-24)
        } else {
            sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15)
        };
        assert_eq!(got as f64, want, "h={h:#06x}");
        assert_eq!(got.is_sign_negative(), sign < 0.0, "h={h:#06x}");
    }
}

/// The selective scan against a naive f64 recurrence, both directions, with partial emits.
#[test]
fn selective_scan_matches_f64_recurrence() {
    use vimvq_rt::kernels::scalar::selective_scan_f32;
    use vimvq_rt::scan::{ScanInputs, ScanPlan, ScanWeights};
    let mut rng = Rng::new(6);
    for &(l, e, n, r) in &[
        (1usize, 1usize, 1usize, 1usize),
        (7, 5, 3, 2),
        (13, 9, 16, 3),
        (20, 16, 4, 1),
    ] {
        let xr = r + 2 * n;
        let u = rng.normals(l * e, 0.0, 1.0);
        // Raw Δ spanning both sides of the softplus threshold.
        let delta: Vec<f32> = (0..l * e)
            .map(|i| {
                if i % 17 == 3 {
                    21.0 + rng.uniform() as f32
                } else {
                    rng.normal(-2.0, 1.5) as f32
                }
            })
            .collect();
        let x_dbl = rng.normals(l * xr, 0.0, 1.0);
        let a: Vec<f32> = (0..e * n)
            .map(|i| -(((i % n) + 1) as f32) * (0.5 + rng.uniform() as f32))
            .collect();
        let d_skip = rng.normals(e, 1.0, 0.1);
        let dt_bias = rng.normals(e, -3.0, 1.0);
        let w = ScanWeights {
            a: &a,
            d_skip: &d_skip,
            dt_bias: &dt_bias,
            dt_rank: r,
            d_state: n,
        };
        let inputs = ScanInputs {
            u: MatRef::new(&u, l, e, e),
            delta: MatRef::new(&delta, l, e, e),
            x_dbl: MatRef::new(&x_dbl, l, xr, xr),
        };
        for dir in [Direction::Forward, Direction::Backward] {
            // f64 reference, all positions.
            let mut want = vec![0f64; l * e];
            let mut h = vec![0f64; e * n];
            let order: Vec<usize> = if dir == Direction::Forward {
                (0..l).collect()
            } else {
                (0..l).rev().collect()
            };
            for &t in &order {
                for ch in 0..e {
                    let raw = delta[t * e + ch] as f64 + dt_bias[ch] as f64;
                    let dt = if raw > 20.0 { raw } else { raw.exp().ln_1p() };
                    let uu = u[t * e + ch] as f64;
                    let mut y = 0.0;
                    for s in 0..n {
                        let hs = &mut h[ch * n + s];
                        *hs = (dt * a[ch * n + s] as f64).exp() * *hs
                            + dt * uu * x_dbl[t * xr + r + s] as f64;
                        y += *hs * x_dbl[t * xr + r + n + s] as f64;
                    }
                    want[t * e + ch] = y + d_skip[ch] as f64 * uu;
                }
            }
            let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
            let mut acc = vec![0.5f32; l * e];
            let mut hs = vec![f32::NAN; e * n];
            let plan = ScanPlan {
                dir,
                steps: 0..l,
                emit: 0..l,
                accumulate: true,
            };
            selective_scan_f32(
                &w,
                &inputs,
                &plan,
                &mut MatMut::new(&mut acc, l, e, e),
                &mut hs,
            );
            for i in 0..l * e {
                let err = (acc[i] as f64 - 0.5 - want[i]).abs();
                assert!(
                    err <= SCAN_REL * scale,
                    "{dir:?} L={l} E={e} N={n} i={i}: {} vs {}",
                    acc[i] - 0.5,
                    want[i]
                );
            }
            // Partial plan (cls-only style): same bits at the emitted position, others untouched.
            let pos = l / 2;
            let steps = if dir == Direction::Forward {
                0..pos + 1
            } else {
                pos..l
            };
            let mut full = vec![0f32; l * e];
            let mut part = vec![9.0f32; l * e];
            let p_full = ScanPlan {
                dir,
                steps: 0..l,
                emit: 0..l,
                accumulate: false,
            };
            let p_part = ScanPlan {
                dir,
                steps,
                emit: pos..pos + 1,
                accumulate: false,
            };
            selective_scan_f32(
                &w,
                &inputs,
                &p_full,
                &mut MatMut::new(&mut full, l, e, e),
                &mut hs,
            );
            selective_scan_f32(
                &w,
                &inputs,
                &p_part,
                &mut MatMut::new(&mut part, l, e, e),
                &mut hs,
            );
            for t in 0..l {
                for ch in 0..e {
                    if t == pos {
                        assert_eq!(part[t * e + ch].to_bits(), full[t * e + ch].to_bits());
                    } else {
                        assert_eq!(part[t * e + ch], 9.0);
                    }
                }
            }
        }
    }
}
