//! Limits and budgets on the request path (SPEC §8): which scope a request is counted in, what
//! it reserves, what a refusal says, and the `x-ratelimit-*` headers. The counting itself is
//! `tollgate-store`'s (memory, SQLite or Redis, by `state.store`; docs/limits.md).
//!
//! A request asks twice at most: its client key's scope at admission, and each backend's scope
//! before an attempt there (a backend over its limits is skipped like an open circuit). Each
//! decision is one atomic check-and-reserve; the reservations settle with the real usage when
//! the request ends (`Outcome`'s drop).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use tollgate_core::config::{LimitsConfig, OnError, StateConfig, StoreKind};
use tollgate_core::{Config, Endpoint, GatewayError, JsonObject, Problem};
use tollgate_store::{
    Ask, Decision, Limits, MemoryStore, RedisOptions, RedisStore, Reservation, ScopeState,
    SqliteStore, Store,
};

use crate::metrics::Metrics;

/// The scope of requests that carry no client key (a gateway without keys).
pub const ANONYMOUS: &str = "anonymous";

/// Output tokens reserved for a request that caps none and meets no configured cap: a
/// reservation only, not sent upstream (docs/limits.md, "The estimate").
pub const DEFAULT_RESERVED_OUTPUT: u64 = 4096;

/// Bytes counted for one inline image (base64 data is not text: a tokenizer sees the image at
/// a few hundred to ~1,500 tokens, whatever its size in bytes).
const IMAGE_BYTES: usize = 3000;

/// How long an idempotency key's answer is kept.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The limits of a runtime and the store that counts them.
pub struct Limiter {
    store: Arc<dyn Store>,
    /// The settings the store was opened with: an unchanged `state` (and lease) keeps it
    /// across reloads.
    state: StateConfig,
    /// How long a Redis reservation lives unsettled (`request_timeout` + a margin).
    lease: Duration,
    /// Each configured client key's limits (its own, else the top-level default).
    keys: HashMap<String, LimitsConfig>,
    /// The top-level limits, for requests without a client key.
    default: LimitsConfig,
    backends: HashMap<String, LimitsConfig>,
}

/// What an admission decided: the reservation to settle and the scope's state for headers.
#[derive(Default)]
pub struct Admitted {
    pub reservation: Option<Reservation>,
    pub state: Option<ScopeState>,
}

/// Why a backend was skipped by its limits.
pub enum Skipped {
    /// Over a limit: try again after `retry_after`.
    OverLimit { retry_after: Duration },
    /// The store could not decide and `on_error: closed`.
    StoreDown,
}

impl Limiter {
    /// The limits of `config`, counted by its `state.store` — the previous runtime's store
    /// when `state` did not change (so a reload keeps the counters), a new one otherwise.
    /// `open` false (for `tollgate check`) opens nothing: no file, no connection.
    pub fn build(
        config: &Config,
        previous: Option<&Limiter>,
        open: bool,
    ) -> Result<Limiter, Problem> {
        let lease = Duration::from_secs(config.server.request_timeout) + LEASE_MARGIN;
        // A longer request_timeout needs a longer lease, hence a store opened anew.
        let store: Arc<dyn Store> =
            match previous.filter(|p| p.state == config.state && p.lease == lease) {
                Some(p) => p.store.clone(),
                None if !open => Arc::new(MemoryStore::new()),
                None => open_store(&config.state, lease)?,
            };
        let keys = config
            .auth
            .keys
            .iter()
            .map(|k| (k.name.clone(), k.limits.unwrap_or(config.limits)))
            .collect();
        let backends = config
            .backends
            .iter()
            .filter_map(|(name, b)| Some((name.clone(), b.limits?)))
            .collect();
        Ok(Limiter {
            store,
            lease,
            state: config.state.clone(),
            keys,
            default: config.limits,
            backends,
        })
    }

    /// The limits of a request's client key (`None`: no key).
    pub fn key_limits(&self, key: Option<&str>) -> LimitsConfig {
        match key {
            Some(name) => self.keys.get(name).copied().unwrap_or(self.default),
            None => self.default,
        }
    }

    /// Whether any backend has counted limits (so requests need an estimate).
    pub fn backends_count(&self) -> bool {
        self.backends.values().any(LimitsConfig::counts)
    }

