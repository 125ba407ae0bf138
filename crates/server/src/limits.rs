//! Limits and budgets on the request path (SPEC §8): which scope a request is counted in, what
//! it reserves, what a refusal says, and the `x-ratelimit-*` headers. The counting itself is
//! `tollgate-store`'s (memory, SQLite or Redis, by `state.store`; docs/limits.md).
//!
//! A request asks twice at most: its client key's scope at admission, and each backend's scope
//! before an attempt there (a backend over its limits is skipped like an open circuit). Each
//! decision is one atomic check-and-reserve; the reservations settle with the real usage when
//! the request ends (`Outcome`'s drop).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use metrics::Gauge;
use tollgate_core::config::{LimitsConfig, OnError, StateConfig, StoreKind};
use tollgate_core::{Config, Endpoint, GatewayError, JsonObject, Problem};
use tollgate_store::{
    Ask, Decision, Limits, MemoryStore, Quota, RedisOptions, RedisStore, Reservation, ScopeState,
    SqliteStore, Store,
};

use crate::metrics::{Fnv, Metrics};

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
    /// Each configured client key's limits (its own, else the top-level default) and scope.
    /// FNV: the names come from the configuration, not from clients, and a lookup runs twice
    /// per request.
    keys: HashMap<String, Scoped, BuildHasherDefault<Fnv>>,
    /// The top-level limits, for requests without a client key.
    default: LimitsConfig,
    /// Each backend with limits, and its scope.
    backends: HashMap<String, Scoped, BuildHasherDefault<Fnv>>,
}

/// A scope's kept `tollgate_budget_remaining_tokens` handle.
type Budget = OnceLock<Gauge>;

/// A key's or a backend's limits with its scope's name, built once per runtime: formatting
/// `key:<name>` on every request cost more than the store's whole decision.
#[derive(Default)]
struct Scoped {
    limits: LimitsConfig,
    scope: Box<str>,
    /// The scope's `tollgate_budget_remaining_tokens` handle, taken from the gateway's
    /// `Metrics` at the first decision. A runtime serves one gateway, whose requests all
    /// record into its one `Metrics`, so the handle is the one a lookup would find.
    budget: Budget,
}

/// One scope's ask of the store.
fn ask(scope: &str, limits: LimitsConfig, tokens: u64) -> Ask<'_> {
    Ask {
        scope,
        limits: Limits {
            rpm: limits.rpm,
            tpm: limits.tpm,
            tokens_per_day: limits.tokens_per_day,
        },
        tokens,
    }
}

/// A scope as a decision needs it: a request's client key (`Limiter::key`) or a backend.
pub struct ScopeRef<'a> {
    /// The scope's limits (a key's own, else the top-level default).
    pub limits: LimitsConfig,
    scope: Cow<'a, str>,
    /// The scope's kept `tollgate_budget_remaining_tokens` handle, when it has one.
    budget: Option<&'a Budget>,
}

/// What an admission decided: the reservation to settle and the scope's state for headers.
#[derive(Default)]
pub struct Admitted {
    pub reservation: Option<Reservation>,
    pub state: Option<ScopeState>,
}

/// The reservations a request holds, each with the tokens it reserved (what is charged when
/// the upstream reports no usage). A request holds two at most in practice — its key's and the
/// answering backend's — kept inline: a `Vec` cost an allocation per limited request.
#[derive(Default)]
pub struct Reservations {
    inline: [Option<(Reservation, u64)>; 2],
    more: Vec<(Reservation, u64)>,
}

impl Reservations {
    pub fn push(&mut self, held: (Reservation, u64)) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(held),
            None => self.more.push(held),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inline.iter().all(Option::is_none) && self.more.is_empty()
    }

    /// Takes every reservation out, in the order they were pushed.
    pub fn drain(&mut self) -> impl Iterator<Item = (Reservation, u64)> + '_ {
        self.inline
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.more.drain(..))
    }
}

