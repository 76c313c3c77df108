//! `.vimvq` v1: writer → reader round trips on random models, determinism, and
//! hostile files (truncated, corrupted, hand-edited), each rejected with its specific error.
//!
//! Byte offsets below are written out from `docs/FORMAT.md` on purpose (not taken from the
//! crate's constants), so the documentation is tested too; so is the CRC, with an independent
//! bitwise CRC-32.

use vimvq_rt::format::{
    to_bytes, AlignedBytes, FormatError, PackedModel, PackedTensor, RangeKind, Role, TensorData,
    TensorProblem, WriteError,
};
use vimvq_rt::model::{CodebookDtype, Model, ParseOptions, TensorKind, Weight};
use vimvq_rt::{ConfigError, Interpolation, Preprocess, VimConfig};

// ------------------------------------------------------------------------------------ helpers

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

#[allow(clippy::too_many_arguments)]
fn cfg(
    d: usize,
    depth: usize,
    patch: usize,
    stride: usize,
    img: usize,
    ch: usize,
    classes: usize,
    n: usize,
    r: usize,
    k: usize,
    e: usize,
) -> VimConfig {
    let c = VimConfig {
        embed_dim: d,
        depth,
        patch,
        stride,
        img_size: img,
        channels: ch,
        num_classes: classes,
        d_state: n,
        dt_rank: r,
        d_conv: k,
        d_inner: e,
        norm_eps: 1e-5,
    };
    c.check().unwrap();
    c
}

fn configs() -> Vec<VimConfig> {
    vec![
        cfg(16, 1, 4, 4, 12, 3, 5, 4, 1, 4, 32),
        cfg(12, 2, 5, 3, 14, 1, 7, 3, 2, 3, 20),
        cfg(24, 3, 3, 2, 12, 3, 10, 16, 2, 4, 48),
        cfg(13, 2, 2, 2, 6, 1, 3, 5, 3, 1, 27),
    ]
}

/// Mixed storage: `vq` picks per tensor index `None` (dense) or `(k, d)`.
fn model_with(
    c: &VimConfig,
    seed: u64,
    vq: impl Fn(usize) -> Option<(usize, usize)>,
) -> PackedModel {
    let mut rng = Rng(seed);
    let mut roles: Vec<(Role, usize)> = Role::GLOBAL.iter().map(|r| (*r, 0)).collect();
    for l in 0..c.depth {
        roles.extend(Role::LAYER.iter().map(|r| (*r, l)));
    }
    let tensors = roles
        .into_iter()
        .enumerate()
        .map(|(i, (role, layer))| {
            let (rows, cols) = role.shape(c);
            let data = match vq(i) {
                Some((k, d)) if role.is_linear() => TensorData::Vq {
                    codebook: (0..k * d).map(|_| rng.f32()).collect(),
                    k,
                    d,
                    indices: (0..rows * cols.div_ceil(d))
                        .map(|_| rng.below(k) as u32)
                        .collect(),
                    codebook_f16: false,
                },
                _ => TensorData::F32((0..rows * cols).map(|_| rng.f32()).collect()),
            };
            PackedTensor {
                role,
                layer,
                rows,
                cols,
                data,
            }
        })
        .collect();
    PackedModel {
        config: *c,
        preprocess: Preprocess {
            resize: c.img_size as u32 + 3,
            crop: c.img_size as u32,
            interpolation: if seed.is_multiple_of(2) {
                Interpolation::Bicubic
            } else {
                Interpolation::Bilinear
            },
            mean: [0.1, 0.2, 0.3],
            std: [0.4, 0.5, 0.6],
        },
        labels: (0..c.num_classes).map(|i| format!("clåss-{i} ✓")).collect(),
        tensors,
    }
}

fn mixed(c: &VimConfig, seed: u64) -> PackedModel {
    model_with(c, seed, |i| match i % 5 {
        0 | 1 => None,
        2 => Some((16, 2)),
        3 => Some((300, 3)),
        _ => Some((5, 16)),
    })
}

fn aligned(bytes: &[u8]) -> AlignedBytes {
    AlignedBytes::from_slice(bytes)
}

fn parse(bytes: &[u8]) -> Result<(), FormatError> {
    Model::parse(&aligned(bytes)).map(|_| ())
}

