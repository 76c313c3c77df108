//! Hostile inputs built from bytes, shared by `crates/vimvq-pack/tests/import.rs` (library
//! level) and `tests/hostile_cli.rs` (the CLI, with a peak-RSS bound). Each builder names the
//! finding of issue 12 it reproduces.
#![allow(dead_code)] // each including test uses a subset

use std::io::Write;

// ---- zip, written by hand (stored or deflated entries; sizes as given) ---------------------

/// One zip entry: name, the bytes stored in the archive, the uncompressed size and CRC the
/// headers declare, and whether the bytes are deflated.
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
    pub size: u64,
    pub crc: u32,
    pub deflated: bool,
}

impl Entry {
    /// A stored entry holding `bytes`.
    pub fn stored(name: &str, bytes: &[u8]) -> Entry {
        let mut c = flate2::Crc::new();
        c.update(bytes);
        Entry {
            name: name.into(),
            data: bytes.to_vec(),
            size: bytes.len() as u64,
            crc: c.sum(),
            deflated: false,
        }
    }

    /// A deflated entry of `zeros` zero bytes (a compression bomb: ~1000:1).
    pub fn deflated_zeros(name: &str, zeros: u64) -> Entry {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        let mut crc = flate2::Crc::new();
        let mut left = zeros;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            enc.write_all(&chunk[..n]).unwrap();
            crc.update(&chunk[..n]);
            left -= n as u64;
        }
        Entry {
            name: name.into(),
            data: enc.finish().unwrap(),
            size: zeros,
            crc: crc.sum(),
            deflated: true,
        }
    }
}

