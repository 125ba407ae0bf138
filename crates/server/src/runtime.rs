//! `Runtime`: everything a request needs, built from one configuration — router, connectors,
//! keys, relay settings. It is built completely (and may fail) off the request path, then
//! published with one atomic swap; a request loads it once and keeps it to its end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tollgate_core::config::{
    BackendConfig, Backoff, KeepaliveFormat, OutputBudget, ReasoningControl,
};
use tollgate_core::{Config, Connector, Env, Problem, Registry, Router};
use tollgate_translate::{ChatTarget, Reasoning};

use crate::auth::Keys;
use crate::breaker::Breaker;
use crate::limits::Limiter;
use crate::mask::Masker;

/// One backend instance of a runtime.
pub struct Backend {
    /// The configuration it was built from; an unchanged backend is carried over on reload,
    /// keeping its connection pool.
    pub config: BackendConfig,
    pub connector: Arc<dyn Connector>,
    /// Carried over with the connector on reload (same backend, same breaker settings), so
    /// an open circuit stays open.
    pub breaker: Arc<Breaker>,
    /// The output budget of its requests: its own `output_budget` over the top-level one.
    pub budget: OutputBudget,
    /// False for a connector type built on demand for a request's `type:` prefix, which the
    /// configuration never names: it is routable but not listed in `/v1/models` or readiness.
    pub listed: bool,
}

impl Backend {
    /// What a request translated for this backend may carry, for `model`.
    pub fn chat_target(&self, model: &str) -> ChatTarget {
        let reasoning = match self.config.reasoning.as_ref().map(|r| r.control_for(model)) {
            None | Some(ReasoningControl::None) => Reasoning::Drop,
            Some(ReasoningControl::Effort) => Reasoning::Effort,
            Some(ReasoningControl::TemplateFlag(name)) => Reasoning::TemplateFlag(name),
        };
        ChatTarget {
            reasoning,
            top_k: false,
        }
    }
}

/// Tells streams still open when the shutdown grace ends to close with an error event
/// (SPEC §6: never a silent cut). One per gateway; every runtime it serves shares it.
#[derive(Default)]
pub struct Closing {
    closed: std::sync::atomic::AtomicBool,
    notify: Arc<tokio::sync::Notify>,
}

impl Closing {
    /// Ends every open stream.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A future that resolves at `close` (once polled, it is registered).
    pub fn closed(&self) -> tokio::sync::futures::OwnedNotified {
        self.notify.clone().notified_owned()
    }
}

/// Relay settings from `failure_handling` and `server`.
#[derive(Clone)]
pub struct RelaySettings {
    /// The gateway's shutdown signal for open streams.
    pub closing: Arc<Closing>,
    /// Masks the configuration's secrets in what upstream errors bring back.
    pub masker: Arc<Masker>,
    pub keepalive_interval: Duration,
    pub keepalive_format: KeepaliveFormat,
    pub request_timeout: Duration,
    /// A stream silent this long (keepalives aside) is ended with an error; also the wait for
    /// a stream's first event once its headers arrived (dispatch).
    pub max_silent_wait: Duration,
}

/// Retry settings from `failure_handling`.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Retries per target after its first attempt.
    pub retries: u32,
    pub backoff: Backoff,
}

/// A complete, validated gateway configuration, ready to serve.
pub struct Runtime {
    pub config: Arc<Config>,
    pub router: Router,
    /// Backends by instance name.
    pub backends: HashMap<Arc<str>, Backend>,
    pub keys: Keys,
    /// Limits and budgets, and the store that counts them (kept across reloads).
    pub limiter: Limiter,
    pub relay: RelaySettings,
    pub retry: RetrySettings,
    pub max_body_bytes: u64,
}

