//! `--tensor X.npy` input: float32 arrays of shape (N, C, H, W) or (C, H, W).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use npyz::{DType, NpyFile, Order, TypeChar};

/// A batch of already-normalised CHW images.
#[derive(Debug)]
pub struct Batch {
    /// `n · C · H · W` values, C order.
    pub data: Vec<f32>,
}

/// Largest `.npy` file read (1 GiB, about 1,400 images of 3×224×224).
pub const MAX_NPY_BYTES: u64 = 1 << 30;

/// Reads `path` and checks it holds float32 images of shape `(C, H, W) = (channels, side, side)`
/// (with or without a leading batch axis). The magic is checked first, then the whole file is
/// read (at most [`MAX_NPY_BYTES`]), so a header that claims more data than the file holds is an
/// error, not a huge allocation, and an endless input (`/dev/zero`) is refused at once.
pub fn read_batch(path: &Path, channels: usize, side: usize) -> Result<Batch> {
    use std::io::Read;
    if path.is_dir() {
        bail!("{}: is a directory, not a .npy file", path.display());
    }
    let io = |e: std::io::Error| crate::io_error::io_error(path, &e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    (&mut f).take(6).read_to_end(&mut bytes).map_err(io)?;
    if bytes != b"\x93NUMPY" {
        bail!("{}: not a .npy file (no \\x93NUMPY magic)", path.display());
    }
    f.take(MAX_NPY_BYTES - 6 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_NPY_BYTES {
        bail!(
            "{}: larger than the {MAX_NPY_BYTES}-byte limit for --tensor",
            path.display()
        );
    }
    let file = NpyFile::new(&bytes[..])
        .map_err(|e| anyhow!("{}: not a .npy file: {e}", path.display()))?;
    let shape: Vec<u64> = file.shape().to_vec();
    let shown = format!(
        "({})",
        shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    match file.dtype() {
        DType::Plain(t) if t.type_char() == TypeChar::Float && t.size_field() == 4 => {}
        other => bail!(
            "{}: dtype {} is not float32",
            path.display(),
            match other {
                DType::Plain(t) => t.to_string(),
                _ => "structured".into(),
            }
        ),
    }
    if file.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!(
            "{}: Fortran-ordered array; save it C-contiguous (np.ascontiguousarray)",
            path.display()
        );
    }
    let want = [channels as u64, side as u64, side as u64];
    let n = match shape.as_slice() {
        [c, h, w] if [*c, *h, *w] == want => 1,
        [n, c, h, w] if [*c, *h, *w] == want => *n,
        _ => bail!(
            "{}: shape {shown} does not match the model input ({channels}, {side}, {side}) \
             or (N, {channels}, {side}, {side})",
            path.display()
        ),
    };
    if n == 0 {
        bail!("{}: shape {shown} holds no images", path.display());
    }
    let per = (channels * side * side) as u64;
    let total = n
        .checked_mul(per)
        .filter(|t| t.checked_mul(4).is_some_and(|b| b <= bytes.len() as u64))
        .ok_or_else(|| {
            anyhow!(
                "{}: shape {shown} needs more data than the file holds (truncated?)",
                path.display()
            )
        })?;
    let data: Vec<f32> = file
        .into_vec()
        .map_err(|e| anyhow!("{}: cannot read array data: {e}", path.display()))?;
    if data.len() as u64 != total {
        bail!(
            "{}: {} values, shape {shown} needs {total}",
            path.display(),
            data.len()
        );
    }
    Ok(Batch { data })
}

/// Writes `data` as a little-endian float32 `.npy` array of `shape` (C order), atomically
/// ([`vimvq_pack::output::write_atomic`]: `path` is never left half-written).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let comma = if shape.len() == 1 { "," } else { "" };
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}{comma}), }}",
        dims.join(", ")
    );
    // Magic (6) + version (2) + length (2) + header + '\n', padded to 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    vimvq_pack::output::write_atomic(path, &bytes).map_err(|e| crate::io_error::io_error(path, &e))
}