/// Bitwise CRC-32/ISO-HDLC, independent of the crate's.
fn crc32_bitwise(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for b in bytes {
        c ^= *b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

// docs/FORMAT.md offsets.
const H_MAJOR: usize = 8;
const H_MINOR: usize = 10;
const H_REQUIRED: usize = 16;
const H_OPTIONAL: usize = 20;
const H_COUNT: usize = 24;
const H_LABELS_OFF: usize = 28;
const H_LABELS_LEN: usize = 32;
const H_DATA_OFF: usize = 36;
const H_META_CRC: usize = 40;
const H_DATA_CRC: usize = 44;
const H_DATA_BYTES: usize = 48;
const H_FILE_BYTES: usize = 56;
const CONFIG: usize = 64;
const TABLE: usize = 192;
const R_ROLE: usize = 0;
const R_LAYER: usize = 2;
const R_KIND: usize = 4;
const R_DTYPE: usize = 5;
const R_BITS: usize = 6;
const R_ROWS: usize = 8;
const R_K: usize = 16;
const R_D: usize = 20;
const R_DATA_OFF: usize = 24;
const R_DATA_BYTES: usize = 32;
const R_CB_OFF: usize = 40;
const R_CB_BYTES: usize = 48;

fn rec(i: usize) -> usize {
    TABLE + 64 * i
}

/// Recomputes both CRCs after an edit.
fn fix_crcs(b: &mut [u8]) {
    let data_off = u32_at(b, H_DATA_OFF) as usize;
    if data_off <= b.len() {
        let dc = crc32_bitwise(&b[data_off..]);
        put_u32(b, H_DATA_CRC, dc);
    }
    let labels_end = (u32_at(b, H_LABELS_OFF) + u32_at(b, H_LABELS_LEN)) as usize;
    let mut meta = b[..labels_end.min(b.len())].to_vec();
    meta[H_META_CRC..H_META_CRC + 4].fill(0);
    let mc = crc32_bitwise(&meta);
    put_u32(b, H_META_CRC, mc);
}

fn first_vq(b: &[u8]) -> usize {
    (0..u32_at(b, H_COUNT) as usize)
        .find(|i| b[rec(*i) + R_KIND] == 1)
        .unwrap()
}

fn tensor_err(r: Result<(), FormatError>) -> TensorProblem {
    match r {
        Err(FormatError::Tensor { problem, .. }) => problem,
        other => panic!("expected a tensor error, got {other:?}"),
    }
}

// --------------------------------------------------------------------------------- round trip

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32_bitwise(b"123456789"), 0xCBF4_3926);
    assert_eq!(vimvq_rt::format::crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn round_trip_preserves_everything() {
    for (ci, c) in configs().iter().enumerate() {
        for (mi, m) in [
            model_with(c, ci as u64, |_| None),
            mixed(c, 10 + ci as u64),
            model_with(c, 20 + ci as u64, |_| Some((65536, 1))),
        ]
        .iter()
        .enumerate()
        {
            let bytes = aligned(&to_bytes(m).unwrap());
            let model =
                Model::parse(&bytes).unwrap_or_else(|e| panic!("config {ci} model {mi}: {e}"));
            assert_eq!(model.config(), &m.config);
            assert_eq!(model.preprocess(), &m.preprocess);
            assert_eq!(model.labels().collect::<Vec<_>>(), m.labels);
            assert_eq!(model.label(1), Some(m.labels[1].as_str()));
            assert_eq!(model.file_bytes(), bytes.len());
            assert_eq!(model.file_bytes() % 64, 0);
            assert_eq!(model.version(), (1, 0));
            let infos: Vec<_> = model.tensors().collect();
            assert_eq!(infos.len(), m.tensors.len());
            for (info, t) in infos.iter().zip(&m.tensors) {
                assert_eq!(
                    (info.role, info.layer, info.rows, info.cols),
                    (t.role, t.layer, t.rows, t.cols)
                );
                match (&t.data, model.weight(t.role, t.layer).unwrap()) {
                    (TensorData::F32(v), Weight::Dense(got)) => {
                        assert_eq!(info.kind, TensorKind::Dense);
                        assert_eq!(info.bytes, 4 * v.len() as u64);
                        assert_eq!(
                            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                        );
                        assert_eq!(model.dense(t.role, t.layer), Some(got));
                    }
                    (
                        TensorData::Vq {
                            codebook,
                            k,
                            d,
                            indices,
                            codebook_f16: false,
                        },
                        Weight::Vq(vq),
                    ) => {
                        assert_eq!(info.kind, TensorKind::Vq);
                        assert_eq!((info.k, info.d, vq.k, vq.d), (*k, *d, *k, *d));
                        assert_eq!(info.codebook_dtype, CodebookDtype::F32);
                        assert_eq!(info.index_bits, if *k <= 256 { 8 } else { 16 });
                        match vq.codebook {
                            vimvq_rt::model::Codebook::F32(cb) => assert_eq!(cb, &codebook[..]),
                            other => panic!("{other:?}"),
                        }
                        // Stored in 16-row blocks: read back through the layout.
                        assert_eq!(vq.layout, vimvq_rt::model::IndexLayout::Rows16);
                        let g = vq.groups_per_row();
                        let got: Vec<u32> = (0..vq.rows * g)
                            .map(|p| vq.index(p / g, p % g) as u32)
                            .collect();
                        assert_eq!(&got, indices);
                        assert_eq!(model.dense(t.role, t.layer), None);
                    }
                    (a, b) => panic!("{} stored as {b:?}, given {a:?}", info.name()),
                }
            }
            // Accessors for tensors that do not exist.
            assert!(model.weight(Role::Norm, c.depth).is_none());
            assert!(model.weight(Role::HeadBias, 1).is_none());
        }
    }
}

#[test]
fn header_fields_are_where_the_docs_say() {
    let c = &configs()[2];
    let m = mixed(c, 3);
    let b = to_bytes(&m).unwrap();
    assert_eq!(&b[..8], b"VIMVQ\r\n\x1a");
    assert_eq!((u16_at(&b, H_MAJOR), u16_at(&b, H_MINOR)), (1, 0));
    assert_eq!((u16_at(&b, 12), u16_at(&b, 14)), (64, 192));
    assert_eq!(u32_at(&b, H_REQUIRED), 1 | 4, "VQ and ROWS16_LAYOUT bits");
    assert_eq!(u32_at(&b, H_OPTIONAL), 0);
    let count = u32_at(&b, H_COUNT) as usize;
    assert_eq!(count, 7 + 17 * c.depth);
    assert_eq!(u32_at(&b, H_LABELS_OFF) as usize, 192 + 64 * count);
    let labels_end = (u32_at(&b, H_LABELS_OFF) + u32_at(&b, H_LABELS_LEN)) as usize;
    let labels = std::str::from_utf8(&b[u32_at(&b, H_LABELS_OFF) as usize..labels_end]).unwrap();
    assert_eq!(
        labels,
        m.labels
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let data_off = u32_at(&b, H_DATA_OFF) as usize;
    assert_eq!(data_off, labels_end.div_ceil(64) * 64);
    assert_eq!(u64_at(&b, H_FILE_BYTES) as usize, b.len());
    assert_eq!(u64_at(&b, H_DATA_BYTES) as usize, b.len() - data_off);
    assert_eq!(u32_at(&b, H_DATA_CRC), crc32_bitwise(&b[data_off..]));
    let mut meta = b[..labels_end].to_vec();
    meta[40..44].fill(0);
    assert_eq!(u32_at(&b, H_META_CRC), crc32_bitwise(&meta));
    // Config record: u32 fields in VimConfig order, then preprocessing.
    let words: Vec<u32> = (0..21).map(|i| u32_at(&b, CONFIG + 4 * i)).collect();
    assert_eq!(&words[..11], &[24, 3, 3, 2, 12, 3, 10, 16, 2, 4, 48]);
    assert_eq!(f32::from_bits(words[11]), 1e-5);
    assert_eq!(&words[12..15], &[15, 12, 1]);
    assert_eq!(f32::from_bits(words[20]), 0.6);
    assert!(b[CONFIG + 84..TABLE].iter().all(|x| *x == 0));
    // Records: canonical order, packed 64-aligned ranges (indices then codebook), zero padding.
    let mut end = data_off;
    for i in 0..count {
        let r = rec(i);
        let (role, layer) = if i < 7 {
            (Role::GLOBAL[i], 0)
        } else {
            (Role::LAYER[(i - 7) % 17], (i - 7) / 17)
        };
        assert_eq!(
            (u16_at(&b, r + R_ROLE), u16_at(&b, r + R_LAYER) as usize),
            (role as u16, layer)
        );
        let (rows, cols) = role.shape(c);
        assert_eq!(
            (u32_at(&b, r + R_ROWS) as usize, u32_at(&b, r + 12) as usize),
            (rows, cols)
        );
        let mut ranges = vec![(
            u64_at(&b, r + R_DATA_OFF) as usize,
            u64_at(&b, r + R_DATA_BYTES) as usize,
        )];
        if b[r + R_KIND] == 1 {
            ranges.push((
                u64_at(&b, r + R_CB_OFF) as usize,
                u64_at(&b, r + R_CB_BYTES) as usize,
            ));
        }
        for (off, len) in ranges {
            assert_eq!(off, end.div_ceil(64) * 64);
            assert!(b[end..off].iter().all(|x| *x == 0));
            end = off + len;
        }
    }
    assert_eq!(end.div_ceil(64) * 64, b.len());
}

#[test]
fn writer_is_deterministic_and_order_independent() {
    for (i, c) in configs().iter().enumerate() {
        let m = mixed(c, 40 + i as u64);
        let a = to_bytes(&m).unwrap();
        assert_eq!(a, to_bytes(&m).unwrap());
        let mut shuffled = m.clone();
        shuffled.tensors.reverse();
        shuffled.tensors.swap(0, 3);
        assert_eq!(a, to_bytes(&shuffled).unwrap());
    }
}

#[test]
fn writer_rejects_invalid_models() {
    let c = &configs()[1];
    let good = mixed(c, 1);
    let err = |f: &dyn Fn(&mut PackedModel)| {
        let mut m = good.clone();
        f(&mut m);
        to_bytes(&m).unwrap_err()
    };
    let pos = |m: &PackedModel, role: Role, layer: usize| {
        m.tensors
            .iter()
            .position(|t| t.role == role && t.layer == layer)
            .unwrap()
    };
    assert!(matches!(
        err(&|m| m.config.embed_dim = 0),
        WriteError::Config(ConfigError::DimOutOfRange)
    ));
    assert!(matches!(
        err(&|m| m.preprocess.crop += 1),
        WriteError::Preprocess(_)
    ));
    let e = err(&|m| {
        let i = pos(m, Role::XProj, 1);
        m.tensors.remove(i);
    });
    assert_eq!(
        e.to_string(),
        "tensor layers.1.mixer.x_proj.weight: missing"
    );
    let e = err(&|m| {
        let t = m.tensors[3].clone();
        m.tensors.push(t);
    });
    assert!(matches!(e, WriteError::Duplicate(_)), "{e}");
    assert!(matches!(
        err(&|m| m.tensors[9].layer = 2),
        WriteError::Unexpected { .. }
    ));
    let e = err(&|m| {
        let i = pos(m, Role::XProj, 1);
        m.tensors[i].rows -= 1;
    });
    assert_eq!(
        e.to_string(),
        "tensor layers.1.mixer.x_proj.weight: shape (7, 20) expected (8, 20)"
    );
    let e = err(&|m| {
        let i = pos(m, Role::Norm, 0);
        m.tensors[i].data = TensorData::Vq {
            codebook: vec![0.0; 4],
            k: 4,
            d: 1,
            indices: vec![0; 12],
            codebook_f16: false,
        };
    });
    assert!(matches!(e, WriteError::VqNotAllowed(_)), "{e}");
    let vq_at = |m: &PackedModel| {
        m.tensors
            .iter()
            .position(|t| matches!(t.data, TensorData::Vq { k, .. } if k <= 256))
            .unwrap()
    };
    let e = err(&|m| {
        let i = vq_at(m);
        if let TensorData::Vq { indices, k, .. } = &mut m.tensors[i].data {
            indices[2] = *k as u32;
        }
    });
    assert!(
        matches!(e, WriteError::IndexOutOfRange { position: 2, .. }),
        "{e}"
    );
    for (k, d) in [(0, 2), (65537, 1), (4, 0), (4, 17)] {
        let e = err(&|m| {
            let i = vq_at(m);
            let (rows, cols) = (m.tensors[i].rows, m.tensors[i].cols);
            m.tensors[i].data = TensorData::Vq {
                codebook: vec![0.0; k * d],
                k,
                d,
                indices: vec![0; rows * cols.div_ceil(d.max(1))],
                codebook_f16: false,
            };
        });
        assert!(matches!(e, WriteError::VqParams { .. }), "k={k} d={d}: {e}");
    }
    let e = err(&|m| {
        let i = vq_at(m);
        if let TensorData::Vq { indices, .. } = &mut m.tensors[i].data {
            indices.pop();
        }
    });
    assert!(
        matches!(
            e,
            WriteError::Length {
                what: "indices",
                ..
            }
        ),
        "{e}"
    );
    let e = err(&|m| {
        let i = pos(m, Role::HeadBias, 0);
        m.tensors[i].data = TensorData::F32(vec![0.0; 3]);
    });
    assert!(
        matches!(e, WriteError::Length { what: "values", .. }),
        "{e}"
    );
    assert!(matches!(
        err(&|m| {
            m.labels.pop();
        }),
        WriteError::LabelCount { .. }
    ));
    assert!(matches!(
        err(&|m| m.labels[2] = "a\nb".into()),
        WriteError::LabelNewline(2)
    ));
    // No labels at all is fine.
    let mut m = good.clone();
    m.labels.clear();
    let b = aligned(&to_bytes(&m).unwrap());
    assert_eq!(Model::parse(&b).unwrap().labels().count(), 0);
}

// ------------------------------------------------------------------------------ atomic write

// --------------------------------------------------------------------------------- hostile

fn sample() -> Vec<u8> {
    to_bytes(&mixed(&configs()[2], 77)).unwrap()
}

#[test]
fn truncation_anywhere_is_reported() {
    let b = sample();
    let count = u32_at(&b, H_COUNT) as usize;
    let labels_off = u32_at(&b, H_LABELS_OFF) as usize;
    let labels_end = labels_off + u32_at(&b, H_LABELS_LEN) as usize;
    let mut cuts = vec![
        0,
        1,
        7,
        8,
        63,
        64,
        65,
        191,
        192,
        193,
        labels_off,
        labels_end,
        u32_at(&b, H_DATA_OFF) as usize,
        b.len() - 1,
    ];
    for i in 0..count {
        cuts.push(rec(i));
        cuts.push(u64_at(&b, rec(i) + R_DATA_OFF) as usize);
        cuts.push(u64_at(&b, rec(i) + R_DATA_OFF) as usize + 1);
    }
    let mut rng = Rng(9);
    cuts.extend((0..200).map(|_| rng.below(b.len())));
    for cut in cuts {
        match parse(&b[..cut]) {
            Err(FormatError::Truncated { needed, actual }) => {
                assert_eq!(actual, cut as u64);
                assert!(needed > actual);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert!(parse(&b).is_ok());
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut b = sample();
    b.extend([0u8; 64]);
    assert!(matches!(parse(&b), Err(FormatError::TrailingBytes { .. })));
}

#[test]
fn bad_magic_and_text_mode_mangling() {
    let mut b = sample();
    b[0] = b'X';
    assert!(matches!(parse(&b), Err(FormatError::BadMagic { .. })));
    // CR LF → LF, as a text-mode transfer would do.
    let b = sample();
    let mut mangled = b[..5].to_vec();
    mangled.push(b'\n');
    mangled.extend_from_slice(&b[7..]);
    assert!(matches!(parse(&mangled), Err(FormatError::BadMagic { .. })));
}

#[test]
fn versions_and_feature_bits() {
    let b = sample();
    let mut x = b.clone();
    x[H_MAJOR] = 2;
    assert_eq!(
        parse(&x),
        Err(FormatError::UnsupportedVersion { major: 2, minor: 0 })
    );
    x[H_MAJOR] = 0;
    assert!(matches!(
        parse(&x),
        Err(FormatError::UnsupportedVersion { .. })
    ));
    // Newer minor: accepted, and its reserved bytes are not ours to judge.
    let mut x = b.clone();
    x[H_MINOR] = 3;
    x[CONFIG + 100] = 0xEE;
    x[rec(4) + 60] = 0xEE;
    fix_crcs(&mut x);
    let a = aligned(&x);
    assert_eq!(Model::parse(&a).unwrap().version(), (1, 3));
    // Same bytes at minor 0: reserved must be zero.
    x[H_MINOR] = 0;
    fix_crcs(&mut x);
    assert_eq!(
        parse(&x),
        Err(FormatError::Reserved {
            section: "config record"
        })
    );
    x[CONFIG + 100] = 0;
    fix_crcs(&mut x);
    assert_eq!(tensor_err(parse(&x)), TensorProblem::Reserved);
    // Unknown required bit → reject; unknown optional bit → fine.
    let mut x = b.clone();
    put_u32(&mut x, H_REQUIRED, 1 | 1 << 7);
    fix_crcs(&mut x);
    assert_eq!(
        parse(&x),
        Err(FormatError::UnknownRequiredFeatures { bits: 1 << 7 })
    );
    let mut x = b.clone();
    put_u32(&mut x, H_OPTIONAL, 0xFFFF_FFFF);
    fix_crcs(&mut x);
    assert!(parse(&x).is_ok());
    // VQ tensors without the VQ bit.
    let mut x = b.clone();
    put_u32(&mut x, H_REQUIRED, 0);
    fix_crcs(&mut x);
    assert_eq!(parse(&x), Err(FormatError::UndeclaredFeature { bit: 1 }));
}

#[test]
fn checksums_are_checked() {
    let b = sample();
    // A metadata byte (a label).
    let mut x = b.clone();
    x[u32_at(&b, H_LABELS_OFF) as usize] ^= 0x01;
    assert!(matches!(parse(&x), Err(FormatError::MetaChecksum { .. })));
    // A data byte inside a dense tensor.
    let mut x = b.clone();
    let off = u64_at(&b, rec(0) + R_DATA_OFF) as usize;
    x[off + 5] ^= 0x40;
    assert!(matches!(parse(&x), Err(FormatError::DataChecksum { .. })));
    let a = aligned(&x);
    assert!(Model::parse_with(
        &a,
        ParseOptions {
            verify_data_checksum: false
        }
    )
    .is_ok());
    // Every single-bit flip of the metadata is caught (by a structural check or the CRC).
    let labels_end = (u32_at(&b, H_LABELS_OFF) + u32_at(&b, H_LABELS_LEN)) as usize;
    for byte in 0..labels_end {
        let mut x = b.clone();
        x[byte] ^= 1 << (byte % 8);
        assert!(parse(&x).is_err(), "flip at {byte} accepted");
    }
}

#[test]
fn table_and_range_corruptions_give_specific_errors() {
    let b = sample();
    let c = &configs()[2];
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut x = b.clone();
        f(&mut x);
        fix_crcs(&mut x);
        parse(&x)
    };
    // Shape mismatch, with the documented one-line message.
    let xp = 7 + 4; // layers.0.mixer.x_proj.weight
    let e = edit(&|x| put_u32(x, rec(xp) + R_ROWS, 40)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "tensor layers.0.mixer.x_proj.weight: shape (40, {}) expected ({}, {})",
            c.d_inner,
            c.x_proj_rows(),
            c.d_inner
        )
    );
    // Records out of canonical order.
    let e = edit(&|x| {
        let (a, b2) = (rec(7), rec(8));
        let tmp = x[a..a + 64].to_vec();
        x.copy_within(b2..b2 + 64, a);
        x[b2..b2 + 64].copy_from_slice(&tmp);
    });
    assert_eq!(
        tensor_err(e),
        TensorProblem::WrongTensor {
            role: Role::InProj as u16,
            layer: 0
        }
    );
    assert_eq!(
        tensor_err(edit(&|x| x[rec(30) + R_LAYER] = 9)),
        TensorProblem::WrongTensor {
            role: u16_at(&b, rec(30)),
            layer: 9
        }
    );
    assert!(matches!(
        tensor_err(edit(&|x| x[rec(0) + R_ROLE] = 99)),
        TensorProblem::WrongTensor { role: 99, .. }
    ));
    // Kinds.
    assert_eq!(
        tensor_err(edit(&|x| x[rec(1) + R_KIND] = 7)),
        TensorProblem::Kind(7)
    );
    assert_eq!(
        tensor_err(edit(&|x| x[rec(1) + R_KIND] = 1)),
        TensorProblem::VqNotAllowed
    ); // patch bias
    assert_eq!(
        tensor_err(edit(&|x| put_u32(x, rec(1) + R_K, 3))),
        TensorProblem::DenseField("k")
    );
    let v = first_vq(&b);
    assert_eq!(
        tensor_err(edit(&|x| x[rec(v) + R_DTYPE] = 9)),
        TensorProblem::CodebookDtype(9)
    );
    assert_eq!(
        tensor_err(edit(&|x| x[rec(v) + 7] = 2)),
        TensorProblem::IndexLayout(2)
    );
    assert!(matches!(
        tensor_err(edit(&|x| put_u32(x, rec(v) + R_K, 0))),
        TensorProblem::VqParams { k: 0, .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u32(x, rec(v) + R_K, 65537))),
        TensorProblem::VqParams { .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u32(x, rec(v) + R_D, 17))),
        TensorProblem::VqParams { d: 17, .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| x[rec(v) + R_BITS] = 12)),
        TensorProblem::IndexBits { bits: 12, .. }
    ));
    let v8 = (0..u32_at(&b, H_COUNT) as usize)
        .find(|i| b[rec(*i) + R_KIND] == 1 && b[rec(*i) + R_BITS] == 8)
        .unwrap();
    assert!(matches!(
        tensor_err(edit(&|x| put_u32(x, rec(v8) + R_K, 300))),
        TensorProblem::IndexBits { bits: 8, k: 300 }
    ));
    // Range sizes and placement.
    let t = 3; // pos_embed, dense, not the last range
    let off = u64_at(&b, rec(t) + R_DATA_OFF);
    let prev_off = u64_at(&b, rec(t - 1) + R_DATA_OFF);
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_BYTES, 4))),
        TensorProblem::RangeSize {
            range: RangeKind::Data,
            bytes: 4,
            ..
        }
    ));
    assert_eq!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_OFF, off + 4))),
        TensorProblem::Misaligned {
            range: RangeKind::Data,
            offset: off + 4
        }
    );
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_OFF, prev_off))),
        TensorProblem::Overlap { .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_OFF, off + 64))),
        TensorProblem::Gap { .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_OFF, b.len() as u64))),
        TensorProblem::OutOfBounds { .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_OFF, u64::MAX - 63))),
        TensorProblem::OutOfBounds { .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(t) + R_DATA_OFF, 0))),
        TensorProblem::OutOfBounds { .. }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(
            x,
            rec(v) + R_CB_OFF,
            u64_at(&b, rec(v) + R_CB_OFF) + 64
        ))),
        TensorProblem::Gap {
            range: RangeKind::Codebook,
            ..
        } | TensorProblem::OutOfBounds {
            range: RangeKind::Codebook,
            ..
        }
    ));
    assert!(matches!(
        tensor_err(edit(&|x| put_u64(x, rec(v) + R_CB_BYTES, 8))),
        TensorProblem::RangeSize {
            range: RangeKind::Codebook,
            ..
        }
    ));
    // Index ≥ k, found by the index scan.
    let idx_off = u64_at(&b, rec(v8) + R_DATA_OFF) as usize;
    let k = u32_at(&b, rec(v8) + R_K);
    assert_eq!(
        tensor_err(edit(&|x| x[idx_off + 3] = k as u8)),
        TensorProblem::IndexOutOfRange {
            position: 3,
            index: k,
            k
        }
    );
    let v16 = (0..u32_at(&b, H_COUNT) as usize)
        .find(|i| b[rec(*i) + R_KIND] == 1 && b[rec(*i) + R_BITS] == 16)
        .unwrap();
    let idx_off = u64_at(&b, rec(v16) + R_DATA_OFF) as usize;
    let k16 = u32_at(&b, rec(v16) + R_K);
    assert_eq!(
        tensor_err(edit(
            &|x| x[idx_off + 10..idx_off + 12].copy_from_slice(&(k16 as u16).to_le_bytes())
        )),
        TensorProblem::IndexOutOfRange {
            position: 5,
            index: k16,
            k: k16
        }
    );
    // Non-zero padding between two ranges and between labels and data.
    let end0 = (u64_at(&b, rec(0) + R_DATA_OFF) + u64_at(&b, rec(0) + R_DATA_BYTES)) as usize;
    if !end0.is_multiple_of(64) {
        assert_eq!(
            tensor_err(edit(&|x| x[end0] = 1)),
            TensorProblem::Padding {
                offset: end0 as u64
            }
        );
    }
    let labels_end = (u32_at(&b, H_LABELS_OFF) + u32_at(&b, H_LABELS_LEN)) as usize;
    assert_ne!(labels_end % 64, 0, "sample should have label padding");
    assert_eq!(
        edit(&|x| x[labels_end] = 1),
        Err(FormatError::NonZeroPadding {
            offset: labels_end as u64
        })
    );
    // Trailing padding after the last range.
    let last = u32_at(&b, H_COUNT) as usize - 1;
    let (lo, lb) = if b[rec(last) + R_KIND] == 1 {
        (R_CB_OFF, R_CB_BYTES)
    } else {
        (R_DATA_OFF, R_DATA_BYTES)
    };
    let end = (u64_at(&b, rec(last) + lo) + u64_at(&b, rec(last) + lb)) as usize;
    if end < b.len() {
        assert_eq!(
            edit(&|x| x[end] = 1),
            Err(FormatError::NonZeroPadding { offset: end as u64 })
        );
    }
}

