//! Raw camera frames → interleaved 8-bit RGB, for [`crate::preprocess`]. `no_std`, no allocation:
//! the caller passes both buffers.
//!
//! # Layouts
//! * **RGB24** (`ffmpeg -pix_fmt rgb24`): `W·H·3` bytes, R G B per pixel, rows top to bottom, no
//!   row padding. Fed to the preprocessing as is.
//! * **Gray8** (`-pix_fmt gray`, PIL mode `L`): `W·H` bytes, one luma sample per pixel. Fed to
//!   the preprocessing as is (replicated to three channels for RGB models).
//! * **I420** (`yuv420p`, `rpicam-vid --codec yuv420`): three planes back to back with no
//!   padding: Y (`W × H`), then U (Cb) and V (Cr), each `⌈W/2⌉ × ⌈H/2⌉`. Frame length
//!   `W·H + 2·⌈W/2⌉·⌈H/2⌉` ([`i420_len`]).
//!
//! # Numerical contract: I420 → RGB ([`i420_to_rgb24`])
//! ITU-R BT.601, *limited* ("TV") range — Y in 16‥235, Cb/Cr in 16‥240 centred on 128 — the
//! matrix ffmpeg, libcamera and V4L2 webcams use for SD/VGA-class YUV unless told otherwise.
//! Chroma is upsampled by replication (pixel `(x, y)` uses chroma sample `(x/2, y/2)`, as
//! ffmpeg's unscaled `yuv420p → rgb24` path does). Per pixel, in 32-bit integers with 8
//! fractional bits (the coefficients are `round(256 · k)` of the exact matrix):
//! ```text
//! c = Y − 16,  d = U − 128,  e = V − 128
//! R = clamp((298·c           + 409·e + 128) >> 8, 0, 255)
//! G = clamp((298·c − 100·d   − 208·e + 128) >> 8, 0, 255)
//! B = clamp((298·c + 516·d           + 128) >> 8, 0, 255)
//! ```
//! (`>>` is an arithmetic shift, i.e. floor division by 256). Against the exact real-valued
//! BT.601 matrix (`R = 1.164·c + 1.596·e`, …) the result is within ±1 of the correctly rounded
//! value for in-range inputs (checked exhaustively over all 2²⁴ (Y, U, V) triples in the tests);
//! ffmpeg's swscale uses its own fixed-point tables and differs by a few levels at most (see
//! `tests/stream_ffmpeg.rs`).

/// Pixel layout of a raw frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFormat {
    /// Interleaved 8-bit R G B.
    Rgb24,
    /// Planar 4:2:0 Y, U, V (`yuv420p`), BT.601 limited range.
    I420,
    /// One 8-bit luma sample per pixel.
    Gray8,
}

