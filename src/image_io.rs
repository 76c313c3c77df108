//! Image decoding for `run` and `eval`: the `image` crate, converted to what PIL would hand
//! torchvision (`convert('RGB')`, or `convert('L')` for 1-channel models).

use std::path::Path;

use anyhow::{anyhow, Result};
use image::{DynamicImage, ImageReader};
use vimvq_rt::frame::FrameFormat;
use vimvq_rt::preprocess::PixelFormat;

/// File extensions `eval` picks up (compared case-insensitively), as listed in docs/CLI.md.
pub const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// True if `path` has one of [`EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A decoded 8-bit image ready for [`vimvq_rt::context`].
#[derive(Debug)]
pub struct Decoded {
    /// Interleaved pixels, rows top to bottom.
    pub data: Vec<u8>,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `L8` or `Rgb8`.
    pub format: PixelFormat,
}

impl Decoded {
    /// The frame layout of `data` for [`vimvq_rt::context`].
    pub fn frame_format(&self) -> FrameFormat {
        match self.format {
            PixelFormat::L8 => FrameFormat::Gray8,
            PixelFormat::Rgb8 => FrameFormat::Rgb24,
        }
    }
}

/// Decodes `path` (format detected from the content, not the extension).
///
/// * Grayscale files stay 8-bit luma (`L8`): PIL opens them as mode `L`; `convert('RGB')`
///   replicates them, which the preprocessing does for 3-channel models.
/// * Everything else becomes RGB (alpha dropped, as `convert('RGB')` does); for 1-channel
///   models the preprocessing applies PIL's `convert('L')` luma rule to it.
/// * 16-bit files are reduced to 8 bits by the `image` crate (PIL has no exact equivalent).
pub fn decode(path: &Path) -> Result<Decoded> {
    let reader = ImageReader::open(path)
        .map_err(|e| crate::io_error::io_error(path, &e))?
        .with_guessed_format()
        .map_err(|e| crate::io_error::io_error(path, &e))?;
    if reader.format().is_none() {
        return Err(anyhow!(
            "{}: not a supported image (expected {})",
            path.display(),
            EXTENSIONS.join(", ")
        ));
    }
    let img = reader
        .decode()
        .map_err(|e| anyhow!("{}: cannot decode image: {e}", path.display()))?;
    Ok(convert(img))
}

/// Converts a decoded image to the pixel layout the preprocessing takes.
pub fn convert(img: DynamicImage) -> Decoded {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let gray = matches!(
        img,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    );
    let (data, format) = if gray {
        let data = match img {
            DynamicImage::ImageLuma8(b) => b.into_raw(),
            other => other.to_luma8().into_raw(),
        };
        (data, PixelFormat::L8)
    } else {
        let data = match img {
            DynamicImage::ImageRgb8(b) => b.into_raw(),
            other => other.to_rgb8().into_raw(),
        };
        (data, PixelFormat::Rgb8)
    };
    Decoded {
        data,
        width,
        height,
        format,
    }
}
