//! The configuration schema of SPEC §2 as typed structs with their defaults, and the checks
//! that need no network: ranges, names that must resolve, keys that are not supported yet.
//!
//! Loading (files, environment, command line) lives with the binary; this module only says
//! what a valid configuration is.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    /// Backend for models without a known `backend:` prefix.
    pub default_backend: Option<String>,
    /// Replaces every request's model when set.
    pub force_model: Option<String>,
    pub auth: AuthConfig,
    pub failure_handling: FailureHandling,
    /// Backend instances by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Model names clients may ask for, each expanding to ordered targets.
    pub routes: BTreeMap<String, Vec<String>>,
    /// The Anthropic Messages door.
    pub anthropic: AnthropicConfig,
    /// Output budget (`max_tokens`) applied to every outbound request; a backend's own
    /// `output_budget` wins over it.
    pub output_budget: OutputBudget,
    /// Server-wide default limits for client keys without their own (and for requests when
    /// no client keys are configured).
    pub limits: LimitsConfig,
    /// Where limits, budgets and idempotency keys live.
    pub state: StateConfig,
    /// The live dashboard (`GET /dashboard`).
    pub dashboard: DashboardConfig,
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: u64,
    /// Seconds: upper bound for one request, stream included.
    pub request_timeout: u64,
    /// Seconds to drain in-flight work on SIGTERM/SIGINT.
    pub shutdown_grace: u64,
    /// Seconds for a client to send a request head, counted from its first byte (or from
    /// the accept, for a connection's first request); also bounds the HTTP/1.1-or-h2c sniff.
    pub header_read_timeout: u64,
    /// Seconds for a client to send a whole request body, counted from its head.
    pub body_read_timeout: u64,
    /// Seconds a client may pause between two pieces of a request body.
    pub body_gap_timeout: u64,
    /// Seconds a connection with no request in flight may stay open.
    pub idle_timeout: u64,
    /// Seconds between HTTP/2 PING frames on a client connection; 0 sends none.
    pub http2_keepalive_interval: u64,
    /// Seconds to wait for a PING's acknowledgement before the connection is closed.
    pub http2_keepalive_timeout: u64,
    /// Client connections served at once; the next ones get a fast 503.
    pub max_connections: u64,
    /// Connections the kernel may queue before tollgate accepts them (`listen(2)` backlog,
    /// capped by `net.core.somaxconn`).
    pub backlog: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8000,
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout: 600,
            shutdown_grace: 30,
            header_read_timeout: 30,
            body_read_timeout: 60,
            body_gap_timeout: 30,
            idle_timeout: 120,
            http2_keepalive_interval: 60,
            http2_keepalive_timeout: 20,
            max_connections: 10_000,
            backlog: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Client keys; empty means no client auth.
    pub keys: Vec<KeyConfig>,
}

/// One client key. Exactly one of `key`, `key_env`, `key_sha256` gives its value.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    /// Shown in logs and metrics instead of the key.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Hex SHA-256 of the key, so the file need not hold it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    pub allowed_models: Vec<String>,
    /// Wins over `allowed_models`.
    pub denied_models: Vec<String>,
    /// This key's limits; unset: the top-level `limits`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsConfig>,
    /// Whether this key also opens the dashboard (when client keys are configured, the
    /// dashboard needs an admin key).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Limits and budgets of one client key or backend (SPEC §8). Unset ones do not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per 60 s window.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per 60 s window.
    pub tpm: Option<u64>,
    /// Tokens per UTC day (resets 00:00 UTC).
    pub tokens_per_day: Option<u64>,
    /// The most output tokens one request may ask for; larger budgets are lowered to it.
    pub max_tokens_per_request: Option<u64>,
}

impl LimitsConfig {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        *self != LimitsConfig::default()
    }

    /// Whether a counted limit (rpm, tpm, tokens_per_day) is set, so the store is asked.
    pub fn counts(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.tokens_per_day.is_some()
    }
}

/// Which store keeps the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One process; lost on restart.
    #[default]
    Memory,
    /// One machine; survives restarts and crashes (`state.path`).
    Sqlite,
    /// Shared by replicas (`state.url`).
    Redis,
}

/// What happens to requests while the store cannot be reached (Redis down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Admit without counting: availability over budgets.
    Open,
    /// Refuse with 503: budgets hold, whatever it costs.
    #[default]
    Closed,
}

