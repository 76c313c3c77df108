//! End-to-end backward of global fine-tuning (`vimvq_pack::calib::model`) against finite
//! differences in f64: a 2-block random model whose six linear layers per block are VQ layers
//! (codebook + fixed indices, sub-vectors of 3 so every row is padded), loss = the KL of its logits
//! against fixed teacher logits. Checked: `dL/d codebook` (through the block backward, the
//! residual stream, the norms and the head, then the scatter over the indices), `dL/d norm`
//! weights (blocks and final), `dL/d Δ bias`, and `dL/d r_0` (the residual stream entering the
//! first block, i.e. the chain through every block's input gradient).

use vimvq_pack::calib::model::{
    codebook_grad, kl_loss, model_backward, model_forward, ModelGrads, ModelParams,
};
use vimvq_pack::calib::{BlockDims, BlockParams, Cache};
use vimvq_pack::quantize::QUANT_ROLES;
use vimvq_pack::rng::SplitMix64;
use vimvq_rt::format::Role;

/// Finite differences vs the analytic gradient (relative, floor 1 % of the tensor's largest).
/// The worst case is the deepest `dt_proj` codebook (|g| ~ 4e-9, relative error ~1e-4 from the
/// loss's rounding noise); a wrong term in the chain gives errors of order 1.
const FD_TOL: f64 = 1e-3;

const BIAS: [Role; 2] = [Role::DtProjB, Role::DtProjBBack];

/// One VQ layer of the test model.
#[derive(Clone)]
struct Vq {
    block: usize,
    role: Role,
    rows: usize,
    cols: usize,
    codebook: Vec<f64>,
    indices: Vec<u32>,
}

const K: usize = 5;
const D: usize = 3;

impl Vq {
    /// The dense weight, written independently of the library's dequantization.
    fn weight(&self) -> Vec<f64> {
        let per_row = self.cols.div_ceil(D);
        let mut w = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                let a = self.indices[r * per_row + c / D] as usize;
                w[r * self.cols + c] = self.codebook[a * D + c % D];
            }
        }
        w
    }
}

struct Problem {
    params: ModelParams<f64>,
    vq: Vec<Vq>,
    r0: Vec<f64>,
    teacher: Vec<f64>,
}

fn shape(dims: BlockDims, role: Role) -> (usize, usize) {
    match role {
        Role::InProj => (2 * dims.d_inner, dims.d_model),
        Role::XProj | Role::XProjBack => (dims.x_proj_rows(), dims.d_inner),
        Role::DtProjW | Role::DtProjWBack => (dims.d_inner, dims.dt_rank),
        _ => (dims.d_model, dims.d_inner),
    }
}

fn problem() -> Problem {
    let dims = BlockDims {
        d_model: 8,
        d_inner: 16,
        dt_rank: 2,
        d_state: 4,
        d_conv: 3,
    };
    let (depth, len, batch, classes) = (2, 5, 3, 4);
    let mut rng = SplitMix64::new(11);
    let mut blocks = Vec::new();
    let mut vq = Vec::new();
    for b in 0..depth {
        let mut p = BlockParams::<f64>::random_vim_like(dims, 100 + b as u64);
        // Δ biases around 0 (Δ ≈ 0.7) instead of a trained model's Δ ≈ 1e-3 … 0.1: softplus
        // then is not ≈ exp, and the Δ-path gradients are large enough for finite differences.
        for role in BIAS {
            for v in p.tensor_mut(role).unwrap() {
                *v = 0.5 * rng.normal();
            }
        }
        for role in QUANT_ROLES {
            // Codewords: K random (padded) sub-vectors of the random weight; random indices.
            let (rows, cols) = shape(dims, role);
            let w = p.tensor(role).unwrap();
            let per_row = cols.div_ceil(D);
            let mut codebook = Vec::new();
            for _ in 0..K {
                let (r, j) = (rng.below(rows), rng.below(per_row));
                for t in 0..D {
                    let c = j * D + t;
                    codebook.push(if c < cols { w[r * cols + c] } else { 0.3 });
                }
            }
            let indices = (0..rows * per_row).map(|_| rng.below(K) as u32).collect();
            vq.push(Vq {
                block: b,
                role,
                rows,
                cols,
                codebook,
                indices,
            });
        }
        blocks.push(p);
    }
    let mut normal = |n: usize, mean: f64, std: f64| -> Vec<f64> {
        (0..n).map(|_| mean + std * rng.normal()).collect()
    };
    let d = dims.d_model;
    let params = ModelParams {
        blocks,
        norms: (0..depth).map(|_| normal(d, 1.0, 0.2)).collect(),
        norm_f: normal(d, 1.0, 0.2),
        head_w: normal(classes * d, 0.0, 0.5),
        head_b: normal(classes, 0.0, 0.1),
        eps: 1e-5,
        seq_len: len,
        cls_pos: len / 2,
    };
    let r0 = normal(batch * len * d, 0.0, 1.0);
    let teacher = normal(batch * classes, 0.0, 2.0);
    let mut pb = Problem {
        params,
        vq,
        r0,
        teacher,
    };
    pb.sync();
    pb
}

