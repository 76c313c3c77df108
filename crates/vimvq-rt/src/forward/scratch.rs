//! The scratch buffers of the forward pass: their sizes, and [`Scratch`], carved from the
//! caller's bytes.

use bytemuck::{Pod, Zeroable};

use crate::config::VimConfig;
use crate::kernels::dispatch::scratch_len;

/// Patch tokens embedded per im2col chunk (bounds the im2col buffer).
pub const PATCH_CHUNK: usize = 16;

/// f32 values per 64-byte line; every scratch buffer starts on a line.
pub(super) const LINE: usize = 16;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
pub(super) struct Line([f32; LINE]);

/// Number of scratch buffers.
pub(super) const NBUF: usize = 11;
/// Indices into [`buffer_lens`] of the per-worker buffers.
pub(super) const BUF_A: usize = 7;
pub(super) const BUF_H: usize = 8;
pub(super) const BUF_PANEL: usize = 9;
pub(super) const BUF_IM2COL: usize = 10;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// f32 counts of the scratch buffers (see [`Scratch`]), each rounded up to whole lines.
/// Saturates instead of overflowing.
pub(super) const fn buffer_lens(c: &VimConfig) -> [usize; NBUF] {
    let l = c.seq_len();
    let (d, e, n) = (c.embed_dim, c.d_inner, c.d_state);
    let x = c.x_proj_rows();
    let max_cols = max(max(c.patch_len(), d), max(e, c.dt_rank));
    let raw = [
        l.saturating_mul(d),                       // residual
        l.saturating_mul(d),                       // hidden
        l.saturating_mul(e).saturating_mul(2),     // xz
        l.saturating_mul(e),                       // u
        l.saturating_mul(x),                       // x_dbl
        l.saturating_mul(e),                       // delta
        l.saturating_mul(e),                       // acc
        e.saturating_mul(n),                       // A
        e.saturating_mul(n),                       // h
        scratch_len(max_cols),                     // packed GEMM / VQ panel, VQ GEMV table
        PATCH_CHUNK.saturating_mul(c.patch_len()), // im2col
    ];
    let mut out = [0usize; NBUF];
    let mut i = 0;
    while i < NBUF {
        out[i] = raw[i].saturating_add(LINE - 1) / LINE * LINE;
        i += 1;
    }
    out
}

impl VimConfig {
    /// Bytes of scratch memory [`infer`](super::infer) needs for this model, including up to 63
    /// bytes of slack to align the buffer internally to 64 bytes. A `const fn`, so an application
    /// can size a `static` arena. Returns `usize::MAX` for a config that fails [`VimConfig::check`]
    /// or whose buffers do not fit the address space.
    ///
    /// For one image: `4·(2·L·D + 2·L·E + 3·L·E + L·(R+2N) + 2·E·N + 16·max(C·p², D, E, R) +
    /// 16·C·p²)` bytes, each buffer rounded up to 64 bytes, plus 63.
    pub const fn scratch_bytes(&self) -> usize {
        if self.check().is_err() {
            return usize::MAX;
        }
        let lens = buffer_lens(self);
        let mut total: usize = 0;
        let mut i = 0;
        while i < NBUF {
            total = total.saturating_add(lens[i]);
            i += 1;
        }
        if total > (usize::MAX - 63) / 4 {
            return usize::MAX;
        }
        total * 4 + 63
    }

    /// Bytes of scratch memory [`infer_threaded`](super::infer_threaded) needs with `threads`
    /// workers: [`scratch_bytes`](Self::scratch_bytes) plus, per extra worker, its own GEMM panel,
    /// scan state and im2col chunk (`4·(16·max(C·p², D, E, R) + 2·E·N + 16·C·p²)` bytes, rounded to
    /// 64-byte lines) and 63 bytes of alignment slack. Equals `scratch_bytes()` for `threads ≤ 1`;
    /// `usize::MAX` when it does not fit.
    pub const fn scratch_bytes_threaded(&self, threads: usize) -> usize {
        let base = self.scratch_bytes();
        if base == usize::MAX || threads <= 1 {
            return base;
        }
        let lens = buffer_lens(self);
        let worker =
            (lens[BUF_A] + lens[BUF_H] + lens[BUF_PANEL] + lens[BUF_IM2COL]).saturating_mul(4);
        match worker.checked_mul(threads - 1) {
            Some(extra) => base.saturating_add(63).saturating_add(extra),
            None => usize::MAX,
        }
    }
}

/// The scratch buffers, carved from the caller's bytes.
pub(super) struct Scratch<'s> {
    pub(super) residual: &'s mut [f32],
    pub(super) hidden: &'s mut [f32],
    pub(super) xz: &'s mut [f32],
    pub(super) u: &'s mut [f32],
    pub(super) x_dbl: &'s mut [f32],
    pub(super) delta: &'s mut [f32],
    pub(super) acc: &'s mut [f32],
    pub(super) a: &'s mut [f32],
    pub(super) h: &'s mut [f32],
    pub(super) panel: &'s mut [f32],
    pub(super) im2col: &'s mut [f32],
}

impl<'s> Scratch<'s> {
    pub(super) fn carve(c: &VimConfig, bytes: &'s mut [u8]) -> Option<Self> {
        let (_, lines, _) = bytemuck::pod_align_to_mut::<u8, Line>(bytes);
        let mut rest: &'s mut [f32] = bytemuck::cast_slice_mut(lines);
        let mut bufs: [&'s mut [f32]; NBUF] = Default::default();
        for (buf, len) in bufs.iter_mut().zip(buffer_lens(c)) {
            if rest.len() < len {
                return None;
            }
            let (head, tail) = core::mem::take(&mut rest).split_at_mut(len);
            *buf = head;
            rest = tail;
        }
        let [residual, hidden, xz, u, x_dbl, delta, acc, a, h, panel, im2col] = bufs;
        Some(Scratch {
            residual,
            hidden,
            xz,
            u,
            x_dbl,
            delta,
            acc,
            a,
            h,
            panel,
            im2col,
        })
    }
}
