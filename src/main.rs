//! `vimvq`: compress Vision Mamba classifiers with vector quantization and run them on CPUs.
//!
//! Every failure prints exactly one line, `error: …`, on stderr and exits with status 1 (usage
//! errors: status 2); nothing panics on user input and no partial output file is left behind.
//! The subcommands live in the library (`src/lib.rs`), shared with the Python package.

use std::process::ExitCode;

use clap::Parser;
use vimvq_cli::{cli, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::print_error(&e);
            ExitCode::from(1)
        }
    }
}