    pub fn backend_limits(&self, backend: &str) -> Option<LimitsConfig> {
        self.backends.get(backend).copied()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store in use and whether it is reachable, for `/health/ready`.
    pub fn health(&self) -> (StoreKind, bool, OnError) {
        (self.state.store, self.store.healthy(), self.state.on_error)
    }

    /// Admits a request in its key's scope, reserving `tokens`. A refusal is a 429 naming the
    /// limit (never the key); a store that cannot decide follows `state.on_error`.
    pub async fn admit_key(
        &self,
        key: Option<&str>,
        tokens: u64,
        metrics: &Metrics,
    ) -> Result<Admitted, GatewayError> {
        let limits = self.key_limits(key);
        if !limits.counts() {
            return Ok(Admitted::default());
        }
        let scope = key_scope(key);
        match self.decide(&scope, limits, tokens, metrics).await {
            Ok(Ok(admitted)) => Ok(admitted),
            Ok(Err(refused)) => Err(refused),
            Err(()) => match self.state.on_error {
                OnError::Open => Ok(Admitted::default()),
                OnError::Closed => Err(store_down()),
            },
        }
    }

    /// Admits one attempt at `backend`, reserving `tokens` there.
    pub async fn admit_backend(
        &self,
        backend: &str,
        tokens: u64,
        metrics: &Metrics,
    ) -> Result<Admitted, Skipped> {
        let Some(limits) = self.backend_limits(backend).filter(LimitsConfig::counts) else {
            return Ok(Admitted::default());
        };
        let scope = format!("backend:{backend}");
        match self.decide(&scope, limits, tokens, metrics).await {
            Ok(Ok(admitted)) => Ok(admitted),
            Ok(Err(refused)) => Err(Skipped::OverLimit {
                retry_after: refused.retry_after().unwrap_or(Duration::from_secs(1)),
            }),
            Err(()) => match self.state.on_error {
                OnError::Open => Ok(Admitted::default()),
                OnError::Closed => Err(Skipped::StoreDown),
            },
        }
    }

    /// One decision; `Err(())` when the store could not make it.
    async fn decide(
        &self,
        scope: &str,
        limits: LimitsConfig,
        tokens: u64,
        metrics: &Metrics,
    ) -> Result<Result<Admitted, GatewayError>, ()> {
        let ask = Ask {
            scope,
            limits: Limits {
                rpm: limits.rpm,
                tpm: limits.tpm,
                tokens_per_day: limits.tokens_per_day,
            },
            tokens,
        };
        let now = SystemTime::now();
        let decision = match self.store.admit(&[ask], now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(scope, error = %e, on_error = ?self.state.on_error, "the limits store could not decide");
                metrics.store_up(false);
                return Err(());
            }
        };
        metrics.store_up(true);
        Ok(match decision {
            Decision::Admitted {
                reservation,
                states,
            } => {
                let state = states.into_iter().next();
                if let Some(today) = state.and_then(|s| s.tokens_today) {
                    metrics.budget_remaining(scope, today.remaining);
                }
                Ok(Admitted {
                    reservation: Some(reservation),
                    state,
                })
            }
            Decision::Refused(refusal) => {
                metrics.limit_refusal(refusal.limit.name(), scope);
                let what = describe(refusal.limit.name(), limits);
                let message = if refusal.oversized {
                    format!(
                        "this request needs about {tokens} tokens, more than the {what} allows: waiting will not help; ask for fewer output tokens"
                    )
                } else {
                    format!(
                        "rate limit reached: {what}; retry in {}s",
                        refusal.retry_after_secs()
                    )
                };
                Err(GatewayError::RateLimited {
                    message,
                    retry_after: (!refusal.oversized)
                        .then(|| Duration::from_secs(refusal.retry_after_secs())),
                })
            }
        })
    }
}

/// The limit in words: `rpm (60 requests per minute)`.
fn describe(limit: &str, limits: LimitsConfig) -> String {
    match limit {
        "rpm" => format!("rpm ({} requests per minute)", limits.rpm.unwrap_or(0)),
        "tpm" => format!("tpm ({} tokens per minute)", limits.tpm.unwrap_or(0)),
        _ => format!(
            "tokens_per_day ({} tokens per UTC day, reset at 00:00 UTC)",
            limits.tokens_per_day.unwrap_or(0)
        ),
    }
}

