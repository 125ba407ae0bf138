//! Hot reload: a change to the YAML file (and SIGHUP) rebuilds the whole runtime off the
//! request path and swaps it in atomically. A configuration that fails to load or build is
//! refused with its reasons logged, and the running one stays.
//!
//! The watch is on the file's directory, not the file: editors that save by writing a new
//! file and renaming it over the old one (vim, many IDEs), and Kubernetes ConfigMaps that
//! swap a symlink, replace the watched inode. Any event in the directory makes us re-read
//! the file; only a change of its content (or SIGHUP) rebuilds.
//!
//! The gateway remembers the last refusal's problems (`Gateway::reload_refused`) for the
//! dashboard; a swap records the success itself.

use std::sync::Arc;
use std::time::Duration;

use tollgate_server::Gateway;

use crate::load::{digest, Source};

/// Quiet time after the last file event before reading: an editor's save is several events.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    File,
    Signal,
}

/// Starts watching for changes and SIGHUP (both are in place when this returns). Runs for
/// the life of the process. `loaded` is the digest of the file text now serving.
pub fn spawn(gateway: Arc<Gateway>, source: Source, loaded: Option<u64>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Trigger>(64);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed here, not in the task, so SIGHUP never hits the default action
        // (terminate) once the gateway is up.
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let _ = tx.send(Trigger::Signal).await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only")
            }
        }
    }
    let watcher = source.path.as_ref().and_then(|path| watch(path, tx));
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives as long as this task.
        let _watcher = watcher;
        run(gateway, source, rx, loaded).await;
    });
}

fn watch(
    path: &std::path::Path,
    tx: tokio::sync::mpsc::Sender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            // Only events about the file itself (however it was replaced) or about Kubernetes'
            // `..data` symlink swap matter: a log file in the same directory must not wake us.
            let relevant = event.is_ok_and(|e| {
                e.paths.iter().any(|p| {
                    p.file_name().is_some_and(|n| {
                        Some(n) == name.as_deref() || n.to_string_lossy().starts_with("..")
                    })
                })
            });
            if relevant {
                // A full channel already holds a pending reload; dropping this event loses nothing.
                let _ = tx.try_send(Trigger::File);
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the configuration directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}

async fn run(
    gateway: Arc<Gateway>,
    source: Source,
    mut rx: tokio::sync::mpsc::Receiver<Trigger>,
    mut last: Option<u64>,
) {
    while let Some(first) = rx.recv().await {
        let mut forced = first == Trigger::Signal;
        // Debounce: wait for the burst of events of one save to end.
        while let Ok(Some(next)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            forced |= next == Trigger::Signal;
        }
        let (gw, src) = (gateway.clone(), source.clone());
        match tokio::task::spawn_blocking(move || reload_once(&gw, &src, last, forced)).await {
            Ok(seen) => last = seen.or(last),
            Err(e) => tracing::error!(error = %e, "reload task failed"),
        }
    }
}

/// Loads, builds and swaps in the configuration if it changed (or `forced`). Returns the
/// digest of the file content it looked at.
fn reload_once(gateway: &Gateway, source: &Source, last: Option<u64>, forced: bool) -> Option<u64> {
    let text = match source.read_file() {
        Ok(t) => t,
        Err(diagnostics) => {
            for d in &diagnostics {
                tracing::warn!(problem = %d, "configuration reload refused; the running configuration stays");
            }
            gateway.reload_refused(&diagnostics);
            count(gateway, "error");
            return None;
        }
    };
    let seen = text.as_deref().map(digest);
    if !forced && seen.is_some() && seen == last {
        return seen;
    }
    let loaded = match source.load_text(text.as_deref()) {
        Ok(l) => l,
        Err(diagnostics) => {
            for d in &diagnostics {
                tracing::error!(problem = %d, "configuration reload refused; the running configuration stays");
            }
            gateway.reload_refused(&diagnostics);
            count(gateway, "error");
            return seen;
        }
    };
    if !loaded.unknown.is_empty() {
        for d in &loaded.unknown {
            tracing::error!(problem = %d, "configuration reload refused; the running configuration stays");
        }
        gateway.reload_refused(&loaded.unknown);
        count(gateway, "error");
        return seen;
    }
    let before = gateway.runtime().config.clone();
    match gateway.prepare(loaded.config.clone()) {
        Ok(next) => {
            let after = next.config.clone();
            gateway.swap(next);
            let (b, a) = (&before.server, &after.server);
            if (&b.host, b.port, b.shutdown_grace, b.backlog)
                != (&a.host, a.port, a.shutdown_grace, a.backlog)
                || before.logging != after.logging
            {
                tracing::warn!(
                    "server.host, server.port, server.shutdown_grace, server.backlog and logging.* changes take effect after a restart"
                );
            }
            tracing::info!(
                backends = after.backends.len(),
                routes = after.routes.len(),
                "configuration reloaded"
            );
            count(gateway, "success");
        }
        Err(problems) => {
            let found: Vec<_> = problems.into_iter().map(|p| loaded.locate(p)).collect();
            for d in &found {
                tracing::error!(problem = %d, "configuration reload refused; the running configuration stays");
            }
            gateway.reload_refused(&found);
            count(gateway, "error");
        }
    }
    seen
}

/// Counts a reload attempt by result in `tollgate_config_reloads_total`.
fn count(gateway: &Gateway, result: &'static str) {
    gateway.metrics().config_reload(result);
}