impl Extend<(Reservation, u64)> for Reservations {
    fn extend<I: IntoIterator<Item = (Reservation, u64)>>(&mut self, held: I) {
        for h in held {
            self.push(h);
        }
    }
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
            .map(|k| {
                let limits = k.limits.unwrap_or(config.limits);
                let scope = key_scope(Some(&k.name)).into_boxed_str();
                let scoped = Scoped {
                    limits,
                    scope,
                    ..Scoped::default()
                };
                (k.name.clone(), scoped)
            })
            .collect();
        let backends = config
            .backends
            .iter()
            .filter_map(|(name, b)| {
                let limits = b.limits?;
                let scope = backend_scope(name).into_boxed_str();
                let scoped = Scoped {
                    limits,
                    scope,
                    ..Scoped::default()
                };
                Some((name.clone(), scoped))
            })
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
            Some(name) => self.keys.get(name).map_or(self.default, |k| k.limits),
            None => self.default,
        }
    }

    /// A request's client key's limits and scope, looked up once for both the request's cap and
    /// its admission; a key the configuration does not name (none reaches here through
    /// authentication) has the default limits.
    pub fn key(&self, key: Option<&str>) -> ScopeRef<'_> {
        match key.map(|name| (name, self.keys.get(name))) {
            Some((_, Some(k))) => ScopeRef {
                limits: k.limits,
                scope: Cow::Borrowed(&*k.scope),
                budget: Some(&k.budget),
            },
            Some((name, None)) => ScopeRef {
                limits: self.default,
                scope: Cow::Owned(key_scope(Some(name))),
                budget: None,
            },
            None => ScopeRef {
                limits: self.default,
                scope: Cow::Borrowed(ANONYMOUS),
                budget: None,
            },
        }
    }

    /// Whether any backend has counted limits (so requests need an estimate).
    pub fn backends_count(&self) -> bool {
        self.backends.values().any(|b| b.limits.counts())
    }

    pub fn backend_limits(&self, backend: &str) -> Option<LimitsConfig> {
        self.backends.get(backend).map(|b| b.limits)
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
        key: &ScopeRef<'_>,
        tokens: u64,
        metrics: &Metrics,
    ) -> Result<Admitted, GatewayError> {
        if !key.limits.counts() {
            return Ok(Admitted::default());
        }
        let judged = self.decide(key, tokens, metrics).await;
        self.key_decided(judged)
    }

    /// A key's decision, `state.on_error` applied where the store could not make it.
    fn key_decided(
        &self,
        judged: Result<Result<Admitted, GatewayError>, ()>,
    ) -> Result<Admitted, GatewayError> {
        match judged {
            Ok(decided) => decided,
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
        let Some(scoped) = self.backends.get(backend).filter(|b| b.limits.counts()) else {
            return Ok(Admitted::default());
        };
        let scope = ScopeRef {
            limits: scoped.limits,
            scope: Cow::Borrowed(&scoped.scope),
            budget: Some(&scoped.budget),
        };
        match self.decide(&scope, tokens, metrics).await {
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
        scope: &ScopeRef<'_>,
        tokens: u64,
        metrics: &Metrics,
    ) -> Result<Result<Admitted, GatewayError>, ()> {
        let asks = [ask(&scope.scope, scope.limits, tokens)];
        let now = SystemTime::now();
        // Memory and SQLite decide at once; only Redis is waited for.
        let decided = match self.store.admit_now(&asks, now) {
            Some(decided) => decided,
            None => self.store.admit(&asks, now).await,
        };
        self.judge(scope, tokens, metrics, decided)
    }

    /// What the store's answer means for the request: the admission, or the 429 naming the
    /// limit; `Err(())` when the store could not decide.
    fn judge(
        &self,
        scoped: &ScopeRef<'_>,
        tokens: u64,
        metrics: &Metrics,
        decided: Result<Decision, tollgate_store::StoreError>,
    ) -> Result<Result<Admitted, GatewayError>, ()> {
        let (scope, budget, limits) = (&*scoped.scope, scoped.budget, scoped.limits);
        let decision = match decided {
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
                let state = states.first().copied();
                if let Some(today) = state.and_then(|s| s.tokens_today) {
                    match budget {
                        Some(gauge) => gauge
                            .get_or_init(|| metrics.budget_gauge(scope))
                            .set(today.remaining as f64),
                        None => metrics.budget_remaining(scope, today.remaining),
                    }
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

/// The limits scope of a backend.
fn backend_scope(backend: &str) -> String {
    format!("backend:{backend}")
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
    // Built once: `memmem::find` builds its searcher on every call, which cost more than the
    // search through a short prompt.
    static BASE64: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"base64"));
    // Shorter than `base64` and the shortest data run counted as an image (most prompts): no
    // image to find, so no search.
    if raw.len() < 6 + MIN_DATA_RUN {
        return raw.len();
    }
    let mut total = 0;
    let mut rest = raw;
    while let Some(at) = BASE64.find(rest) {
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

/// The shortest run of base64 data counted as an image.
const MIN_DATA_RUN: usize = 256;

/// Where a run of base64 data that starts near the front of `tail` ends (0 when none does):
/// the data follows `base64` within a few bytes (`,` in a data URL; `","media_type":…,"data":"`
/// in an Anthropic source), and is long (short runs are words).
fn data_run(tail: &[u8]) -> usize {
    let is_data = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'=');
    let near = tail.len().min(96);
    let mut i = 0;
    while i < near {
        let run = tail[i..].iter().take_while(|b| is_data(b)).count();
        if run >= MIN_DATA_RUN {
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
        .filter_map(|f| {
            let raw = body.raw(f)?;
            plain_u64(raw).or_else(|| body.decode::<u64>(f).ok().flatten())
        })
        .max();
    match (asked, key_cap) {
        (Some(a), Some(c)) => a.min(c),
        (Some(a), None) => a,
        (None, Some(c)) => c,
        (None, None) => DEFAULT_RESERVED_OUTPUT,
    }
}

/// A JSON number that is plainly a `u64` (1 to 19 digits, no leading zero): what nearly every
/// `max_tokens` is, read without a JSON parser. `None` for anything else, which `decode`
/// judges as before (a float, a negative, a string, 20 digits that may overflow).
fn plain_u64(raw: &[u8]) -> Option<u64> {
    let plain = !raw.is_empty()
        && raw.len() <= 19
        && (raw[0] != b'0' || raw.len() == 1)
        && raw.iter().all(u8::is_ascii_digit);
    // 19 digits stay below u64::MAX (1.8e19): no overflow.
    plain.then(|| raw.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// The quotas the `x-ratelimit-*` headers show: the requests', then the tokens' (the minute's,
/// else the day's).
pub fn shown(state: &ScopeState) -> [Option<Quota>; 2] {
    [state.requests, state.tokens.or(state.tokens_today)]
}

/// OpenAI's `x-ratelimit-*` headers for a scope's state, inserted into `out` (they replace any
/// of the same name). The answers most requests get (a whole answer, a stream that started in
/// time) take them from a kept map instead (`crate::kept_headers`, `RateHeaders`); this is for
/// the rest: refusals, errors, a stream still waiting for its backend.
pub fn headers(state: &ScopeState, out: &mut HeaderMap) {
    for (names, q) in NAMES.iter().zip(shown(state)) {
        let Some(q) = q else { continue };
        let [limit, remaining, reset] = names.clone();
        out.insert(limit, Made::Number(q.limit).value());
        out.insert(remaining, HeaderValue::from(q.remaining));
        out.insert(reset, Made::reset(q.reset).value());
    }
}

/// Which `x-ratelimit-*` headers `quotas` show: 0 none, 1 both, 2 the requests', 3 the tokens'.
pub fn shape(quotas: &[Option<Quota>; 2]) -> usize {
    match quotas {
        [None, None] => 0,
        [Some(_), Some(_)] => 1,
        [Some(_), None] => 2,
        [None, Some(_)] => 3,
    }
}

/// The remaining counts' values, in the order of the headers.
fn remaining_values(quotas: &[Option<Quota>; 2]) -> impl Iterator<Item = HeaderValue> + '_ {
    quotas
        .iter()
        .flatten()
        .map(|q| HeaderValue::from(q.remaining))
}

/// The `x-ratelimit-*` part of a kept header map: three headers per shown quota (limit,
/// remaining, reset), in that order. The limit and reset values are kept as last written (with
/// what each was made from) and replaced in place, by position, only when they change; the
/// remaining count, new on every answer, is a stand-in there, written into each answer's copy
/// (a value cloned out of the kept map would be moved into shared storage, an allocation, on
/// every answer).
pub struct RateHeaders {
    /// Per quota: what its limit's and its reset's values were made from.
    made: [[Made; 2]; 2],
}

/// The names of one quota's headers, requests' then tokens'.
const NAMES: [[HeaderName; 3]; 2] = [
    [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
    [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS],
];

impl RateHeaders {
    /// Inserts the headers `quotas` show into `map`, after what it holds.
    pub fn append(quotas: &[Option<Quota>; 2], map: &mut HeaderMap) -> RateHeaders {
        let mut made = [[Made::Number(0); 2]; 2];
        for (i, q) in quotas.iter().enumerate() {
            if let Some(q) = q {
                let [limit, reset] = [Made::Number(q.limit), Made::reset(q.reset)];
                let [l, r, s] = NAMES[i].clone();
                map.insert(l, limit.value());
                map.insert(r, HeaderValue::from_static("0"));
                map.insert(s, reset.value());
                made[i] = [limit, reset];
            }
        }
        RateHeaders { made }
    }

    /// Brings the kept limit and reset values to `quotas` (of the shape they were appended
    /// with), each only when it changed. `values`: the kept map's values from the first
    /// `x-ratelimit-*` one.
    pub fn refresh<'a>(
        &mut self,
        quotas: &[Option<Quota>; 2],
        mut values: impl Iterator<Item = &'a mut HeaderValue>,
    ) {
        let now = quotas.map(|q| q.map(|q| [Made::Number(q.limit), Made::reset(q.reset)]));
        // Most answers change neither (a reset changes once a second): no walk of the map.
        if now
            .iter()
            .zip(&self.made)
            .all(|(now, made)| now.is_none_or(|now| now == *made))
        {
            return;
        }
        for (i, q) in quotas.iter().enumerate() {
            let Some(q) = q else { continue };
            let (Some(limit), Some(_), Some(reset)) = (values.next(), values.next(), values.next())
            else {
                unreachable!("a kept map holds three headers per quota of its shape");
            };
            let [was_limit, was_reset] = &mut self.made[i];
            let made = Made::Number(q.limit);
            if *was_limit != made {
                *limit = made.value();
                *was_limit = made;
            }
            let made = Made::reset(q.reset);
            if *was_reset != made {
                *reset = made.value();
                *was_reset = made;
            }
        }
    }

    /// Writes the remaining counts of `quotas` into a copy of a kept map. `values`: the copy's
    /// values from the first `x-ratelimit-*` one.
    pub fn write_remaining<'a>(
        quotas: &[Option<Quota>; 2],
        values: impl Iterator<Item = &'a mut HeaderValue>,
    ) {
        let mut remaining = remaining_values(quotas);
        for (i, value) in values.enumerate() {
            if i % 3 == 1 {
                let Some(v) = remaining.next() else { break };
                *value = v;
            }
        }
    }
}

/// What a header value is made from: a number, or a reset as its text depends on it
/// (milliseconds under a second, else whole seconds rounded up).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    Number(u64),
    Millis(u64),
    Secs(u64),
}

impl Made {
    fn reset(d: Duration) -> Made {
        let ms = d.as_millis();
        if ms < 1000 {
            Made::Millis(ms as u64)
        } else {
            Made::Secs(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)))
        }
    }

    fn value(self) -> HeaderValue {
        match self {
            Made::Number(n) => HeaderValue::from(n),
            Made::Millis(ms) => Text::of_millis(ms).value(),
            Made::Secs(secs) => Text::of_secs(secs).value(),
        }
    }
}

/// A duration as the `x-ratelimit-reset-*` headers write it, as a string (for tests).
#[cfg(test)]
fn duration_text(d: Duration) -> String {
    match Made::reset(d) {
        Made::Millis(ms) => Text::of_millis(ms).into_string(),
        Made::Secs(secs) => Text::of_secs(secs).into_string(),
        Made::Number(_) => unreachable!("a reset is never a plain number"),
    }
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
    /// `120ms`: a reset under a second, as OpenAI writes it.
    fn of_millis(ms: u64) -> Text {
        let mut text = Text::default();
        text.number(ms);
        text.push(b"ms");
        text
    }

    /// `6s`, `1m30s`, `7h2m0s`: a reset of whole seconds (rounded up), as OpenAI writes it.
    /// Written by hand into a stack buffer: `format!` costs several times more.
    fn of_secs(secs: u64) -> Text {
        let mut text = Text::default();
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
        text
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn number(&mut self, n: u64) {
        self.push(tollgate_core::Decimal::new(n).as_bytes());
    }

    #[cfg(test)]
    fn into_string(self) -> String {
        // Only ASCII digits and unit letters were pushed.
        String::from_utf8_lossy(&self.buf[..self.len]).into_owned()
    }

    /// The text as a header value, copied once. Only ASCII digits and unit letters are ever
    /// pushed, all valid in a header value, so the fallback is never taken.
    fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.buf[..self.len]).unwrap_or(HeaderValue::from_static("0"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        // The shortest image: `base64` and 256 bytes of data, around the short cut.
        for len in [255, 256, 257] {
            let raw = format!("base64{}", "A".repeat(len));
            let expected = if len >= MIN_DATA_RUN {
                6 + IMAGE_BYTES
            } else {
                raw.len()
            };
            assert_eq!(text_bytes(raw.as_bytes()), expected, "{len}");
        }
    }

    /// The output cap as it was read before `plain_u64`: every field through serde.
    fn output_cap_by_serde(endpoint: Endpoint, body: &JsonObject, key_cap: Option<u64>) -> u64 {
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

    /// A small deterministic generator (xorshift), for inputs without a dependency.
    pub(crate) fn numbers(seed: u64) -> impl Iterator<Item = u64> {
        let mut x = seed;
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(x)
        })
    }

    #[test]
    fn budgets_read_by_hand_as_serde_reads_them() {
        let mut values: Vec<String> = [
            "0",
            "7",
            "500",
            "05",
            "00",
            "-1",
            "-0",
            "1e3",
            "1.0",
            "2.5",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "\"5\"",
            "null",
            "true",
            "[]",
            "{}",
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        for n in numbers(0x9e37_79b9_7f4a_7c15).take(300) {
            // Every length from 1 to 20 digits.
            values.push((n >> (n % 64)).to_string());
            values.push(n.to_string());
        }
        for value in &values {
            for endpoint in [
                Endpoint::ChatCompletions,
                Endpoint::Messages,
                Endpoint::Responses,
            ] {
                for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
                    let json = format!(r#"{{"model":"m","{field}":{value}}}"#);
                    let Ok(body) = JsonObject::parse(json.as_bytes()) else {
                        continue;
                    };
                    for cap in [None, Some(64), Some(u64::MAX)] {
                        assert_eq!(
                            output_cap(endpoint, &body, cap),
                            output_cap_by_serde(endpoint, &body, cap),
                            "{json} {cap:?}"
                        );
                    }
                }
            }
        }
        let both =
            JsonObject::parse(br#"{"max_tokens":300,"max_completion_tokens":70}"#).expect("json");
        assert_eq!(output_cap(Endpoint::ChatCompletions, &both, None), 300);
        assert_eq!(
            plain_u64(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(
            plain_u64(b"18446744073709551615"),
            None,
            "20 digits go to serde"
        );
    }

    /// The headers as they were written before the stack buffers: `HeaderValue::from` and
    /// `format!`-like strings, one insert at a time.
    fn headers_before(state: &ScopeState, out: &mut HeaderMap) {
        let reset = |d: Duration| HeaderValue::try_from(duration_text(d)).expect("ascii");
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

    #[test]
    fn headers_are_the_same_as_before() {
        let mut gen = numbers(0x2545_f491_4f6c_dd1d);
        let quota = |gen: &mut dyn Iterator<Item = u64>| {
            let n = gen.next().unwrap_or(0);
            let m = gen.next().unwrap_or(0);
            (n % 4 != 0).then(|| tollgate_store::Quota {
                limit: n >> (n % 64),
                remaining: m >> (m % 64),
                reset: Duration::from_millis(m % 200_000_000),
            })
        };
        let mut state = ScopeState::default();
        for round in 0..1500 {
            // Two rounds in three keep the limits and resets (the values kept from the last
            // answer), changing only what remains.
            if round % 3 == 0 {
                state = ScopeState {
                    requests: quota(&mut gen),
                    tokens: quota(&mut gen),
                    tokens_today: quota(&mut gen),
                };
            } else {
                let quotas = [
                    &mut state.requests,
                    &mut state.tokens,
                    &mut state.tokens_today,
                ];
                for q in quotas.into_iter().flatten() {
                    q.remaining = gen.next().unwrap_or(0) >> 20;
                }
            }
            // An answer's map already holds a few headers (or none).
            let mut before = HeaderMap::new();
            for i in 0..round % 9 {
                before.insert(
                    HeaderName::try_from(format!("x-upstream-{i}")).expect("name"),
                    HeaderValue::from(i),
                );
            }
            let mut after = before.clone();
            headers_before(&state, &mut before);
            headers(&state, &mut after);
            assert_eq!(after, before, "{state:?}");
            let names = |m: &HeaderMap| m.keys().map(|k| k.to_string()).collect::<Vec<_>>();
            assert_eq!(names(&after), names(&before), "the same order");
        }
    }

    #[tokio::test]
    async fn the_budget_gauge_follows_every_decision() {
        let config: Config = serde_yaml::from_str(
            r#"
auth: { keys: [ { name: ci, key: secret-ci, limits: { tokens_per_day: 1000 } } ] }
backends:
  nv: { type: openai, api_url: "http://127.0.0.1:9/v1", api_key: k, models: [m], limits: { tokens_per_day: 500 } }
"#,
        )
        .expect("config");
        let limiter = Limiter::build(&config, None, false).expect("limiter");
        let metrics = Metrics::new();
        let gauge = |scope: &str, left: u64| {
            format!("tollgate_budget_remaining_tokens{{scope=\"{scope}\"}} {left}")
        };
        let mut held = Vec::new();
        for (tokens, left) in [(100, 900), (50, 850)] {
            let admitted = limiter
                .admit_key(&limiter.key(Some("ci")), tokens, &metrics)
                .await;
            held.extend(admitted.ok().and_then(|a| a.reservation));
            let text = metrics.render();
            assert!(text.contains(&gauge("key:ci", left)), "{text}");
        }
        let admitted = limiter.admit_backend("nv", 200, &metrics).await;
        held.extend(admitted.ok().and_then(|a| a.reservation));
        assert!(metrics.render().contains(&gauge("backend:nv", 300)));
        // A reload's limiter keeps the store, and writes the same series.
        let reloaded = Limiter::build(&config, Some(&limiter), false).expect("limiter");
        let admitted = reloaded
            .admit_key(&reloaded.key(Some("ci")), 25, &metrics)
            .await;
        held.extend(admitted.ok().and_then(|a| a.reservation));
        let text = metrics.render();
        assert!(text.contains(&gauge("key:ci", 825)), "{text}");
        assert_eq!(text.matches("scope=\"key:ci\"").count(), 1, "{text}");
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn reservations_drain_in_the_order_they_were_pushed() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        let reserve = |scope: &str| {
            let ask = Ask {
                scope,
                limits: Limits::default(),
                tokens: 10,
            };
            match store.admit_now(&[ask], now) {
                Some(Ok(Decision::Admitted { reservation, .. })) => reservation,
                _ => panic!("the memory store admits without limits"),
            }
        };
        let mut held = Reservations::default();
        assert!(held.is_empty());
        held.push((reserve("key:a"), 1));
        held.extend(Some((reserve("backend:b"), 2)));
        held.push((reserve("backend:c"), 3));
        assert!(!held.is_empty());
        let order: Vec<u64> = held.drain().map(|(_, n)| n).collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(held.is_empty());
        held.push((reserve("key:a"), 4));
        assert_eq!(held.drain().map(|(_, n)| n).collect::<Vec<_>>(), [4]);
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