/// What a request is refused with when the store is down and `state.on_error: closed`.
pub const STORE_DOWN: &str = "the limits store cannot be reached and state.on_error is closed";

pub fn store_down() -> GatewayError {
    GatewayError::BackendUnavailable(STORE_DOWN.into())
}

/// The limits scope of a client key (or of keyless requests).
pub fn key_scope(key: Option<&str>) -> String {
    match key {
        Some(name) => format!("key:{name}"),
        None => ANONYMOUS.to_owned(),
    }
}

/// How much longer than `server.request_timeout` a Redis reservation lives unsettled: a
/// request never outlives its timeout, so a reservation older than this belongs to a replica
/// that died, and its tokens go back to the budget.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// The longest one exchange with Redis may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

fn open_store(state: &StateConfig, lease: Duration) -> Result<Arc<dyn Store>, Problem> {
    match state.store {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Sqlite => SqliteStore::open(&state.path)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| Problem::new("state.path", format!("cannot open `{}`: {e}", state.path))),
        StoreKind::Redis => RedisStore::new(RedisOptions {
            lease,
            // A busy Redis (or a busy host) is not a down one: 2 s before a decision counts as
            // failed and `on_error` applies.
            timeout: REDIS_TIMEOUT,
            ..RedisOptions::new(&state.url)
        })
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| Problem::new("state.url", e.to_string())),
    }
}

/// The tokens a request reserves: its prompt's estimate plus its output cap.
pub fn estimate(endpoint: Endpoint, body: &JsonObject, output_cap: u64) -> u64 {
    let fields: &[&str] = match endpoint {
        Endpoint::ChatCompletions => &["messages", "tools", "functions"],
        Endpoint::Completions => &["prompt", "suffix"],
        Endpoint::Embeddings => &["input"],
        Endpoint::Messages | Endpoint::CountTokens => &["system", "messages", "tools"],
        Endpoint::Responses => &["instructions", "input", "tools"],
    };
    let bytes = fields
        .iter()
        .filter_map(|f| body.raw(f))
        .map(text_bytes)
        .sum();
    tollgate_store::estimate_tokens(bytes, output_cap)
}

/// The bytes of a raw JSON value that count as text: base64 image data counts as
/// `IMAGE_BYTES` per image instead of its length (a data URL `…;base64,DATA`, or an Anthropic
/// source `{"type":"base64",…,"data":"DATA"}`).
fn text_bytes(raw: &[u8]) -> usize {
    let mut total = 0;
    let mut rest = raw;
    while let Some(at) = memchr::memmem::find(rest, b"base64") {
        let tail = &rest[at + 6..];
        total += at + 6;
        let skip = data_run(tail);
        if skip > 0 {
            total += IMAGE_BYTES;
        }
        rest = &tail[skip..];
    }
    total + rest.len()
}

/// Where a run of base64 data that starts near the front of `tail` ends (0 when none does):
/// the data follows `base64` within a few bytes (`,` in a data URL; `","media_type":…,"data":"`
/// in an Anthropic source), and is long (short runs are words).
fn data_run(tail: &[u8]) -> usize {
    let is_data = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'=');
    let near = tail.len().min(96);
    let mut i = 0;
    while i < near {
        let run = tail[i..].iter().take_while(|b| is_data(b)).count();
        if run >= 256 {
            return i + run;
        }
        i += run.max(1);
    }
    0
}

