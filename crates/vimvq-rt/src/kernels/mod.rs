//! Compute kernels and the operand types they take.
//!
//! [`scalar`] is the portable implementation of every kernel and the oracle that the SIMD variants
//! ([`avx2`], [`neon`], bodies in `generic.rs`, selected by [`dispatch`]) are tested against. Its summation orders are part of its
//! contract (see each function), so a faster variant can be compared bit for bit where it keeps
//! the same order, and within a stated tolerance where it does not (FMA, other reductions).
//!
//! All matrices are row-major f32. Linear layers follow PyTorch's layout: a weight `W` has shape
//! `(out, in)` and `y = x·Wᵀ`.

pub mod scalar;

pub mod dispatch;
pub(crate) mod generic;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "aarch64")]
pub mod neon;

pub use dispatch::{kernels, Kernels, Level};

/// Scan / convolution direction of a bidirectional Mamba mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Left to right: causal conv (taps `t−K+1 ..= t`), scan `t = 0, 1, …`.
    Forward,
    /// Right to left: anti-causal conv (taps `t ..= t+K−1`), scan `t = L−1, L−2, …`.
    Backward,
}

/// Read-only strided view of a row-major f32 matrix: element `(i, j)` is `data[i·stride + j]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> MatRef<'a> {
    /// Views `data` as `rows × cols` with row stride `stride`.
    ///
    /// # Panics
    /// If `stride < cols` or `data` is shorter than `(rows − 1)·stride + cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        assert!(stride >= cols, "MatRef: stride {stride} < cols {cols}");
        assert!(
            rows == 0 || (rows - 1) * stride + cols <= data.len(),
            "MatRef: {rows}×{cols} (stride {stride}) does not fit in {} values",
            data.len()
        );
        MatRef {
            data,
            rows,
            cols,
            stride,
        }
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row `i` (its `cols` values).
    ///
    /// # Panics
    /// If `i >= rows`.
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        assert!(i < self.rows);
        &self.data[i * self.stride..i * self.stride + self.cols]
    }
}

/// Mutable strided view of a row-major f32 matrix; see [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> MatMut<'a> {
    /// Views `data` as `rows × cols` with row stride `stride`.
    ///
    /// # Panics
    /// If `stride < cols` or `data` is shorter than `(rows − 1)·stride + cols`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Self {
        assert!(stride >= cols, "MatMut: stride {stride} < cols {cols}");
        assert!(
            rows == 0 || (rows - 1) * stride + cols <= data.len(),
            "MatMut: {rows}×{cols} (stride {stride}) does not fit in {} values",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            stride,
        }
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row `i`, mutable.
    ///
    /// # Panics
    /// If `i >= rows`.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows);
        &mut self.data[i * self.stride..i * self.stride + self.cols]
    }
    /// Row `i`, read-only.
    ///
    /// # Panics
    /// If `i >= rows`.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows);
        &self.data[i * self.stride..i * self.stride + self.cols]
    }
}

/// Codewords of a VQ codebook, `k × d` row-major.
#[derive(Clone, Copy, Debug)]
pub enum Codebook<'a> {
    /// IEEE binary32 codewords.
    F32(&'a [f32]),
    /// IEEE binary16 codewords (raw bits), widened exactly to f32 when decoded.
    F16(&'a [u16]),
}

/// Codeword indices of a VQ matrix, `rows × ceil(cols / d)` row-major.
#[derive(Clone, Copy, Debug)]
pub enum Indices<'a> {
    /// One byte per index (`k ≤ 256`).
    U8(&'a [u8]),
    /// Two bytes per index (`k ≤ 65536`).
    U16(&'a [u16]),
}

/// A vector-quantized `rows × cols` matrix: the `c`-th sub-vector of row `r`,
/// `W[r, c·d .. min((c+1)·d, cols)]`, is the leading part of codeword `indices[r·g + c]`
/// (`g = ceil(cols / d)`; the last sub-vector of a row is truncated when `d ∤ cols`).
#[derive(Clone, Copy, Debug)]
pub struct VqMatrix<'a> {
    /// Logical rows (output features).
    pub rows: usize,
    /// Logical columns (input features).
    pub cols: usize,
    /// Codewords in the codebook.
    pub k: usize,
    /// Codeword length.
    pub d: usize,
    /// The `k × d` codewords.
    pub codebook: Codebook<'a>,
    /// The `rows × ceil(cols / d)` indices, each `< k`.
    pub indices: Indices<'a>,
}

impl VqMatrix<'_> {
    /// Sub-vectors (indices) per row, `ceil(cols / d)`.
    pub fn groups_per_row(&self) -> usize {
        self.cols.div_ceil(self.d)
    }
}

/// Weight of a linear layer, `(rows, cols) = (out, in)`.
#[derive(Clone, Copy, Debug)]
pub enum Weight<'a> {
    /// Dense f32, `rows × cols` row-major.
    Dense(&'a [f32]),
    /// Vector-quantized.
    Vq(VqMatrix<'a>),
}

/// Widens an IEEE binary16 value (raw bits) to f32, exactly (subnormals, ±inf and NaN included).
#[inline]
pub const fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h as u32) >> 10) & 0x1f;
    let man = (h as u32) & 0x3ff;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: normalise the mantissa.
            let mut e: u32 = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}
