//! `OpenAiCompatible`: the connector for any server that speaks the OpenAI HTTP API, and the
//! [`Hooks`] through which NIM, OpenRouter and others state their differences.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full, Limited};
use tollgate_core::{
    BuildContext, Connector, Endpoint, GatewayError, JsonObject, Problem, Reply, ReplyBody,
    Request, Secret, SseEvent,
};

use crate::client::{build_client, HttpClient, Protocol};
use crate::errors::{describe_transport_error, upstream_error};
use crate::events::event_stream;

/// Largest non-streaming upstream body tollgate holds (embeddings of big batches included).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// How long a discovered catalogue is reused before `GET /models` is asked again.
const CATALOGUE_TTL: Duration = Duration::from_secs(300);

/// Upstream response headers a client may see. Everything else (cookies, server identity,
/// anything naming the upstream account) stays behind.
const PASSED_HEADERS: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "openai-processing-ms",
    "openai-version",
];

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
}

/// Plain OpenAI: no differences.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// A discovered model list and when it was fetched.
struct Catalogue {
    fetched: Instant,
    models: Vec<String>,
}

/// A backend that speaks the OpenAI API.
pub struct OpenAiCompatible {
    name: Arc<str>,
    /// `api_url` without a trailing `/`.
    base: String,
    /// Kept to scrub it from upstream error bodies; never logged or returned.
    key: Option<Secret>,
    /// Headers sent with every request: `Authorization` (marked sensitive) and config headers.
    headers: HeaderMap,
    client: HttpClient,
    /// Bound on waiting for response headers, and for a whole non-streaming body.
    timeout: Duration,
    static_models: Vec<String>,
    catalogue: tokio::sync::Mutex<Option<Catalogue>>,
    hooks: Arc<dyn Hooks>,
}

impl OpenAiCompatible {
    /// Builds a connector of `settings` type from its configuration.
    pub fn build(
        ctx: &BuildContext<'_>,
        settings: &Settings,
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
        // SPEC §2: a key in the YAML beats the connector's variable, which is only a fallback.
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
        if let Some(key) = &key {
            match HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(AUTHORIZATION, v);
                }
                Err(_) => problems.push(ctx.problem(
                    "api_key",
                    "contains characters not allowed in an HTTP header",
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(OpenAiCompatible {
            name: Arc::from(ctx.name),
            base,
            key,
            headers,
            client: build_client(
                settings.protocol,
                Duration::from_secs(config.connect_timeout),
            ),
            timeout: Duration::from_secs(config.timeout),
            static_models: config.models.clone(),
            catalogue: tokio::sync::Mutex::new(None),
            hooks,
        })
    }

    /// Whether an upstream key is configured (from the config or its variable).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        // `base` was checked to parse as a URI when the connector was built.
        *req.uri_mut() = format!("{}/{}", self.base, path)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// Sends and waits for the response headers, within `timeout`.
    async fn exchange(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, GatewayError> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(GatewayError::UpstreamFailed(format!(
                "backend `{}`: {}",
                self.name,
                describe_transport_error(&e)
            ))),
            Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                "backend `{}` sent no response within {}s",
                self.name,
                self.timeout.as_secs()
            ))),
        }
    }

    /// Reads a whole body, bounded in size and by `deadline`.
    async fn read_body(
        &self,
        body: hyper::body::Incoming,
        limit: usize,
        deadline: Instant,
    ) -> Result<Bytes, GatewayError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, Limited::new(body, limit).collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => Err(GatewayError::UpstreamFailed(format!(
                "backend `{}`: reading the response failed: {e}",
                self.name
            ))),
            Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                "backend `{}` did not finish its response within {}s",
                self.name,
                self.timeout.as_secs()
            ))),
        }
    }

    async fn discover(&self) -> Result<Vec<String>, GatewayError> {
        let started = Instant::now();
        let mut req = self.request(Method::GET, "models", Bytes::new());
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let resp = self.exchange(req).await?;
        let status = resp.status();
        let body = self
            .read_body(resp.into_body(), 16 * 1024 * 1024, started + self.timeout)
            .await?;
        if !status.is_success() {
            return Err(upstream_error(
                &self.name,
                status,
                &body,
                self.key.as_ref(),
                None,
            ));
        }
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
        }
        let list: List = serde_json::from_slice(&body).map_err(|e| {
            GatewayError::UpstreamFailed(format!(
                "backend `{}`: unreadable model list: {e}",
                self.name
            ))
        })?;
        Ok(list.data.into_iter().map(|e| e.id).collect())
    }
}

/// Keeps the allow-listed upstream headers.
fn passed_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let n = name.as_str();
        if PASSED_HEADERS.contains(&n) || n.starts_with("x-ratelimit-") {
            out.append(name.clone(), value.clone());
        } else if n == "x-request-id" {
            out.insert(
                HeaderName::from_static("x-upstream-request-id"),
                value.clone(),
            );
        }
    }
    out
}

/// `retry-after` (seconds) or `retry-after-ms`, when the upstream sent one.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    if let Some(ms) = read("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    read("retry-after").map(|s| Duration::from_secs_f64(s.max(0.0)))
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
        } = request;
        body.insert("model", &model);
        self.hooks.prepare_body(endpoint, &mut body);

        let mut req = self.request(Method::POST, endpoint.path(), body.to_bytes());
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

        let resp = self.exchange(req).await?;
        let status = resp.status();
        let headers = passed_headers(resp.headers());
        if !status.is_success() {
            let wait = retry_after(resp.headers());
            // Error bodies are small; a huge one is cut, not held.
            let body = self
                .read_body(resp.into_body(), 64 * 1024, started + self.timeout)
                .await
                .unwrap_or_default();
            return Err(upstream_error(
                &self.name,
                status,
                &body,
                self.key.as_ref(),
                wait,
            ));
        }
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
                    self.name.clone(),
                    self.hooks.clone(),
                )),
            });
        }
        let body = self
            .read_body(resp.into_body(), MAX_RESPONSE_BYTES, started + self.timeout)
            .await?;
        Ok(Reply {
            headers,
            body: ReplyBody::Complete(body),
        })
    }

    async fn list_models(&self) -> Result<Vec<String>, GatewayError> {
        if !self.static_models.is_empty() || !self.hooks.may_discover(self.has_key()) {
            return Ok(self.static_models.clone());
        }
        let mut cached = self.catalogue.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.fetched.elapsed() < CATALOGUE_TTL {
                return Ok(c.models.clone());
            }
        }
        match self.discover().await {
            Ok(models) => {
                *cached = Some(Catalogue {
                    fetched: Instant::now(),
                    models: models.clone(),
                });
                Ok(models)
            }
            Err(e) => {
                tracing::warn!(backend = %self.name, error = %e, "model discovery failed");
                // A stale list beats none; discovery failing is never fatal.
                Ok(cached
                    .as_ref()
                    .map(|c| c.models.clone())
                    .unwrap_or_default())
            }
        }
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
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }
}
