//! `Anthropic`: one Messages backend — how its requests are addressed and authenticated,
//! and how Anthropic's answers become what the gateway expects of every connector (errors
//! OpenAI-shaped with statuses retries understand, streams as whole events).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use tollgate_core::{
    AuthHeader, BuildContext, Connector, Endpoint, GatewayError, Problem, Protocol, Reply,
    ReplyBody, Request, Secret,
};
use tollgate_openai::{
    build_client, event_stream, passed_headers, retry_after, upstream_error, Catalogue, Health,
    Hooks, NoHooks, Upstream, DEFAULT_MODELS_REFRESH, MAX_RESPONSE_BYTES,
};
use tollgate_translate::to_messages::{event_error, openai_error};

use crate::models;
use crate::{DEFAULT_URL, KEY_VAR};

/// `anthropic-version` when neither the client nor the configuration sets one: the version
/// every Anthropic SDK sends.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// How the key is sent unless `auth_header` says otherwise.
pub const DEFAULT_AUTH_HEADER: &str = "x-api-key: {{ key }}";

/// Largest upstream error body read (they are a few hundred bytes; a huge one is cut).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// The `anthropic` backend's own keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicOptions {
    /// `anthropic-version` sent when the client sent none.
    pub version: String,
    /// Seconds a discovered model list is reused.
    pub models_refresh: u64,
}

impl Default for AnthropicOptions {
    fn default() -> Self {
        AnthropicOptions {
            version: DEFAULT_VERSION.to_owned(),
            models_refresh: DEFAULT_MODELS_REFRESH,
        }
    }
}

/// A backend that speaks Anthropic Messages.
pub struct Anthropic {
    /// Shared with the background health check.
    upstream: Arc<Upstream>,
    /// Sent unless the request carries them: the config's `default_headers`, then
    /// `anthropic-version`.
    default_headers: Arc<HeaderMap>,
    /// The config's `models`: when set, the catalogue, and discovery is not asked.
    static_models: Vec<String>,
    catalogue: Arc<Catalogue>,
    health: Arc<Health>,
    /// The event stream's hooks: Anthropic needs none (built once, not per stream).
    hooks: Arc<dyn Hooks>,
}

/// The API root below which `messages`, `messages/count_tokens` and `models` live: `api_url`
/// with `/v1`, whether or not it was given with it (Anthropic's documented base URL has none,
/// OpenAI-style configurations end in `/v1`).
pub(crate) fn api_root(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") {
        url.to_owned()
    } else {
        format!("{url}/v1")
    }
}

