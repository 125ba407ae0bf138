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

/// Handing memory back to the system after a burst.
mod allocator {
    /// jemalloc purges freed pages only as a side effect of later allocations in the same
    /// arena, so a gateway that goes quiet after a burst keeps its peak RSS (measured: 50 MiB
    /// after 5,000 streams against a 9 MiB start). Its background threads purge on their own
    /// clock instead, following the decay times (dirty pages 10 s, then muzzy pages), so
    /// memory returns within seconds of a burst ending; see docs/benchmarks.md.
    #[cfg(not(target_env = "msvc"))]
    pub fn return_memory_when_idle() {
        // One purging thread is plenty for a gateway's arenas (the default is one per CPU).
        let _ = tikv_jemalloc_ctl::max_background_threads::write(1);
        if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
            tracing::warn!(error = %e, "cannot start jemalloc's background purging; memory freed after a burst returns to the system only with later allocations");
        }
    }

    #[cfg(target_env = "msvc")]
    pub fn return_memory_when_idle() {}
}

/// The open-file limit: every client connection is a descriptor, and every proxied request
/// holds an upstream connection too.
mod open_files {
    /// Descriptors a gateway needs besides connections: listener, log, config watch, runtime.
    const SPARE: u64 = 64;

    /// Raises the soft `RLIMIT_NOFILE` to the hard limit (the most an unprivileged process
    /// may take) and logs both; warns when `max_connections` proxied requests cannot fit.
    #[cfg(unix)]
    pub fn raise(max_connections: u64) {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let before = getrlimit(Resource::Nofile);
        // No hard limit ("unlimited") is not a value the kernel takes for descriptors; Linux
        // caps them at fs.nr_open, 1,048,576 by default.
        let hard = before.maximum.unwrap_or(1 << 20);
        let wanted = Rlimit {
            current: Some(hard),
            maximum: before.maximum,
        };
        let soft = match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, hard, "cannot raise the open-file limit");
                before.current.unwrap_or(hard)
            }
        };
        let needed = max_connections.saturating_mul(2).saturating_add(SPARE);
        tracing::info!(
            open_files = soft,
            was = before.current.unwrap_or(soft),
            hard,
            "open-file limit"
        );
        if soft < needed {
            tracing::warn!(
                open_files = soft,
                needed,
                max_connections,
                "the open-file limit is below 2 × server.max_connections + {SPARE}: under full load accepts will fail (EMFILE) and back off; raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd) or lower server.max_connections"
            );
        }
    }

    #[cfg(not(unix))]
    pub fn raise(_max_connections: u64) {}
}