#[test]
fn header_and_config_corruptions_give_specific_errors() {
    let b = sample();
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut x = b.clone();
        f(&mut x);
        fix_crcs(&mut x);
        parse(&x)
    };
    assert!(matches!(
        edit(&|x| x[12] = 65),
        Err(FormatError::Layout {
            field: "config_offset",
            ..
        })
    ));
    assert!(matches!(
        edit(&|x| x[14] = 0),
        Err(FormatError::Layout {
            field: "table_offset",
            ..
        })
    ));
    assert!(matches!(
        edit(&|x| put_u32(x, H_LABELS_OFF, 0)),
        Err(FormatError::Layout {
            field: "labels_offset",
            ..
        })
    ));
    assert!(matches!(
        edit(&|x| put_u32(x, H_DATA_OFF, u32_at(&b, H_DATA_OFF) + 64)),
        Err(FormatError::Layout {
            field: "data_offset",
            ..
        })
    ));
    assert!(matches!(
        edit(&|x| put_u64(x, H_DATA_BYTES, u64_at(&b, H_DATA_BYTES) + 1)),
        Err(FormatError::Layout {
            field: "data_bytes",
            ..
        })
    ));
    assert!(matches!(
        edit(&|x| put_u64(x, H_FILE_BYTES, 12)),
        Err(FormatError::Layout {
            field: "file_bytes",
            ..
        })
    ));
    // Tensor count vs depth: a larger count moves the labels, so also give the file the extra
    // table bytes; the stored depth then disagrees.
    let e = edit(&|x| put_u32(x, CONFIG + 4, 4));
    assert_eq!(
        e,
        Err(FormatError::TensorCount {
            found: 58,
            expected: 75
        })
    );
    // Huge declared sizes: errors, no allocation, no panic.
    assert!(edit(&|x| put_u32(x, H_COUNT, u32::MAX)).is_err());
    assert!(edit(&|x| put_u32(x, H_LABELS_LEN, u32::MAX)).is_err());
    assert!(edit(&|x| put_u64(x, H_DATA_BYTES, u64::MAX - 63)).is_err());
    assert!(edit(&|x| put_u64(x, H_FILE_BYTES, u64::MAX)).is_err());
    // Config values.
    assert_eq!(
        edit(&|x| put_u32(x, CONFIG, 0)),
        Err(FormatError::Config(ConfigError::DimOutOfRange))
    );
    assert_eq!(
        edit(&|x| put_u32(x, CONFIG + 12, 9)),
        Err(FormatError::Config(ConfigError::BadPatchGeometry))
    );
    assert_eq!(
        edit(&|x| put_u32(x, CONFIG + 44, f32::NAN.to_bits())),
        Err(FormatError::Config(ConfigError::BadEpsilon))
    );
    assert!(matches!(
        edit(&|x| put_u32(x, CONFIG + 56, 2)),
        Err(FormatError::Preprocess(_))
    ));
    assert!(matches!(
        edit(&|x| put_u32(x, CONFIG + 52, 13)),
        Err(FormatError::Preprocess(_))
    ));
    assert!(matches!(
        edit(&|x| put_u32(x, CONFIG + 72, 0)),
        Err(FormatError::Preprocess(_))
    ));
    // Labels.
    let lo = u32_at(&b, H_LABELS_OFF) as usize;
    let nl = lo + b[lo..].iter().position(|c| *c == b'\n').unwrap();
    assert!(matches!(
        edit(&|x| x[nl] = b'x'),
        Err(FormatError::LabelCount {
            found: 9,
            expected: 10
        })
    ));
    assert_eq!(edit(&|x| x[lo] = 0xFF), Err(FormatError::LabelsNotUtf8));
}