/// The output cap a request is counted with: what it asks for, within its key's
/// `max_tokens_per_request`; with no ask, that cap, else the reservation default.
pub fn output_cap(endpoint: Endpoint, body: &JsonObject, key_cap: Option<u64>) -> u64 {
    let asked = crate::retry::budget_fields(endpoint)
        .iter()
        .filter_map(|f| body.decode::<u64>(f).ok().flatten())
        .max();
    match (asked, key_cap) {
        (Some(a), Some(c)) => a.min(c),
        (Some(a), None) => a,
        (None, Some(c)) => c,
        (None, None) => DEFAULT_RESERVED_OUTPUT,
    }
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// OpenAI's `x-ratelimit-*` headers for a scope's state. Names are constants and numbers are
/// written straight into header values: this runs on every limited request.
pub fn headers(state: &ScopeState, out: &mut HeaderMap) {
    let reset = |d: Duration| {
        HeaderValue::try_from(duration_text(d)).unwrap_or(HeaderValue::from_static("0s"))
    };
    if let Some(q) = state.requests {
        out.insert(LIMIT_REQUESTS, HeaderValue::from(q.limit));
        out.insert(REMAINING_REQUESTS, HeaderValue::from(q.remaining));
        out.insert(RESET_REQUESTS, reset(q.reset));
    }
    if let Some(q) = state.tokens.or(state.tokens_today) {
        out.insert(LIMIT_TOKENS, HeaderValue::from(q.limit));
        out.insert(REMAINING_TOKENS, HeaderValue::from(q.remaining));
        out.insert(RESET_TOKENS, reset(q.reset));
    }
}

/// A duration as OpenAI writes it: `120ms`, `6s`, `1m30s`, `7h2m0s` (whole seconds rounded
/// up). Written by hand into a stack buffer: `format!` costs several times more, on every
/// limited request.
pub fn duration_text(d: Duration) -> String {
    let mut text = Text::default();
    let ms = d.as_millis();
    if ms < 1000 {
        text.number(ms as u64);
        text.push(b"ms");
    } else {
        let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        if h > 0 {
            text.number(h);
            text.push(b"h");
        }
        if h > 0 || m > 0 {
            text.number(m);
            text.push(b"m");
        }
        text.number(s);
        text.push(b"s");
    }
    text.into_string()
}

/// A short ASCII text built in place: `u64::MAX` hours, minutes and seconds fit.
struct Text {
    buf: [u8; 48],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl Text {
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn into_string(self) -> String {
        // Only ASCII digits and unit letters were pushed.
        String::from_utf8_lossy(&self.buf[..self.len]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_openai_writes_them() {
        assert_eq!(duration_text(Duration::from_millis(120)), "120ms");
        assert_eq!(duration_text(Duration::from_millis(6000)), "6s");
        assert_eq!(duration_text(Duration::from_millis(6001)), "7s");
        assert_eq!(duration_text(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_text(Duration::from_secs(7 * 3600 + 120)), "7h2m0s");
        assert_eq!(duration_text(Duration::ZERO), "0ms");
        assert_eq!(duration_text(Duration::from_millis(999)), "999ms");
        assert_eq!(duration_text(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(duration_text(Duration::from_secs(60)), "1m0s");
        assert_eq!(duration_text(Duration::from_millis(59_500)), "1m0s");
        assert_eq!(
            duration_text(Duration::MAX),
            format!(
                "{}h{}m{}s",
                u64::MAX / 3600,
                u64::MAX % 3600 / 60,
                u64::MAX % 60
            )
        );
    }

    #[test]
    fn images_count_at_a_fixed_price() {
        let data = "A".repeat(100_000);
        let raw = format!(
            r#"[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}},"hello"]"#
        );
        let counted = text_bytes(raw.as_bytes());
        assert!(counted < IMAGE_BYTES + 200, "{counted}");
        let raw = format!(r#"{{"type":"base64","media_type":"image/png","data":"{data}"}}"#);
        assert!(text_bytes(raw.as_bytes()) < IMAGE_BYTES + 200);
        assert_eq!(text_bytes(br#""plain text""#), 12);
        // The word itself in text is not an image.
        assert_eq!(text_bytes(br#""about base64 encoding""#), 23);
    }

    #[test]
    fn the_output_cap_is_the_ask_within_the_key_cap() {
        let body = JsonObject::parse(br#"{"max_tokens":500}"#).expect("json");
        assert_eq!(output_cap(Endpoint::ChatCompletions, &body, None), 500);
        assert_eq!(output_cap(Endpoint::ChatCompletions, &body, Some(100)), 100);
        let none = JsonObject::parse(b"{}").expect("json");
        assert_eq!(output_cap(Endpoint::Messages, &none, Some(64)), 64);
        assert_eq!(
            output_cap(Endpoint::Responses, &none, None),
            DEFAULT_RESERVED_OUTPUT
        );
    }
}
