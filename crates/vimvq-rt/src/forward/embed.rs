//! Patch embedding: im2col GEMM, cls token and position embedding of a range of patches.

use core::ops::Range;

use super::error::InferError;
use super::scratch::PATCH_CHUNK;
use super::weights::{dense, weight};
use crate::config::VimConfig;
use crate::format::Role;
use crate::kernels::dispatch::linear_f32;
use crate::kernels::scalar::add_bias_f32;
use crate::kernels::{MatMut, MatRef};
use crate::model::Model;

/// Token rows that patches `patches` occupy, plus the cls row when the range reaches it: patches
/// before the cls position keep their index, the others move up by one, and the range that
/// starts at or contains the cls position owns its row. Consecutive patch ranges give
/// consecutive row ranges, and `0..P` gives `0..L`.
pub(super) fn embed_rows(patches: Range<usize>, pos: usize) -> Range<usize> {
    let row = |k: usize| k + usize::from(k > pos);
    row(patches.start)..row(patches.end)
}

/// Patch embedding (im2col GEMM in chunks + bias), middle cls token and position embedding of
/// the rows [`embed_rows`]`(patches)`; `hidden` views exactly those rows.
pub(super) fn patch_embed_rows(
    model: &Model<'_>,
    c: &VimConfig,
    input: &[f32],
    patches: Range<usize>,
    hidden: &mut MatMut<'_>,
    im2col: &mut [f32],
    panel: &mut [f32],
) -> Result<(), InferError> {
    let (d, g, p, stride, img) = (c.embed_dim, c.grid(), c.patch, c.stride, c.img_size);
    let (pl, pos) = (c.patch_len(), c.cls_pos());
    let w = weight(model, Role::PatchWeight, 0)?;
    let bias = dense(model, Role::PatchBias, 0)?;
    let rows = embed_rows(patches.clone(), pos);
    let r0 = rows.start;
    let mut k0 = patches.start;
    while k0 < patches.end {
        let k1 = (k0 + PATCH_CHUNK).min(patches.end);
        // Patch k is grid cell (k / g, k % g), flattened in (channel, row, col) order.
        for k in k0..k1 {
            let (gy, gx) = (k / g, k % g);
            let dst = &mut im2col[(k - k0) * pl..(k - k0 + 1) * pl];
            for ch in 0..c.channels {
                for py in 0..p {
                    let src = ch * img * img + (gy * stride + py) * img + gx * stride;
                    let o = (ch * p + py) * p;
                    dst[o..o + p].copy_from_slice(&input[src..src + p]);
                }
            }
        }
        let pieces = [(k0, k1.min(pos), 0), (k0.max(pos), k1, 1)];
        for (a, b, shift) in pieces {
            if a >= b {
                continue;
            }
            let at = MatRef::new(&im2col[(a - k0) * pl..(b - k0) * pl], b - a, pl, pl);
            let mut out = hidden.reborrow().sub(a + shift - r0..b + shift - r0, 0..d);
            linear_f32(at, &w, &mut out, panel);
            add_bias_f32(&mut out, bias);
        }
        k0 = k1;
    }
    let (cls, pe) = (
        dense(model, Role::ClsToken, 0)?,
        dense(model, Role::PosEmbed, 0)?,
    );
    for t in rows {
        let h = hidden.row_mut(t - r0);
        if t == pos {
            h.copy_from_slice(cls);
        }
        for (x, e) in h.iter_mut().zip(&pe[t * d..(t + 1) * d]) {
            *x += e;
        }
    }
    Ok(())
}
