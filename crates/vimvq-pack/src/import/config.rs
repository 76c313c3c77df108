//! Model dimensions from tensor shapes ([`infer_config`]) and the all-f32 [`PackedModel`]
//! ([`to_packed`]).

use std::collections::BTreeSet;

use vimvq_rt::format::{PackedModel, PackedTensor, Role, TensorData};
use vimvq_rt::preprocess::MAX_SIDE;
use vimvq_rt::{Interpolation, Preprocess, VimConfig};

/// Largest accepted `|mean|` (pixels are on the `[0, 1]` scale).
const MAX_MEAN: f32 = 1e3;
/// Smallest accepted `std`: dividing a `[0, 1]` pixel by less would overflow f32.
const MIN_STD: f32 = 1e-6;

use super::{Checkpoint, HostTensor, ImportError, ModelOptions};

/// `img_size` when neither the caller nor the checkpoint gives one.
pub const DEFAULT_IMG_SIZE: u32 = 224;
/// RMSNorm epsilon of every released Vim model.
pub const NORM_EPS: f32 = 1e-5;

/// Roles stored as 1-D tensors in a torch state dict.
fn is_vector(role: Role) -> bool {
    matches!(
        role,
        Role::PatchBias
            | Role::NormF
            | Role::HeadBias
            | Role::Norm
            | Role::ConvB
            | Role::ConvBBack
            | Role::DtProjB
            | Role::DtProjBBack
            | Role::DSkip
            | Role::DSkipBack
    )
}

/// State-dict name of `(role, layer)`.
pub fn torch_name(role: Role, layer: usize) -> String {
    if role.is_per_layer() {
        format!("layers.{layer}.{}", role.torch_name())
    } else {
        role.torch_name().to_owned()
    }
}

/// Shape of `role` in a torch state dict (the packed shape is [`Role::shape`]).
pub fn torch_shape(role: Role, c: &VimConfig) -> Vec<usize> {
    match role {
        Role::PatchWeight => vec![c.embed_dim, c.channels, c.patch, c.patch],
        Role::ClsToken => vec![1, 1, c.embed_dim],
        Role::PosEmbed => vec![1, c.seq_len(), c.embed_dim],
        Role::ConvW | Role::ConvWBack => vec![c.d_inner, 1, c.d_conv],
        r if is_vector(r) => vec![r.shape(c).1],
        r => {
            let (rows, cols) = r.shape(c);
            vec![rows, cols]
        }
    }
}

fn get<'a>(ck: &'a Checkpoint, name: &str, expected: &str) -> Result<&'a HostTensor, ImportError> {
    ck.tensors
        .get(name)
        .ok_or_else(|| ImportError::MissingTensor {
            name: name.to_owned(),
            expected: expected.to_owned(),
        })
}

/// Shape of `name`, which must have `rank` dims (`what` describes them for the error).
fn dims<'a>(
    ck: &'a Checkpoint,
    name: &str,
    rank: usize,
    what: &str,
) -> Result<&'a [usize], ImportError> {
    let t = get(ck, name, what)?;
    if t.shape.len() != rank || t.shape.contains(&0) {
        return Err(ImportError::ShapeMismatch {
            name: name.to_owned(),
            found: format!("{:?}", t.shape),
            expected: what.to_owned(),
        });
    }
    Ok(&t.shape)
}

fn parse_meta<T: std::str::FromStr>(ck: &Checkpoint, key: &str) -> Result<Option<T>, ImportError> {
    match ck.meta.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ImportError::Meta {
            key: key.to_owned(),
            value: v.clone(),
            msg: "not a valid number".into(),
        }),
    }
}