impl Problem {
    /// Writes every VQ layer's dense weight into the model.
    fn sync(&mut self) {
        for l in &self.vq {
            let w = l.weight();
            self.params.blocks[l.block]
                .tensor_mut(l.role)
                .unwrap()
                .copy_from_slice(&w);
        }
    }

    fn loss(&self) -> f64 {
        let (logits, _) = model_forward(&self.params, &self.r0, &mut Cache::new());
        kl_loss(&self.teacher, &logits, self.params.head_b.len(), None)
    }

    /// Loss and gradients on a rayon pool of `threads` workers.
    fn grads(&self, threads: usize) -> (f64, ModelGrads<f64>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| self.grads_on_pool())
    }

    fn grads_on_pool(&self) -> (f64, ModelGrads<f64>) {
        let mut cache = Cache::new();
        let (logits, ck) = model_forward(&self.params, &self.r0, &mut cache);
        let mut dl = vec![0.0; logits.len()];
        let loss = kl_loss(
            &self.teacher,
            &logits,
            self.params.head_b.len(),
            Some(&mut dl),
        );
        (loss, model_backward(&self.params, &ck, &dl, &mut cache))
    }
}

/// Fourth-order central difference of `f` at 0.
fn central_diff(h: f64, f: impl Fn(f64) -> f64) -> f64 {
    (-f(2.0 * h) + 8.0 * f(h) - 8.0 * f(-h) + f(-2.0 * h)) / (12.0 * h)
}

/// Checks `analytic` at `coords` against finite differences of `perturb(problem, i, s)`.
fn check(
    what: &str,
    h: f64,
    pb: &Problem,
    analytic: &[f64],
    coords: &[usize],
    perturb: impl Fn(&mut Problem, usize, f64),
) -> f64 {
    let gmax = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(gmax > 0.0, "{what}: zero gradient");
    let mut worst = 0.0f64;
    for &i in coords {
        let fd = central_diff(h, |s| {
            let mut p = Problem {
                params: pb.params.clone(),
                vq: pb.vq.clone(),
                r0: pb.r0.clone(),
                teacher: pb.teacher.clone(),
            };
            perturb(&mut p, i, s);
            p.loss()
        });
        let e = (fd - analytic[i]).abs() / fd.abs().max(analytic[i].abs()).max(1e-2 * gmax);
        if e > FD_TOL {
            eprintln!("  {what}[{i}] fd {fd:.6e} analytic {:.6e}", analytic[i]);
        }
        worst = worst.max(e);
    }
    eprintln!(
        "{what}: {} coords, max rel err {worst:.2e} (max |g| {gmax:.2e})",
        coords.len()
    );
    worst
}

