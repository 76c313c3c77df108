//! Model dimensions and the preprocessing a model expects.

/// Dimensions of a Vision Mamba classifier (bimamba v2, middle cls token, abs pos-embed).
///
/// Everything the forward pass needs is derived from these fields (each one's meaning is on the
/// field; the tensor shapes they imply are in `docs/FORMAT.md` §Tensor schema).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VimConfig {
    /// `D`, the residual stream width.
    pub embed_dim: usize,
    /// Number of Mamba blocks.
    pub depth: usize,
    /// Patch-embedding kernel size (square).
    pub patch: usize,
    /// Patch-embedding stride (equal to `patch`, or smaller for overlapping patches).
    pub stride: usize,
    /// Input height = width in pixels.
    pub img_size: usize,
    /// Input channels (3 for RGB, 1 for grayscale).
    pub channels: usize,
    /// Classifier outputs.
    pub num_classes: usize,
    /// `N`, SSM state size per channel.
    pub d_state: usize,
    /// `R`, the low rank of the Δ projection.
    pub dt_rank: usize,
    /// `K`, depthwise conv1d taps.
    pub d_conv: usize,
    /// `E`, the mixer's inner width (`2·D` for released models).
    pub d_inner: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
}

/// Upper bounds accepted for any dimension, so that derived sizes never overflow.
pub const MAX_DIM: usize = 1 << 16;

impl VimConfig {
    /// Patches per side: `(img − patch) / stride + 1`.
    pub const fn grid(&self) -> usize {
        (self.img_size - self.patch) / self.stride + 1
    }
    /// Number of patch tokens `P`.
    pub const fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Sequence length `L = P + 1` (patches plus the cls token).
    pub const fn seq_len(&self) -> usize {
        self.num_patches() + 1
    }
    /// Sequence index of the cls token, `P / 2`.
    pub const fn cls_pos(&self) -> usize {
        self.num_patches() / 2
    }
    /// Length of one flattened patch, `channels · patch²`.
    pub const fn patch_len(&self) -> usize {
        self.channels * self.patch * self.patch
    }
    /// Rows of `x_proj`: `R + 2N`.
    pub const fn x_proj_rows(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }
    /// Elements of one normalised input image (`C·H·W`).
    pub const fn input_len(&self) -> usize {
        self.channels * self.img_size * self.img_size
    }

    /// Checks that every dimension is non-zero, bounded by [`MAX_DIM`] and consistent.
    pub const fn check(&self) -> Result<(), ConfigError> {
        let dims = [
            self.embed_dim,
            self.depth,
            self.patch,
            self.stride,
            self.img_size,
            self.channels,
            self.num_classes,
            self.d_state,
            self.dt_rank,
            self.d_conv,
            self.d_inner,
        ];
        let mut i = 0;
        while i < dims.len() {
            if dims[i] == 0 || dims[i] > MAX_DIM {
                return Err(ConfigError::DimOutOfRange);
            }
            i += 1;
        }
        if self.patch > self.img_size || self.stride > self.patch {
            return Err(ConfigError::BadPatchGeometry);
        }
        if self.channels > 4 {
            return Err(ConfigError::DimOutOfRange);
        }
        // Keep every activation buffer comfortably inside usize on 32-bit targets. The products
        // below (grid², C·p², C·H·W) can exceed u32 for hostile dims: check them before any
        // accessor (`seq_len`, `patch_len`, `input_len`) computes them unchecked.
        let grid = self.grid();
        match grid.checked_mul(grid) {
            Some(p) if p < MAX_DIM => {}
            _ => return Err(ConfigError::DimOutOfRange),
        }
        if !fits3(self.channels, self.patch, self.patch)
            || !fits3(self.channels, self.img_size, self.img_size)
        {
            return Err(ConfigError::DimOutOfRange);
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(ConfigError::BadEpsilon);
        }
        Ok(())
    }
}

/// True if `a·b·c` fits in `usize` (the `check` of products that overflow 32-bit targets).
const fn fits3(a: usize, b: usize, c: usize) -> bool {
    match a.checked_mul(b) {
        Some(ab) => ab.checked_mul(c).is_some(),
        None => false,
    }
}

/// A [`VimConfig`] that cannot describe a valid model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A dimension is zero or larger than [`MAX_DIM`].
    DimOutOfRange,
    /// `patch > img_size` or `stride > patch`.
    BadPatchGeometry,
    /// `norm_eps` is not in (0, 1).
    BadEpsilon,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::DimOutOfRange => "a model dimension is zero or too large",
            ConfigError::BadPatchGeometry => {
                "patch size larger than the image or stride larger than the patch"
            }
            ConfigError::BadEpsilon => "RMSNorm epsilon is not in (0, 1)",
        })
    }
}

/// Resampling filter used when resizing the shorter image side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Interpolation {
    /// PIL `Image.BICUBIC` (a = −0.5, antialiased when downscaling), torchvision's default for Vim.
    Bicubic = 0,
    /// PIL `Image.BILINEAR` (antialiased when downscaling).
    Bilinear = 1,
}

/// The eval transform of a model: resize shorter side → centre crop → `(x/255 − mean) / std`.
///
/// For `channels == 1` the image is first converted to 8-bit luma as PIL's `convert('L')` does,
/// and only `mean[0]` / `std[0]` are used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Target length of the shorter side after resizing.
    pub resize: u32,
    /// Side of the square centre crop (equals the model's `img_size`).
    pub crop: u32,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean on the `[0, 1]` scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation on the `[0, 1]` scale.
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet defaults for a model of input side `img_size`: resize `img_size / 0.875`, crop `img_size`.
    pub const fn imagenet(img_size: u32) -> Self {
        Preprocess {
            resize: (img_size as u64 * 8 / 7) as u32,
            crop: img_size,
            interpolation: Interpolation::Bicubic,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}