/// A zip archive of `entries` (32-bit sizes: entries below 4 GiB).
pub fn zip(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let method: u16 = if e.deflated { 8 } else { 0 };
        let fields = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(method.to_le_bytes());
            v.extend(0u32.to_le_bytes()); // time, date
            v.extend(e.crc.to_le_bytes());
            v.extend((e.data.len() as u32).to_le_bytes());
            v.extend((e.size as u32).to_le_bytes());
            v.extend((e.name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        fields(&mut out);
        out.extend(e.name.as_bytes());
        out.extend(&e.data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // version made by
        fields(&mut central);
        central.extend([0u8; 6]); // comment length, disk, internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(e.name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

// ---- pickles as torch.save writes them -----------------------------------------------------

/// One tensor of a hand-built state dict.
pub struct T<'a> {
    pub name: &'a str,
    /// Storage class, e.g. `FloatStorage`.
    pub kind: &'a str,
    pub key: &'a str,
    /// Storage length in elements.
    pub numel: u64,
    pub offset: u64,
    pub size: &'a [u64],
    pub stride: &'a [u64],
}

/// Pickle `BINUNICODE` of `s`.
pub fn uni(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Pickle `LONG1` of `v` (8 bytes).
pub fn long(out: &mut Vec<u8>, v: u64) {
    out.extend([0x8a, 8]);
    out.extend(v.to_le_bytes());
}

/// `{name: _rebuild_tensor_v2(kind(key, numel), offset, size, stride, False, OrderedDict())}`,
/// written the way torch.save writes it (protocol 2).
pub fn state_dict_pickle(ts: &[T]) -> Vec<u8> {
    let mut o = vec![0x80, 2, b'}', b'('];
    for t in ts {
        uni(&mut o, t.name);
        o.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        uni(&mut o, "storage");
        o.extend(format!("ctorch\n{}\n", t.kind).as_bytes());
        uni(&mut o, t.key);
        uni(&mut o, "cpu");
        long(&mut o, t.numel);
        o.extend(b"tQ");
        long(&mut o, t.offset);
        o.push(b'(');
        for &s in t.size {
            long(&mut o, s);
        }
        o.extend(b"t(");
        for &s in t.stride {
            long(&mut o, s);
        }
        o.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    o.extend(b"u.");
    o
}

/// A `.pth` zip: `arch/data.pkl`, `arch/byteorder` and the given storage entries.
pub fn pth(pickle: &[u8], storages: Vec<Entry>) -> Vec<u8> {
    let mut entries = vec![
        Entry::stored("arch/data.pkl", pickle),
        Entry::stored("arch/byteorder", b"little"),
    ];
    entries.extend(storages.into_iter().map(|mut e| {
        e.name = format!("arch/data/{}", e.name);
        e
    }));
    zip(&entries)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// F1: two tensors share storage key `0`; the second claims a larger storage (1000 elements)
/// than the entry holds and the first read (4 elements).
pub fn f1_shared_storage() -> Vec<u8> {
    let t = |name, numel, size: &'static [u64]| T {
        name,
        kind: "FloatStorage",
        key: "0",
        numel,
        offset: 0,
        size,
        stride: &[1],
    };
    let p = state_dict_pickle(&[t("a", 4, &[4]), t("b", 1000, &[1000])]);
    pth(
        &p,
        vec![Entry::stored("0", &f32_bytes(&[1.0, 2.0, 3.0, 4.0]))],
    )
}

/// F2: a list of 16,384 references to one pair, then `OrderedDict(list)` applied 8,000 times
/// (the callable from the memo): each call builds a 256 KiB dict, 2 GiB in all without a byte
/// budget, from a 96 KB pickle.
pub fn f2_reduce_bomb() -> Vec<u8> {
    let mut o = vec![0x80, 2];
    o.extend(b"ccollections\nOrderedDict\nq\x02"); // the callable, memo 2
    o.extend([b'K', 1, b'K', 2, 0x86, b'q', 1]); // (1, 2), memo 1
    o.extend([b']', b'q', 0, b'(']); // [], memo 0
    for _ in 0..16_384 {
        o.extend([b'h', 1]);
    }
    o.push(b'e');
    for _ in 0..8_000 {
        o.extend(b"h\x02(h\x00tR0");
    }
    o.extend(b"00}.");
    pth(&o, Vec::new())
}

/// F3: five 16384×16384 stride-0 views of a one-element storage (5 GiB if materialised).
pub fn f3_stride0() -> Vec<u8> {
    let names = ["a", "b", "c", "d", "e"];
    let ts: Vec<T> = names
        .iter()
        .map(|n| T {
            name: n,
            kind: "FloatStorage",
            key: "0",
            numel: 1,
            offset: 0,
            size: &[16384, 16384],
            stride: &[0, 0],
        })
        .collect();
    pth(
        &state_dict_pickle(&ts),
        vec![Entry::stored("0", &f32_bytes(&[1.0]))],
    )
}

/// F4: a 4-element storage whose entry inflates to `mib` MiB of zeros (about 1 KB per MiB).
pub fn f4_deflate_bomb(mib: u64) -> Vec<u8> {
    let t = T {
        name: "w",
        kind: "FloatStorage",
        key: "0",
        numel: 4,
        offset: 0,
        size: &[4],
        stride: &[1],
    };
    pth(
        &state_dict_pickle(&[t]),
        vec![Entry::deflated_zeros("0", mib << 20)],
    )
}

// ---- a small Vim checkpoint as safetensors --------------------------------------------------

/// Dimensions of [`vim_safetensors`]: D=8, depth 1, 8×8 images, patch 4, 3 classes.
pub const VIM_D: usize = 8;
pub const VIM_IMG: usize = 8;
pub const VIM_PATCH: usize = 4;
pub const VIM_CLASSES: usize = 3;

/// A valid Vim checkpoint (hustvl names) with deterministic small weights; `edit(name, data)`
/// may change any tensor; `meta` goes to `__metadata__` after `img_size`.
pub fn vim_safetensors(meta: &[(&str, &str)], edit: impl Fn(&str, &mut Vec<f32>)) -> Vec<u8> {
    let (d, e, n, r, k) = (VIM_D, 2 * VIM_D, 4, 1, 4);
    let l = (VIM_IMG / VIM_PATCH) * (VIM_IMG / VIM_PATCH) + 1;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, d]),
        ("pos_embed".into(), vec![1, l, d]),
        (
            "patch_embed.proj.weight".into(),
            vec![d, 3, VIM_PATCH, VIM_PATCH],
        ),
        ("patch_embed.proj.bias".into(), vec![d]),
        ("norm_f.weight".into(), vec![d]),
        ("head.weight".into(), vec![VIM_CLASSES, d]),
        ("head.bias".into(), vec![VIM_CLASSES]),
    ];
    let p = "layers.0.";
    shapes.push((format!("{p}norm.weight"), vec![d]));
    shapes.push((format!("{p}mixer.in_proj.weight"), vec![2 * e, d]));
    shapes.push((format!("{p}mixer.out_proj.weight"), vec![d, e]));
    for b in ["", "_b"] {
        shapes.push((format!("{p}mixer.conv1d{b}.weight"), vec![e, 1, k]));
        shapes.push((format!("{p}mixer.conv1d{b}.bias"), vec![e]));
        shapes.push((format!("{p}mixer.x_proj{b}.weight"), vec![r + 2 * n, e]));
        shapes.push((format!("{p}mixer.dt_proj{b}.weight"), vec![e, r]));
        shapes.push((format!("{p}mixer.dt_proj{b}.bias"), vec![e]));
    }
    shapes.push((format!("{p}mixer.A_log"), vec![e, n]));
    shapes.push((format!("{p}mixer.A_b_log"), vec![e, n]));
    shapes.push((format!("{p}mixer.D"), vec![e]));
    shapes.push((format!("{p}mixer.D_b"), vec![e]));

    let mut header = String::from("{\"__metadata__\":{");
    let img = VIM_IMG.to_string();
    let m: Vec<String> = [("img_size", img.as_str())]
        .iter()
        .chain(meta)
        .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
        .collect();
    header.push_str(&m.join(","));
    header.push('}');
    let mut data = Vec::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let len: usize = shape.iter().product();
        let mut v: Vec<f32> = (0..len)
            .map(|j| (((i * 31 + j * 7) % 17) as f32 - 8.0) / 64.0)
            .collect();
        edit(name, &mut v);
        let start = data.len();
        data.extend(f32_bytes(&v));
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            json_str(name),
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// F12: the small Vim checkpoint with a NaN in `layers.0.mixer.out_proj.weight[5]`.
pub fn f12_nan_weights() -> Vec<u8> {
    vim_safetensors(&[], |name, v| {
        if name == "layers.0.mixer.out_proj.weight" {
            v[5] = f32::NAN;
        }
    })
}

/// F10: the small Vim checkpoint whose labels carry terminal escape sequences.
pub fn f10_escape_labels() -> Vec<u8> {
    vim_safetensors(
        &[(
            "labels",
            "\u{1b}]0;pwned\u{7}cat\n\u{1b}[2Jdog\nbird\u{9b}31m",
        )],
        |_, _| {},
    )
}

// ---- .vimvq files with huge valid dimensions (F5) ------------------------------------------

/// A `.vimvq` with valid checksums and exact ranges whose dimensions make the inference scratch
/// far larger than the file: D = 1, depth 1, patch = stride = 1, `img × img` inputs (L = img² + 1
/// positions), E = `d_inner` channels; every weight 0.01.
pub fn huge_dims_vimvq(img: usize, d_inner: usize) -> Vec<u8> {
    use vimvq_rt::format::Role;
    use vimvq_rt::format::{to_bytes, PackedModel, PackedTensor, TensorData};
    let config = vimvq_rt::VimConfig {
        embed_dim: 1,
        depth: 1,
        patch: 1,
        stride: 1,
        img_size: img,
        channels: 3,
        num_classes: 2,
        d_state: 1,
        dt_rank: 1,
        d_conv: 1,
        d_inner,
        norm_eps: 1e-5,
    };
    let tensors = Role::GLOBAL
        .iter()
        .chain(Role::LAYER.iter())
        .map(|&role| {
            let (rows, cols) = role.shape(&config);
            PackedTensor {
                role,
                layer: 0,
                rows,
                cols,
                data: TensorData::F32(vec![0.01; rows * cols]),
            }
        })
        .collect();
    let model = PackedModel {
        config,
        preprocess: vimvq_rt::Preprocess::imagenet(img as u32),
        labels: Vec::new(),
        tensors,
    };
    to_bytes(&model).unwrap()
}

/// The fuzzing seeds these builders make (`scripts/fuzz.sh` copies `fuzz/seeds/<target>/`
/// into the corpora): `(target, file name, bytes)`.
pub fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "import_checkpoint",
            "shared-storage.pth",
            f1_shared_storage(),
        ),
        ("import_checkpoint", "reduce-bomb.pth", f2_reduce_bomb()),
        ("import_checkpoint", "stride0.pth", f3_stride0()),
        (
            "import_checkpoint",
            "deflate-bomb.pth",
            f4_deflate_bomb(100),
        ),
        (
            "import_checkpoint",
            "nan-weights.safetensors",
            f12_nan_weights(),
        ),
        ("parse_infer", "huge-dims.vimvq", huge_dims_vimvq(127, 512)),
    ]
}
