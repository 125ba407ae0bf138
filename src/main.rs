//! The `tollgate` binary: command line, configuration loading, logging, and serving.

mod cli;
mod connectors;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
