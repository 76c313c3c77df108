//! `vimvq`: compress Vision Mamba classifiers with vector quantization and run them on CPUs.
//!
//! The command line is a public contract (`docs/CLI.md`): command names, flags and JSON
//! fields are only ever added, never renamed. Every failure prints exactly one line,
//! `error: …`, on stderr and exits with status 1 (usage errors: status 2); nothing panics on
//! user input and no partial output file is left behind.

mod cli;
mod image_io;
mod io_error;
mod npy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Compress Vision Mamba (Vim) classifiers with vector quantization and run them on edge CPUs.
#[derive(Parser, Debug)]
#[command(name = "vimvq", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    let result = match cli.command {
        Command::Import(a) => cli::import::run(a),
        Command::Pack(a) => cli::pack::run(*a),
        Command::Run(a) => cli::run::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Stream(a) => cli::stream::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::print_error(&e);
            ExitCode::from(1)
        }
    }
}
