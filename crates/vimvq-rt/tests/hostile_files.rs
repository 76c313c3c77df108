//! Hostile `.vimvq` files: thousands of mutations of the real fixtures (see `fixtures/mod.rs`),
//! each of which must give a `FormatError`, or, when the mutation leaves a valid file, a model
//! on which `infer` runs to completion. Never a panic, an out-of-bounds read or an allocation
//! sized by the file (`Model::parse` does not allocate at all: `tests/zero_alloc.rs`).
//!
//! Mutations: truncation at every section and range boundary (±1) and at random points; random
//! bit flips with the checksums left stale and with them recomputed (so the structural checks
//! behind the CRCs are reached); every header, config and tensor-record field set to edge
//! values (0, 1, ±1, ±64, `MAX`, huge); overlapping, misaligned and out-of-range ranges; VQ
//! indices ≥ k; labels that are not UTF-8; unknown majors and required-feature bits. Each file
//! is parsed with and without the data checksum. Files that crashed the fuzz target are kept
//! under `fuzz/regressions/` and replayed here.

mod fixtures;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use vimvq_rt::format::{crc32, meta_crc32, AlignedBytes, FileHeader, FormatError};
use vimvq_rt::forward::infer;
use vimvq_rt::model::{Model, ParseOptions};

// docs/FORMAT.md offsets.
const H_MAJOR: usize = 8;
const H_MINOR: usize = 10;
const H_REQUIRED: usize = 16;
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
const REC: usize = 64;
/// Record fields: (offset, width).
const REC_FIELDS: [(usize, usize); 14] = [
    (0, 2),
    (2, 2),
    (4, 1),
    (5, 1),
    (6, 1),
    (7, 1),
    (8, 4),
    (12, 4),
    (16, 4),
    (20, 4),
    (24, 8),
    (32, 8),
    (40, 8),
    (48, 8),
];
/// Header fields after the magic: (offset, width).
const HEADER_FIELDS: [(usize, usize); 14] = [
    (8, 2),
    (10, 2),
    (12, 2),
    (14, 2),
    (16, 4),
    (20, 4),
    (24, 4),
    (28, 4),
    (32, 4),
    (36, 4),
    (40, 4),
    (44, 4),
    (48, 8),
    (56, 8),
];

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
}

fn get(b: &[u8], o: usize, w: usize) -> u64 {
    let mut a = [0u8; 8];
    a[..w].copy_from_slice(&b[o..o + w]);
    u64::from_le_bytes(a)
}
fn put(b: &mut [u8], o: usize, w: usize, v: u64) {
    b[o..o + w].copy_from_slice(&v.to_le_bytes()[..w]);
}

/// Recomputes both CRCs the way a careful attacker would (using the possibly edited header's
/// layout where it lies inside the file).
fn fix_crcs(b: &mut [u8]) {
    if b.len() < FileHeader::SIZE {
        return;
    }
    let data_off = get(b, H_DATA_OFF, 4) as usize;
    if data_off <= b.len() {
        let c = crc32(&b[data_off..]);
        put(b, H_DATA_CRC, 4, u64::from(c));
    }
    let labels_end = (get(b, H_LABELS_OFF, 4) + get(b, H_LABELS_LEN, 4)) as usize;
    if (CONFIG..=b.len()).contains(&labels_end) {
        let hb: [u8; 64] = b[..64].try_into().unwrap();
        let c = meta_crc32(&hb, &b[CONFIG..labels_end]);
        put(b, H_META_CRC, 4, u64::from(c));
    }
}

/// What a mutated file did.
#[derive(Default, Debug)]
struct Tally {
    files: usize,
    rejected: usize,
    accepted: usize,
    finite: usize,
    panics: Vec<String>,
}