/// `state`: where limits, budgets and idempotency keys live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub store: StoreKind,
    /// The SQLite file (`store: sqlite`).
    pub path: String,
    /// The Redis URL (`store: redis`); also `REDIS_URL`.
    pub url: String,
    pub on_error: OnError,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            store: StoreKind::Memory,
            path: "tollgate-state.db".into(),
            url: "redis://127.0.0.1:6379".into(),
            on_error: OnError::Closed,
        }
    }
}

/// How a keepalive frame looks on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepaliveFormat {
    /// `: keepalive` — an SSE comment every client ignores.
    #[default]
    Comment,
    /// An OpenAI-shaped chunk with empty content.
    Chunk,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureHandling {
    /// Seconds of upstream silence before a keepalive frame (1..=60).
    pub keepalive_interval: u64,
    pub keepalive_format: KeepaliveFormat,
    /// Retries per target (after its first attempt), only before any upstream byte reached
    /// the client.
    pub retries: u32,
    pub backoff: Backoff,
    /// Seconds a stream may stay silent (keepalives aside) before it is ended with an error.
    pub max_silent_wait: u64,
    pub circuit_breaker: CircuitBreaker,
}

impl Default for FailureHandling {
    fn default() -> Self {
        FailureHandling {
            keepalive_interval: 8,
            keepalive_format: KeepaliveFormat::Comment,
            retries: 2,
            backoff: Backoff::default(),
            max_silent_wait: 120,
            circuit_breaker: CircuitBreaker::default(),
        }
    }
}

/// Exponential backoff between retries of one target, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// The first wait, in milliseconds; each further retry doubles it.
    pub initial_ms: u64,
    /// The longest wait, in milliseconds; also the cap on an upstream's `retry-after`.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 200,
            max_ms: 5000,
        }
    }
}

/// Per-backend circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Consecutive failures that open the circuit; 0 turns the breaker off.
    pub failures: u32,
    /// Seconds the circuit stays open before one probe request is let through.
    pub cooldown: u64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            failures: 5,
            cooldown: 30,
        }
    }
}

/// One backend instance. Keys this struct does not name are the connector's own options
/// (`options`), checked by that connector's factory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct BackendConfig {
    /// Connector type; defaults to the instance name when that is a known type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Beats the connector's key variable (`NVIDIA_API_KEY` …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Seconds for one upstream exchange.
    pub timeout: u64,
    /// Seconds to establish a connection.
    pub connect_timeout: u64,
    /// Static catalogue, used when discovery is impossible.
    pub models: Vec<String>,
    /// Empty: all.
    pub allowed_models: Vec<String>,
    pub denied_models: Vec<String>,
    /// Extra outbound headers. Values of credential-like headers print as `***`.
    #[serde(serialize_with = "redact_headers")]
    pub headers: BTreeMap<String, String>,
    /// Outbound headers added unless the request already carries them (a Messages client's
    /// own `anthropic-version` wins over the backend's).
    #[serde(serialize_with = "redact_headers")]
    pub default_headers: BTreeMap<String, String>,
    /// How the key is sent: a template with one `{{ key }}`, e.g. `"X-Api-Key: {{ key }}"`.
    /// Unset: the type's own way (`Authorization: Bearer` for OpenAI-compatible types).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// A first-use `GET {api_url}/models` in the background, its failure shown by
    /// `/health/ready`. Unset: the connector type's default (on for `nvidia`, off for the
    /// rest, whose `/models` is either public or costly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<bool>,
    /// This backend's limits (a backend over them is skipped like an open circuit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsConfig>,
    /// This backend's output budget; unset: the top-level `output_budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_budget: Option<OutputBudget>,
    /// How a translated request's reasoning control (Anthropic `thinking`, Responses
    /// `reasoning.effort`) reaches this backend; unset: dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    /// Connector-specific keys.
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_json::Value>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: None,
            api_url: None,
            api_key: None,
            timeout: 120,
            connect_timeout: 10,
            models: Vec::new(),
            allowed_models: Vec::new(),
            denied_models: Vec::new(),
            headers: BTreeMap::new(),
            default_headers: BTreeMap::new(),
            auth_header: None,
            health_check: None,
            limits: None,
            output_budget: None,
            reasoning: None,
            options: BTreeMap::new(),
        }
    }
}

