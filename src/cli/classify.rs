//! One inference context: the parsed model plus every buffer an image needs, allocated once and
//! reused (one per worker thread).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use vimvq_rt::forward;
use vimvq_rt::model::Model;
use vimvq_rt::preprocess::Plan;

use super::alloc_scratch;
use crate::image_io;

/// Model + input tensor + logits + inference scratch + preprocessing scratch.
pub struct Classifier<'m> {
    model: Model<'m>,
    input: Vec<f32>,
    logits: Vec<f32>,
    scratch: Vec<u8>,
    pre_scratch: Vec<u8>,
    threads: usize,
}

impl<'m> Classifier<'m> {
    /// Allocates the buffers `model` needs to run each inference on `threads` threads.
    pub fn new(model: Model<'m>, threads: usize) -> Result<Self> {
        let c = model.config();
        if c.channels != 1 && c.channels != 3 {
            bail!(
                "models with {} input channels are not supported",
                c.channels
            );
        }
        Ok(Classifier {
            input: alloc_scratch(c.input_len(), "input tensor")?,
            logits: alloc_scratch(c.num_classes, "logits")?,
            scratch: alloc_scratch(c.scratch_bytes_threaded(threads), "inference scratch")?,
            pre_scratch: Vec::new(),
            threads,
            model,
        })
    }

    /// Decodes, preprocesses (the model's stored transform) and classifies one image file.
    pub fn classify_image(&mut self, path: &Path) -> Result<&[f32]> {
        let img = image_io::decode(path)?;
        let c = *self.model.config();
        let plan = Plan::new(
            img.width,
            img.height,
            img.format,
            self.model.preprocess(),
            c.channels,
        )
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if plan.output_len() != self.input.len() {
            bail!(
                "{}: preprocessing yields {} values, the model takes {}",
                path.display(),
                plan.output_len(),
                self.input.len()
            );
        }
        let need = plan.scratch_bytes();
        if self.pre_scratch.len() < need {
            self.pre_scratch.resize(need, 0);
        }
        plan.run(&img.as_ref(), &mut self.input, &mut self.pre_scratch)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        self.infer()
            .map_err(|e| anyhow!("{}: inference failed: {e}", path.display()))?;
        Ok(&self.logits)
    }

    /// Classifies one already-normalised CHW tensor.
    pub fn classify_tensor(&mut self, x: &[f32]) -> Result<&[f32]> {
        if x.len() != self.input.len() {
            bail!(
                "tensor has {} values, the model takes {}",
                x.len(),
                self.input.len()
            );
        }
        self.input.copy_from_slice(x);
        self.infer().map_err(|e| anyhow!("inference failed: {e}"))?;
        Ok(&self.logits)
    }

    /// `self.input` → `self.logits`.
    fn infer(&mut self) -> Result<(), forward::InferError> {
        forward::infer_threaded(
            &self.model,
            &self.input,
            &mut self.logits,
            &mut self.scratch,
            &forward::InferOptions::default(),
            self.threads,
        )
    }
}
