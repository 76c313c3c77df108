//! Shared helpers of the vimvq-rt integration tests: a seeded RNG, random models with realistic
//! parameter distributions (those of `shared/reference/vim_numpy_ref.py::random_state_dict`),
//! and an independent float64 reference of the forward pass that follows the *flip-based*
//! PyTorch formulation (the backward branch flips the sequence, runs the forward-direction
//! conv and scan, and flips back), not the runtime's flip-free one.
#![allow(dead_code)]

use vimvq_rt::format::{AlignedBytes, PackedModel, PackedTensor, Role, TensorData};
use vimvq_rt::{Preprocess, VimConfig};

/// SplitMix64 with Box–Muller normals.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n).map(|_| self.normal(mean, std) as f32).collect()
    }
}

/// A small config with every dimension given.
#[allow(clippy::too_many_arguments)]
pub fn config(
    embed_dim: usize,
    depth: usize,
    patch: usize,
    stride: usize,
    img_size: usize,
    channels: usize,
    num_classes: usize,
    d_state: usize,
    dt_rank: usize,
    d_conv: usize,
    d_inner: usize,
) -> VimConfig {
    let c = VimConfig {
        embed_dim,
        depth,
        patch,
        stride,
        img_size,
        channels,
        num_classes,
        d_state,
        dt_rank,
        d_conv,
        d_inner,
        norm_eps: 1e-5,
    };
    c.check().unwrap();
    c
}

/// A Vim config of the released family (`E = 2D`, `R = ceil(D/16)`, `N = 16`, `K = 4`).
pub fn vim_config(
    d: usize,
    depth: usize,
    patch: usize,
    stride: usize,
    img: usize,
    ch: usize,
    classes: usize,
) -> VimConfig {
    config(
        d,
        depth,
        patch,
        stride,
        img,
        ch,
        classes,
        16,
        d.div_ceil(16),
        4,
        2 * d,
    )
}

/// Odd shapes that exercise every tail and the stride < patch path.
pub fn test_configs() -> Vec<VimConfig> {
    vec![
        // 3 channels, 3×3 grid, cls in the middle of a grid row.
        config(16, 2, 4, 4, 12, 3, 5, 4, 1, 4, 32),
        // 1 channel, overlapping patches (stride 3 < patch 5), K = 3, odd E.
        config(12, 1, 5, 3, 14, 1, 7, 3, 2, 3, 20),
        // 3 blocks, overlapping 3×3 patches, remainder pixels ignored, N = 16.
        config(24, 3, 3, 2, 12, 3, 10, 16, 2, 4, 48),
        // D not a multiple of 8, K = 1, E odd, 2 channels.
        config(13, 2, 2, 2, 6, 2, 3, 5, 3, 1, 27),
        // A single patch: L = 2, cls at position 0, K > L.
        config(8, 2, 4, 4, 4, 1, 2, 2, 1, 4, 8),
    ]
}

/// `(role, layer)` of every tensor of the schema, in canonical order.
pub fn schema(c: &VimConfig) -> Vec<(Role, usize)> {
    let mut v: Vec<(Role, usize)> = Role::GLOBAL.iter().map(|r| (*r, 0)).collect();
    for l in 0..c.depth {
        v.extend(Role::LAYER.iter().map(|r| (*r, l)));
    }
    v
}