impl BackendConfig {
    /// The connector type: `type`, or the instance name when it is one of `known` types.
    pub fn kind<'a>(&'a self, name: &'a str, known: &[&str]) -> Option<&'a str> {
        match &self.kind {
            Some(kind) => Some(kind),
            None if known.contains(&name) => Some(name),
            None => None,
        }
    }
}

/// The Anthropic Messages door (`POST /v1/messages`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicConfig {
    /// Requested model name (exact, or a glob with `*`) → the model to route instead
    /// (`backend:model`, a route, or a name for `default_backend`). Claude Code asks for
    /// `claude-*` names; this table sends them to open models. An exact name wins over a
    /// pattern, a longer pattern over a shorter one.
    pub models: BTreeMap<String, String>,
}

impl AnthropicConfig {
    /// The model to route for `requested`, when the table maps it.
    pub fn map_model(&self, requested: &str) -> Option<&str> {
        if let Some(target) = self.models.get(requested) {
            return Some(target);
        }
        self.models
            .iter()
            .filter(|(pattern, _)| pattern.contains('*'))
            .filter(|(pattern, _)| crate::pattern::glob(pattern, requested))
            // The most specific pattern: the most literal characters.
            .max_by_key(|(pattern, _)| pattern.len() - pattern.matches('*').count())
            .map(|(_, target)| target.as_str())
    }
}

/// Output budget of outbound requests: `max_tokens` (`max_completion_tokens`,
/// `max_output_tokens`) when the client sent none, and the most it may ask for. Claude Code
/// asks for 128,000 output tokens, more than most open models' whole context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputBudget {
    /// Set when the request has no output budget.
    pub default_max_tokens: Option<u64>,
    /// A larger request is lowered to this.
    pub hard_max_tokens: Option<u64>,
}

/// A backend's reasoning control: one for all its models, or by model glob.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ReasoningConfig {
    /// `none`, `effort` (`reasoning_effort`) or `chat_template_kwargs.NAME`.
    All(String),
    /// Model glob → control; the most specific glob wins, unmatched models get `none`.
    ByModel(BTreeMap<String, String>),
}

/// One reasoning control, as `ReasoningConfig` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningControl {
    None,
    /// `reasoning_effort: low|medium|high`.
    Effort,
    /// `chat_template_kwargs: {NAME: true|false}`.
    TemplateFlag(String),
}

impl ReasoningControl {
    /// Reads `none`, `effort` or `chat_template_kwargs.NAME`.
    pub fn parse(text: &str) -> Result<ReasoningControl, String> {
        match text.trim() {
            "none" => Ok(ReasoningControl::None),
            "effort" | "reasoning_effort" => Ok(ReasoningControl::Effort),
            other => match other.strip_prefix("chat_template_kwargs.") {
                Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    Ok(ReasoningControl::TemplateFlag(name.to_owned()))
                }
                _ => Err(format!(
                    "`{other}`: expected `none`, `effort` or `chat_template_kwargs.NAME`"
                )),
            },
        }
    }
}

impl ReasoningConfig {
    /// The control for `model`; a spelling `validate` refused reads as `None`.
    pub fn control_for(&self, model: &str) -> ReasoningControl {
        let text = match self {
            ReasoningConfig::All(text) => Some(text.as_str()),
            ReasoningConfig::ByModel(map) => map
                .iter()
                .filter(|(pattern, _)| crate::pattern::glob(pattern, model))
                .max_by_key(|(pattern, _)| pattern.len() - pattern.matches('*').count())
                .map(|(_, control)| control.as_str()),
        };
        text.and_then(|t| ReasoningControl::parse(t).ok())
            .unwrap_or(ReasoningControl::None)
    }

    fn problems(&self) -> Vec<(String, String)> {
        let check = |key: String, text: &str| ReasoningControl::parse(text).err().map(|e| (key, e));
        match self {
            ReasoningConfig::All(text) => check(String::new(), text).into_iter().collect(),
            ReasoningConfig::ByModel(map) => map
                .iter()
                .filter_map(|(pattern, text)| check(format!(".{pattern}"), text))
                .collect(),
        }
    }
}

/// Whether a header name looks like it carries a credential.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "key",
        "token",
        "secret",
        "password",
        "credential",
        "cookie",
    ]
    .iter()
    .any(|s| n.contains(s))
}