impl Anthropic {
    /// Builds a connector from its configuration and options.
    pub fn build(ctx: &BuildContext<'_>, options: &AnthropicOptions) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let config = ctx.config;
        let base = api_root(config.api_url.as_deref().unwrap_or(DEFAULT_URL));
        if base.parse::<http::Uri>().is_err() {
            problems.push(ctx.problem("api_url", format!("`{base}` is not a valid URL")));
        }
        if options.models_refresh == 0 {
            problems.push(ctx.problem("models_refresh", "must be at least 1 second"));
        }
        // SPEC §2: a key in the YAML beats ANTHROPIC_API_KEY; `api_key: ""` means none.
        let key = config
            .api_key
            .clone()
            .or_else(|| ctx.env.var(KEY_VAR).map(|v| Secret::new(&v)))
            .filter(|k| !k.is_empty());

        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &config.headers {
            match header(name, value) {
                Some((n, v)) => {
                    headers.insert(n, v);
                }
                None => problems.push(ctx.problem(
                    &format!("headers.{name}"),
                    "not a valid HTTP header name and value",
                )),
            }
        }
        let auth = match config.auth_header.as_deref() {
            None => AuthHeader::parse(DEFAULT_AUTH_HEADER),
            Some(template) => AuthHeader::parse(template),
        };
        match (auth, &key) {
            (Ok(auth), Some(key)) => match auth.render(key) {
                Ok((name, value)) => {
                    headers.insert(name, value);
                }
                Err(e) => problems.push(ctx.problem("api_key", e)),
            },
            (Ok(_), None) => {}
            (Err(e), _) => problems.push(ctx.problem("auth_header", e)),
        }

        let mut default_headers = HeaderMap::new();
        for (name, value) in &config.default_headers {
            match header(name, value) {
                Some((n, v)) => {
                    default_headers.insert(n, v);
                }
                None => problems.push(ctx.problem(
                    &format!("default_headers.{name}"),
                    "not a valid HTTP header name and value",
                )),
            }
        }
        let version = HeaderName::from_static("anthropic-version");
        if !default_headers.contains_key(&version) {
            match HeaderValue::from_str(options.version.trim()) {
                Ok(v) if !options.version.trim().is_empty() => {
                    default_headers.insert(version, v);
                }
                _ => problems.push(ctx.problem(
                    "version",
                    format!("`{}` is not a valid anthropic-version", options.version),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let uris = ["messages", "messages/count_tokens", "models"]
            .into_iter()
            .filter_map(|p| Some((p, format!("{base}/{p}").parse().ok()?)))
            .collect();
        let client = build_client(
            tollgate_openai::Protocol::Auto,
            Duration::from_secs(config.connect_timeout),
            &base,
        );
        let upstream = Upstream {
            name: Arc::from(ctx.name),
            base,
            uris,
            key,
            headers,
            // HTTP/1.1, or HTTP/2 where TLS negotiates it (api.anthropic.com offers both).
            client,
            timeout: Duration::from_secs(config.timeout),
        };
        Ok(Anthropic {
            upstream: Arc::new(upstream),
            default_headers: Arc::new(default_headers),
            static_models: config.models.clone(),
            catalogue: Arc::new(Catalogue::new(Duration::from_secs(options.models_refresh))),
            // Off unless asked for: Anthropic's `/v1/models` needs the key, and a request
            // tells the same as a probe.
            health: Arc::new(Health::new(config.health_check.unwrap_or(false))),
            hooks: Arc::new(NoHooks),
        })
    }

    /// Whether a key is configured (from the config or `ANTHROPIC_API_KEY`).
    pub fn has_key(&self) -> bool {
        self.upstream.key.is_some()
    }

    /// Discovery needs the key (Anthropic answers `/v1/models` only with one) and no static
    /// `models`.
    fn discovers(&self) -> bool {
        self.static_models.is_empty() && self.has_key()
    }

    /// Starts the health check on the first request, in the background.
    fn start_health_check(&self) {
        if !self.health.claim() {
            return;
        }
        let upstream = self.upstream.clone();
        let defaults = self.default_headers.clone();
        let health = self.health.clone();
        let catalogue = self.discovers().then(|| self.catalogue.clone());
        tokio::spawn(async move {
            let fetch = models::fetch(&upstream, &defaults);
            health
                .run(&upstream.name, catalogue.as_deref(), fetch)
                .await;
        });
    }
}

fn header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(value).ok()?,
    ))
}

/// The client's own headers for the Messages door (`anthropic-version`, `anthropic-beta`),
/// then the backend's defaults where neither set one.
pub(crate) fn add_headers(h: &mut HeaderMap, native: &HeaderMap, defaults: &HeaderMap) {
    for name in native.keys() {
        h.remove(name);
    }
    for (name, value) in native {
        h.append(name.clone(), value.clone());
    }
    for (name, value) in defaults {
        if !h.contains_key(name) {
            h.insert(name.clone(), value.clone());
        }
    }
}

/// An Anthropic error answer → the connectors' contract: an OpenAI-shaped body, scrubbed of
/// the key, with a status retries understand (`529` → 503).
pub(crate) fn anthropic_error(
    upstream: &Upstream,
    status: StatusCode,
    body: &[u8],
    wait: Option<Duration>,
) -> GatewayError {
    // `upstream_error` scrubs the key and keeps a body with an `error.message` as it is
    // (Anthropic's are such), wrapping anything else; the reshaping reads that.
    let scrubbed = upstream_error(&upstream.name, status, body, upstream.key.as_ref(), wait);
    let GatewayError::Upstream { body, .. } = &scrubbed else {
        return scrubbed;
    };
    let (status, body) = openai_error(status.as_u16(), body);
    GatewayError::Upstream {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
        retry_after: wait,
    }
}

/// An `event: error` before any data comes out of the event stream as a 502 (the event has no
/// status); it stands for the status of its error `type` (`overloaded_error` → 503,
/// `rate_limit_error` → 429), so retries and fallback apply as for an error answer.
fn restate_stream_error(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::Upstream {
            body, retry_after, ..
        } => {
            let (status, body) = event_error(&body);
            GatewayError::Upstream {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
                retry_after,
            }
        }
        other => other,
    }
}

