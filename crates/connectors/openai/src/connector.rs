//! `OpenAiCompatible`: the connector for any server that speaks the OpenAI HTTP API, and the
//! [`Hooks`] through which NIM, OpenRouter and others state their differences.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method};
use tollgate_core::{
    AuthHeader, BuildContext, Connector, Endpoint, GatewayError, JsonObject, Problem, Reply,
    ReplyBody, Request, Secret, SseEvent,
};

use crate::client::{build_client, Protocol};
use crate::discovery::{Catalogue, Health};
use crate::errors::upstream_error;
use crate::events::event_stream;
use crate::upstream::Upstream;

/// Largest non-streaming upstream body tollgate holds (embeddings of big batches included).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// `models_refresh` when the config gives none: seconds a discovered catalogue is reused.
pub const DEFAULT_MODELS_REFRESH: u64 = 300;

/// Upstream response headers a client may see. Everything else (cookies, server identity,
/// anything naming the upstream account) stays behind.
const PASSED_HEADERS: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "openai-processing-ms",
    "openai-version",
];

/// Constant names: an insert by name built per call validates the name on every request.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// What a connector type fixes about its backends.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The type name, for messages.
    pub kind: &'static str,
    /// `api_url` when the config gives none.
    pub default_url: &'static str,
    /// The variable the key falls back to when the config has none.
    pub key_var: &'static str,
    pub protocol: Protocol,
    /// Whether the first-use health check runs when the backend's `health_check` is unset.
    pub health_check: bool,
}

/// Options every OpenAI-compatible type accepts. Each type's own options struct carries these
/// fields (serde cannot flatten into a struct that denies unknown fields) and hands them here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonOptions {
    /// Seconds a discovered model list is reused before `GET /models` is asked again.
    pub models_refresh: u64,
    /// The backend speaks the Responses API itself (`responses: native`): a Responses-door
    /// request is sent untouched to `{api_url}/responses` instead of translated to Chat.
    pub native_responses: bool,
}

impl Default for CommonOptions {
    fn default() -> Self {
        CommonOptions {
            models_refresh: DEFAULT_MODELS_REFRESH,
            native_responses: false,
        }
    }
}

/// The differences of one backend type from plain OpenAI. Every method has the OpenAI
/// behaviour as its default.
pub trait Hooks: Send + Sync + 'static {
    /// Rewrites the outbound body; `model` is already the upstream's model name.
    fn prepare_body(&self, _endpoint: Endpoint, _body: &mut JsonObject) {}

    /// Whether `GET {api_url}/models` may be asked (e.g. only with a key).
    fn may_discover(&self, _has_key: bool) -> bool {
        true
    }

    /// Sees each upstream event; `None` drops it.
    fn on_event(&self, event: SseEvent) -> Option<SseEvent> {
        Some(event)
    }

    /// Whether the gateway may add `stream_options.include_usage` to a stream whose client
    /// did not ask, to count its tokens (the extra usage chunk is then read, not relayed).
    /// Off for upstreams that reject or strip `stream_options`.
    fn ask_stream_usage(&self) -> bool {
        true
    }
}

/// Plain OpenAI: no differences.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// A backend that speaks the OpenAI API.
pub struct OpenAiCompatible {
    /// Whether Responses requests go out untouched (`responses: native`).
    native_responses: bool,
    /// Sent unless the request carries them already (`default_headers`).
    default_headers: HeaderMap,
    /// Shared with the background health check.
    upstream: Arc<Upstream>,
    /// The config's `models`: the catalogue when discovery is impossible (the type does not
    /// allow it, e.g. no key) or has not succeeded (SPEC §5).
    static_models: Vec<String>,
    catalogue: Arc<Catalogue>,
    health: Arc<Health>,
    hooks: Arc<dyn Hooks>,
}

