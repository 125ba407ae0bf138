//! The live dashboard (`GET /dashboard`, docs/dashboard.md): a page served by tollgate itself,
//! a JSON snapshot (`/dashboard/state`) and a live side channel (`/dashboard/events`).
//!
//! - `trace`: the handle the request path carries, and its one-line hooks;
//! - `state`: the board those hooks write — requests in flight, the finished ring, backend
//!   windows (`window`), per-key counts — in shards;
//! - `events`: the publisher and the SSE body; `handlers`: the endpoints; `access`: origin,
//!   admin keys and sessions; `assets`: the page, compiled into the binary.
//!
//! `Dashboard` lives as long as the `Gateway`, across reloads; `dashboard.enabled` is read
//! from the runtime a request loaded, so a reload turns it on or off.

mod access;
mod assets;
mod events;
mod handlers;
mod state;
mod trace;
mod window;

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::broadcast;
use tollgate_core::{Env, Problem};

pub use events::Events;
pub use trace::{
    attempt, attempted, committed, dispatching, event, finish, first_event, held, keepalive,
    skipped, Trace,
};

use crate::app::Gateway;
use crate::outcome::Outcome;
use crate::runtime::Runtime;
use state::Board;
use trace::unix_ms;

/// Refused reloads' problems kept (the last refusal's).
const PROBLEMS_KEPT: usize = 50;

/// Whether `path` is one of the dashboard's.
pub fn owns(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The dashboard's state for the life of the gateway.
pub struct Dashboard {
    board: Arc<Board>,
    tx: broadcast::Sender<Bytes>,
    viewers: AtomicUsize,
    publishing: AtomicBool,
    /// Bumped when a reload changes `auth` or `dashboard`: sessions and open event streams end.
    generation: AtomicU64,
    /// Set when the gateway starts draining: open event streams end, so they do not hold
    /// the shutdown for the whole grace.
    draining: AtomicBool,
    sessions: Mutex<access::Sessions>,
    reloads: Mutex<Reloads>,
    started_ms: u64,
}

/// What the configuration's reloads came to.
#[derive(Default)]
struct Reloads {
    /// When the configuration serving now was loaded (start-up, or the last swap).
    loaded_ms: u64,
    succeeded: u64,
    refused: u64,
    /// The last refused reload: when, and its problems (located, masked).
    last_refused: Option<(u64, Vec<String>)>,
    /// Whether the last reload attempt was refused.
    last_failed: bool,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Dashboard {
    pub fn new() -> Dashboard {
        let now = unix_ms(SystemTime::now());
        Dashboard {
            board: Arc::new(Board::default()),
            tx: events::channel(),
            viewers: AtomicUsize::new(0),
            publishing: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            sessions: Mutex::default(),
            reloads: Mutex::new(Reloads {
                loaded_ms: now,
                ..Reloads::default()
            }),
            started_ms: now,
        }
    }

    /// Starts a request's trace, when the dashboard is enabled in `runtime`.
    pub fn begin(&self, runtime: &Runtime, outcome: &Outcome) -> Option<Trace> {
        if !runtime.config.dashboard.enabled {
            return None;
        }
        let live = Arc::new(trace::Live::new(self.board.seq(), outcome));
        self.board.start(live.clone());
        Some(Trace::new(live, self.board.clone()))
    }

    /// The gateway is shutting down: every event stream ends now (woken by an empty frame;
    /// each viewer sees `draining` and sends its last event).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Bytes::new());
    }

    /// A new runtime was swapped in: note the reload, and end every session when access
    /// changed (another admin key, the dashboard turned off).
    pub fn swapped(&self, old: &Runtime, new: &Runtime) {
        let mut r = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        r.loaded_ms = unix_ms(SystemTime::now());
        r.succeeded += 1;
        r.last_failed = false;
        drop(r);
        if old.config.auth != new.config.auth || old.config.dashboard != new.config.dashboard {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.sessions().clear();
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, access::Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refused(&self, problems: Vec<String>) {
        let mut r = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        r.refused += 1;
        r.last_failed = true;
        r.last_refused = Some((unix_ms(SystemTime::now()), problems));
    }
}

impl Gateway {
    /// Remembers a refused reload's problems for the dashboard (the log has them too). They
    /// are masked of every secret the running configuration holds, and of passwords in URLs.
    pub fn reload_refused<P: Display>(&self, problems: &[P]) {
        let runtime = self.runtime();
        let problems = problems
            .iter()
            .take(PROBLEMS_KEPT)
            .map(|p| {
                let text = p.to_string();
                let masked = runtime.relay.masker.mask(text.as_bytes());
                let text = masked.map_or(text, |m| String::from_utf8_lossy(&m).into_owned());
                tollgate_core::secret::hide_url_passwords(&text)
            })
            .collect();
        self.dashboard.refused(problems);
    }
}

/// Problems with the dashboard's settings that need the environment: an unset
/// `dashboard.key_env`, or client keys and no way for an admin in.
pub fn check(config: &tollgate_core::Config, env: &Env, keys_enabled: bool) -> Vec<Problem> {
    let d = &config.dashboard;
    if !d.enabled {
        return Vec::new();
    }
    let mut problems = Vec::new();
    if let Some(var) = d.key_env.as_deref().filter(|v| !v.trim().is_empty()) {
        if env.var(var).is_none() {
            problems.push(Problem::new(
                "dashboard.key_env",
                format!("environment variable `{var}` is not set"),
            ));
        }
    } else if keys_enabled && !config.auth.keys.iter().any(|k| k.admin) {
        problems.push(Problem::new(
            "dashboard.enabled",
            "client keys are configured, so the dashboard needs an admin key: set dashboard.key_env, or `admin: true` on a client key",
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(owns("/dashboard") && owns("/dashboard/state") && owns("/dashboard/"));
        assert!(!owns("/dashboards") && !owns("/v1/dashboard"));
    }
}
