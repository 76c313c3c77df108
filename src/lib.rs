//! The `vimvq` command line as a library: the binary (`src/main.rs`) and the Python package
//! (`crates/vimvq-py`) parse and run the same subcommands, so `vimvq.pack(…)` and `vimvq pack …`
//! take the same options and fail with the same one-line messages.
//!
//! The command line is a public contract (`docs/CLI.md`): command names, flags and JSON
//! fields are only ever added, never renamed. Every failure is exactly one line; nothing panics
//! on user input and no partial output file is left behind.

pub mod cli;
mod image_io;
mod io_error;
mod npy;

use clap::{Parser, Subcommand};

/// Compress Vision Mamba (Vim) classifiers with vector quantization and run them on edge CPUs.
#[derive(Parser, Debug)]
#[command(name = "vimvq", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert a PyTorch (.pth) or safetensors checkpoint into an f32 .vimvq model.
    Import(cli::import::ImportArgs),
    /// Vector-quantize a checkpoint (ViM-VQ or a baseline), calibrated on a folder of images.
    Pack(Box<cli::pack::PackArgs>),
    /// Classify images (or pre-normalised tensors) with a .vimvq model.
    Run(cli::run::RunArgs),
    /// Measure top-1/top-5 accuracy on an ImageFolder directory.
    Eval(cli::eval::EvalArgs),
    /// Describe a .vimvq model or a checkpoint: config, tensors, outlier statistics.
    Inspect(cli::inspect::InspectArgs),
    /// Measure inference latency, per-op time and memory on this machine.
    Bench(cli::bench::BenchArgs),
    /// Classify raw camera frames (rgb24 or i420) from stdin, one JSON line per frame.
    Stream(cli::stream::StreamArgs),
}

impl Cli {
    /// Runs the subcommand; the error's `{:#}` chain is the one-line message.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Import(a) => cli::import::run(a),
            Command::Pack(a) => cli::pack::run(*a),
            Command::Run(a) => cli::run::run(a),
            Command::Eval(a) => cli::eval::run(a),
            Command::Inspect(a) => cli::inspect::run(a),
            Command::Bench(a) => cli::bench::run(a),
            Command::Stream(a) => cli::stream::run(a),
        }
    }
}
