//! Property tests of the format: random valid models written by `format::to_bytes` read back
//! equal (every value, index, label and setting), and the reader returns `Ok` or `Err` — never
//! panics — on mutated files, with the checksums recomputed so mutations reach every check.

mod common;

use common::Rng;
use proptest::prelude::*;
use vimvq_rt::format::{
    crc32, meta_crc32, to_bytes, AlignedBytes, FileHeader, IndexLayout, PackedModel, PackedTensor,
    Role, TensorData, CONFIG_OFFSET,
};
use vimvq_rt::kernels::{f16_to_f32, Codebook, Indices};
use vimvq_rt::model::{Model, Weight};
use vimvq_rt::{Interpolation, Preprocess, VimConfig};

/// How one linear weight is stored.
#[derive(Clone, Copy, Debug)]
enum Storage {
    Dense,
    Vq { k: usize, d: usize, f16: bool },
}

fn storage() -> impl Strategy<Value = Storage> {
    prop_oneof![
        Just(Storage::Dense),
        (1usize..=300, 1usize..=16, any::<bool>()).prop_map(|(k, d, f16)| Storage::Vq {
            k,
            d,
            f16
        }),
        // Wide indices (u16).
        (257usize..=65536, 1usize..=4).prop_map(|(k, d)| Storage::Vq { k, d, f16: false }),
    ]
}

fn config() -> impl Strategy<Value = VimConfig> {
    (
        (1usize..=12, 1usize..=2, 1usize..=4, 0usize..=4, 1usize..=3),
        (1usize..=5, 1usize..=4, 1usize..=3, 1usize..=4, 1usize..=16),
    )
        .prop_flat_map(|((embed_dim, depth, patch, extra, channels), rest)| {
            (1..=patch).prop_map(move |stride| VimConfig {
                embed_dim,
                depth,
                patch,
                stride,
                img_size: patch + extra,
                channels,
                num_classes: rest.0,
                d_state: rest.1,
                dt_rank: rest.2,
                d_conv: rest.3,
                d_inner: rest.4,
                norm_eps: 1e-5,
            })
        })
}

/// A random valid model: every tensor of the schema; linear weights stored as `storages` says
/// (cycled); dense values are arbitrary f32 bit patterns (NaN and infinities included); f16
/// codebooks hold values f16 represents exactly.
fn build(
    c: VimConfig,
    storages: &[Storage],
    seed: u64,
    labels: bool,
    bilinear: bool,
    resize_extra: u32,
) -> PackedModel {
    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    let mut linear = 0;
    for i in 0..Role::table_len(c.depth) {
        let (role, layer) = Role::table_entry(i);
        let (rows, cols) = role.shape(&c);
        let s = if role.is_linear() {
            linear += 1;
            storages[(linear - 1) % storages.len()]
        } else {
            Storage::Dense
        };
        let data = match s {
            Storage::Dense => TensorData::F32(
                (0..rows * cols)
                    .map(|_| f32::from_bits(rng.next_u64() as u32))
                    .collect(),
            ),
            Storage::Vq { k, d, f16 } => {
                let codebook = (0..k * d)
                    .map(|_| {
                        if f16 {
                            (rng.below(4001) as f32 - 2000.0) / 64.0
                        } else {
                            f32::from_bits(rng.next_u64() as u32)
                        }
                    })
                    .collect();
                let indices = (0..rows * cols.div_ceil(d))
                    .map(|_| rng.below(k) as u32)
                    .collect();
                TensorData::Vq {
                    codebook,
                    k,
                    d,
                    indices,
                    codebook_f16: f16,
                }
            }
        };
        tensors.push(PackedTensor {
            role,
            layer,
            rows,
            cols,
            data,
        });
    }
    // Reverse: the writer orders tensors itself.
    tensors.reverse();
    let mut preprocess = Preprocess::imagenet(c.img_size as u32);
    preprocess.resize = c.img_size as u32 + resize_extra;
    if bilinear {
        preprocess.interpolation = Interpolation::Bilinear;
    }
    PackedModel {
        config: c,
        preprocess,
        labels: if labels {
            (0..c.num_classes).map(|i| format!("class {i} ✓")).collect()
        } else {
            Vec::new()
        },
        tensors,
    }
}

