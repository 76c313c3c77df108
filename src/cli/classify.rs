//! The CLI's owner of an inference context's buffers: the parsed model plus one scratch buffer,
//! reused from image to image (grown when a larger image needs more) — one per worker thread.

use std::path::Path;

use anyhow::{anyhow, Result};
use vimvq_rt::context::{Context, ContextError, Input, Top};
use vimvq_rt::model::Model;

use super::alloc_scratch;
use crate::image_io;

/// Model + scratch + the last logits and top-k.
pub struct Classifier<'m> {
    model: Model<'m>,
    threads: usize,
    scratch: Vec<u8>,
    logits: Vec<f32>,
    top: Vec<Top>,
}

/// What one classification returns.
pub struct Classified<'a> {
    /// Every class's logit.
    pub logits: &'a [f32],
    /// The best classes, best first ([`vimvq_rt::context::top_k`]'s order).
    pub top: &'a [Top],
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
            threads,
            model,
        })
    }

    /// Builds a context for `input` in the scratch (grown first if `input` needs more) and
    /// runs `f` on it with the top-k buffer.
    fn run(
        &mut self,
        input: Input,
        f: impl FnOnce(&mut Context<'m, '_>, &mut [Top]) -> Result<usize, ContextError>,
    ) -> Result<Classified<'_>> {
        let bytes = Context::scratch_bytes(&self.model, input, self.threads)?;
        if self.scratch.len() < bytes {
            self.scratch = alloc_scratch(bytes, "inference scratch")?;
        }
        let mut ctx = Context::new(self.model, input, self.threads, &mut self.scratch)?;
        f(&mut ctx, &mut self.top)?;
        self.logits.copy_from_slice(ctx.logits());
        Ok(Classified {
            logits: &self.logits,
            top: &self.top,
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
        self.run(input, |ctx, top| ctx.classify(&img.data, top))
            .map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Classifies one already-normalised CHW tensor.
    pub fn classify_tensor(&mut self, x: &[f32]) -> Result<Classified<'_>> {
        self.run(Input::Tensor, |ctx, top| ctx.classify_tensor(x, top))
    }
}
