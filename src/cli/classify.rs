//! The CLI's owner of an inference context's buffers: the parsed model plus one scratch buffer,
//! reused from image to image (grown when a larger image needs more) — one per worker thread.
//! Optionally also keeps the features of the last classification (`run --features/--tokens`).

use std::path::Path;

use anyhow::{anyhow, Result};
use vimvq_rt::context::{Context, ContextError, Input, Top};
use vimvq_rt::forward::Features;
use vimvq_rt::model::Model;

use super::alloc_scratch;
use crate::image_io;

/// Model + scratch + the last logits, top-k and (if asked for) features.
pub struct Classifier<'m> {
    model: Model<'m>,
    threads: usize,
    scratch: Vec<u8>,
    logits: Vec<f32>,
    top: Vec<Top>,
    pooled: Vec<f32>,
    tokens: Vec<f32>,
}

/// What one classification returns.
pub struct Classified<'a> {
    /// Every class's logit.
    pub logits: &'a [f32],
    /// The best classes, best first ([`vimvq_rt::context::top_k`]'s order).
    pub top: &'a [Top],
    /// The pooled features (`D` values), empty unless asked for ([`Classifier::with_features`]).
    pub pooled: &'a [f32],
    /// Every token's final state (`L·D` values), empty unless asked for.
    pub tokens: &'a [f32],
}

impl<'m> Classifier<'m> {
    /// A classifier reporting the best `k` classes (at most the class count), each inference on
    /// `threads` threads; allocates the network's scratch.
    pub fn new(model: Model<'m>, threads: usize, k: usize) -> Result<Self> {
        let c = *model.config();
        let bytes = Context::scratch_bytes(&model, Input::Tensor, threads)?;
        Ok(Classifier {
            scratch: alloc_scratch(bytes, "inference scratch")?,
            logits: vec![0.0; c.num_classes],
            top: vec![Top::default(); k.min(c.num_classes)],
            pooled: Vec::new(),
            tokens: Vec::new(),
            threads,
            model,
        })
    }

    /// Also computes the pooled features and/or the token states of every classification.
    pub fn with_features(mut self, pooled: bool, tokens: bool) -> Self {
        let c = *self.model.config();
        self.pooled = vec![0.0; if pooled { c.embed_dim } else { 0 }];
        self.tokens = vec![0.0; if tokens { c.seq_len() * c.embed_dim } else { 0 }];
        self
    }

    /// Builds a context for `input` in the scratch (grown first if `input` needs more) and
    /// runs `f` on it with the top-k buffer.
    fn run(
        &mut self,
        input: Input,
        f: impl FnOnce(&mut Context<'m, '_>, &mut [Top], Features<'_>) -> Result<usize, ContextError>,
    ) -> Result<Classified<'_>> {
        let bytes = Context::scratch_bytes(&self.model, input, self.threads)?;
        if self.scratch.len() < bytes {
            self.scratch = alloc_scratch(bytes, "inference scratch")?;
        }
        let mut ctx = Context::new(self.model, input, self.threads, &mut self.scratch)?;
        let features = Features {
            pooled: (!self.pooled.is_empty()).then_some(&mut self.pooled[..]),
            tokens: (!self.tokens.is_empty()).then_some(&mut self.tokens[..]),
        };
        f(&mut ctx, &mut self.top, features)?;
        self.logits.copy_from_slice(ctx.logits());
        Ok(Classified {
            logits: &self.logits,
            top: &self.top,
            pooled: &self.pooled,
            tokens: &self.tokens,
        })
    }

    /// Decodes, preprocesses (the model's stored transform) and classifies one image file.
    pub fn classify_image(&mut self, path: &Path) -> Result<Classified<'_>> {
        let img = image_io::decode(path)?;
        let input = Input::Frame {
            format: img.frame_format(),
            width: img.width,
            height: img.height,
        };
        self.run(input, |ctx, top, f| {
            ctx.classify_features(&img.data, top, f)
        })
        .map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Classifies one already-normalised CHW tensor.
    pub fn classify_tensor(&mut self, x: &[f32]) -> Result<Classified<'_>> {
        self.run(Input::Tensor, |ctx, top, f| {
            ctx.classify_tensor_features(x, top, f)
        })
    }
}