impl OpenAiCompatible {
    /// Builds a connector of `settings` type from its configuration.
    pub fn build(
        ctx: &BuildContext<'_>,
        settings: &Settings,
        common: CommonOptions,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let config = ctx.config;
        let base = config
            .api_url
            .as_deref()
            .unwrap_or(settings.default_url)
            .trim_end_matches('/')
            .to_owned();
        if base.parse::<http::Uri>().is_err() {
            problems.push(ctx.problem("api_url", format!("`{base}` is not a valid URL")));
        }
        if common.models_refresh == 0 {
            problems.push(ctx.problem("models_refresh", "must be at least 1 second"));
        }
        // SPEC §2: a key in the YAML beats the connector's variable, which is only a fallback.
        // An empty `api_key: ""` therefore means "no key", even when the variable is set.
        let key = config
            .api_key
            .clone()
            .or_else(|| ctx.env.var(settings.key_var).map(|v| Secret::new(&v)))
            .filter(|k| !k.is_empty());

        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &config.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.insert(n, v);
                }
                _ => problems.push(ctx.problem(
                    &format!("headers.{name}"),
                    "not a valid HTTP header name and value",
                )),
            }
        }
        // `auth_header` says how the key is sent; `tollgate check` has validated it.
        let auth = match config.auth_header.as_deref().map(AuthHeader::parse) {
            None => AuthHeader::bearer(),
            Some(Ok(auth)) => auth,
            Some(Err(e)) => {
                problems.push(ctx.problem("auth_header", e));
                AuthHeader::bearer()
            }
        };
        if let Some(key) = &key {
            match auth.render(key) {
                Ok((name, value)) => {
                    headers.insert(name, value);
                }
                Err(e) => problems.push(ctx.problem("api_key", e)),
            }
        }
        let mut default_headers = HeaderMap::new();
        for (name, value) in &config.default_headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    default_headers.insert(n, v);
                }
                _ => problems.push(ctx.problem(
                    &format!("default_headers.{name}"),
                    "not a valid HTTP header name and value",
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let client = build_client(
            settings.protocol,
            Duration::from_secs(config.connect_timeout),
            &base,
        );
        let upstream = Upstream {
            name: Arc::from(ctx.name),
            uris: Upstream::endpoint_uris(&base),
            base,
            key,
            headers,
            // Each backend instance owns its client, hence its own connection pool.
            client,
            timeout: Duration::from_secs(config.timeout),
        };
        Ok(OpenAiCompatible {
            native_responses: common.native_responses,
            default_headers,
            upstream: Arc::new(upstream),
            static_models: config.models.clone(),
            catalogue: Arc::new(Catalogue::new(Duration::from_secs(common.models_refresh))),
            health: Arc::new(Health::new(
                config.health_check.unwrap_or(settings.health_check),
            )),
            hooks,
        })
    }

    /// Whether an upstream key is configured (from the config or its variable).
    pub fn has_key(&self) -> bool {
        self.upstream.key.is_some()
    }

    /// Whether the catalogue is asked of `GET /models` (the type allows it; NIM and
    /// OpenRouter only with a key). Static `models` do not stop it: they are the fallback.
    fn discovers(&self) -> bool {
        self.hooks.may_discover(self.has_key())
    }

    /// Starts the health check on the first request: in the background, so no request waits
    /// for it. Its answer also seeds the catalogue when discovery is on.
    fn start_health_check(&self) {
        if !self.health.claim() {
            return;
        }
        let upstream = self.upstream.clone();
        let health = self.health.clone();
        let catalogue = self.discovers().then(|| self.catalogue.clone());
        tokio::spawn(async move {
            let fetch = upstream.fetch_models();
            health
                .run(&upstream.name, catalogue.as_deref(), fetch)
                .await;
        });
    }
}

/// Keeps the allow-listed upstream headers.
pub fn passed_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let n = name.as_str();
        if PASSED_HEADERS.contains(&n) || n.starts_with("x-ratelimit-") {
            out.append(name.clone(), value.clone());
        } else if n == "x-request-id" {
            out.insert(X_UPSTREAM_REQUEST_ID, value.clone());
        }
    }
    out
}