impl Runtime {
    /// Builds a runtime, reusing the connectors of `previous` whose configuration did not
    /// change. Every problem found is returned, not only the first.
    pub fn build(
        config: Config,
        registry: &Registry,
        env: &Env,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, Vec<Problem>> {
        Runtime::build_inner(config, registry, env, previous, true)
    }

    /// Every check of [`Runtime::build`], opening no state store (no file, no connection):
    /// for `tollgate check`.
    pub fn check(config: Config, registry: &Registry, env: &Env) -> Result<Runtime, Vec<Problem>> {
        Runtime::build_inner(config, registry, env, None, false)
    }

    fn build_inner(
        config: Config,
        registry: &Registry,
        env: &Env,
        previous: Option<&Runtime>,
        open_store: bool,
    ) -> Result<Runtime, Vec<Problem>> {
        let kinds = registry.kinds();
        let mut config = config;
        config.add_implicit_backends(&kinds);
        let mut problems = config.validate(&kinds);
        let mut backends = HashMap::new();
        // Every connector type no entry names is built too, unlisted, so a request's `nvidia:`
        // prefix reaches NIM with the type's defaults and key variable (SPEC §1).
        let on_demand: Vec<(String, BackendConfig)> = kinds
            .iter()
            .filter(|k| !config.backends.contains_key(**k))
            .map(|k| (k.to_string(), BackendConfig::default()))
            .collect();
        let all = config
            .backends
            .iter()
            .map(|(n, c)| (n, c, true))
            .chain(on_demand.iter().map(|(n, c)| (n, c, false)));
        for (name, backend_config, listed) in all {
            if !backend_config
                .kind(name, &kinds)
                .is_some_and(|k| kinds.contains(&k))
            {
                continue; // `validate` reported the missing or unknown type.
            }
            let breaker_settings = config.failure_handling.circuit_breaker;
            let old = previous
                .and_then(|p| p.backends.get(name.as_str()))
                .filter(|old| old.config == *backend_config);
            let connector = match old {
                Some(old) => old.connector.clone(),
                None => match registry.build(name, backend_config, env) {
                    Ok(c) => c,
                    // A type that cannot be built with its defaults is simply not offered.
                    Err(_) if !listed => continue,
                    Err(found) => {
                        problems.extend(found);
                        continue;
                    }
                },
            };
            let breaker = match old {
                Some(old) if old.breaker.settings() == breaker_settings => old.breaker.clone(),
                _ => Arc::new(Breaker::new(breaker_settings)),
            };
            backends.insert(
                Arc::from(name.as_str()),
                Backend {
                    config: backend_config.clone(),
                    connector,
                    breaker,
                    budget: backend_config
                        .output_budget
                        .unwrap_or_default()
                        .over(config.output_budget),
                    listed,
                },
            );
        }
        let keys = match Keys::build(&config.auth.keys, env) {
            Ok(keys) => keys,
            Err(found) => {
                problems.extend(found);
                Keys::default()
            }
        };
        problems.extend(crate::dashboard::check(&config, env, keys.enabled()));
        if !problems.is_empty() {
            return Err(problems);
        }
        let limiter = Limiter::build(&config, previous.map(|p| &p.limiter), open_store)
            .map_err(|p| vec![p])?;
        let mut routing = config.clone();
        routing.backends.extend(
            on_demand
                .into_iter()
                .filter(|(name, _)| backends.contains_key(name.as_str())),
        );
        let masker = Arc::new(Masker::new(secrets(&config, registry, env)));
        Ok(Runtime {
            limiter,
            router: Router::new(&routing),
            backends,
            keys,
            relay: RelaySettings {
                closing: Arc::new(Closing::default()),
                masker,
                keepalive_interval: Duration::from_secs(config.failure_handling.keepalive_interval),
                keepalive_format: config.failure_handling.keepalive_format,
                request_timeout: Duration::from_secs(config.server.request_timeout),
                max_silent_wait: Duration::from_secs(config.failure_handling.max_silent_wait),
            },
            retry: RetrySettings {
                retries: config.failure_handling.retries,
                backoff: config.failure_handling.backoff,
            },
            max_body_bytes: config.server.max_body_bytes,
            config: Arc::new(config),
        })
    }
}

/// Every secret of the configuration: each backend's key (its `api_key`, else its type's key
/// variable) and the values of its configured headers.
fn secrets(config: &Config, registry: &Registry, env: &Env) -> Vec<String> {
    let kinds = registry.kinds();
    let mut out = Vec::new();
    for (name, backend) in &config.backends {
        let key_var = backend
            .kind(name, &kinds)
            .and_then(|kind| registry.info(kind))
            .and_then(|info| info.key_var);
        match (&backend.api_key, key_var) {
            (Some(key), _) => out.push(key.expose().to_owned()),
            (None, Some(var)) => out.extend(env.var(var)),
            (None, None) => {}
        }
        // Header values are masked when their names say they are credentials: masking every
        // value (`X-Title: tollgate`) would garble ordinary words in every error.
        for (header, value) in backend.headers.iter().chain(&backend.default_headers) {
            if tollgate_core::config::is_secret_header(header) {
                out.push(value.clone());
            }
        }
    }
    // Key variables of types built on demand are secrets too.
    for kind in &kinds {
        if let Some(var) = registry.info(kind).and_then(|i| i.key_var) {
            out.extend(env.var(var));
        }
    }
    out
}

impl Runtime {
    /// Whether client keys are required.
    pub fn keys_enabled(&self) -> bool {
        self.keys.enabled()
    }

    /// The same runtime accepting only `key` (named `name`), for a launcher's session.
    pub fn with_only_key(mut self, name: &str, key: &str) -> Self {
        self.keys = Keys::single(name, key);
        self
    }

    /// The same runtime with no client keys (`PROXY_API_KEY` included), for local
    /// commands run by the operator (`tollgate chat`, `tollgate models`).
    pub fn without_client_keys(mut self) -> Self {
        self.keys = Keys::default();
        self
    }
}

/// The runtime currently serving, swapped whole on reload.
pub struct Live {
    current: ArcSwap<Runtime>,
}

impl Live {
    pub fn new(runtime: Runtime) -> Self {
        Live {
            current: ArcSwap::from_pointee(runtime),
        }
    }

    /// The snapshot a request keeps to its end.
    pub fn load(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Publishes a new runtime; requests already running keep the one they loaded.
    pub fn store(&self, runtime: Runtime) {
        self.current.store(Arc::new(runtime));
    }
}