/// Upstream response headers a client may see: the shared allow-list, Anthropic's rate-limit
/// headers, and its `request-id` renamed (the gateway's own `x-request-id` is the client's).
fn passed(upstream: &HeaderMap) -> HeaderMap {
    let mut out = passed_headers(upstream);
    for (name, value) in upstream {
        let n = name.as_str();
        if n.starts_with("anthropic-ratelimit-") {
            out.append(name.clone(), value.clone());
        } else if n == "request-id" {
            out.insert(
                HeaderName::from_static("x-upstream-request-id"),
                value.clone(),
            );
        }
    }
    out
}

#[async_trait]
impl Connector for Anthropic {
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
        if !matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens) {
            return Err(GatewayError::invalid(format!(
                "backend `{}` speaks Anthropic Messages only; it cannot serve `{}` requests",
                self.upstream.name,
                endpoint.label()
            )));
        }
        // The body goes as the client wrote it; only the model is the target's.
        body.insert("model", &model);
        self.start_health_check();

        let upstream = &self.upstream;
        let mut req = upstream.request(Method::POST, endpoint.path(), body.to_bytes());
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
            h.insert(HeaderName::from_static("x-request-id"), id);
        }
        add_headers(h, &native, &self.default_headers);

        let resp = upstream.exchange(req).await?;
        let status = resp.status();
        let headers = passed(resp.headers());
        if !status.is_success() {
            let wait = retry_after(resp.headers());
            let body = upstream
                .read_body(
                    resp.into_body(),
                    MAX_ERROR_BYTES,
                    started + upstream.timeout,
                )
                .await
                .unwrap_or_default();
            return Err(anthropic_error(upstream, status, &body, wait));
        }
        self.health.passed();
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if stream && is_sse {
            let events = event_stream(
                resp.into_body(),
                upstream.name.clone(),
                upstream.key.clone(),
                self.hooks.clone(),
                false,
            )
            .map(|item| item.map_err(restate_stream_error));
            return Ok(Reply {
                headers,
                body: ReplyBody::Events(Box::pin(events)),
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

    async fn list_models(&self) -> Result<Vec<String>, GatewayError> {
        if !self.discovers() {
            return Ok(self.static_models.clone());
        }
        let upstream = &self.upstream;
        let defaults = &self.default_headers;
        Ok(self
            .catalogue
            .get_with(&upstream.name, &self.health, || {
                models::fetch(upstream, defaults)
            })
            .await
            .unwrap_or_default())
    }

    fn speaks(&self, protocol: Protocol) -> bool {
        protocol == Protocol::Messages
    }

    fn unusable_reason(&self) -> Option<String> {
        self.health.reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_roots_take_v1_once() {
        assert_eq!(
            api_root("https://api.anthropic.com"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(
            api_root("https://api.anthropic.com/"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(
            api_root("https://api.anthropic.com/v1"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(api_root("http://h:1/proxy/v1/"), "http://h:1/proxy/v1");
    }

    #[test]
    fn the_default_auth_header_is_a_valid_template() {
        let auth = AuthHeader::parse(DEFAULT_AUTH_HEADER).expect("valid");
        let (name, value) = auth.render(&Secret::new("sk-ant-1")).expect("renders");
        assert_eq!(name, "x-api-key");
        assert_eq!(value, "sk-ant-1");
    }

    #[test]
    fn client_headers_win_over_defaults() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k"));
        let mut native = HeaderMap::new();
        native.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        native.append("anthropic-beta", HeaderValue::from_static("a"));
        native.append("anthropic-beta", HeaderValue::from_static("b"));
        let mut defaults = HeaderMap::new();
        defaults.insert(
            "anthropic-version",
            HeaderValue::from_static(DEFAULT_VERSION),
        );
        defaults.insert("x-extra", HeaderValue::from_static("1"));
        add_headers(&mut h, &native, &defaults);
        assert_eq!(h["anthropic-version"], "2024-01-01");
        assert_eq!(h.get_all("anthropic-beta").iter().count(), 2);
        assert_eq!(h["x-extra"], "1");
        assert_eq!(h["x-api-key"], "k");
    }

    #[test]
    fn anthropic_headers_pass_and_request_id_is_renamed() {
        let mut up = HeaderMap::new();
        up.insert("request-id", HeaderValue::from_static("req_1"));
        up.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("9"),
        );
        up.insert("retry-after", HeaderValue::from_static("3"));
        up.insert("set-cookie", HeaderValue::from_static("x"));
        up.insert("x-api-key", HeaderValue::from_static("sk-ant-echo"));
        let out = passed(&up);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out["x-upstream-request-id"], "req_1");
        assert_eq!(out["anthropic-ratelimit-requests-remaining"], "9");
        assert_eq!(out["retry-after"], "3");
    }
}