/// Random dense values for one tensor, distributed like `random_state_dict`.
pub fn random_values(c: &VimConfig, role: Role, rng: &mut Rng) -> Vec<f32> {
    let (rows, cols) = role.shape(c);
    let n = rows * cols;
    let r = c.dt_rank as f64;
    match role {
        Role::ClsToken | Role::PosEmbed | Role::PatchBias | Role::HeadWeight | Role::HeadBias => {
            rng.normals(n, 0.0, 0.02)
        }
        // Larger than the reference's 0.02 so that small patches still give O(1) tokens.
        Role::PatchWeight => rng.normals(n, 0.0, 1.0 / (c.patch_len() as f64).sqrt()),
        Role::NormF | Role::Norm | Role::DSkip | Role::DSkipBack => rng.normals(n, 1.0, 0.1),
        Role::ConvW | Role::ConvWBack => rng.normals(n, 0.0, 0.3),
        Role::ConvB | Role::ConvBBack => rng.normals(n, 0.0, 0.1),
        Role::XProj | Role::XProjBack => rng.normals(n, 0.0, 0.05),
        Role::DtProjW | Role::DtProjWBack => (0..n)
            .map(|_| rng.range(-r.powf(-0.5), r.powf(-0.5)) as f32)
            .collect(),
        Role::DtProjB | Role::DtProjBBack => (0..n)
            .map(|_| {
                let dt = rng.range(1e-3f64.ln(), 0.1f64.ln()).exp();
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })
            .collect(),
        Role::ALog | Role::ALogBack => (0..n)
            .map(|i| (((i % cols) + 1) as f64).ln() as f32 + rng.normal(0.0, 0.1) as f32)
            .collect(),
        Role::InProj | Role::OutProj => rng.normals(n, 0.0, 0.05),
    }
}

/// How a random model stores its linear weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Storage {
    Dense,
    /// Every linear weight VQ with this `(k, d)`.
    Vq(usize, usize),
    /// Linear weights alternate dense / VQ with varying `(k, d)` (u8 and u16 indices).
    Mixed,
}

/// A random VQ tensor: random codebook, random indices.
pub fn random_vq(
    rows: usize,
    cols: usize,
    k: usize,
    d: usize,
    scale: f64,
    rng: &mut Rng,
) -> TensorData {
    let codebook = rng.normals(k * d, 0.0, scale);
    let indices = (0..rows * cols.div_ceil(d))
        .map(|_| rng.below(k) as u32)
        .collect();
    TensorData::Vq {
        codebook,
        k,
        d,
        indices,
        codebook_f16: false,
    }
}

/// A complete random model.
pub fn random_model(c: &VimConfig, seed: u64, storage: Storage) -> PackedModel {
    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    for (i, (role, layer)) in schema(c).into_iter().enumerate() {
        let (rows, cols) = role.shape(c);
        let scale = match role {
            Role::PatchWeight => 1.0 / (c.patch_len() as f64).sqrt(),
            Role::DtProjW | Role::DtProjWBack => (c.dt_rank as f64).powf(-0.5) / 2.0,
            _ => 0.05,
        };
        let vq = match storage {
            Storage::Dense => None,
            Storage::Vq(k, d) => Some((k, d)),
            Storage::Mixed => match i % 4 {
                0 => None,
                1 => Some((16, 2)),
                2 => Some((300, 3)),
                _ => Some((7, 5)),
            },
        };
        let data = match vq {
            Some((k, d)) if role.is_linear() => random_vq(rows, cols, k, d, scale, &mut rng),
            _ => TensorData::F32(random_values(c, role, &mut rng)),
        };
        tensors.push(PackedTensor {
            role,
            layer,
            rows,
            cols,
            data,
        });
    }
    PackedModel {
        config: *c,
        preprocess: Preprocess::imagenet(c.img_size as u32),
        labels: (0..c.num_classes).map(|i| format!("class {i}")).collect(),
        tensors,
    }
}

/// Independent decode of a VQ tensor into dense values.
pub fn decode(t: &PackedTensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        TensorData::Vq {
            codebook,
            d,
            indices,
            ..
        } => {
            let g = t.cols.div_ceil(*d);
            let mut out = vec![0f32; t.rows * t.cols];
            for r in 0..t.rows {
                for c in 0..t.cols {
                    let idx = indices[r * g + c / d] as usize;
                    out[r * t.cols + c] = codebook[idx * d + c % d];
                }
            }
            out
        }
    }
}

/// The same model with every VQ tensor decoded into dense f32.
pub fn densify(m: &PackedModel) -> PackedModel {
    let mut m = m.clone();
    for t in &mut m.tensors {
        t.data = TensorData::F32(decode(t));
    }
    m
}

/// Serialises a model into 64-byte-aligned memory.
pub fn pack(m: &PackedModel) -> AlignedBytes {
    AlignedBytes::from_slice(&vimvq_rt::format::to_bytes(m).unwrap())
}