/// The longest wait read from an upstream's `retry-after`; longer ones count as this. Dispatch
/// moves to the next target rather than wait past `backoff.max_ms` anyway, and the client's
/// own `retry-after` must stay a sane number.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// `retry-after-ms` (OpenAI's, milliseconds) or `retry-after` (seconds, or an HTTP-date as
/// RFC 9110 allows), when the upstream sent a usable one. Fractions are read (some servers
/// send `1.5`); negative, `NaN` and `inf` values are ignored; huge ones are capped.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, std::time::SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let text = |name: &str| Some(headers.get(name)?.to_str().ok()?.trim());
    if let Some(wait) = text("retry-after-ms").and_then(|t| seconds(t, 1000.0)) {
        return Some(wait);
    }
    let value = text("retry-after")?;
    seconds(value, 1.0).or_else(|| {
        let at = httpdate::parse_http_date(value).ok()?;
        // A date already past means "now".
        let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
        Some(wait.min(MAX_RETRY_AFTER))
    })
}

/// A number of seconds (`per_second` units each), without panicking on any input:
/// `Duration::from_secs_f64` panics on negative, non-finite and overflowing values.
fn seconds(text: &str, per_second: f64) -> Option<Duration> {
    let n: f64 = text.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let wait = Duration::try_from_secs_f64(n / per_second).unwrap_or(MAX_RETRY_AFTER);
    Some(wait.min(MAX_RETRY_AFTER))
}