#[test]
fn misaligned_buffers_are_rejected_cleanly() {
    let b = sample();
    let a = AlignedBytes::from_slice(&[&[0u8][..], &b].concat());
    let e = Model::parse(&a[1..]).unwrap_err();
    assert_eq!(e, FormatError::Misaligned { address_mod_64: 1 });
    assert!(e.to_string().contains("4-byte alignment"));
}

#[test]
fn random_corruption_never_panics() {
    let b = sample();
    let mut rng = Rng(1234);
    for i in 0..3000 {
        let mut x = b.clone();
        for _ in 0..1 + i % 4 {
            let at = if i % 2 == 0 {
                rng.below(TABLE + 64 * 64)
            } else {
                rng.below(x.len())
            };
            let at = at.min(x.len() - 1);
            x[at] = rng.next() as u8;
        }
        // Mostly with valid checksums, so the structural checks behind them are exercised.
        if i % 3 != 2 {
            fix_crcs(&mut x);
        }
        let a = aligned(&x);
        if let Ok(m) = Model::parse(&a) {
            // Anything accepted must be fully usable.
            let _ = m.tensors().count();
            let c = *m.config();
            let img = vec![0.5f32; c.input_len()];
            let mut logits = vec![0f32; c.num_classes];
            let mut scratch = vec![0u8; m.scratch_bytes()];
            vimvq_rt::forward::infer(&m, &img, &mut logits, &mut scratch).unwrap();
        }
    }
}

