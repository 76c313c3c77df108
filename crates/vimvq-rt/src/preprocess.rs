//! Eval preprocessing: a bit-exact port of torchvision's
//! `Resize(shorter side) → CenterCrop → ToTensor → Normalize` as it runs on PIL images.
//!
//! No allocation: the caller passes the source pixels, the output tensor and a scratch buffer
//! sized with [`scratch_bytes`] (or [`Plan::scratch_bytes`]).
//!
//! # Numerical contract
//! For 8-bit input the output equals torchvision (Pillow 13 resampling, torchvision ≥ 0.8) bit for
//! bit — checked on 370 random geometries and on every PNG of `python3-skimage`'s data set. The
//! resize is Pillow's `ImagingResample`: separable, one pass per axis whose length changes, into
//! an 8-bit intermediate image; antialiased support `filter.support · max(1, in/out)`;
//! coefficients normalised in f64 and converted to fixed point with [`PRECISION_BITS`]
//! fractional bits, rounded half away from zero; each accumulator starts at `1 << 21`, then
//! `>> 22` and clamps to `0..=255`.
//!
//! Pass order: horizontal first, except that Pillow ≥ 13 (python-pillow/Pillow#9549) runs the
//! vertical pass first when the height loses more than twice as many pixels as the width
//! (`h − h' > 2·(w − w')`, both axes resized, height reduced). With an aspect-preserving resize
//! that means images more than about twice as tall as wide. Pillow 9–12 always go horizontal
//! first; for those images the two orders differ by ±1 on a small share of pixels.
//!
//! Only the pixels inside the centre crop are computed; since each output pixel depends only on
//! its own coefficients this changes nothing numerically.
//!
//! The steps, in torchvision's terms:
//! 1. For `channels == 1` models an RGB image is converted to luma as PIL's `convert('L')`:
//!    `(R·19595 + G·38470 + B·7471 + 0x8000) >> 16`. For `channels == 3` an L image is replicated.
//! 2. `Resize(resize)`: the shorter side becomes `resize`, the longer `int(resize · long / short)`.
//!    Nothing is resampled if the size is unchanged, or along an axis whose length is unchanged
//!    (as in Pillow).
//! 3. `CenterCrop(crop)`: zero padding (`(crop − n) // 2` before, `(crop − n + 1) // 2` after) when
//!    the crop is larger than the image, then `top = round((h − crop) / 2)` and
//!    `left = round((w − crop) / 2)` with Python's round-half-to-even.
//! 4. `ToTensor` + `Normalize`: `out[c][y][x] = (v / 255 − mean[c]) / std[c]`, each operation in f32.

use crate::config::{Interpolation, Preprocess};

/// Fractional bits of Pillow's fixed-point resampling coefficients (`32 − 8 − 2`).
pub const PRECISION_BITS: u32 = 22;

/// Largest accepted image side, resize target and crop (Pillow's sizes are C `int`s).
pub const MAX_SIDE: usize = 1 << 20;

/// Layout of the caller's 8-bit pixels: rows top to bottom, pixels interleaved, no row padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// One 8-bit luma sample per pixel (PIL mode `L`).
    L8,
    /// Three 8-bit samples per pixel, R G B (PIL mode `RGB`).
    Rgb8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub const fn channels(self) -> usize {
        match self {
            PixelFormat::L8 => 1,
            PixelFormat::Rgb8 => 3,
        }
    }
}

/// A borrowed 8-bit image.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    /// `width · height · format.channels()` bytes, row-major.
    pub data: &'a [u8],
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Interleaving of `data`.
    pub format: PixelFormat,
}