/// Infers every dimension from the tensor shapes and checks the whole state dict against the
/// schema: every tensor of [`Role::GLOBAL`] and, per block, [`Role::LAYER`] must be present
/// with its torch shape ([`torch_shape`]), and nothing else may be.
///
/// `img_size`: the argument, else `meta["img_size"]`, else 224. The patch stride is the `s ≤ p`
/// for which `((img − p) / s + 1)² + 1` equals the `pos_embed` length; when several strides give
/// the same grid, the one that tiles the image exactly (`(img − p) % s == 0`) wins, else the
/// largest.
pub fn infer_config(ck: &Checkpoint, img_size: Option<u32>) -> Result<VimConfig, ImportError> {
    // 1. every name must belong to the schema; collect the block indices
    let mut unknown = Vec::new();
    let mut layers = BTreeSet::new();
    for name in ck.tensors.keys() {
        match Role::from_torch_name(name) {
            Some((r, l)) if r.is_per_layer() => {
                layers.insert(l);
            }
            Some(_) => {}
            None => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(ImportError::UnexpectedTensors {
            names: summarize(&unknown),
        });
    }
    let depth = layers.len();
    if depth == 0 {
        return Err(ImportError::Config(
            "no layers.{i}.* tensors: not a Vision Mamba state dict".into(),
        ));
    }
    if layers.last().copied() != Some(depth - 1) {
        let found: Vec<String> = layers.iter().map(usize::to_string).collect();
        return Err(ImportError::Config(format!(
            "block indices are not contiguous from 0: found layers {}",
            found.join(", ")
        )));
    }

    // 2. dimensions
    let pw = dims(ck, "patch_embed.proj.weight", 4, "(D, C, p, p)")?;
    let (d, channels, patch) = (pw[0], pw[1], pw[2]);
    if pw[3] != patch {
        return Err(ImportError::ShapeMismatch {
            name: "patch_embed.proj.weight".into(),
            found: format!("{pw:?}"),
            expected: "(D, C, p, p) with a square kernel".into(),
        });
    }
    let inp = dims(ck, "layers.0.mixer.in_proj.weight", 2, "(2E, D)")?;
    if inp[0] % 2 != 0 {
        return Err(ImportError::ShapeMismatch {
            name: "layers.0.mixer.in_proj.weight".into(),
            found: format!("{inp:?}"),
            expected: "(2E, D) with an even first dimension".into(),
        });
    }
    let e = inp[0] / 2;
    let n = dims(ck, "layers.0.mixer.A_log", 2, "(E, N)")?[1];
    let r = dims(ck, "layers.0.mixer.dt_proj.weight", 2, "(E, R)")?[1];
    let k = dims(ck, "layers.0.mixer.conv1d.weight", 3, "(E, 1, K)")?[2];
    let classes = dims(ck, "head.weight", 2, "(classes, D)")?[0];
    let l = dims(ck, "pos_embed", 3, "(1, L, D)")?[1];

    // 3. image size and stride
    let img = match img_size {
        Some(v) => v as usize,
        None => parse_meta::<u32>(ck, "img_size")?.unwrap_or(DEFAULT_IMG_SIZE) as usize,
    };
    let stride = find_stride(img, patch, l)?;

    let cfg = VimConfig {
        embed_dim: d,
        depth,
        patch,
        stride,
        img_size: img,
        channels,
        num_classes: classes,
        d_state: n,
        dt_rank: r,
        d_conv: k,
        d_inner: e,
        norm_eps: NORM_EPS,
    };
    cfg.check()
        .map_err(|err| ImportError::Config(format!("{err} ({cfg:?})")))?;

    // 4. every schema tensor, with its exact shape
    for (role, layer) in schema(depth) {
        let name = torch_name(role, layer);
        let want = torch_shape(role, &cfg);
        let t = get(ck, &name, &format!("{want:?}"))?;
        if t.shape != want {
            return Err(ImportError::ShapeMismatch {
                name,
                found: format!("{:?}", t.shape),
                expected: format!("{want:?}"),
            });
        }
    }
    Ok(cfg)
}

/// `(role, layer)` of every tensor, in canonical order.
fn schema(depth: usize) -> impl Iterator<Item = (Role, usize)> {
    Role::GLOBAL
        .into_iter()
        .map(|r| (r, 0))
        .chain((0..depth).flat_map(|l| Role::LAYER.into_iter().map(move |r| (r, l))))
}

fn summarize(names: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = names
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s += &format!(" and {} more", names.len() - SHOW);
    }
    s
}

fn find_stride(img: usize, patch: usize, l: usize) -> Result<usize, ImportError> {
    let grid_of = |s: usize| (img - patch) / s + 1;
    let fits = |s: usize| {
        grid_of(s)
            .checked_mul(grid_of(s))
            .and_then(|p| p.checked_add(1))
            == Some(l)
    };
    let hint = || {
        let g = (l.saturating_sub(1) as f64).sqrt().round() as usize;
        if g * g + 1 == l {
            format!(
                "; pass --img-size (e.g. {} if the stride equals the patch size)",
                g * patch
            )
        } else {
            format!("; {l} − 1 is not a square number of patches")
        }
    };
    if img < patch {
        return Err(ImportError::Config(format!(
            "img_size {img} is smaller than the patch size {patch}{}",
            hint()
        )));
    }
    let candidates: Vec<usize> = (1..=patch).filter(|&s| fits(s)).collect();
    let exact = candidates
        .iter()
        .rev()
        .find(|&&s| (img - patch).is_multiple_of(s));
    match (exact, candidates.last()) {
        (Some(&s), _) | (None, Some(&s)) => Ok(s),
        (None, None) => Err(ImportError::Config(format!(
            "pos_embed has {l} positions, which no stride ≤ patch {patch} gives at img_size {img}{}",
            hint()
        ))),
    }
}