/// A random normalised image.
pub fn random_image(c: &VimConfig, seed: u64) -> Vec<f32> {
    Rng::new(seed).normals(c.input_len(), 0.0, 1.0)
}

/// Runs the runtime on one image.
pub fn run(bytes: &[u8], img: &[f32]) -> Vec<f32> {
    let m = vimvq_rt::model::Model::parse(bytes).unwrap();
    let mut logits = vec![0f32; m.config().num_classes];
    let mut scratch = vec![0u8; m.scratch_bytes()];
    vimvq_rt::forward::infer(&m, img, &mut logits, &mut scratch).unwrap();
    logits
}

/// `max|a − b| / max|b|`.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    num / den
}

pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

// ------------------------------------------------------------------------------------------
// Float64 reference, a transcription of the PyTorch fast path (vim_numpy_ref.py `mixer_flip`):
// channel-first (E, L) activations, the backward branch runs the *causal* machinery on the
// flipped sequence and is flipped back.

/// Dense f64 tensors of a model, by `(role, layer)`.
pub struct RefModel {
    pub c: VimConfig,
    t: std::collections::HashMap<(Role, usize), Vec<f64>>,
}

impl RefModel {
    pub fn new(m: &PackedModel) -> Self {
        let t = m
            .tensors
            .iter()
            .map(|t| {
                (
                    (t.role, t.layer),
                    decode(t).iter().map(|v| *v as f64).collect(),
                )
            })
            .collect();
        RefModel { c: m.config, t }
    }
    fn g(&self, r: Role, l: usize) -> &[f64] {
        &self.t[&(r, l)]
    }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}
fn softplus(x: f64) -> f64 {
    if x <= 20.0 {
        x.exp().ln_1p()
    } else {
        x
    }
}
fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(a, b)| a * r * b).collect()
}

/// One direction of `mamba_inner_fn_no_out_proj` on channel-first `x`, `z` (E × L each, row e).
#[allow(clippy::too_many_arguments)]
fn inner(
    c: &VimConfig,
    x: &[Vec<f64>],
    z: &[Vec<f64>],
    conv_w: &[f64],
    conv_b: &[f64],
    xproj: &[f64],
    dtproj: &[f64],
    dt_b: &[f64],
    a_log: &[f64],
    dsk: &[f64],
) -> Vec<Vec<f64>> {
    let (e, l, k, n, r) = (c.d_inner, x[0].len(), c.d_conv, c.d_state, c.dt_rank);
    let xr = r + 2 * n;
    // causal conv: F.conv1d(x, w, b, padding=K-1, groups=E)[..., :L], then SiLU
    let u: Vec<Vec<f64>> = (0..e)
        .map(|ch| {
            (0..l)
                .map(|t| {
                    let mut s = conv_b[ch];
                    for j in 0..k {
                        let src = t as isize - (k - 1 - j) as isize;
                        if src >= 0 {
                            s += conv_w[ch * k + j] * x[ch][src as usize];
                        }
                    }
                    silu(s)
                })
                .collect()
        })
        .collect();
    let mut y = vec![vec![0f64; l]; e];
    let mut h = vec![0f64; e * n];
    for t in 0..l {
        let xd: Vec<f64> = (0..xr)
            .map(|o| (0..e).map(|ch| xproj[o * e + ch] * u[ch][t]).sum())
            .collect();
        for ch in 0..e {
            let dtr: f64 = (0..r).map(|j| dtproj[ch * r + j] * xd[j]).sum();
            let delta = softplus(dtr + dt_b[ch]);
            let mut acc = 0.0;
            for s in 0..n {
                let a = -a_log[ch * n + s].exp();
                h[ch * n + s] = (delta * a).exp() * h[ch * n + s] + delta * xd[r + s] * u[ch][t];
                acc += h[ch * n + s] * xd[r + n + s];
            }
            y[ch][t] = (acc + u[ch][t] * dsk[ch]) * silu(z[ch][t]);
        }
    }
    y
}