#[test]
fn end_to_end_gradients_match_finite_differences() {
    let pb = problem();
    let (loss, g) = pb.grads(2);
    eprintln!("loss {loss:.4e}");
    assert!(loss > 1e-2, "degenerate problem");
    let mut rng = SplitMix64::new(5);
    let mut worst = 0.0f64;
    let mut coords = |n: usize, m: usize| -> Vec<usize> {
        let mut c: Vec<usize> = (0..m.min(n)).map(|_| rng.below(n)).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    for (li, l) in pb.vq.iter().enumerate() {
        let dw = g.blocks[l.block].tensor(l.role).unwrap();
        let cg = codebook_grad(l.rows, l.cols, K, D, &l.indices, dw);
        let what = format!("block {} {:?} codebook", l.block, l.role);
        // The `dt_proj` gradients are tiny (~1e-8 against a loss of ~1) but the loss is smooth
        // in them: a larger step keeps the loss change far above its rounding noise.
        let h = if matches!(l.role, Role::DtProjW | Role::DtProjWBack) {
            3e-2
        } else {
            1e-3
        };
        // Every codebook entry, including the padding lanes that carry no gradient.
        let all: Vec<usize> = (0..K * D).collect();
        worst = worst.max(check(&what, h, &pb, &cg, &all, |p, i, s| {
            p.vq[li].codebook[i] += s;
            p.sync();
        }));
    }
    for b in 0..pb.params.blocks.len() {
        let c = coords(8, 8);
        worst = worst.max(check(
            &format!("block {b} norm"),
            1e-3,
            &pb,
            &g.norms[b],
            &c,
            |p, i, s| p.params.norms[b][i] += s,
        ));
        for role in BIAS {
            let c = coords(16, 6);
            worst = worst.max(check(
                &format!("block {b} {role:?}"),
                1e-2,
                &pb,
                g.blocks[b].tensor(role).unwrap(),
                &c,
                |p, i, s| p.params.blocks[b].tensor_mut(role).unwrap()[i] += s,
            ));
        }
    }
    let c = coords(8, 8);
    worst = worst.max(check("norm_f", 1e-3, &pb, &g.norm_f, &c, |p, i, s| {
        p.params.norm_f[i] += s
    }));
    let c = coords(pb.r0.len(), 24);
    worst = worst.max(check("r_0", 1e-3, &pb, &g.input, &c, |p, i, s| {
        p.r0[i] += s
    }));
    eprintln!("overall worst {worst:.2e}");
    assert!(worst <= FD_TOL, "worst relative error {worst}");
}

#[test]
fn end_to_end_gradients_do_not_depend_on_threads() {
    let pb = problem();
    let (l1, g1) = pb.grads(1);
    for threads in [2, 3] {
        let (l, g) = pb.grads(threads);
        assert_eq!(l.to_bits(), l1.to_bits());
        assert_eq!(g, g1);
    }
}

#[test]
fn codebook_grad_adds_each_sub_vector_to_its_codeword() {
    // 2 rows × 5 cols, d = 2 (one padded lane per row), k = 3.
    let dw: Vec<f64> = (1..=10).map(f64::from).collect();
    let g = codebook_grad(2, 5, 3, 2, &[0, 2, 0, 1, 1, 0], &dw);
    // row 0: [1,2]→0, [3,4]→2, [5,pad]→0; row 1: [6,7]→1, [8,9]→1, [10,pad]→0.
    assert_eq!(
        g,
        vec![1.0 + 5.0 + 10.0, 2.0, 6.0 + 8.0, 7.0 + 9.0, 3.0, 4.0]
    );
}

#[test]
fn kl_loss_is_zero_on_equal_logits_and_its_gradient_sums_to_zero() {
    let t = [0.3f64, -1.0, 2.0, 0.0, 0.5, 0.5];
    let mut dl = [0.0f64; 6];
    assert!(kl_loss(&t, &t, 3, Some(&mut dl)).abs() < 1e-15);
    assert!(dl.iter().all(|v| v.abs() < 1e-15));
    let s = [0.0f64, 0.0, 0.0, 1.0, -1.0, 0.0];
    let l = kl_loss(&t, &s, 3, Some(&mut dl));
    assert!(l > 0.0);
    for row in dl.chunks(3) {
        assert!(row.iter().sum::<f64>().abs() < 1e-15);
    }
}
