//! `vimvq import CHECKPOINT -o OUT.vimvq`: checkpoint → all-f32 `.vimvq`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vimvq_pack::{import, output};
use vimvq_rt::format::to_bytes;

use super::{print_line, ModelOptionArgs};

/// Arguments of `vimvq import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// PyTorch checkpoint (.pth, as written by hustvl/Vim, or a bare state dict) or .safetensors
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Output model; written to a temporary file and renamed, so it is never left partial
    #[arg(short = 'o', long = "output", value_name = "OUT.vimvq")]
    pub output: PathBuf,
    /// State dict to import from a .pth dict (usually `model` or `model_ema`) [default: model]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub model: ModelOptionArgs,
}

/// Runs `vimvq import`.
pub fn run(a: ImportArgs) -> Result<()> {
    let opts = a.model.to_options()?;
    output::check_target(&a.output).map_err(|e| anyhow!("{}: {e}", a.output.display()))?;
    let ck = import::load(&a.checkpoint, a.key.as_deref())?;
    let packed =
        import::to_packed(&ck, &opts).map_err(|e| anyhow!("{}: {e}", a.checkpoint.display()))?;
    drop(ck);
    let bytes = to_bytes(&packed).map_err(|e| anyhow!("{}: {e}", a.output.display()))?;
    output::write_atomic(&a.output, &bytes)
        .map_err(|e| anyhow!("{}: cannot write the model: {e}", a.output.display()))?;
    let c = &packed.config;
    let p = &packed.preprocess;
    let weights: usize = packed.tensors.iter().map(|t| t.rows * t.cols).sum();
    print_line(&format!(
        "wrote {}: Vim D={} depth={} patch={} stride={} img={} channels={} classes={} \
         (resize {} crop {} {}); {} tensors, {} weights; {} bytes",
        a.output.display(),
        c.embed_dim,
        c.depth,
        c.patch,
        c.stride,
        c.img_size,
        c.channels,
        c.num_classes,
        p.resize,
        p.crop,
        match p.interpolation {
            vimvq_rt::Interpolation::Bicubic => "bicubic",
            vimvq_rt::Interpolation::Bilinear => "bilinear",
        },
        packed.tensors.len(),
        weights,
        bytes.len()
    ))
}