/// Why a frame could not be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Zero width or height, or a size whose byte count overflows `usize`.
    BadSize,
    /// The source does not hold exactly [`frame_len`] bytes.
    BadFrameLength {
        /// Bytes the size implies.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The RGB output does not hold exactly `W·H·3` bytes.
    BadOutputLength {
        /// Bytes the size implies.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            FrameError::BadSize => write!(f, "frame has a zero side or is too large"),
            FrameError::BadFrameLength { expected, got } => {
                write!(
                    f,
                    "frame holds {got} bytes, its size and format imply {expected}"
                )
            }
            FrameError::BadOutputLength { expected, got } => {
                write!(
                    f,
                    "RGB buffer holds {got} bytes, the frame needs {expected}"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// `W·H·3`, or `None` on a zero side or overflow.
pub fn rgb24_len(width: usize, height: usize) -> Option<usize> {
    if width == 0 || height == 0 {
        return None;
    }
    width.checked_mul(height)?.checked_mul(3)
}

/// `W·H + 2·⌈W/2⌉·⌈H/2⌉`, or `None` on a zero side or overflow.
pub fn i420_len(width: usize, height: usize) -> Option<usize> {
    if width == 0 || height == 0 {
        return None;
    }
    let chroma = width.div_ceil(2).checked_mul(height.div_ceil(2))?;
    width
        .checked_mul(height)?
        .checked_add(chroma.checked_mul(2)?)
}

/// Bytes of one `width × height` frame in `format`, or `None` on a zero side or overflow.
pub fn frame_len(format: FrameFormat, width: usize, height: usize) -> Option<usize> {
    match format {
        FrameFormat::Rgb24 => rgb24_len(width, height),
        FrameFormat::I420 => i420_len(width, height),
        FrameFormat::Gray8 => {
            if width == 0 || height == 0 {
                return None;
            }
            width.checked_mul(height)
        }
    }
}

/// One BT.601 limited-range pixel (the module's numerical contract).
#[inline(always)]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16) + 128;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clip = |x: i32| (x >> 8).clamp(0, 255) as u8;
    [
        clip(c + 409 * e),
        clip(c - 100 * d - 208 * e),
        clip(c + 516 * d),
    ]
}

/// Converts a `width × height` I420 frame `src` ([`i420_len`] bytes) to RGB24 in `dst`
/// (`W·H·3` bytes). Any width and height ≥ 1, odd ones included.
pub fn i420_to_rgb24(
    src: &[u8],
    width: usize,
    height: usize,
    dst: &mut [u8],
) -> Result<(), FrameError> {
    let expected = i420_len(width, height).ok_or(FrameError::BadSize)?;
    if src.len() != expected {
        return Err(FrameError::BadFrameLength {
            expected,
            got: src.len(),
        });
    }
    let out_len = rgb24_len(width, height).ok_or(FrameError::BadSize)?;
    if dst.len() != out_len {
        return Err(FrameError::BadOutputLength {
            expected: out_len,
            got: dst.len(),
        });
    }
    let cw = width.div_ceil(2);
    let ch = height.div_ceil(2);
    let (y_plane, chroma) = src.split_at(width * height);
    let (u_plane, v_plane) = chroma.split_at(cw * ch);
    for (row, (y_row, out_row)) in y_plane
        .chunks_exact(width)
        .zip(dst.chunks_exact_mut(width * 3))
        .enumerate()
    {
        let u_row = &u_plane[(row / 2) * cw..(row / 2 + 1) * cw];
        let v_row = &v_plane[(row / 2) * cw..(row / 2 + 1) * cw];
        for (x, (&y, px)) in y_row.iter().zip(out_row.chunks_exact_mut(3)).enumerate() {
            px.copy_from_slice(&yuv_to_rgb(y, u_row[x / 2], v_row[x / 2]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact BT.601 limited range, correctly rounded.
    fn reference(y: u8, u: u8, v: u8) -> [f64; 3] {
        let c = y as f64 - 16.0;
        let d = u as f64 - 128.0;
        let e = v as f64 - 128.0;
        let k = 255.0 / 219.0;
        let kc = 255.0 / 224.0;
        [
            k * c + kc * 1.402 * e,
            k * c - kc * (1.772 * 0.114 / 0.587) * d - kc * (1.402 * 0.299 / 0.587) * e,
            k * c + kc * 1.772 * d,
        ]
    }

    #[test]
    fn every_yuv_triple_within_one_level_of_exact() {
        let mut worst = 0.0f64;
        for y in 0..=255u8 {
            for u in 0..=255u8 {
                for v in 0..=255u8 {
                    let got = yuv_to_rgb(y, u, v);
                    let want = reference(y, u, v);
                    for ch in 0..3 {
                        let w = want[ch].round().clamp(0.0, 255.0);
                        let diff = (got[ch] as f64 - w).abs();
                        worst = worst.max(diff);
                    }
                }
            }
        }
        assert!(worst <= 1.0, "worst deviation {worst} levels");
    }

    #[test]
    fn greys_and_primaries() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
        // BT.601 limited-range red: Y 81, Cb 90, Cr 240.
        assert_eq!(yuv_to_rgb(81, 90, 240), [255, 0, 0]);
    }

    #[test]
    fn odd_sizes_and_lengths() {
        assert_eq!(i420_len(3, 3), Some(9 + 2 * 4));
        assert_eq!(i420_len(4, 2), Some(8 + 2 * 2));
        assert_eq!(i420_len(0, 2), None);
        assert_eq!(i420_len(usize::MAX, 2), None);
        assert_eq!(rgb24_len(usize::MAX / 2, 1), None);
        // 3×3: chroma 2×2; pixel (2, 2) uses chroma sample (1, 1).
        let mut src = [0u8; 17];
        src[..9].copy_from_slice(&[126; 9]);
        src[9..13].copy_from_slice(&[128, 128, 128, 228]); // U
        src[13..17].copy_from_slice(&[128; 4]); // V
        let mut dst = [0u8; 27];
        i420_to_rgb24(&src, 3, 3, &mut dst).unwrap();
        assert_eq!(&dst[..3], &[128, 128, 128]);
        assert_eq!(&dst[24..27], &yuv_to_rgb(126, 228, 128));
        // Pixel (1, 1) uses chroma sample (0, 0); pixel (2, 0) uses (1, 0).
        assert_eq!(&dst[12..15], &[128, 128, 128]);
        assert_eq!(&dst[6..9], &[128, 128, 128]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut dst = [0u8; 12];
        assert_eq!(
            i420_to_rgb24(&[0; 5], 2, 2, &mut dst),
            Err(FrameError::BadFrameLength {
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            i420_to_rgb24(&[0; 6], 2, 2, &mut dst[..11]),
            Err(FrameError::BadOutputLength {
                expected: 12,
                got: 11
            })
        );
        assert_eq!(i420_to_rgb24(&[], 0, 2, &mut dst), Err(FrameError::BadSize));
    }
}