fn floats(src: &str, v: &str) -> Result<[f32; 3], ImportError> {
    let bad = |msg: &str| ImportError::Preprocess {
        origin: src.to_owned(),
        msg: format!("{v:?}: {msg}"),
    };
    let vals: Vec<f32> = v
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("expected 1 or 3 comma-separated numbers"))?;
    match vals.as_slice() {
        [a] => Ok([*a; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(bad("expected 1 or 3 comma-separated numbers")),
    }
}

fn interpolation(src: &str, v: &str) -> Result<Interpolation, ImportError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "bicubic" | "3" => Ok(Interpolation::Bicubic),
        "bilinear" | "2" => Ok(Interpolation::Bilinear),
        _ => Err(ImportError::Preprocess {
            origin: src.to_owned(),
            msg: format!("{v:?}: expected bicubic or bilinear"),
        }),
    }
}

/// Builds the all-f32 [`PackedModel`]: [`infer_config`] with `opts.img_size`, then the
/// preprocessing from `opts` > checkpoint metadata > [`Preprocess::imagenet`] (a 1-channel
/// model uses `mean[0]`/`std[0]` on every lane), and the labels from `opts` or
/// `meta["labels"]` (newline-separated), which must number exactly `num_classes`.
pub fn to_packed(ck: &Checkpoint, opts: &ModelOptions) -> Result<PackedModel, ImportError> {
    let cfg = infer_config(ck, opts.img_size)?;
    if let Some(c) = parse_meta::<usize>(ck, "channels")? {
        if c != cfg.channels {
            return Err(ImportError::Meta {
                key: "channels".into(),
                value: c.to_string(),
                msg: format!("the patch embedding has {} input channels", cfg.channels),
            });
        }
    }

    let img = cfg.img_size as u32;
    let mut pre = Preprocess::imagenet(img);
    let meta = |k: &str| ck.meta.get(k).map(String::as_str);
    if let Some(v) = opts.resize {
        pre.resize = v;
    } else if let Some(v) = parse_meta::<u32>(ck, "resize")? {
        pre.resize = v;
    }
    if let Some(v) = opts.crop {
        pre.crop = v;
    } else if let Some(v) = parse_meta::<u32>(ck, "crop")? {
        pre.crop = v;
    }
    if let Some(v) = opts.interpolation {
        pre.interpolation = v;
    } else if let Some(v) = meta("interpolation") {
        pre.interpolation = interpolation("metadata 'interpolation'", v)?;
    }
    let (mean_src, mean) = match (opts.mean, meta("mean")) {
        (Some(m), _) => ("--mean", m),
        (None, Some(v)) => ("metadata 'mean'", floats("metadata 'mean'", v)?),
        (None, None) => ("default mean", pre.mean),
    };
    let (std_src, std) = match (opts.std, meta("std")) {
        (Some(s), _) => ("--std", s),
        (None, Some(v)) => ("metadata 'std'", floats("metadata 'std'", v)?),
        (None, None) => ("default std", pre.std),
    };
    pre.mean = if cfg.channels == 1 {
        [mean[0]; 3]
    } else {
        mean
    };
    pre.std = if cfg.channels == 1 { [std[0]; 3] } else { std };
    if pre.mean.iter().any(|m| !m.is_finite()) {
        return Err(ImportError::Preprocess {
            origin: mean_src.into(),
            msg: format!("{:?}: values must be finite", pre.mean),
        });
    }
    if pre.mean.iter().any(|m| m.abs() > MAX_MEAN) {
        return Err(ImportError::Preprocess {
            origin: mean_src.into(),
            msg: format!(
                "{:?}: pixel values are in [0, 1]; a mean beyond ±{MAX_MEAN} is not one",
                pre.mean
            ),
        });
    }
    if pre.std.iter().any(|s| !(s.is_finite() && *s >= MIN_STD)) {
        return Err(ImportError::Preprocess {
            origin: std_src.into(),
            msg: format!(
                "{:?}: values must be finite and at least {MIN_STD} (smaller ones overflow the normalised input)",
                pre.std
            ),
        });
    }
    if pre.crop != img {
        return Err(ImportError::Preprocess {
            origin: "crop".into(),
            msg: format!("{} must equal the model's img_size {img}", pre.crop),
        });
    }
    if pre.resize < pre.crop {
        return Err(ImportError::Preprocess {
            origin: "resize".into(),
            msg: format!("{} is smaller than the crop {}", pre.resize, pre.crop),
        });
    }
    if pre.resize as usize > MAX_SIDE {
        return Err(ImportError::Preprocess {
            origin: "resize".into(),
            msg: format!(
                "{} is larger than the largest image side the runtime accepts ({MAX_SIDE})",
                pre.resize
            ),
        });
    }

    let labels: Vec<String> = match (&opts.labels, meta("labels")) {
        (Some(l), _) => l.clone(),
        (None, Some(v)) => {
            let mut l: Vec<String> = v
                .split('\n')
                .map(|s| s.trim_end_matches('\r').to_owned())
                .collect();
            if l.last().is_some_and(String::is_empty) {
                l.pop();
            }
            l
        }
        (None, None) => Vec::new(),
    };
    if !labels.is_empty() && labels.len() != cfg.num_classes {
        return Err(ImportError::Labels {
            found: labels.len(),
            expected: cfg.num_classes,
        });
    }

    let tensors = schema(cfg.depth)
        .map(|(role, layer)| {
            let (rows, cols) = role.shape(&cfg);
            let name = torch_name(role, layer);
            let t = &ck.tensors[&name];
            debug_assert_eq!(t.data.len(), rows * cols);
            if let Some((index, &value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ImportError::NonFinite { name, index, value });
            }
            Ok(PackedTensor {
                role,
                layer,
                rows,
                cols,
                data: TensorData::F32(t.data.clone()),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(PackedModel {
        config: cfg,
        preprocess: pre,
        labels,
        tensors,
    })
}

/// State-dict names of every tensor of a `depth`-block model, in canonical order.
pub fn schema_names(depth: usize) -> Vec<String> {
    schema(depth).map(|(r, l)| torch_name(r, l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_search() {
        assert_eq!(find_stride(224, 16, 197).unwrap(), 16);
        assert_eq!(find_stride(224, 16, 730).unwrap(), 8);
        assert_eq!(find_stride(8, 4, 10).unwrap(), 2);
        // img 8, patch 4, grid 2: strides 3 and 4 both give 2×2; 4 tiles exactly
        assert_eq!(find_stride(8, 4, 5).unwrap(), 4);
        // img == patch: one patch, any stride fits; the exact largest is the patch
        assert_eq!(find_stride(4, 4, 2).unwrap(), 4);
        let e = find_stride(224, 4, 5).unwrap_err().to_string();
        assert!(e.contains("--img-size") && e.contains("e.g. 8"), "{e}");
        assert!(find_stride(2, 4, 5).is_err());
    }

    #[test]
    fn torch_shapes_match_packed_sizes() {
        let c = VimConfig {
            embed_dim: 8,
            depth: 1,
            patch: 4,
            stride: 2,
            img_size: 8,
            channels: 3,
            num_classes: 1,
            d_state: 4,
            dt_rank: 1,
            d_conv: 4,
            d_inner: 16,
            norm_eps: NORM_EPS,
        };
        for (role, _) in schema(1) {
            let (r, cl) = role.shape(&c);
            assert_eq!(
                torch_shape(role, &c).iter().product::<usize>(),
                r * cl,
                "{role:?}"
            );
        }
        // 1 class: head.weight stays 2-D, head.bias 1-D
        assert_eq!(torch_shape(Role::HeadWeight, &c), vec![1, 8]);
        assert_eq!(torch_shape(Role::HeadBias, &c), vec![1]);
    }

    #[test]
    fn meta_lists() {
        assert_eq!(floats("x", "0.5").unwrap(), [0.5; 3]);
        assert_eq!(floats("x", "1, 2,3").unwrap(), [1.0, 2.0, 3.0]);
        assert!(floats("x", "1,2").is_err());
        assert!(floats("x", "a").is_err());
        assert_eq!(
            interpolation("x", "BILINEAR").unwrap(),
            Interpolation::Bilinear
        );
        assert!(interpolation("x", "nearest").is_err());
    }
}
