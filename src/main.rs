//! The `tollgate` binary: command line, layered configuration, hot reload, serving.

mod cli;
mod clients;
mod connectors;
mod launch;
mod load;
mod logging;
mod reload;

use std::process::ExitCode;

/// jemalloc: its thread cache serves the gateway's many short-lived, same-sized allocations
/// (headers, buffers, futures) with far fewer instructions than glibc's malloc under
/// concurrency; see docs/benchmarks.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli::main()
}
