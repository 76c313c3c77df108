//! The checkpoint importer on arbitrary bytes: the non-executing pickle reader directly, and
//! the whole `import::load` + `import::to_packed` path (zip `.pth` or safetensors, sniffed) on
//! the bytes written to a temporary file. Must return errors, never panic, and allocate only
//! within the importer's caps (libFuzzer's `-rss_limit_mb` enforces it).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vimvq_pack::import;

fn scratch_path() -> &'static std::path::PathBuf {
    static P: OnceLock<std::path::PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vimvq-fuzz-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("input.ckpt")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = import::pickle::parse(data);
    let path = scratch_path();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    if let Ok(ck) = import::load(path, None) {
        let _ = import::to_packed(&ck, &Default::default());
    }
});