fn mixer_flip(m: &RefModel, hn: &[Vec<f64>], layer: usize) -> Vec<Vec<f64>> {
    let c = &m.c;
    let (d, e, l) = (c.embed_dim, c.d_inner, hn.len());
    let w_in = m.g(Role::InProj, layer);
    // xz: (2E, L)
    let xz: Vec<Vec<f64>> = (0..2 * e)
        .map(|o| {
            (0..l)
                .map(|t| (0..d).map(|i| w_in[o * d + i] * hn[t][i]).sum())
                .collect()
        })
        .collect();
    let (x, z) = xz.split_at(e);
    let g = |r| m.g(r, layer);
    let out = inner(
        c,
        x,
        z,
        g(Role::ConvW),
        g(Role::ConvB),
        g(Role::XProj),
        g(Role::DtProjW),
        g(Role::DtProjB),
        g(Role::ALog),
        g(Role::DSkip),
    );
    let flip = |v: &[Vec<f64>]| -> Vec<Vec<f64>> {
        v.iter()
            .map(|row| row.iter().rev().copied().collect())
            .collect()
    };
    let (xf, zf) = (flip(x), flip(z));
    let out_b = inner(
        c,
        &xf,
        &zf,
        g(Role::ConvWBack),
        g(Role::ConvBBack),
        g(Role::XProjBack),
        g(Role::DtProjWBack),
        g(Role::DtProjBBack),
        g(Role::ALogBack),
        g(Role::DSkipBack),
    );
    let out_b = flip(&out_b);
    let w_out = m.g(Role::OutProj, layer);
    (0..l)
        .map(|t| {
            let yt: Vec<f64> = (0..e).map(|ch| (out[ch][t] + out_b[ch][t]) / 2.0).collect();
            (0..d)
                .map(|o| (0..e).map(|ch| w_out[o * e + ch] * yt[ch]).sum())
                .collect()
        })
        .collect()
}

/// Float64 logits of the flip-based reference.
pub fn reference_logits(m: &RefModel, img: &[f32]) -> Vec<f64> {
    let c = &m.c;
    let (d, g, p, s, hw) = (c.embed_dim, c.grid(), c.patch, c.stride, c.img_size);
    let pw = m.g(Role::PatchWeight, 0);
    let pb = m.g(Role::PatchBias, 0);
    let mut tok = Vec::new();
    for i in 0..g {
        for j in 0..g {
            let mut patch = Vec::new();
            for ch in 0..c.channels {
                for y in 0..p {
                    for x in 0..p {
                        patch.push(img[ch * hw * hw + (i * s + y) * hw + j * s + x] as f64);
                    }
                }
            }
            let pl = patch.len();
            tok.push(
                (0..d)
                    .map(|o| pb[o] + (0..pl).map(|q| pw[o * pl + q] * patch[q]).sum::<f64>())
                    .collect::<Vec<f64>>(),
            );
        }
    }
    let pos = tok.len() / 2;
    tok.insert(pos, m.g(Role::ClsToken, 0).to_vec());
    let pe = m.g(Role::PosEmbed, 0);
    for (t, row) in tok.iter_mut().enumerate() {
        for (i, v) in row.iter_mut().enumerate() {
            *v += pe[t * d + i];
        }
    }
    let eps = c.norm_eps as f64;
    let mut residual: Option<Vec<Vec<f64>>> = None;
    let mut hidden = tok;
    for layer in 0..c.depth {
        let res = match residual {
            None => hidden.clone(),
            Some(r) => r
                .iter()
                .zip(&hidden)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                .collect(),
        };
        let normed: Vec<Vec<f64>> = res
            .iter()
            .map(|row| rmsnorm(row, m.g(Role::Norm, layer), eps))
            .collect();
        hidden = mixer_flip(m, &normed, layer);
        residual = Some(res);
    }
    let res = residual.unwrap();
    let last: Vec<f64> = res[pos]
        .iter()
        .zip(&hidden[pos])
        .map(|(a, b)| a + b)
        .collect();
    let feat = rmsnorm(&last, m.g(Role::NormF, 0), eps);
    let hw_ = m.g(Role::HeadWeight, 0);
    let hb = m.g(Role::HeadBias, 0);
    (0..c.num_classes)
        .map(|o| hb[o] + (0..d).map(|i| hw_[o * d + i] * feat[i]).sum::<f64>())
        .collect()
}