/// f16 codebooks (required bit 1): the writer emits f32 only, so convert the last tensor's
/// codebook by hand and check that parse + infer see exactly the widened values.
#[test]
fn f16_codebook_files_are_read() {
    let c = &configs()[0];
    let n = Role::table_len(c.depth);
    // Only the very last tensor (last layer's out_proj) is VQ, so its codebook is the last range.
    let m = model_with(c, 8, |i| if i == n - 1 { Some((64, 4)) } else { None });
    let mut b = to_bytes(&m).unwrap();
    let r = rec(n - 1);
    let cb_off = u64_at(&b, r + R_CB_OFF) as usize;
    let cb_len = u64_at(&b, r + R_CB_BYTES) as usize;
    let halves: Vec<u16> = b[cb_off..cb_off + cb_len]
        .chunks_exact(4)
        .map(|w| {
            // Round-toward-zero f32 → f16 of values in (-1, 1): enough for a test.
            let f = f32::from_le_bytes(w.try_into().unwrap());
            let bits = f.to_bits();
            let sign = ((bits >> 16) & 0x8000) as u16;
            let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
            if exp <= 0 {
                sign
            } else {
                sign | ((exp as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
            }
        })
        .collect();
    b.truncate(cb_off);
    for h in &halves {
        b.extend_from_slice(&h.to_le_bytes());
    }
    b.resize(b.len().div_ceil(64) * 64, 0);
    b[r + R_DTYPE] = 1;
    put_u64(&mut b, r + R_CB_BYTES, (cb_len / 2) as u64);
    let data_off = u32_at(&b, H_DATA_OFF) as u64;
    let len = b.len() as u64;
    put_u64(&mut b, H_DATA_BYTES, len - data_off);
    put_u64(&mut b, H_FILE_BYTES, len);
    put_u32(&mut b, H_REQUIRED, 1 | 4);
    fix_crcs(&mut b);
    assert_eq!(parse(&b), Err(FormatError::UndeclaredFeature { bit: 2 }));
    put_u32(&mut b, H_REQUIRED, 1 | 2 | 4);
    fix_crcs(&mut b);
    let a = aligned(&b);
    let model = Model::parse(&a).unwrap();
    let info = model.tensors().last().unwrap();
    assert_eq!(
        (info.codebook_dtype, info.k, info.d),
        (CodebookDtype::F16, 64, 4)
    );
    // Same model with the widened codebook stored as f32.
    let mut m32 = m.clone();
    if let TensorData::Vq { codebook, .. } = &mut m32.tensors.last_mut().unwrap().data {
        *codebook = halves
            .iter()
            .map(|h| vimvq_rt::kernels::f16_to_f32(*h))
            .collect();
    }
    let a32 = aligned(&to_bytes(&m32).unwrap());
    let model32 = Model::parse(&a32).unwrap();
    let img: Vec<f32> = (0..c.input_len())
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let run = |m: &Model| {
        let mut logits = vec![0f32; c.num_classes];
        let mut scratch = vec![0u8; m.scratch_bytes()];
        vimvq_rt::forward::infer(m, &img, &mut logits, &mut scratch).unwrap();
        logits
    };
    assert_eq!(run(&model), run(&model32));
    // The writer's own f16 output of the same (f16-exact) codebook is the hand-made file, byte
    // for byte; a value beyond f16's range is refused.
    let mut m16 = m32.clone();
    if let TensorData::Vq { codebook_f16, .. } = &mut m16.tensors.last_mut().unwrap().data {
        *codebook_f16 = true;
    }
    assert_eq!(to_bytes(&m16).unwrap(), b);
    if let TensorData::Vq { codebook, .. } = &mut m16.tensors.last_mut().unwrap().data {
        codebook[5] = 1e6;
    }
    assert!(matches!(
        to_bytes(&m16),
        Err(WriteError::F16Range { position: 5, .. })
    ));
}
