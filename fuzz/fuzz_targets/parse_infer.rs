//! `Model::parse` + one inference on arbitrary bytes.
//!
//! The bytes are parsed as given (exercising the checksum and layout checks), then again with
//! both CRCs recomputed, so that the fuzzer reaches the structural validation behind them: a
//! CRC-32 is not something libFuzzer can solve. Anything accepted must run `infer` to completion
//! with a scratch buffer of exactly `Model::scratch_bytes()`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vimvq_rt::format::{crc32, meta_crc32, AlignedBytes, FileHeader};
use vimvq_rt::forward::infer;
use vimvq_rt::model::{Model, ParseOptions};

/// Skip inference on accepted models whose scratch exceeds this (libFuzzer's RSS limit).
const MAX_SCRATCH: usize = 64 << 20;

fn run(bytes: &[u8], verify_data_checksum: bool) {
    let Ok(m) = Model::parse_with(
        bytes,
        ParseOptions {
            verify_data_checksum,
        },
    ) else {
        return;
    };
    let _ = m.tensors().count();
    let _ = m.labels().count();
    let c = *m.config();
    let need = m.scratch_bytes();
    if need > MAX_SCRATCH || c.input_len() > MAX_SCRATCH {
        return;
    }
    let input: Vec<f32> = (0..c.input_len())
        .map(|i| (i % 7) as f32 * 0.25 - 0.75)
        .collect();
    let mut logits = vec![0f32; c.num_classes];
    let mut scratch = vec![0u8; need];
    infer(&m, &input, &mut logits, &mut scratch).expect("infer on an accepted model");
}

fn fix_crcs(b: &mut [u8]) {
    if b.len() < FileHeader::SIZE {
        return;
    }
    let word =
        |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
    let data_off = word(b, 36);
    if data_off <= b.len() {
        let c = crc32(&b[data_off..]);
        b[44..48].copy_from_slice(&c.to_le_bytes());
    }
    let labels_end = word(b, 28).saturating_add(word(b, 32));
    if (FileHeader::SIZE..=b.len()).contains(&labels_end) {
        let mut h = [0u8; FileHeader::SIZE];
        h.copy_from_slice(&b[..FileHeader::SIZE]);
        let c = meta_crc32(&h, &b[FileHeader::SIZE..labels_end]);
        b[40..44].copy_from_slice(&c.to_le_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut a = AlignedBytes::from_slice(data);
    run(&a, true);
    fix_crcs(a.as_mut_bytes());
    run(&a, data.first().is_some_and(|b| b & 1 == 0));
    // Unaligned views must be refused, not read.
    if a.len() > 1 {
        assert!(Model::parse(&a[1..]).is_err());
    }
});
