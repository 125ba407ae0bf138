//! Model discovery and the first-use health check. Both ask the upstream `GET {api_url}/models`:
//! discovery keeps the answer as the backend's catalogue for `models_refresh` seconds; the
//! health check asks once, in the background, and remembers why it failed so
//! `/health/ready` can say so. Neither ever fails or delays a request.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_core::GatewayError;

use crate::upstream::Upstream;

/// After a failed discovery, the catalogue is not asked for again sooner than this (or
/// `models_refresh`, when shorter): a dead upstream must not cost every `/v1/models` call a
/// full timeout.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A discovered model list, cached (shared by the connectors that discover their models).
pub struct Catalogue {
    /// How long a fetched list is served before it is asked for again.
    refresh: Duration,
    /// Held across the fetch, so concurrent callers wait for one `GET /models`, not many.
    state: tokio::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    /// The last list fetched; kept (stale) when a later fetch fails.
    models: Option<Vec<String>>,
    fetched: Option<Instant>,
    failed: Option<Instant>,
}

impl Catalogue {
    pub fn new(refresh: Duration) -> Self {
        Catalogue {
            refresh,
            state: tokio::sync::Mutex::new(Cached::default()),
        }
    }

    /// The catalogue, fetched through `upstream` when the cached one is older than `refresh`.
    /// A failed fetch is logged and answered with the last list; `None` while no fetch has
    /// ever succeeded (the caller then falls back to the static `models`).
    pub async fn get(&self, upstream: &Upstream, health: &Health) -> Option<Vec<String>> {
        self.get_with(&upstream.name, health, || upstream.fetch_models())
            .await
    }

    /// [`Catalogue::get`] with the fetch given: a connector whose upstream lists its models
    /// its own way (Anthropic's pages) keeps the same cache and failure back-off.
    pub async fn get_with<F, Fut>(
        &self,
        backend: &str,
        health: &Health,
        fetch: F,
    ) -> Option<Vec<String>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<String>, GatewayError>>,
    {
        let mut state = self.state.lock().await;
        if let (Some(models), Some(at)) = (&state.models, state.fetched) {
            if at.elapsed() < self.refresh {
                return Some(models.clone());
            }
        }
        if state
            .failed
            .is_some_and(|at| at.elapsed() < self.refresh.min(RETRY_AFTER_FAILURE))
        {
            return state.models.clone();
        }
        match fetch().await {
            Ok(models) => {
                health.passed();
                Self::keep(&mut state, models.clone());
                Some(models)
            }
            Err(e) => {
                tracing::warn!(backend = %backend, error = %e, "model discovery failed");
                state.failed = Some(Instant::now());
                state.models.clone()
            }
        }
    }

    /// Fetches (the health check's list) with the cache held, so a discovery meanwhile waits
    /// for this list instead of asking the upstream a second time; keeps it if it came.
    pub async fn fill<Fut>(&self, fetch: Fut) -> Result<(), GatewayError>
    where
        Fut: Future<Output = Result<Vec<String>, GatewayError>>,
    {
        let mut state = self.state.lock().await;
        Self::keep(&mut state, fetch.await?);
        Ok(())
    }

    fn keep(state: &mut Cached, models: Vec<String>) {
        state.failed = None;
        state.fetched = Some(Instant::now());
        state.models = Some(models);
    }
}

/// The first-use health check's state.
pub struct Health {
    /// `health_check` from the config (or the connector type's default).
    enabled: bool,
    /// Set by the first request; the check runs once per connector.
    started: AtomicBool,
    /// Fast path for [`Health::passed`], called on every successful request.
    failing: AtomicBool,
    /// Why the check failed, until the upstream next answers successfully.
    reason: Mutex<Option<String>>,
}

impl Health {
    /// Runs the check with `fetch` (the backend's model list) and records what it found.
    /// With `catalogue` (discovery on) the list fills it, with the cache held meanwhile.
    pub async fn run<Fut>(&self, backend: &str, catalogue: Option<&Catalogue>, fetch: Fut)
    where
        Fut: Future<Output = Result<Vec<String>, GatewayError>>,
    {
        let fetched = match catalogue {
            Some(catalogue) => catalogue.fill(fetch).await,
            None => fetch.await.map(drop),
        };
        match fetched {
            Ok(()) => self.passed(),
            Err(e) => {
                tracing::warn!(backend = %backend, error = %e, "health check failed");
                self.failed(&e);
            }
        }
    }

    pub fn new(enabled: bool) -> Self {
        Health {
            enabled,
            started: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            reason: Mutex::new(None),
        }
    }

    /// True exactly once when the check is enabled: the caller then runs it.
    pub fn claim(&self) -> bool {
        self.enabled && !self.started.swap(true, Ordering::AcqRel)
    }

    /// Records a failed check.
    pub fn failed(&self, error: &GatewayError) {
        let reason = match error {
            // The upstream's body stays out: /health/ready needs no key, and a status says enough.
            GatewayError::Upstream { status, .. } => {
                format!("health check: GET /models answered {status}")
            }
            other => format!("health check: {other}"),
        };
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(reason);
        self.failing.store(true, Ordering::Release);
    }

    /// The upstream answered successfully: whatever the check found no longer holds.
    pub fn passed(&self) {
        if self.failing.load(Ordering::Acquire) {
            let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            *slot = None;
            self.failing.store(false, Ordering::Release);
        }
    }

    /// Why the last check failed, if it did and nothing succeeded since.
    pub fn reason(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    #[test]
    fn health_runs_once_and_clears_on_success() {
        let off = Health::new(false);
        assert!(!off.claim());

        let h = Health::new(true);
        assert!(h.claim());
        assert!(!h.claim(), "the check runs once");
        assert_eq!(h.reason(), None);
        h.failed(&GatewayError::Upstream {
            status: StatusCode::UNAUTHORIZED,
            body: Bytes::from_static(b"{\"error\":{\"message\":\"nvapi-secret\"}}"),
            retry_after: None,
        });
        let reason = h.reason().expect("a reason");
        assert!(reason.contains("401"), "{reason}");
        assert!(!reason.contains("nvapi"), "no upstream body: {reason}");
        h.passed();
        assert_eq!(h.reason(), None);
    }
}