/// Why preprocessing could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreprocessError {
    /// The image has zero width or height, or a side larger than [`MAX_SIDE`].
    BadImageSize,
    /// `data.len()` differs from `width · height · channels`.
    BadImageLength {
        /// Bytes the dimensions imply.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// `resize` or `crop` is zero or larger than [`MAX_SIDE`].
    BadParams,
    /// Resizing the image's shorter side to `resize` would make a side of zero or beyond
    /// [`MAX_SIDE`] (an extreme aspect ratio).
    ResizedOutOfRange {
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
        /// The model's resize target for the shorter side.
        resize: usize,
    },
    /// The model's channel count is neither 1 nor 3.
    UnsupportedChannels,
    /// The output slice does not hold exactly `channels · crop · crop` values.
    BadOutputLength {
        /// Values expected.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The scratch buffer is smaller than [`Plan::scratch_bytes`].
    ScratchTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

impl core::fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PreprocessError::BadImageSize => write!(f, "image has a zero or too large side"),
            PreprocessError::BadImageLength { expected, got } => {
                write!(
                    f,
                    "image buffer holds {got} bytes, its dimensions imply {expected}"
                )
            }
            PreprocessError::BadParams => write!(f, "resize/crop size is zero or too large"),
            PreprocessError::ResizedOutOfRange {
                width,
                height,
                resize,
            } => write!(
                f,
                "a {width}x{height} image cannot be resized to shorter side {resize}: its aspect \
                 ratio is too extreme (a side would be 0 or over {MAX_SIDE} pixels)"
            ),
            PreprocessError::UnsupportedChannels => write!(f, "model channel count is not 1 or 3"),
            PreprocessError::BadOutputLength { expected, got } => {
                write!(f, "output holds {got} values, expected {expected}")
            }
            PreprocessError::ScratchTooSmall { needed, got } => {
                write!(f, "preprocessing scratch holds {got} bytes, needs {needed}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PreprocessError {}

/// Size after torchvision's `Resize(resize)` of a `width × height` image: `(new_w, new_h)`.
///
/// The shorter side becomes `resize`; the longer one `int(resize · long / short)` (f64 division,
/// truncated, exactly as Python computes it for these magnitudes).
pub fn resized_size(width: usize, height: usize, resize: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = if short == 0 {
        0
    } else {
        (resize as f64 * long as f64 / short as f64) as usize
    };
    if width <= height {
        (resize, new_long)
    } else {
        (new_long, resize)
    }
}

/// Python's `int(round(d / 2.0))` for `d ≥ 0` (round half to even).
const fn half_round_even(d: usize) -> usize {
    let q = d / 2;
    if d % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// One axis of torchvision's `CenterCrop` after the resize: where crop index 0 lands in the
/// resized image (may be negative when padding applies).
fn crop_origin(n: usize, crop: usize) -> isize {
    let (pad_before, padded) = if crop > n {
        let before = (crop - n) / 2;
        let after = (crop - n).div_ceil(2);
        (before, n + before + after)
    } else {
        (0, n)
    };
    half_round_even(padded - crop) as isize - pad_before as isize
}

/// Pillow's filter support (in input pixels, before scaling).
fn filter_support(f: Interpolation) -> f64 {
    match f {
        Interpolation::Bicubic => 2.0,
        Interpolation::Bilinear => 1.0,
    }
}

/// Pillow's `bicubic_filter` (a = −0.5) and `bilinear_filter`, operation for operation.
fn filter_eval(f: Interpolation, x: f64) -> f64 {
    let x = if x < 0.0 { -x } else { x };
    match f {
        Interpolation::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
        Interpolation::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
    }
}

/// The resampling of one axis, `in_size → out_size`, as Pillow's `precompute_coeffs`.
#[derive(Clone, Copy, Debug)]
struct Axis {
    in_size: usize,
    filter: Interpolation,
    scale: f64,
    filterscale: f64,
    support: f64,
    /// Maximum taps per output sample, `ceil(support) · 2 + 1`.
    ksize: usize,
}

impl Axis {
    fn new(in_size: usize, out_size: usize, filter: Interpolation) -> Axis {
        // Pillow: `(double)(in1 - in0) / outSize` with float box edges; exact for sizes < 2^24.
        let scale = in_size as f64 / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter_support(filter) * filterscale;
        // `support` ≤ 2 · MAX_SIDE, so this fits comfortably.
        // `ceil` without `std` (`support` is positive and far below 2^52, so this is exact).
        let floor = support as usize;
        let ceil = if (floor as f64) < support {
            floor + 1
        } else {
            floor
        };
        let ksize = ceil * 2 + 1;
        Axis {
            in_size,
            filter,
            scale,
            filterscale,
            support,
            ksize,
        }
    }

    /// Centre of output sample `xx` in input coordinates (Pillow: `in0 + (xx + 0.5) · scale`).
    fn center(&self, xx: usize) -> f64 {
        (xx as f64 + 0.5) * self.scale
    }

    /// `(first input index, number of taps)` of output sample `xx`.
    fn bounds(&self, xx: usize) -> (usize, usize) {
        let center = self.center(xx);
        // C `(int)` truncation toward zero, then clamp at 0: `as usize` saturates negatives to 0
        // and truncates positives, which is the same thing.
        let xmin = (center - self.support + 0.5) as usize;
        let xmax = ((center + self.support + 0.5) as usize).min(self.in_size);
        (xmin, xmax.saturating_sub(xmin).min(self.ksize))
    }

    /// Fixed-point coefficients of output sample `xx` into `k` (`k.len() ≥ ksize`), returning
    /// `(first input index, number of taps)`. Unused entries of `k` are zeroed.
    fn coeffs(&self, xx: usize, k: &mut [i32]) -> (usize, usize) {
        let center = self.center(xx);
        let ss = 1.0 / self.filterscale;
        let (xmin, n) = self.bounds(xx);
        let weight = |x: usize| filter_eval(self.filter, ((x + xmin) as f64 - center + 0.5) * ss);
        let mut ww = 0.0f64;
        for x in 0..n {
            ww += weight(x);
        }
        let scale = (1u32 << PRECISION_BITS) as f64;
        for (x, kx) in k.iter_mut().enumerate().take(self.ksize) {
            *kx = if x < n {
                let mut w = weight(x);
                if ww != 0.0 {
                    w /= ww;
                }
                if w < 0.0 {
                    (-0.5 + w * scale) as i32
                } else {
                    (0.5 + w * scale) as i32
                }
            } else {
                0
            };
        }
        (xmin, n)
    }
}

/// Pillow's `clip8`: drop the fractional bits (arithmetic shift) and clamp to `0..=255`.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rounding offset Pillow starts every accumulator from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// PIL `convert('L')` of one RGB pixel (ITU-R 601-2 luma, 16-bit fixed point).
#[inline(always)]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Everything about one preprocessing run that depends only on the image size and the transform.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    src_w: usize,
    src_h: usize,
    src_format: PixelFormat,
    out_channels: usize,
    /// Channels carried through the resampling (1 for luma or L sources, else 3).
    work_channels: usize,
    crop: usize,
    /// Resized size.
    res_w: usize,
    res_h: usize,
    /// Position of crop pixel (0, 0) in the resized image (negative with padding).
    org_x: isize,
    org_y: isize,
    /// Crop columns `[col0, col1)` and rows `[row0, row1)` that fall inside the resized image.
    col0: usize,
    col1: usize,
    row0: usize,
    row1: usize,
    horiz: Option<Axis>,
    vert: Option<Axis>,
    /// Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice as
    /// many pixels as the width (python-pillow/Pillow#9549).
    vertical_first: bool,
    /// Source rows `[src_row0, src_row0 + src_rows)` and columns `[src_col0, src_col0 + src_cols)`
    /// that any output pixel depends on.
    src_row0: usize,
    src_rows: usize,
    src_col0: usize,
    src_cols: usize,
    mean: [f32; 3],
    std: [f32; 3],
}

/// Region of a crop axis `[0, crop)` that maps into `[0, n)` given the origin.
fn valid_range(origin: isize, n: usize, crop: usize) -> (usize, usize) {
    let lo = (-origin).clamp(0, crop as isize) as usize;
    let hi = (n as isize - origin).clamp(lo as isize, crop as isize) as usize;
    (lo, hi)
}

/// Source samples `(start, len)` needed for resized samples `origin + [lo, hi)` along one axis.
fn source_span(ax: Option<&Axis>, origin: isize, lo: usize, hi: usize) -> (usize, usize) {
    if lo >= hi {
        return (0, 0);
    }
    let first = (origin + lo as isize) as usize;
    let last = (origin + hi as isize) as usize - 1;
    match ax {
        None => (first, last + 1 - first),
        Some(ax) => {
            // Bounds are monotone in the output index.
            let (a, _) = ax.bounds(first);
            let (b, nb) = ax.bounds(last);
            (a, (b + nb).saturating_sub(a))
        }
    }
}

impl Plan {
    /// Plans the transform `p` for a `width × height` image in `format`, producing a
    /// `out_channels × crop × crop` tensor (`out_channels` = the model's input channels, 1 or 3).
    pub fn new(
        width: usize,
        height: usize,
        format: PixelFormat,
        p: &Preprocess,
        out_channels: usize,
    ) -> Result<Plan, PreprocessError> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(PreprocessError::BadImageSize);
        }
        let resize = p.resize as usize;
        let crop = p.crop as usize;
        if resize == 0 || crop == 0 || resize > MAX_SIDE || crop > MAX_SIDE {
            return Err(PreprocessError::BadParams);
        }
        if out_channels != 1 && out_channels != 3 {
            return Err(PreprocessError::UnsupportedChannels);
        }
        let (res_w, res_h) = resized_size(width, height, resize);
        if res_w == 0 || res_h == 0 || res_w > MAX_SIDE || res_h > MAX_SIDE {
            return Err(PreprocessError::ResizedOutOfRange {
                width,
                height,
                resize,
            });
        }
        let work_channels = if out_channels == 1 {
            1
        } else {
            format.channels()
        };
        let org_x = crop_origin(res_w, crop);
        let org_y = crop_origin(res_h, crop);
        let (col0, col1) = valid_range(org_x, res_w, crop);
        let (row0, row1) = valid_range(org_y, res_h, crop);
        // Pillow resamples an axis only when its length changes.
        let horiz = (res_w != width).then(|| Axis::new(width, res_w, p.interpolation));
        let vert = (res_h != height).then(|| Axis::new(height, res_h, p.interpolation));
        let vertical_first = horiz.is_some()
            && res_h < height
            && (height - res_h) as isize > 2 * (width as isize - res_w as isize);
        let (src_row0, src_rows) = source_span(vert.as_ref(), org_y, row0, row1);
        let (src_col0, src_cols) = source_span(horiz.as_ref(), org_x, col0, col1);
        Ok(Plan {
            src_w: width,
            src_h: height,
            src_format: format,
            out_channels,
            work_channels,
            crop,
            res_w,
            res_h,
            org_x,
            org_y,
            col0,
            col1,
            row0,
            row1,
            horiz,
            vert,
            vertical_first,
            src_row0,
            src_rows,
            src_col0,
            src_cols,
            mean: p.mean,
            std: p.std,
        })
    }

    /// Size `(width, height)` of the image after the resize step.
    pub fn resized_size(&self) -> (usize, usize) {
        (self.res_w, self.res_h)
    }

    /// Number of f32 values written: `out_channels · crop · crop`.
    pub fn output_len(&self) -> usize {
        self.out_channels * self.crop * self.crop
    }

    fn cols(&self) -> usize {
        self.col1 - self.col0
    }

    fn rows(&self) -> usize {
        self.row1 - self.row0
    }

    /// i32 slots for the horizontal coefficient table (`[xmin, n, k…]` per crop column).
    fn horiz_slots(&self) -> usize {
        self.horiz.map_or(0, |a| self.cols() * (a.ksize + 2))
    }

    /// i32 slots for the vertical coefficient table (`[ymin, n, k…]` per crop row).
    fn vert_slots(&self) -> usize {
        self.vert.map_or(0, |a| self.rows() * (a.ksize + 2))
    }

    /// Intermediate 8-bit image: after the first pass, before the second.
    fn inter_len(&self) -> usize {
        if self.vertical_first {
            self.rows() * self.src_cols * self.work_channels
        } else {
            self.src_rows * self.cols() * self.work_channels
        }
    }

    /// A source row converted to luma (horizontal-first path, RGB image, 1-channel model).
    fn luma_row_len(&self) -> usize {
        if !self.vertical_first && self.src_format == PixelFormat::Rgb8 && self.work_channels == 1 {
            self.src_w
        } else {
            0
        }
    }

    /// Bytes of scratch [`Plan::run`] needs (including up to 3 bytes to align the coefficient
    /// tables to 4 bytes).
    pub fn scratch_bytes(&self) -> usize {
        3 + (self.horiz_slots() + self.vert_slots()) * 4 + self.inter_len() + self.luma_row_len()
    }

    /// Runs the transform on `img` (whose size and format must be the planned ones), writing the
    /// CHW tensor to `out` (exactly [`Plan::output_len`] values).
    pub fn run(
        &self,
        img: &ImageRef<'_>,
        out: &mut [f32],
        scratch: &mut [u8],
    ) -> Result<(), PreprocessError> {
        if img.width != self.src_w || img.height != self.src_h || img.format != self.src_format {
            return Err(PreprocessError::BadImageSize);
        }
        let expected = self.src_w * self.src_h * self.src_format.channels();
        if img.data.len() != expected {
            return Err(PreprocessError::BadImageLength {
                expected,
                got: img.data.len(),
            });
        }
        if out.len() != self.output_len() {
            return Err(PreprocessError::BadOutputLength {
                expected: self.output_len(),
                got: out.len(),
            });
        }
        let needed = self.scratch_bytes();
        if scratch.len() < needed {
            return Err(PreprocessError::ScratchTooSmall {
                needed,
                got: scratch.len(),
            });
        }
        // Split the scratch: aligned i32 tables, then the intermediate image, then a luma row.
        let pad = scratch.as_ptr().align_offset(4).min(3);
        let ints_bytes = (self.horiz_slots() + self.vert_slots()) * 4;
        let (_, rest) = scratch.split_at_mut(pad);
        let (ints, rest) = rest.split_at_mut(ints_bytes);
        // Cannot fail: `pad` aligns the start and the length is a multiple of 4.
        let ints: &mut [i32] = bytemuck::try_cast_slice_mut(ints)
            .map_err(|_| PreprocessError::ScratchTooSmall { needed, got: 0 })?;
        let (htab, vtab) = ints.split_at_mut(self.horiz_slots());
        let (inter, rest) = rest.split_at_mut(self.inter_len());
        let row_buf = &mut rest[..self.luma_row_len()];

        self.fill_tables(htab, vtab);
        // Padding (zeros in the PIL image) everywhere first; the valid window is overwritten.
        if self.rows() != self.crop || self.cols() != self.crop {
            let plane = self.crop * self.crop;
            for (c, dst) in out.chunks_exact_mut(plane).enumerate() {
                dst.fill(self.normalize(0, c));
            }
        }
        match (self.work_channels, self.vertical_first) {
            (1, false) => {
                self.horizontal_from_source::<1>(img, htab, inter, row_buf);
                self.vertical_to_output::<1>(vtab, inter, out);
            }
            (_, false) => {
                self.horizontal_from_source::<3>(img, htab, inter, row_buf);
                self.vertical_to_output::<3>(vtab, inter, out);
            }
            (1, true) => {
                self.vertical_from_source::<1>(img, vtab, inter);
                self.horizontal_to_output::<1>(htab, inter, out);
            }
            (_, true) => {
                self.vertical_from_source::<3>(img, vtab, inter);
                self.horizontal_to_output::<3>(htab, inter, out);
            }
        }
        Ok(())
    }

    /// ToTensor + Normalize of one 8-bit value, in f32 exactly as torch does.
    #[inline(always)]
    fn normalize(&self, v: u8, c: usize) -> f32 {
        (v as f32 / 255.0 - self.mean[c]) / self.std[c]
    }

    /// Writes the resampled pixel of crop position `(i, j)` (inside the valid window).
    #[inline(always)]
    fn emit<const C: usize>(&self, out: &mut [f32], i: usize, j: usize, v: [u8; C]) {
        let plane = self.crop * self.crop;
        let o = i * self.crop + j;
        for c in 0..self.out_channels {
            // C == 1 with 3 output channels: an L image replicated by `convert('RGB')`.
            let s = if C == 1 { 0 } else { c };
            out[c * plane + o] = self.normalize(v[s], c);
        }
    }

    fn fill_tables(&self, htab: &mut [i32], vtab: &mut [i32]) {
        // The first pass reads the source image (absolute indices); the second reads the
        // intermediate image (indices relative to its first row or column).
        let (h_base, v_base) = if self.vertical_first {
            (self.src_col0, 0)
        } else {
            (0, self.src_row0)
        };
        if let Some(ax) = &self.horiz {
            for (j, slot) in htab.chunks_exact_mut(ax.ksize + 2).enumerate() {
                let xx = (self.org_x + (self.col0 + j) as isize) as usize;
                let (head, k) = slot.split_at_mut(2);
                let (xmin, n) = ax.coeffs(xx, k);
                head[0] = (xmin - h_base) as i32;
                head[1] = n as i32;
            }
        }
        if let Some(ax) = &self.vert {
            for (i, slot) in vtab.chunks_exact_mut(ax.ksize + 2).enumerate() {
                let yy = (self.org_y + (self.row0 + i) as isize) as usize;
                let (head, k) = slot.split_at_mut(2);
                let (ymin, n) = ax.coeffs(yy, k);
                head[0] = (ymin - v_base) as i32;
                head[1] = n as i32;
            }
        }
    }

    /// Horizontal-first, pass 1: source rows `[src_row0, src_row0 + src_rows)` → intermediate
    /// (`cols` wide, `C` channels), resampled horizontally (or copied if the width is unchanged).
    fn horizontal_from_source<const C: usize>(
        &self,
        img: &ImageRef<'_>,
        htab: &[i32],
        inter: &mut [u8],
        row_buf: &mut [u8],
    ) {
        let cols = self.cols();
        if cols == 0 || self.src_rows == 0 {
            return;
        }
        let sc = self.src_format.channels();
        let row_bytes = self.src_w * sc;
        let to_luma = !row_buf.is_empty();
        for (r, dst) in inter.chunks_exact_mut(cols * C).enumerate() {
            let y = self.src_row0 + r;
            let src_row = &img.data[y * row_bytes..(y + 1) * row_bytes];
            let line: &[u8] = if to_luma {
                for (o, px) in row_buf.iter_mut().zip(src_row.chunks_exact(3)) {
                    *o = luma(px[0], px[1], px[2]);
                }
                row_buf
            } else {
                src_row
            };
            match &self.horiz {
                None => {
                    let x0 = self.src_col0;
                    dst.copy_from_slice(&line[x0 * C..(x0 + cols) * C]);
                }
                Some(ax) => {
                    for (px, slot) in dst.chunks_exact_mut(C).zip(htab.chunks_exact(ax.ksize + 2)) {
                        px.copy_from_slice(&resample_run::<C>(line, slot));
                    }
                }
            }
        }
    }

    /// Horizontal-first, pass 2: intermediate → output rows, resampled vertically (or selected
    /// if the height is unchanged), then normalised.
    fn vertical_to_output<const C: usize>(&self, vtab: &[i32], inter: &[u8], out: &mut [f32]) {
        let cols = self.cols();
        let stride = cols * C;
        for (oi, i) in (self.row0..self.row1).enumerate() {
            for j in 0..cols {
                let v = match &self.vert {
                    None => {
                        let p = oi * stride + j * C;
                        let mut v = [0u8; C];
                        v.copy_from_slice(&inter[p..p + C]);
                        v
                    }
                    Some(ax) => {
                        let slot = &vtab[oi * (ax.ksize + 2)..(oi + 1) * (ax.ksize + 2)];
                        resample_with::<C>(slot, |y| {
                            let p = y * stride + j * C;
                            let mut v = [0u8; C];
                            v.copy_from_slice(&inter[p..p + C]);
                            v
                        })
                    }
                };
                self.emit(out, i, self.col0 + j, v);
            }
        }
    }

    /// Vertical-first, pass 1: source → intermediate (`rows` tall, `src_cols` wide), resampled
    /// vertically. Only planned when both axes change.
    fn vertical_from_source<const C: usize>(
        &self,
        img: &ImageRef<'_>,
        vtab: &[i32],
        inter: &mut [u8],
    ) {
        let Some(ax) = &self.vert else { return };
        if self.src_cols == 0 {
            return;
        }
        let sc = self.src_format.channels();
        let row_bytes = self.src_w * sc;
        let to_luma = C == 1 && sc == 3;
        let data = img.data;
        for (dst, slot) in inter
            .chunks_exact_mut(self.src_cols * C)
            .zip(vtab.chunks_exact(ax.ksize + 2))
        {
            for (x, px) in dst.chunks_exact_mut(C).enumerate() {
                let col = (self.src_col0 + x) * sc;
                let v = resample_with::<C>(slot, |y| {
                    let b = y * row_bytes + col;
                    let mut v = [0u8; C];
                    if to_luma {
                        v[0] = luma(data[b], data[b + 1], data[b + 2]);
                    } else {
                        v.copy_from_slice(&data[b..b + C]);
                    }
                    v
                });
                px.copy_from_slice(&v);
            }
        }
    }

    /// Vertical-first, pass 2: intermediate rows → output, resampled horizontally, normalised.
    fn horizontal_to_output<const C: usize>(&self, htab: &[i32], inter: &[u8], out: &mut [f32]) {
        let Some(ax) = &self.horiz else { return };
        let stride = self.src_cols * C;
        if stride == 0 {
            return;
        }
        for (line, i) in inter.chunks_exact(stride).zip(self.row0..self.row1) {
            for (j, slot) in htab.chunks_exact(ax.ksize + 2).enumerate() {
                let v = resample_run::<C>(line, slot);
                self.emit(out, i, self.col0 + j, v);
            }
        }
    }
}

/// One output sample from contiguous pixels: `slot = [first, n, k0 … k(n−1) …]`.
#[inline(always)]
fn resample_run<const C: usize>(line: &[u8], slot: &[i32]) -> [u8; C] {
    let first = slot[0] as usize;
    let n = slot[1] as usize;
    let taps = &line[first * C..(first + n) * C];
    let mut acc = [HALF; C];
    for (t, &k) in taps.chunks_exact(C).zip(&slot[2..2 + n]) {
        for c in 0..C {
            acc[c] = acc[c].wrapping_add((t[c] as i32).wrapping_mul(k));
        }
    }
    acc.map(clip8)
}

/// One output sample from pixels fetched by index: `px(first + t)` for each tap `t`.
#[inline(always)]
fn resample_with<const C: usize>(slot: &[i32], px: impl Fn(usize) -> [u8; C]) -> [u8; C] {
    let first = slot[0] as usize;
    let n = slot[1] as usize;
    let mut acc = [HALF; C];
    for (t, &k) in slot[2..2 + n].iter().enumerate() {
        let p = px(first + t);
        for c in 0..C {
            acc[c] = acc[c].wrapping_add((p[c] as i32).wrapping_mul(k));
        }
    }
    acc.map(clip8)
}
/// Scratch bytes needed to preprocess a `width × height` image in `format` with `p` for a model
/// with `out_channels` input channels.
pub fn scratch_bytes(
    width: usize,
    height: usize,
    format: PixelFormat,
    p: &Preprocess,
    out_channels: usize,
) -> Result<usize, PreprocessError> {
    Plan::new(width, height, format, p, out_channels).map(|pl| pl.scratch_bytes())
}

/// Preprocesses `img` with `p` into `out` (`out_channels × crop × crop`, CHW, normalised).
///
/// `scratch` must hold at least [`scratch_bytes`] bytes. Never allocates, never panics on bad
/// sizes (they are errors).
pub fn preprocess(
    img: &ImageRef<'_>,
    p: &Preprocess,
    out_channels: usize,
    out: &mut [f32],
    scratch: &mut [u8],
) -> Result<(), PreprocessError> {
    Plan::new(img.width, img.height, img.format, p, out_channels)?.run(img, out, scratch)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    //! The oracle: a naive, allocation-happy transcription of Pillow + torchvision that resamples
    //! the whole image (all rows, all columns) and only then pads and crops.
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn naive_weights(in_size: usize, out_size: usize, f: Interpolation) -> Vec<(usize, Vec<i32>)> {
        let scale = in_size as f64 / out_size as f64;
        let fscale = scale.max(1.0);
        let support = match f {
            Interpolation::Bicubic => 2.0,
            Interpolation::Bilinear => 1.0,
        } * fscale;
        let kernel = |x: f64| -> f64 {
            let x = x.abs();
            match f {
                Interpolation::Bicubic => {
                    if x < 1.0 {
                        (1.5 * x - 2.5) * x * x + 1.0
                    } else if x < 2.0 {
                        (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
                    } else {
                        0.0
                    }
                }
                Interpolation::Bilinear => (1.0 - x).max(0.0),
            }
        };
        (0..out_size)
            .map(|o| {
                let center = (o as f64 + 0.5) * scale;
                let lo = ((center - support + 0.5).trunc() as i64).max(0) as usize;
                let hi = ((center + support + 0.5).trunc() as usize).min(in_size);
                let w: Vec<f64> = (lo..hi)
                    .map(|i| kernel((i as f64 - center + 0.5) / fscale))
                    .collect();
                let sum: f64 = w.iter().sum();
                let fixed = w
                    .iter()
                    .map(|&x| {
                        let x = if sum != 0.0 { x / sum } else { x };
                        (x * 4194304.0 + if x < 0.0 { -0.5 } else { 0.5 }).trunc() as i32
                    })
                    .collect();
                (lo, fixed)
            })
            .collect()
    }

    fn naive_pass(v: &[i32], taps: &[(usize, Vec<i32>)]) -> Vec<i32> {
        taps.iter()
            .map(|(lo, k)| {
                let acc: i64 = k
                    .iter()
                    .enumerate()
                    .map(|(t, &w)| v[lo + t] as i64 * w as i64)
                    .sum::<i64>()
                    + (1 << 21);
                (acc >> 22).clamp(0, 255) as i32
            })
            .collect()
    }

    /// Full reference: returns the CHW tensor.
    fn naive(img: &ImageRef<'_>, p: &Preprocess, out_c: usize) -> Vec<f32> {
        let (w, h) = (img.width, img.height);
        // Planes of the (converted) source image.
        let src_c = img.format.channels();
        let planes: Vec<Vec<i32>> = if out_c == 1 && src_c == 3 {
            vec![img
                .data
                .chunks(3)
                .map(|px| {
                    ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 32768)
                        >> 16) as i32
                })
                .collect()]
        } else if out_c == 3 && src_c == 1 {
            let l: Vec<i32> = img.data.iter().map(|&x| x as i32).collect();
            vec![l.clone(), l.clone(), l]
        } else {
            (0..src_c)
                .map(|c| {
                    img.data
                        .iter()
                        .skip(c)
                        .step_by(src_c)
                        .map(|&x| x as i32)
                        .collect()
                })
                .collect()
        };
        let r = p.resize as usize;
        let (nw, nh) = if w <= h {
            (r, (r as f64 * h as f64 / w as f64).floor() as usize)
        } else {
            ((r as f64 * w as f64 / h as f64).floor() as usize, r)
        };
        let crop = p.crop as usize;
        let mut out = vec![0f32; out_c * crop * crop];
        for (c, plane) in planes.iter().enumerate() {
            // Whole-image passes; Pillow ≥ 13 goes vertical-first when the height loses more
            // than twice as many pixels as the width.
            let vfirst = nw != w && nh < h && (h - nh) as i64 > 2 * (w as i64 - nw as i64);
            let hpass = |img: &[i32], iw: usize, ih: usize| -> Vec<i32> {
                let taps = naive_weights(iw, nw, p.interpolation);
                (0..ih)
                    .flat_map(|y| naive_pass(&img[y * iw..(y + 1) * iw], &taps))
                    .collect()
            };
            let vpass = |img: &[i32], iw: usize, ih: usize| -> Vec<i32> {
                let taps = naive_weights(ih, nh, p.interpolation);
                let mut res = vec![0i32; iw * nh];
                for x in 0..iw {
                    let col: Vec<i32> = (0..ih).map(|y| img[y * iw + x]).collect();
                    for (y, v) in naive_pass(&col, &taps).into_iter().enumerate() {
                        res[y * iw + x] = v;
                    }
                }
                res
            };
            let mut tmp = plane.clone();
            if vfirst {
                tmp = vpass(&tmp, w, h);
                tmp = hpass(&tmp, w, nh);
            } else {
                if nw != w {
                    tmp = hpass(&tmp, w, h);
                }
                if nh != h {
                    tmp = vpass(&tmp, nw, h);
                }
            }
            // torchvision center_crop: pad, then round((n - crop) / 2) with half-to-even.
            let axis = |n: usize| -> (i64, usize) {
                let (pb, pn) = if crop > n {
                    ((crop - n) / 2, n + (crop - n) / 2 + (crop - n).div_ceil(2))
                } else {
                    (0, n)
                };
                let t = ((pn - crop) as f64 / 2.0).round_ties_even() as i64;
                (t - pb as i64, n)
            };
            let (ox, _) = axis(nw);
            let (oy, _) = axis(nh);
            for i in 0..crop {
                for j in 0..crop {
                    let (y, x) = (oy + i as i64, ox + j as i64);
                    let v = if y >= 0 && x >= 0 && (y as usize) < nh && (x as usize) < nw {
                        tmp[y as usize * nw + x as usize]
                    } else {
                        0
                    };
                    out[c * crop * crop + i * crop + j] = (v as f32 / 255.0 - p.mean[c]) / p.std[c];
                }
            }
        }
        out
    }

    /// Small deterministic generator (xorshift64*), so tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Textured test image: gradients, hard edges (to exercise clipping) and noise.
    fn image(rng: &mut Rng, w: usize, h: usize, ch: usize) -> Vec<u8> {
        let mut v = vec![0u8; w * h * ch];
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let base = if (x / 3 + y / 2 + c) % 2 == 0 { 250 } else { 5 };
                    let noise = rng.below(11) as i32 - 5;
                    let grad = ((x * 7 + y * 3 + c * 50) % 60) as i32 - 30;
                    v[(y * w + x) * ch + c] = (base + noise + grad).clamp(0, 255) as u8;
                }
            }
        }
        v
    }

    fn params(resize: u32, crop: u32, f: Interpolation) -> Preprocess {
        Preprocess {
            resize,
            crop,
            interpolation: f,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    fn run(img: &ImageRef<'_>, p: &Preprocess, out_c: usize) -> Vec<f32> {
        let plan = Plan::new(img.width, img.height, img.format, p, out_c).unwrap();
        let mut out = vec![0f32; plan.output_len()];
        // Deliberately misaligned scratch, to exercise the alignment padding.
        let mut scratch = vec![0xAAu8; plan.scratch_bytes() + 1];
        plan.run(img, &mut out, &mut scratch[1..]).unwrap();
        out
    }

    fn check(w: usize, h: usize, fmt: PixelFormat, p: &Preprocess, out_c: usize, seed: u64) {
        let mut rng = Rng(seed | 1);
        let data = image(&mut rng, w, h, fmt.channels());
        let img = ImageRef {
            data: &data,
            width: w,
            height: h,
            format: fmt,
        };
        let got = run(&img, p, out_c);
        let want = naive(&img, p, out_c);
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{w}x{h} {fmt:?} -> {out_c}ch {p:?}: element {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_naive_on_random_geometries() {
        let mut rng = Rng(0x1234_5678);
        for case in 0..300 {
            let w = 1 + rng.below(90);
            let h = 1 + rng.below(90);
            let resize = 1 + rng.below(60) as u32;
            let crop = 1 + rng.below(60) as u32;
            let f = if case % 2 == 0 {
                Interpolation::Bicubic
            } else {
                Interpolation::Bilinear
            };
            let (fmt, oc) = match case % 4 {
                0 | 1 => (PixelFormat::Rgb8, 3),
                2 => (PixelFormat::Rgb8, 1),
                _ => (PixelFormat::L8, if case % 8 == 3 { 1 } else { 3 }),
            };
            check(w, h, fmt, &params(resize, crop, f), oc, case as u64);
        }
    }

    #[test]
    fn imagenet_like_downscale() {
        let p = params(256, 224, Interpolation::Bicubic);
        check(640, 480, PixelFormat::Rgb8, &p, 3, 7);
        check(333, 1000, PixelFormat::Rgb8, &p, 3, 8);
        check(257, 256, PixelFormat::Rgb8, &p, 3, 9);
        check(300, 451, PixelFormat::L8, &p, 1, 10);
        let p = params(256, 224, Interpolation::Bilinear);
        check(512, 384, PixelFormat::Rgb8, &p, 1, 11);
    }

    #[test]
    fn vertical_first_order() {
        // Tall images (height loses > 2× the pixels the width loses): Pillow ≥ 13 order.
        let p = params(256, 224, Interpolation::Bicubic);
        check(300, 2000, PixelFormat::Rgb8, &p, 3, 21);
        check(300, 2000, PixelFormat::Rgb8, &p, 1, 22);
        check(280, 1000, PixelFormat::L8, &p, 3, 23);
        let p = params(28, 20, Interpolation::Bilinear);
        check(94, 611, PixelFormat::Rgb8, &p, 3, 24);
        // Boundary: 100×201 → 50×100 loses 101 rows > 2·50 columns: vertical first;
        // 100×200 → 50×100 is a tie, which stays horizontal-first.
        let plan = |w, h, r| Plan::new(w, h, PixelFormat::L8, &params(r, 8, p.interpolation), 1);
        assert!(plan(100, 201, 50).unwrap().vertical_first);
        assert!(!plan(100, 200, 50).unwrap().vertical_first);
        assert!(!plan(500, 200, 100).unwrap().vertical_first);
        assert!(!plan(100, 201, 300).unwrap().vertical_first); // upscaling
        check(
            100,
            201,
            PixelFormat::Rgb8,
            &params(50, 40, Interpolation::Bicubic),
            3,
            25,
        );
        check(
            100,
            200,
            PixelFormat::Rgb8,
            &params(50, 40, Interpolation::Bicubic),
            3,
            26,
        );
    }

    #[test]
    fn upscaling() {
        check(
            28,
            28,
            PixelFormat::L8,
            &params(256, 224, Interpolation::Bicubic),
            1,
            3,
        );
        check(
            5,
            9,
            PixelFormat::Rgb8,
            &params(64, 56, Interpolation::Bilinear),
            3,
            4,
        );
        check(
            17,
            13,
            PixelFormat::Rgb8,
            &params(40, 40, Interpolation::Bicubic),
            3,
            5,
        );
    }

    #[test]
    fn one_pixel_images() {
        for f in [Interpolation::Bicubic, Interpolation::Bilinear] {
            check(1, 1, PixelFormat::Rgb8, &params(8, 8, f), 3, 1);
            check(1, 1, PixelFormat::Rgb8, &params(1, 1, f), 3, 1);
            check(1, 7, PixelFormat::L8, &params(4, 3, f), 1, 2);
            check(9, 1, PixelFormat::Rgb8, &params(3, 3, f), 1, 2);
        }
        // A 1×1 image is a constant after any resize: every output equals the normalised value.
        let img = ImageRef {
            data: &[200, 100, 50],
            width: 1,
            height: 1,
            format: PixelFormat::Rgb8,
        };
        let p = params(32, 24, Interpolation::Bicubic);
        let out = run(&img, &p, 3);
        for c in 0..3 {
            let want = ([200.0f32, 100.0, 50.0][c] / 255.0 - p.mean[c]) / p.std[c];
            assert!(out[c * 576..(c + 1) * 576].iter().all(|&v| v == want));
        }
    }

    #[test]
    fn exact_size_is_identity() {
        let mut rng = Rng(99);
        let (w, h) = (28, 28);
        let data = image(&mut rng, w, h, 1);
        let img = ImageRef {
            data: &data,
            width: w,
            height: h,
            format: PixelFormat::L8,
        };
        let p = Preprocess {
            resize: 28,
            crop: 28,
            interpolation: Interpolation::Bicubic,
            mean: [0.2860; 3],
            std: [0.3530; 3],
        };
        let out = run(&img, &p, 1);
        for (o, &v) in out.iter().zip(&data) {
            assert_eq!(*o, (v as f32 / 255.0 - 0.2860) / 0.3530);
        }
        // Same with a crop smaller than the image: a pure window.
        let p = Preprocess { crop: 20, ..p };
        let out = run(&img, &p, 1);
        for i in 0..20 {
            for j in 0..20 {
                let v = data[(i + 4) * 28 + j + 4];
                assert_eq!(out[i * 20 + j], (v as f32 / 255.0 - 0.2860) / 0.3530);
            }
        }
    }

    #[test]
    fn geometry_helpers() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(500, 500, 256), (256, 256));
        // round-half-even: (341 − 224) / 2 = 58.5 → 58; 59.5 → 60.
        assert_eq!(crop_origin(341, 224), 58);
        assert_eq!(crop_origin(343, 224), 60);
        assert_eq!(crop_origin(225, 224), 0);
        assert_eq!(crop_origin(227, 224), 2);
        // Padding: crop 8 of 5 → pad 1 before, 2 after, origin −1.
        assert_eq!(crop_origin(5, 8), -1);
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn errors_not_panics() {
        let p = params(8, 8, Interpolation::Bicubic);
        let data = [0u8; 12];
        let img = ImageRef {
            data: &data,
            width: 2,
            height: 2,
            format: PixelFormat::Rgb8,
        };
        let plan = Plan::new(2, 2, PixelFormat::Rgb8, &p, 3).unwrap();
        let mut out = vec![0f32; plan.output_len()];
        let mut small = vec![0u8; plan.scratch_bytes() - 4];
        assert!(matches!(
            plan.run(&img, &mut out, &mut small),
            Err(PreprocessError::ScratchTooSmall { .. })
        ));
        let mut scratch = vec![0u8; plan.scratch_bytes()];
        assert!(matches!(
            plan.run(&img, &mut out[1..], &mut scratch),
            Err(PreprocessError::BadOutputLength { .. })
        ));
        let short = ImageRef {
            data: &data[..11],
            ..img
        };
        assert!(matches!(
            plan.run(&short, &mut out, &mut scratch),
            Err(PreprocessError::BadImageLength { .. })
        ));
        assert_eq!(
            Plan::new(0, 5, PixelFormat::L8, &p, 1).err(),
            Some(PreprocessError::BadImageSize)
        );
        assert_eq!(
            Plan::new(
                5,
                5,
                PixelFormat::L8,
                &params(0, 8, Interpolation::Bicubic),
                1
            )
            .err(),
            Some(PreprocessError::BadParams)
        );
        assert_eq!(
            Plan::new(5, 5, PixelFormat::L8, &p, 2).err(),
            Some(PreprocessError::UnsupportedChannels)
        );
        // A 1 × 10^6 strip would resize to 8 × 8·10^6: rejected, not allocated.
        assert_eq!(
            Plan::new(1, MAX_SIDE, PixelFormat::L8, &p, 1).err(),
            Some(PreprocessError::ResizedOutOfRange {
                width: 1,
                height: MAX_SIDE,
                resize: p.resize as usize
            })
        );
    }
}