/// Parses `bytes` (64-byte aligned copy) with and without the data checksum; runs `infer` on
/// whatever is accepted. Returns `Err(description)` on a panic.
fn exercise(bytes: &[u8]) -> Result<(bool, bool), String> {
    let a = AlignedBytes::from_slice(bytes);
    catch_unwind(AssertUnwindSafe(|| {
        let mut accepted = false;
        let mut finite = true;
        for verify in [true, false] {
            let opts = ParseOptions {
                verify_data_checksum: verify,
            };
            let Ok(m) = Model::parse_with(&a, opts) else {
                continue;
            };
            accepted = true;
            let _ = m.tensors().count();
            let _ = m.labels().count();
            let c = *m.config();
            let input = fixtures::input(c.input_len(), 3);
            let mut logits = vec![0f32; c.num_classes];
            let mut scratch = vec![0u8; m.scratch_bytes()];
            infer(&m, &input, &mut logits, &mut scratch).expect("infer on an accepted model");
            finite &= logits.iter().all(|v| v.is_finite());
        }
        (accepted, finite)
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

impl Tally {
    fn run(&mut self, what: &str, bytes: &[u8], must_reject: bool) {
        self.files += 1;
        match exercise(bytes) {
            Err(msg) => self.panics.push(format!("{what}: panic: {msg}")),
            Ok((true, finite)) => {
                if must_reject {
                    self.panics
                        .push(format!("{what}: accepted but must be rejected"));
                }
                self.accepted += 1;
                self.finite += usize::from(finite);
            }
            Ok((false, _)) => self.rejected += 1,
        }
    }
}

/// Section and range boundaries of a valid file.
fn boundaries(b: &[u8]) -> Vec<usize> {
    let mut v = vec![0, 8, FileHeader::SIZE, TABLE];
    let count = get(b, H_COUNT, 4) as usize;
    let labels_off = get(b, H_LABELS_OFF, 4) as usize;
    v.push(labels_off);
    v.push(labels_off + get(b, H_LABELS_LEN, 4) as usize);
    v.push(get(b, H_DATA_OFF, 4) as usize);
    for i in 0..count {
        let r = TABLE + REC * i;
        v.push(r);
        for (off, len) in [(24, 32), (40, 48)] {
            let o = get(b, r + off, 8) as usize;
            let l = get(b, r + len, 8) as usize;
            if l > 0 {
                v.push(o);
                v.push(o + l);
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// A variant of `vq8` whose last tensor (layers.1.out_proj, the last data range) has an f16
/// codebook, as the writer cannot emit one.
fn with_f16_codebook(vq: &[u8]) -> Vec<u8> {
    let mut b = vq.to_vec();
    let count = get(&b, H_COUNT, 4) as usize;
    let r = TABLE + REC * (count - 1);
    assert_eq!(b[r + 4], 1, "last tensor is VQ");
    let (cb_off, cb_len) = (get(&b, r + 40, 8) as usize, get(&b, r + 48, 8) as usize);
    let halves: Vec<u8> = b[cb_off..cb_off + cb_len]
        .chunks_exact(4)
        .flat_map(|w| {
            let bits = f32::from_le_bytes(w.try_into().unwrap()).to_bits();
            let sign = ((bits >> 16) & 0x8000) as u16;
            let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
            let h = if exp <= 0 {
                sign
            } else if exp >= 31 {
                sign | 0x7bff
            } else {
                sign | ((exp as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
            };
            h.to_le_bytes()
        })
        .collect();
    b.truncate(cb_off);
    b.extend_from_slice(&halves);
    b.resize(b.len().div_ceil(64) * 64, 0);
    b[r + 5] = 1;
    put(&mut b, r + 48, 8, (cb_len / 2) as u64);
    let data_off = get(&b, H_DATA_OFF, 4);
    let len = b.len() as u64;
    put(&mut b, H_DATA_BYTES, 8, len - data_off);
    put(&mut b, H_FILE_BYTES, 8, len);
    let required = get(&b, H_REQUIRED, 4);
    put(&mut b, H_REQUIRED, 4, required | 2);
    fix_crcs(&mut b);
    b
}

fn bases() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fixtures::fixtures()
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    let f16 = with_f16_codebook(&v[1].1);
    v.push(("tiny_vq8_f16cb".into(), f16));
    for (name, b) in &v {
        let a = AlignedBytes::from_slice(b);
        Model::parse(&a).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    v
}

fn edge_values(orig: u64, w: usize) -> Vec<u64> {
    let max = if w == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * w)) - 1
    };
    let mut v = vec![
        0,
        1,
        2,
        3,
        64,
        max,
        max - 1,
        max / 2 + 1,
        1 << 16,
        (1 << 16) + 1,
        orig.wrapping_add(1) & max,
        orig.wrapping_sub(1) & max,
        orig.wrapping_add(64) & max,
        orig.wrapping_sub(64) & max,
        orig.wrapping_mul(2) & max,
        orig ^ (max & 0x8000_0000_0000_0000u64 >> (64 - 8 * w)),
    ];
    if w >= 4 {
        v.extend([1 << 31, (1 << 32) - 64, 1 << 24]);
    }
    for x in &mut v {
        *x &= max;
    }
    v.sort_unstable();
    v.dedup();
    v.retain(|x| *x != orig);
    v
}

#[test]
fn fixtures_are_valid_and_run() {
    for (name, b) in bases() {
        let a = AlignedBytes::from_slice(&b);
        let m = Model::parse(&a).unwrap();
        let c = *m.config();
        let mut logits = vec![0f32; c.num_classes];
        let mut scratch = vec![0u8; m.scratch_bytes()];
        infer(
            &m,
            &fixtures::input(c.input_len(), 1),
            &mut logits,
            &mut scratch,
        )
        .unwrap();
        assert!(logits.iter().all(|v| v.is_finite()), "{name}: {logits:?}");
    }
}

#[test]
fn truncations_are_rejected() {
    let mut t = Tally::default();
    let mut rng = Rng(7);
    for (name, b) in bases() {
        let mut cuts: Vec<usize> = boundaries(&b)
            .into_iter()
            .flat_map(|x| [x.saturating_sub(1), x, x + 1])
            .filter(|x| *x < b.len())
            .collect();
        cuts.extend((0..120).map(|_| rng.below(b.len())));
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            t.run(&format!("{name} truncated to {cut}"), &b[..cut], true);
        }
        // Appending is as bad as truncating.
        let mut longer = b.clone();
        longer.extend_from_slice(&[0; 64]);
        t.run(&format!("{name} + 64 bytes"), &longer, true);
    }
    eprintln!("{t:?}");
    assert!(t.panics.is_empty(), "{:#?}", t.panics);
    assert!(t.files >= 300, "{} files", t.files);
}

#[test]
fn random_bit_flips_never_panic() {
    let mut t = Tally::default();
    let mut rng = Rng(99);
    for (name, b) in bases() {
        for i in 0..400 {
            let mut x = b.clone();
            let flips = 1 + i % 4;
            for _ in 0..flips {
                // Half the flips aim at the metadata (header, config, table, labels).
                let span = if i % 2 == 0 {
                    get(&b, H_DATA_OFF, 4) as usize
                } else {
                    b.len()
                };
                let at = rng.below(span);
                x[at] ^= 1 << rng.below(8);
            }
            let fixed = i % 3 != 0;
            if fixed {
                fix_crcs(&mut x);
            }
            // Stale CRCs: a flip before the data section is always caught (meta CRC or zero
            // padding); one inside it only by the data CRC, which `exercise` also skips.
            let data_off = get(&b, H_DATA_OFF, 4) as usize;
            let stale_meta = !fixed && x[..data_off] != b[..data_off];
            t.run(&format!("{name} flip #{i} fixed={fixed}"), &x, stale_meta);
        }
    }
    eprintln!("{t:?}");
    assert!(t.panics.is_empty(), "{:#?}", t.panics);
    assert!(t.accepted > 0 && t.rejected > 0);
}

#[test]
fn edited_fields_are_rejected_or_harmless() {
    let mut t = Tally::default();
    for (name, b) in bases() {
        // Header fields, checksums recomputed (except when the CRC fields themselves are edited).
        for (off, w) in HEADER_FIELDS {
            for v in edge_values(get(&b, off, w), w) {
                let mut x = b.clone();
                put(&mut x, off, w, v);
                if off != H_META_CRC && off != H_DATA_CRC {
                    fix_crcs(&mut x);
                }
                // Only the minor version, the optional features and over-declaring a known
                // required feature may change harmlessly.
                let harmless = off == H_MINOR || off == 20 || (off == H_REQUIRED && v & !7 == 0);
                t.run(&format!("{name} header@{off}={v:#x}"), &x, !harmless);
            }
        }
        // Config record words.
        for word in 0..21 {
            let off = CONFIG + 4 * word;
            let orig = get(&b, off, 4);
            let mut vals = edge_values(orig, 4);
            vals.extend(
                [
                    f32::NAN.to_bits(),
                    f32::INFINITY.to_bits(),
                    (-1.0f32).to_bits(),
                ]
                .map(u64::from),
            );
            for v in vals {
                let mut x = b.clone();
                put(&mut x, off, 4, v);
                fix_crcs(&mut x);
                // resize (word 12) may grow; mean/std (15..21) may take other finite values.
                t.run(&format!("{name} config word {word}={v:#x}"), &x, false);
            }
        }
        // Reserved config bytes.
        let mut x = b.clone();
        x[CONFIG + 100] = 1;
        fix_crcs(&mut x);
        t.run(&format!("{name} config reserved"), &x, true);
        // Every field of every tensor record.
        let count = get(&b, H_COUNT, 4) as usize;
        for i in 0..count {
            let r = TABLE + REC * i;
            for (off, w) in REC_FIELDS {
                for v in edge_values(get(&b, r + off, w), w) {
                    let mut x = b.clone();
                    put(&mut x, r + off, w, v);
                    fix_crcs(&mut x);
                    // Every edit of a record invalidates it, except switching the index layout
                    // from 16-row blocks to row-major when the rows fill whole blocks (the same
                    // bytes, read as another valid matrix).
                    let rows = get(&b, r + 8, 4);
                    let harmless = off == 7 && v == 0 && rows.is_multiple_of(16);
                    t.run(
                        &format!("{name} record {i} field@{off}={v:#x}"),
                        &x,
                        !harmless,
                    );
                }
            }
            let mut x = b.clone();
            x[r + 60] = 0x80;
            fix_crcs(&mut x);
            t.run(&format!("{name} record {i} reserved"), &x, true);
        }
        // Overlaps: every range moved onto the previous one; swapped neighbours.
        for i in 1..count {
            let (r0, r1) = (TABLE + REC * (i - 1), TABLE + REC * i);
            let mut x = b.clone();
            let prev = get(&b, r0 + 24, 8);
            put(&mut x, r1 + 24, 8, prev);
            fix_crcs(&mut x);
            t.run(&format!("{name} record {i} overlaps {}", i - 1), &x, true);
            let mut x = b.clone();
            let (o0, o1) = (get(&b, r0 + 24, 8), get(&b, r1 + 24, 8));
            put(&mut x, r0 + 24, 8, o1);
            put(&mut x, r1 + 24, 8, o0);
            fix_crcs(&mut x);
            t.run(
                &format!("{name} records {} and {i} swapped", i - 1),
                &x,
                true,
            );
        }
        // Out-of-range VQ indices, checksums fixed.
        for i in 0..count {
            let r = TABLE + REC * i;
            if b[r + 4] != 1 {
                continue;
            }
            let (k, bits) = (get(&b, r + 16, 4), b[r + 6]);
            let (off, len) = (get(&b, r + 24, 8) as usize, get(&b, r + 32, 8) as usize);
            for pos in [0, len / 2, len - usize::from(bits / 8)] {
                let mut x = b.clone();
                if bits == 8 {
                    if k >= 256 {
                        continue;
                    }
                    x[off + pos] = k as u8;
                } else {
                    put(&mut x, off + pos, 2, k.min(65535));
                    if k > 65535 {
                        continue;
                    }
                }
                fix_crcs(&mut x);
                t.run(&format!("{name} record {i} index@{pos}=k"), &x, true);
            }
        }
        // Labels: invalid UTF-8, a missing newline, one label too many, not terminated.
        let (lo, ll) = (
            get(&b, H_LABELS_OFF, 4) as usize,
            get(&b, H_LABELS_LEN, 4) as usize,
        );
        assert!(ll > 0, "fixtures carry labels");
        for (what, bad) in [("ff", 0xffu8), ("c3", 0xc3), ("nl", b'\n'), ("x", b'x')] {
            for pos in [lo, lo + ll / 2, lo + ll - 1] {
                let mut x = b.clone();
                if x[pos] == bad {
                    continue;
                }
                x[pos] = bad;
                fix_crcs(&mut x);
                t.run(&format!("{name} label byte {pos}={what}"), &x, what != "x");
            }
        }
        // Unknown major versions and required-feature bits.
        for major in [0u64, 2, 0xffff] {
            let mut x = b.clone();
            put(&mut x, H_MAJOR, 2, major);
            fix_crcs(&mut x);
            t.run(&format!("{name} major {major}"), &x, true);
        }
        for bit in 3..32 {
            let mut x = b.clone();
            let req = get(&b, H_REQUIRED, 4) | (1 << bit);
            put(&mut x, H_REQUIRED, 4, req);
            fix_crcs(&mut x);
            t.run(&format!("{name} required bit {bit}"), &x, true);
        }
        // Huge declared file (the reader must not trust it for anything).
        let mut x = b.clone();
        put(&mut x, H_DATA_BYTES, 8, u64::MAX - 63);
        put(&mut x, H_FILE_BYTES, 8, u64::MAX);
        fix_crcs(&mut x);
        t.run(&format!("{name} huge data_bytes"), &x, true);
        let mut x = b.clone();
        put(&mut x, H_COUNT, 4, u64::from(u32::MAX));
        put(
            &mut x,
            H_LABELS_OFF,
            4,
            (TABLE as u64 + 64 * u64::from(u32::MAX)) & 0xffff_ffff,
        );
        fix_crcs(&mut x);
        t.run(&format!("{name} huge tensor count"), &x, true);
    }
    eprintln!("{t:?}");
    assert!(
        t.panics.is_empty(),
        "{} failures: {:#?}",
        t.panics.len(),
        t.panics
    );
    assert!(t.files >= 1000, "{} files", t.files);
}

#[test]
fn stale_checksums_are_caught() {
    for (name, b) in bases() {
        let data_off = get(&b, H_DATA_OFF, 4) as usize;
        // A flipped data byte (a weight's low mantissa bit, or an index kept < k) is caught
        // by the data CRC, and passes when it is not verified.
        let mut x = b.clone();
        x[data_off] ^= 0x01;
        let a = AlignedBytes::from_slice(&x);
        assert!(
            matches!(Model::parse(&a), Err(FormatError::DataChecksum { .. })),
            "{name}"
        );
        let no_crc = ParseOptions {
            verify_data_checksum: false,
        };
        assert!(Model::parse_with(&a, no_crc).is_ok(), "{name}");
        // A flipped metadata byte is always caught.
        for at in [CONFIG + 3, TABLE + 9, data_off - 1] {
            let mut x = b.clone();
            x[at] ^= 0x01;
            let a = AlignedBytes::from_slice(&x);
            for verify in [true, false] {
                let r = Model::parse_with(
                    &a,
                    ParseOptions {
                        verify_data_checksum: verify,
                    },
                );
                assert!(r.is_err(), "{name}: flip at {at} accepted");
            }
        }
    }
}

#[test]
fn misaligned_and_tiny_buffers() {
    let b = &bases()[1].1;
    let mut a = AlignedBytes::zeroed(b.len() + 4);
    a.as_mut_bytes()[1..1 + b.len()].copy_from_slice(b);
    assert!(matches!(
        Model::parse(&a[1..1 + b.len()]),
        Err(FormatError::Misaligned { address_mod_64: 1 })
    ));
    for n in 0..FileHeader::SIZE {
        let x = AlignedBytes::from_slice(&b[..n]);
        assert!(Model::parse(&x).is_err());
    }
}

/// Inputs that once crashed `fuzz/fuzz_targets/parse_infer.rs` (or were found while hardening
/// the reader), replayed through the same code path.
#[test]
fn fuzz_regressions_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().is_some_and(|f| f != "README.md") {
            let bytes = std::fs::read(&path).unwrap();
            if let Err(msg) = exercise(&bytes) {
                panic!("{}: {msg}", path.display());
            }
            n += 1;
        }
    }
    eprintln!("replayed {n} regression inputs from {}", dir.display());
}