fn redact_headers<S: serde::Serializer>(
    headers: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(headers.len()))?;
    for (name, value) in headers {
        let shown = if is_secret_header(name) {
            "***"
        } else {
            value.as_str()
        };
        map.serialize_entry(name, shown)?;
    }
    map.end()
}

/// The live dashboard: `GET /dashboard`, `/dashboard/state`, `/dashboard/events`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Off by default: every dashboard path answers 404.
    pub enabled: bool,
    /// A variable holding the dashboard's admin key (besides client keys with `admin: true`).
    /// Required, with client keys configured, unless one of them is an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

/// `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether `/metrics` answers (404 when off).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `tollgate_server=debug,info` …
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

impl OutputBudget {
    /// The budget of one backend: its own settings, each unset one from `global`.
    pub fn over(self, global: OutputBudget) -> OutputBudget {
        OutputBudget {
            default_max_tokens: self.default_max_tokens.or(global.default_max_tokens),
            hard_max_tokens: self.hard_max_tokens.or(global.hard_max_tokens),
        }
    }

    /// This budget within `cap` (a `max_tokens_per_request`): the hard cap lowered to it, and
    /// the default at most it — a request that sets no budget then gets the cap.
    pub fn capped(self, cap: Option<u64>) -> OutputBudget {
        let Some(cap) = cap else {
            return self;
        };
        OutputBudget {
            default_max_tokens: Some(self.default_max_tokens.map_or(cap, |d| d.min(cap))),
            hard_max_tokens: Some(self.hard_max_tokens.map_or(cap, |h| h.min(cap))),
        }
    }

    /// The budget a request ends with when it asked for `requested` (`None`: it set none).
    pub fn apply(self, requested: Option<u64>) -> Option<u64> {
        let wanted = requested.or(self.default_max_tokens)?;
        Some(match self.hard_max_tokens {
            Some(cap) => wanted.min(cap),
            None => wanted,
        })
    }

    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, value) in [
            ("default_max_tokens", self.default_max_tokens),
            ("hard_max_tokens", self.hard_max_tokens),
        ] {
            if value == Some(0) {
                out.push((key.to_owned(), "must be at least 1".to_owned()));
            }
        }
        out
    }
}

/// One thing wrong with a configuration: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `backends.nvidia.timeout`.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A limit of 0 would refuse everything: surely a mistake, said at once.
fn limit_problems(limits: &LimitsConfig) -> Vec<(String, String)> {
    [
        ("rpm", limits.rpm),
        ("tpm", limits.tpm),
        ("tokens_per_day", limits.tokens_per_day),
        ("max_tokens_per_request", limits.max_tokens_per_request),
    ]
    .into_iter()
    .filter(|(_, v)| *v == Some(0))
    .map(|(k, _)| {
        (
            k.to_owned(),
            "must be at least 1 (leave it unset for no limit)".to_owned(),
        )
    })
    .collect()
}