#[async_trait]
impl Connector for OpenAiCompatible {
    async fn send(&self, request: Request) -> Result<Reply, GatewayError> {
        let started = Instant::now();
        let Request {
            endpoint,
            model,
            stream,
            mut body,
            request_id,
            headers: native,
        } = request;
        body.insert_str("model", &model);
        // OpenAI streams carry usage only when asked; ask, and keep the answer to ourselves.
        let hide_usage = stream
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
            && !body.contains("stream_options")
            && self.hooks.ask_stream_usage();
        if hide_usage {
            body.insert_raw_text("stream_options", r#"{"include_usage":true}"#);
        }
        self.hooks.prepare_body(endpoint, &mut body);
        self.start_health_check();

        let upstream = &self.upstream;
        // Content-type, accept, the request id, the door's own headers, the defaults.
        let more = 3 + native.len() + self.default_headers.len();
        let mut req =
            upstream.request_with_room(Method::POST, endpoint.path(), body.to_bytes(), more);
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            h.insert(X_REQUEST_ID, id);
        }
        // The client's own headers for a natively spoken door, then the backend's defaults
        // where neither set one.
        for (name, value) in &native {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.default_headers {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }

        let resp = upstream.exchange(req).await?;
        let status = resp.status();
        let headers = passed_headers(resp.headers());
        if !status.is_success() {
            let wait = retry_after(resp.headers());
            // Error bodies are small; a huge one is cut, not held.
            let body = upstream
                .read_body(resp.into_body(), 64 * 1024, started + upstream.timeout)
                .await
                .unwrap_or_default();
            return Err(upstream_error(
                &upstream.name,
                status,
                &body,
                upstream.key.as_ref(),
                wait,
            ));
        }
        // The upstream answers: whatever the health check found no longer holds.
        self.health.passed();
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if stream && is_sse {
            return Ok(Reply {
                headers,
                body: ReplyBody::Events(event_stream(
                    resp.into_body(),
                    upstream.name.clone(),
                    upstream.key.clone(),
                    self.hooks.clone(),
                    hide_usage,
                )),
            });
        }
        let body = upstream
            .read_body(
                resp.into_body(),
                MAX_RESPONSE_BYTES,
                started + upstream.timeout,
            )
            .await?;
        Ok(Reply {
            headers,
            body: ReplyBody::Complete(body),
        })
    }

    async fn forward(
        &self,
        request: tollgate_core::Forward,
    ) -> Result<http::Response<tollgate_core::ForwardBody>, GatewayError> {
        self.upstream.forward(request, &self.default_headers).await
    }

    fn speaks(&self, protocol: tollgate_core::Protocol) -> bool {
        match protocol {
            tollgate_core::Protocol::Chat => true,
            tollgate_core::Protocol::Responses => self.native_responses,
            tollgate_core::Protocol::Messages => false,
        }
    }

    async fn list_models(&self) -> Result<Vec<String>, GatewayError> {
        if !self.discovers() {
            return Ok(self.static_models.clone());
        }
        // Discovered (even an older list kept after a failed refresh) beats static; static
        // stands in while discovery has never succeeded, or found nothing (servers whose
        // `/models` lists nothing still serve the models they were configured with).
        Ok(self
            .catalogue
            .get(&self.upstream, &self.health)
            .await
            .filter(|models| !models.is_empty())
            .unwrap_or_else(|| self.static_models.clone()))
    }

    fn unusable_reason(&self) -> Option<String> {
        // Reported, not enforced: requests are still sent, since the check ran once and the
        // upstream may have recovered (the next success clears it).
        self.health.reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_headers_pass() {
        let mut up = HeaderMap::new();
        up.insert("set-cookie", HeaderValue::from_static("s=1"));
        up.insert("authorization", HeaderValue::from_static("Bearer sk-up"));
        up.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("9"),
        );
        up.insert("retry-after", HeaderValue::from_static("2"));
        up.insert("x-request-id", HeaderValue::from_static("up-1"));
        up.insert("server", HeaderValue::from_static("nginx"));
        let out = passed_headers(&up);
        assert_eq!(out.len(), 3);
        assert_eq!(out["x-ratelimit-remaining-requests"], "9");
        assert_eq!(out["retry-after"], "2");
        assert_eq!(out["x-upstream-request-id"], "up-1");
    }

    #[test]
    fn retry_after_reads_seconds_and_millis() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", HeaderValue::from_static(" 1.5 "));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }

    fn wait_for(name: &'static str, value: &'static str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        retry_after(&h)
    }

    #[test]
    fn retry_after_never_panics_on_odd_values() {
        for name in ["retry-after", "retry-after-ms"] {
            assert_eq!(wait_for(name, "1e30"), Some(MAX_RETRY_AFTER), "{name}");
            assert_eq!(
                wait_for(name, "99999999999999999999999"),
                Some(MAX_RETRY_AFTER)
            );
            for ignored in ["-1", "inf", "-inf", "NaN", "infinity", "soon", "", "1 2"] {
                assert_eq!(wait_for(name, ignored), None, "{name}: {ignored:?}");
            }
        }
        assert_eq!(wait_for("retry-after", "-0"), Some(Duration::ZERO));
        // A bad retry-after-ms leaves retry-after to decide.
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("NaN"));
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_honours_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let mut h = HeaderMap::new();
        // 30 s after `now`, in each of the three formats RFC 9110 accepts.
        for date in [
            "Wed, 21 Oct 2015 07:28:30 GMT",
            "Wednesday, 21-Oct-15 07:28:30 GMT",
            "Wed Oct 21 07:28:30 2015",
        ] {
            h.insert("retry-after", HeaderValue::from_static(date));
            assert_eq!(
                retry_after_at(&h, now),
                Some(Duration::from_secs(30)),
                "{date}"
            );
        }
        // Past: no wait. Far future: capped.
        h.insert(
            "retry-after",
            HeaderValue::from_static("Tue, 20 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_at(&h, now), Some(Duration::ZERO));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT"),
        );
        assert_eq!(retry_after_at(&h, now), Some(MAX_RETRY_AFTER));
    }
}
