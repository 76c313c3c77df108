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
pub mod scan;
// The scan's vector body, generic over the SIMD primitives (instantiated in avx2.rs/neon.rs).
mod scan_simd;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "aarch64")]
pub mod neon;

pub use crate::format::IndexLayout;
pub use dispatch::{kernels, Kernels, Level};

use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;

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
///
/// A unique borrow of its `rows × cols` elements only (not of the gaps between rows), so
/// [`MatMut::split_cols`] can hand two threads interleaved column blocks of the same rows.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: NonNull<f32>,
    rows: usize,
    cols: usize,
    stride: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `MatMut` is a unique borrow of its elements, like `&mut [f32]` (which is Send + Sync).
unsafe impl Send for MatMut<'_> {}
// SAFETY: as above; `&MatMut` only reads.
unsafe impl Sync for MatMut<'_> {}

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
            ptr: NonNull::from(data).cast(),
            rows,
            cols,
            stride,
            _borrow: PhantomData,
        }
    }
    /// Views `rows × cols` values with row stride `stride` starting at `ptr`.
    ///
    /// # Safety
    /// For the lifetime `'a`, the elements `ptr[i·stride + j]` (`i < rows`, `j < cols`) must be
    /// valid for reads and writes and accessed through this view only.
    pub(crate) unsafe fn from_raw(
        ptr: NonNull<f32>,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Self {
        MatMut {
            ptr,
            rows,
            cols,
            stride,
            _borrow: PhantomData,
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
        // SAFETY: row `i`'s `cols` elements lie inside the slice given to `new` (checked there,
        // and kept by the splits) and belong to this view alone; `&mut self` makes the
        // returned borrow unique.
        unsafe {
            core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(i * self.stride), self.cols)
        }
    }
    /// Row `i`, read-only.
    ///
    /// # Panics
    /// If `i >= rows`.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows);
        // SAFETY: as in `row_mut`; `&self` forbids a concurrent `row_mut`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(i * self.stride), self.cols) }
    }
    /// A shorter-lived view of the same elements (to pass on without giving this one up).
    pub fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
            _borrow: PhantomData,
        }
    }
    /// Splits into columns `..at` and `at..` of every row: two views over disjoint elements.
    ///
    /// # Panics
    /// If `at > cols`.
    pub fn split_cols(self, at: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(
            at <= self.cols,
            "MatMut: split at column {at} of {}",
            self.cols
        );
        let right = MatMut {
            // SAFETY: `at ≤ cols`, so the pointer stays inside (or one past) row 0's elements.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(at)) },
            rows: self.rows,
            cols: self.cols - at,
            stride: self.stride,
            _borrow: PhantomData,
        };
        let left = MatMut { cols: at, ..self };
        (left, right)
    }
    /// Splits into rows `..at` and `at..`.
    ///
    /// # Panics
    /// If `at > rows`.
    pub fn split_rows(self, at: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(
            at <= self.rows,
            "MatMut: split at row {at} of {}",
            self.rows
        );
        let offset = if at == self.rows { 0 } else { at * self.stride };
        let bottom = MatMut {
            // SAFETY: for `at < rows`, row `at` starts inside the viewed span; otherwise the
            // bottom view is empty and keeps the base pointer.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(offset)) },
            rows: self.rows - at,
            cols: self.cols,
            stride: self.stride,
            _borrow: PhantomData,
        };
        let top = MatMut { rows: at, ..self };
        (top, bottom)
    }
    /// Columns `r` of rows `rows`: the middle piece of [`split_rows`](Self::split_rows) and
    /// [`split_cols`](Self::split_cols).
    ///
    /// # Panics
    /// If a range is reversed or out of bounds.
    pub fn sub(self, rows: Range<usize>, cols: Range<usize>) -> MatMut<'a> {
        assert!(rows.start <= rows.end && cols.start <= cols.end);
        let (_, m) = self.split_rows(rows.start);
        let (m, _) = m.split_rows(rows.end - rows.start);
        let (_, m) = m.split_cols(cols.start);
        m.split_cols(cols.end - cols.start).0
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

/// Codeword indices of a VQ matrix, `rows × ceil(cols / d)` in an [`IndexLayout`].
#[derive(Clone, Copy, Debug)]
pub enum Indices<'a> {
    /// One byte per index (`k ≤ 256`).
    U8(&'a [u8]),
    /// Two bytes per index (`k ≤ 65536`).
    U16(&'a [u16]),
}

/// A vector-quantized `rows × cols` matrix: the `c`-th sub-vector of row `r`,
/// `W[r, c·d .. min((c+1)·d, cols)]`, is the leading part of the codeword whose index is stored
/// at `layout.offset(r, c, g)` (`g = ceil(cols / d)`; the last sub-vector of a row is truncated
/// when `d ∤ cols`).
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
    /// The `layout.len(rows, ceil(cols / d))` indices, each `< k`.
    pub indices: Indices<'a>,
    /// Order of `indices`.
    pub layout: IndexLayout,
}

impl VqMatrix<'_> {
    /// Sub-vectors (indices) per row, `ceil(cols / d)`.
    pub fn groups_per_row(&self) -> usize {
        self.cols.div_ceil(self.d)
    }

    /// The codeword index of sub-vector `c` of row `r`.
    ///
    /// # Panics
    /// If `(r, c)` lies outside the stored indices.
    #[inline(always)]
    pub fn index(&self, r: usize, c: usize) -> usize {
        let at = self.layout.offset(r, c, self.groups_per_row());
        match self.indices {
            Indices::U8(ix) => ix[at] as usize,
            Indices::U16(ix) => ix[at] as usize,
        }
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

impl<'a> Weight<'a> {
    /// Output features (rows) `rows` of a weight with `cols` input features: what a thread
    /// computes when a GEMM is split by output columns.
    ///
    /// # Panics
    /// If `rows` is out of bounds, or does not start at a block boundary of
    /// [`IndexLayout::Rows16`] indices.
    pub fn rows(&self, rows: Range<usize>, cols: usize) -> Weight<'a> {
        match *self {
            Weight::Dense(w) => Weight::Dense(&w[rows.start * cols..rows.end * cols]),
            Weight::Vq(v) => {
                let g = v.groups_per_row();
                let span = match v.layout {
                    IndexLayout::RowMajor => rows.start * g..rows.end * g,
                    IndexLayout::Rows16 => {
                        let b = IndexLayout::BLOCK;
                        assert!(
                            rows.start.is_multiple_of(b),
                            "Weight::rows: unaligned start"
                        );
                        assert!(rows.end <= v.rows, "Weight::rows: end out of bounds");
                        rows.start * g..rows.end.div_ceil(b) * b * g
                    }
                };
                let indices = match v.indices {
                    Indices::U8(i) => Indices::U8(&i[span]),
                    Indices::U16(i) => Indices::U16(&i[span]),
                };
                Weight::Vq(VqMatrix {
                    rows: rows.len(),
                    indices,
                    ..v
                })
            }
        }
    }
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