impl Config {
    /// Every problem that can be seen without building connectors or reading the
    /// environment. `known_types` are the registered connector types.
    pub fn validate(&self, known_types: &[&str]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut p = |path: String, message: String| problems.push(Problem::new(path, message));

        if self.server.host.trim().is_empty() {
            p("server.host".into(), "must not be empty".into());
        }
        if self.server.max_body_bytes == 0 {
            p("server.max_body_bytes".into(), "must be at least 1".into());
        }
        let seconds = [
            ("request_timeout", self.server.request_timeout),
            ("header_read_timeout", self.server.header_read_timeout),
            ("body_read_timeout", self.server.body_read_timeout),
            ("body_gap_timeout", self.server.body_gap_timeout),
            ("idle_timeout", self.server.idle_timeout),
        ];
        for (key, value) in seconds {
            if value == 0 {
                p(format!("server.{key}"), "must be at least 1 second".into());
            }
        }
        if self.server.http2_keepalive_interval > 0 && self.server.http2_keepalive_timeout == 0 {
            p(
                "server.http2_keepalive_timeout".into(),
                "must be at least 1 second while http2_keepalive_interval is set".into(),
            );
        }
        if self.server.max_connections == 0 {
            p("server.max_connections".into(), "must be at least 1".into());
        }
        if self.server.backlog == 0 {
            p("server.backlog".into(), "must be at least 1".into());
        }

        let fh = &self.failure_handling;
        if !(1..=60).contains(&fh.keepalive_interval) {
            p(
                "failure_handling.keepalive_interval".into(),
                format!(
                    "must be between 1 and 60 seconds, got {}",
                    fh.keepalive_interval
                ),
            );
        }
        if fh.retries > 10 {
            p(
                "failure_handling.retries".into(),
                format!("must be at most 10, got {}", fh.retries),
            );
        }
        if fh.backoff.initial_ms == 0 {
            p(
                "failure_handling.backoff.initial_ms".into(),
                "must be at least 1".into(),
            );
        }
        if fh.backoff.max_ms < fh.backoff.initial_ms {
            p(
                "failure_handling.backoff.max_ms".into(),
                format!("must be at least initial_ms ({})", fh.backoff.initial_ms),
            );
        }
        if fh.max_silent_wait == 0 {
            p(
                "failure_handling.max_silent_wait".into(),
                "must be at least 1 second".into(),
            );
        }
        if fh.circuit_breaker.failures > 0 && fh.circuit_breaker.cooldown == 0 {
            p(
                "failure_handling.circuit_breaker.cooldown".into(),
                "must be at least 1 second".into(),
            );
        }
        for (key, message) in limit_problems(&self.limits) {
            p(format!("limits.{key}"), message);
        }
        match self.state.store {
            StoreKind::Sqlite if self.state.path.trim().is_empty() => p(
                "state.path".into(),
                "must name a file for `store: sqlite`".into(),
            ),
            StoreKind::Redis
                if !(self.state.url.starts_with("redis://")
                    || self.state.url.starts_with("unix://")) =>
            {
                p(
                    "state.url".into(),
                    format!(
                        "must be a redis:// (or unix://) URL for `store: redis`, got `{}`",
                        self.state.url
                    ),
                )
            }
            _ => {}
        }

        for (name, backend) in &self.backends {
            let at = format!("backends.{name}");
            if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
                p(
                    at.clone(),
                    "a backend name must be non-empty, without `:` or spaces".into(),
                );
            }
            match backend.kind(name, known_types) {
                None => p(
                    format!("{at}.type"),
                    format!(
                        "missing: `{name}` is not a connector type, so `type` is required (one of: {})",
                        known_types.join(", ")
                    ),
                ),
                Some(kind) if !known_types.contains(&kind) => p(
                    format!("{at}.type"),
                    format!("unknown connector type `{kind}` (one of: {})", known_types.join(", ")),
                ),
                Some(_) => {}
            }
            if backend.timeout == 0 {
                p(format!("{at}.timeout"), "must be at least 1 second".into());
            }
            if backend.connect_timeout == 0 {
                p(
                    format!("{at}.connect_timeout"),
                    "must be at least 1 second".into(),
                );
            }
            if let Some(limits) = &backend.limits {
                for (key, message) in limit_problems(limits) {
                    p(format!("{at}.limits.{key}"), message);
                }
            }
            if let Some(template) = &backend.auth_header {
                if let Err(e) = crate::auth_header::AuthHeader::parse(template) {
                    p(format!("{at}.auth_header"), e);
                }
            }
            for (name, value) in backend.headers.iter().chain(&backend.default_headers) {
                let valid = http::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && http::header::HeaderValue::from_str(value).is_ok();
                if !valid {
                    let section = if backend.headers.contains_key(name) {
                        "headers"
                    } else {
                        "default_headers"
                    };
                    p(
                        format!("{at}.{section}.{name}"),
                        "not a valid HTTP header name and value".into(),
                    );
                }
            }
            if let Some(reasoning) = &backend.reasoning {
                for (key, message) in reasoning.problems() {
                    p(format!("{at}.reasoning{key}"), message);
                }
            }
            if let Some(budget) = &backend.output_budget {
                for (key, message) in budget.problems() {
                    p(format!("{at}.output_budget.{key}"), message);
                }
            }
            if let Some(url) = &backend.api_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p(
                        format!("{at}.api_url"),
                        format!("must start with http:// or https://, got `{url}`"),
                    );
                }
            }
        }

        if let Some(default) = &self.default_backend {
            if !self.backends.contains_key(default) {
                p(
                    "default_backend".into(),
                    format!(
                        "`{default}` is not a configured backend ({})",
                        self.backend_names()
                    ),
                );
            }
        }

        for (route, targets) in &self.routes {
            let at = format!("routes.{route}");
            if targets.is_empty() {
                p(at.clone(), "needs at least one target".into());
            }
            for (i, target) in targets.iter().enumerate() {
                if !self.target_resolves(target) {
                    p(
                        format!("{at}[{i}]"),
                        format!(
                            "`{target}` names no configured backend and no default_backend is set ({})",
                            self.backend_names()
                        ),
                    );
                }
            }
        }

        for (requested, target) in &self.anthropic.models {
            if !self.target_resolves(target) && !self.routes.contains_key(target) {
                p(
                    format!("anthropic.models.{requested}"),
                    format!(
                        "`{target}` names no configured backend or route and no default_backend is set ({})",
                        self.backend_names()
                    ),
                );
            }
        }
        for (key, message) in self.output_budget.problems() {
            p(format!("output_budget.{key}"), message);
        }
        if let Some(var) = &self.dashboard.key_env {
            if var.trim().is_empty() || var.contains('=') {
                p(
                    "dashboard.key_env".into(),
                    "must name an environment variable".into(),
                );
            }
        }

        let mut names = std::collections::HashSet::new();
        for (i, key) in self.auth.keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            if key.name.trim().is_empty() {
                p(format!("{at}.name"), "required".into());
            } else if !names.insert(key.name.as_str()) {
                p(
                    format!("{at}.name"),
                    format!("duplicate key name `{}`", key.name),
                );
            }
            let sources = [
                key.key.is_some(),
                key.key_env.is_some(),
                key.key_sha256.is_some(),
            ];
            match sources.iter().filter(|s| **s).count() {
                1 => {}
                0 => p(
                    at.clone(),
                    "needs one of `key`, `key_env`, `key_sha256`".into(),
                ),
                _ => p(
                    at.clone(),
                    "give only one of `key`, `key_env`, `key_sha256`".into(),
                ),
            }
            if key.key.as_ref().is_some_and(Secret::is_empty) {
                p(format!("{at}.key"), "must not be empty".into());
            }
            if let Some(hex) = &key.key_sha256 {
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    p(format!("{at}.key_sha256"), "must be 64 hex digits".into());
                }
            }
            if let Some(limits) = &key.limits {
                for (k, message) in limit_problems(limits) {
                    p(format!("{at}.limits.{k}"), message);
                }
            }
        }
        problems
    }

    /// Adds a default backend for every connector type that the configuration names where a
    /// backend is expected (`default_backend`, the prefix of `force_model`, of a route target or
    /// of an `anthropic.models` target) without a `backends` entry of that name, so that
    /// `tollgate --default-backend nvidia` works with no file (SPEC §1). An explicit entry always
    /// wins. Returns the names added.
    pub fn add_implicit_backends(&mut self, known_types: &[&str]) -> Vec<String> {
        let mut named: Vec<&str> = Vec::new();
        named.extend(self.default_backend.as_deref());
        let prefix = |model: &str| model.split_once(':').map(|(p, _)| p.to_owned());
        let mut prefixes: Vec<String> = Vec::new();
        prefixes.extend(self.force_model.as_deref().and_then(prefix));
        for targets in self.routes.values() {
            prefixes.extend(targets.iter().filter_map(|t| prefix(t)));
        }
        prefixes.extend(self.anthropic.models.values().filter_map(|t| prefix(t)));
        let mut added = Vec::new();
        for name in named.into_iter().map(str::to_owned).chain(prefixes) {
            if known_types.contains(&name.as_str()) && !self.backends.contains_key(&name) {
                self.backends.insert(name.clone(), BackendConfig::default());
                added.push(name);
            }
        }
        added
    }

    /// Whether a route target can reach a backend.
    fn target_resolves(&self, target: &str) -> bool {
        match target.split_once(':') {
            Some((prefix, model)) if self.backends.contains_key(prefix) => !model.is_empty(),
            _ => self
                .default_backend
                .as_ref()
                .is_some_and(|d| self.backends.contains_key(d)),
        }
    }

    fn backend_names(&self) -> String {
        if self.backends.is_empty() {
            "no backends are configured".into()
        } else {
            let names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
            format!("configured: {}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: &[&str] = &["mock", "openai", "nvidia"];

    fn parse(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).expect("valid yaml")
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::default();
        assert_eq!(c.server.host, "127.0.0.1");
        assert_eq!(c.server.port, 8000);
        assert_eq!(c.server.max_body_bytes, 33_554_432);
        assert_eq!(c.server.header_read_timeout, 30);
        assert_eq!(c.server.body_read_timeout, 60);
        assert_eq!(c.server.idle_timeout, 120);
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.failure_handling.keepalive_interval, 8);
        assert_eq!(
            c.failure_handling.keepalive_format,
            KeepaliveFormat::Comment
        );
        assert!(c.validate(TYPES).is_empty());
    }

    #[test]
    fn backend_options_and_type_default() {
        let c = parse("backends:\n  nvidia: { api_key: ' Bearer nvapi-1 ' }\n  local: { type: mock, reply: hi }\n");
        assert_eq!(c.backends["nvidia"].kind("nvidia", TYPES), Some("nvidia"));
        assert_eq!(
            c.backends["nvidia"].api_key.as_ref().map(Secret::expose),
            Some("nvapi-1")
        );
        assert_eq!(c.backends["local"].options["reply"], "hi");
        assert!(c.validate(TYPES).is_empty());
    }

    #[test]
    fn health_check_is_a_backend_key_not_an_option() {
        let c = parse("backends:\n  nvidia: { health_check: false }\n  local: { type: nvidia }\n");
        assert_eq!(c.backends["nvidia"].health_check, Some(false));
        assert!(!c.backends["nvidia"].options.contains_key("health_check"));
        assert_eq!(
            c.backends["local"].health_check, None,
            "unset: the type decides"
        );
        assert_eq!(BackendConfig::default().health_check, None);
        assert!(
            serde_yaml::from_str::<Config>("backends:\n  nvidia: { health_check: 3 }\n").is_err()
        );
        assert!(c.validate(TYPES).is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c = parse(
            r#"
default_backend: nope
server: { header_read_timeout: 0, body_read_timeout: 0, idle_timeout: 0, max_connections: 0, backlog: 0, http2_keepalive_timeout: 0 }
failure_handling: { keepalive_interval: 0, retries: 30 }
backends:
  weird: {}
  x: { type: martian, timeout: 0 }
routes:
  fast: ["ghost:m"]
  empty: []
auth:
  keys:
    - { name: a, key: k, key_env: E }
    - { name: a, key_sha256: zz, limits: { rpm: 0 } }
state: { store: redis, url: "http://nope" }
dashboard: { enabled: true, key_env: "" }
"#,
        );
        let got: Vec<String> = c.validate(TYPES).iter().map(|p| p.path.clone()).collect();
        for want in [
            "default_backend",
            "server.header_read_timeout",
            "server.body_read_timeout",
            "server.idle_timeout",
            "server.max_connections",
            "server.backlog",
            "server.http2_keepalive_timeout",
            "failure_handling.keepalive_interval",
            "failure_handling.retries",
            "backends.weird.type",
            "backends.x.type",
            "backends.x.timeout",
            "routes.fast[0]",
            "routes.empty",
            "auth.keys[0]",
            "auth.keys[1].name",
            "auth.keys[1].key_sha256",
            "auth.keys[1].limits.rpm",
            "state.url",
            "dashboard.key_env",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
        }
    }

    #[test]
    fn the_dashboard_is_off_by_default_and_admin_keys_parse() {
        let c = Config::default();
        assert!(!c.dashboard.enabled);
        assert_eq!(c.dashboard.key_env, None);
        let c = parse("dashboard: { enabled: true, key_env: DASH_KEY }\nauth:\n  keys:\n    - { name: ops, key: k, admin: true }\n    - { name: ci, key: j }\n");
        assert!(c.dashboard.enabled);
        assert_eq!(c.dashboard.key_env.as_deref(), Some("DASH_KEY"));
        assert!(c.auth.keys[0].admin);
        assert!(!c.auth.keys[1].admin);
        assert!(c.validate(TYPES).is_empty());
        // `tollgate config` prints `admin` only where it is set.
        let printed = serde_yaml::to_string(&c).expect("yaml");
        assert_eq!(printed.matches("admin: true").count(), 1, "{printed}");
        assert!(!printed.contains("admin: false"), "{printed}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_yaml::from_str::<Config>("sever: {}").is_err());
        assert!(serde_yaml::from_str::<Config>("server: { prot: 1 }").is_err());
    }
}