/// Asserts that `m` holds exactly what `packed` describes.
fn assert_reads_back(m: &Model<'_>, packed: &PackedModel) {
    assert_eq!(*m.config(), packed.config);
    assert_eq!(*m.preprocess(), packed.preprocess);
    assert_eq!(m.labels().collect::<Vec<_>>(), packed.labels);
    assert_eq!(m.tensors().len(), packed.tensors.len());
    for t in &packed.tensors {
        let w = m.weight(t.role, t.layer).expect("tensor present");
        match (&t.data, w) {
            (TensorData::F32(v), Weight::Dense(r)) => {
                assert_eq!(r.len(), v.len());
                assert!(r.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            (
                TensorData::Vq {
                    codebook,
                    k,
                    d,
                    indices,
                    codebook_f16,
                },
                Weight::Vq(q),
            ) => {
                assert_eq!((q.rows, q.cols, q.k, q.d), (t.rows, t.cols, *k, *d));
                assert_eq!(q.layout, IndexLayout::Rows16);
                match (q.codebook, codebook_f16) {
                    (Codebook::F32(cb), false) => {
                        assert!(cb
                            .iter()
                            .zip(codebook)
                            .all(|(a, b)| a.to_bits() == b.to_bits()));
                        assert_eq!(cb.len(), codebook.len());
                    }
                    (Codebook::F16(cb), true) => {
                        assert_eq!(cb.len(), codebook.len());
                        assert!(cb.iter().zip(codebook).all(|(h, v)| f16_to_f32(*h) == *v));
                    }
                    (cb, f16) => panic!("codebook {cb:?} for codebook_f16 = {f16}"),
                }
                match q.indices {
                    Indices::U8(_) => assert!(*k <= 256),
                    Indices::U16(_) => assert!(*k > 256),
                }
                let g = q.groups_per_row();
                for (at, i) in indices.iter().enumerate() {
                    assert_eq!(q.index(at / g, at % g), *i as usize, "index #{at}");
                }
            }
            (data, w) => panic!("{:?}: wrote {data:?}, read {w:?}", t.role),
        }
    }
}

/// Recomputes both CRCs of a (possibly mutated) file where its header fields allow it.
fn fix_checksums(bytes: &mut [u8]) {
    if bytes.len() < FileHeader::SIZE {
        return;
    }
    let h = FileHeader::decode(bytes[..FileHeader::SIZE].try_into().unwrap());
    let data = h.data_offset as usize;
    if data <= bytes.len() {
        let c = crc32(&bytes[data..]);
        bytes[FileHeader::DATA_CRC_OFFSET..FileHeader::DATA_CRC_OFFSET + 4]
            .copy_from_slice(&c.to_le_bytes());
    }
    let labels_end = u64::from(h.labels_offset) + u64::from(h.labels_len);
    if (CONFIG_OFFSET as u64..=bytes.len() as u64).contains(&labels_end) {
        let hb: [u8; FileHeader::SIZE] = bytes[..FileHeader::SIZE].try_into().unwrap();
        let c = meta_crc32(&hb, &bytes[CONFIG_OFFSET..labels_end as usize]);
        bytes[FileHeader::META_CRC_OFFSET..FileHeader::META_CRC_OFFSET + 4]
            .copy_from_slice(&c.to_le_bytes());
    }
}

fn model_inputs() -> impl Strategy<Value = (VimConfig, Vec<Storage>, u64, bool, bool, u32)> {
    (
        config(),
        prop::collection::vec(storage(), 1..6),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        0u32..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn written_models_read_back_equal(
        (c, storages, seed, labels, bilinear, resize_extra) in model_inputs()
    ) {
        let packed = build(c, &storages, seed, labels, bilinear, resize_extra);
        let bytes = to_bytes(&packed).unwrap();
        prop_assert_eq!(&bytes, &to_bytes(&packed).unwrap(), "writer not deterministic");
        let file = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(&file).unwrap();
        assert_reads_back(&m, &packed);
    }

    #[test]
    fn reader_never_panics_on_mutated_files(
        (c, storages, seed, labels, bilinear, resize_extra) in model_inputs(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        header_edits in prop::collection::vec((0usize..FileHeader::SIZE + 128, any::<u8>()), 0..3),
        cut in prop::option::weighted(0.1, any::<prop::sample::Index>()),
        fix in any::<bool>(),
    ) {
        let packed = build(c, &storages, seed, labels, bilinear, resize_extra);
        let mut bytes = to_bytes(&packed).unwrap();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        // The header and config record decide the layout: hit them more often.
        for (at, v) in header_edits {
            bytes[at] = v;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if fix {
            fix_checksums(&mut bytes);
        }
        let file = AlignedBytes::from_slice(&bytes);
        if let Ok(m) = Model::parse(&file) {
            // An accepted file is fully usable: every tensor of its schema can be read.
            let c = *m.config();
            for i in 0..Role::table_len(c.depth) {
                let (role, layer) = Role::table_entry(i);
                let w = m.weight(role, layer);
                prop_assert!(w.is_some(), "{:?} {} missing", role, layer);
                if let Some(Weight::Vq(q)) = w {
                    let g = q.groups_per_row();
                    for r in 0..q.rows {
                        for j in 0..g {
                            prop_assert!(q.index(r, j) < q.k);
                        }
                    }
                }
            }
            prop_assert_eq!(m.tensors().count(), Role::table_len(c.depth));
            prop_assert_eq!(m.labels().count(), if m.labels().next().is_some() { c.num_classes } else { 0 });
        }
    }
}
