//! The `tollgate` binary: command line, layered configuration, hot reload, serving.

mod cli;
mod connectors;
mod load;
mod logging;
mod reload;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
