//! `Gateway`: the request's whole path in one place —
//! request id → endpoint → auth → body limit → parse → route → key policy → dispatch → relay.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use tollgate_core::{find_usage, ClientRequest, Endpoint, Env, GatewayError, Problem, Registry};

use crate::body::Body;
use crate::dispatch::{dispatch, Answer, AnswerBody};
use crate::intake::read_body;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::relay::{Pending, Relay};
use crate::runtime::{Live, Runtime};
use crate::{catalogue, request_id};

/// The gateway: its live runtime and what it needs to rebuild one.
pub struct Gateway {
    live: Live,
    registry: Registry,
    env: Env,
    /// Lives as long as the gateway, across reloads.
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(runtime: Runtime, registry: Registry, env: Env) -> Arc<Gateway> {
        Arc::new(Gateway {
            live: Live::new(runtime),
            registry,
            env,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The runtime serving now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.live.load()
    }

    /// The fallible half of a reload: builds and checks a runtime for `config`, reusing the
    /// connectors (and connection pools) of unchanged backends. Nothing changes yet.
    pub fn prepare(&self, config: tollgate_core::Config) -> Result<Runtime, Vec<Problem>> {
        let current = self.live.load();
        Runtime::build(config, &self.registry, &self.env, Some(&current))
    }

    /// The infallible half: new requests use `runtime`; requests already running finish on
    /// the snapshot they started with.
    pub fn swap(&self, runtime: Runtime) {
        let old = self.live.load();
        // A circuit that does not carry over (backend removed or rebuilt) is closed now.
        for (name, backend) in &old.backends {
            let kept = runtime
                .backends
                .get(name)
                .is_some_and(|b| Arc::ptr_eq(&b.breaker, &backend.breaker));
            if backend.breaker.is_open() && !kept {
                self.metrics.circuit(name, false);
            }
        }
        self.live.store(runtime);
    }

    /// `prepare` then `swap`; on failure the running configuration stays.
    pub fn reload(&self, config: tollgate_core::Config) -> Result<(), Vec<Problem>> {
        let next = self.prepare(config)?;
        self.swap(next);
        Ok(())
    }

    /// Answers one HTTP request. Never fails: every error becomes an OpenAI-shaped response.
    ///
    /// The body is read under `server.body_read_timeout` and `server.body_gap_timeout`. An
    /// answer given before the body was read (a 401, 404, 405, 413 from the head) would leave
    /// the body in an HTTP/1.1 socket, where the next request would be read from its middle:
    /// what is left is read away within a bound, or the answer carries `Connection: close`,
    /// so a keep-alive client never sends its next request into a connection about to close.
    pub async fn handle<B>(&self, req: http::Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = request_id::from_headers(req.headers());
        let http1 = req.version() < http::Version::HTTP_2;
        let expects_continue = crate::intake::expects_continue(req.headers());
        let limits = {
            let runtime = self.runtime();
            let server = &runtime.config.server;
            crate::intake::BodyLimits::new(
                std::time::Duration::from_secs(server.body_read_timeout),
                std::time::Duration::from_secs(server.body_gap_timeout),
            )
        };
        let (back, mut unread) = tokio::sync::oneshot::channel();
        let req = req.map(|body| crate::intake::TimedBody::new(body, limits, back));
        let mut resp = match self.route(req, &request_id).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        };
        // The request, and with it any unread body, was dropped inside `route`.
        crate::intake::settle_unread(&mut unread, http1, expects_continue, &mut resp).await;
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(request_id::HEADER, v);
        }
        resp
    }

    async fn route<B>(
        &self,
        req: http::Request<B>,
        request_id: &str,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        // Clients configured with a base URL without `/v1` call the same endpoints.
        let api_path = path
            .strip_prefix("/v1")
            .filter(|p| p.starts_with('/'))
            .unwrap_or(path);
        let method = req.method().clone();
        match api_path {
            "/health/live" | "/health/ready" if path.starts_with("/health") => {
                require(&method, Method::GET, path, "GET")?;
                Ok(if api_path == "/health/live" {
                    json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
                } else {
                    catalogue::readiness(&self.runtime())
                })
            }
            // The proxy futures are boxed: hyper keeps the service future's slot, at its full
            // size, for as long as the connection lives — a held stream included — so the
            // large proxy state is freed when the response starts instead.
            "/chat/completions" => {
                require(&method, Method::POST, path, "POST")?;
                Ok(Box::pin(self.proxy(Endpoint::ChatCompletions, req, request_id)).await)
            }
            "/completions" => {
                require(&method, Method::POST, path, "POST")?;
                Ok(Box::pin(self.proxy(Endpoint::Completions, req, request_id)).await)
            }
            "/embeddings" => {
                require(&method, Method::POST, path, "POST")?;
                Ok(Box::pin(self.proxy(Endpoint::Embeddings, req, request_id)).await)
            }
            "/metrics" if path == "/metrics" => {
                require(&method, Method::GET, path, "GET")?;
                if !self.runtime().config.metrics.enabled {
                    return Err(GatewayError::NotFound(
                        "metrics are disabled (metrics.enabled: false)".into(),
                    ));
                }
                let mut resp = Response::new(Body::full(self.metrics.render()));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(resp)
            }
            "/models" => {
                require(&method, Method::GET, path, "GET")?;
                Box::pin(catalogue::list(&self.runtime(), req.headers(), None)).await
            }
            p if p.starts_with("/models/") && p.len() > "/models/".len() => {
                require(&method, Method::GET, path, "GET")?;
                let id = percent_decode(&p["/models/".len()..]);
                Box::pin(catalogue::list(&self.runtime(), req.headers(), Some(&id))).await
            }
            _ => Err(GatewayError::NotFound(format!("no endpoint at {path}"))),
        }
    }

    /// The routed endpoints: authenticate, parse, route, dispatch, and answer whole or
    /// as a relayed stream.
    async fn proxy<B>(
        &self,
        endpoint: Endpoint,
        req: http::Request<B>,
        request_id: &str,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // One snapshot for the whole request, however long its stream runs.
        let runtime = self.runtime();
        let mut outcome = Outcome::new(request_id.to_owned(), endpoint, self.metrics.clone());

        let key = match runtime.keys.authenticate(req.headers()) {
            Ok(key) => key,
            Err(e) => return refuse(outcome, e),
        };
        outcome.key = key.as_ref().map(|k| k.name.clone());
        let bytes = match read_body(req, runtime.max_body_bytes).await {
            Ok(b) => b,
            Err(e) => return refuse(outcome, e),
        };
        let request = match ClientRequest::parse_shared(endpoint, &bytes) {
            Ok(r) => r,
            Err(e) => return refuse(outcome, e),
        };
        let stream = request.stream && endpoint != Endpoint::Embeddings;
        outcome.stream = stream;
        let targets = match runtime.router.resolve(&request.model) {
            Ok(t) => t,
            Err(e) => return refuse(outcome, e),
        };
        let targets = match &key {
            Some(key) => match key.filter(targets, &request.model) {
                Ok(t) => t,
                Err(e) => return refuse(outcome, e),
            },
            None => targets,
        };

        let settings = runtime.relay;
        let requested_model = request.model.clone();
        // Dispatch keeps to the request's deadline itself, so a timeout still names the
        // target it was waiting on.
        let deadline = tokio::time::Instant::from_std(outcome.started) + settings.request_timeout;
        let mut pending: Pending = Box::pin(dispatch(
            runtime.clone(),
            self.metrics.clone(),
            targets,
            request,
            request_id.to_owned(),
            deadline,
        ));
        if !stream {
            let mut dispatched = pending.await;
            outcome.dispatched(&mut dispatched);
            return answer_whole(outcome, dispatched.result);
        }
        // Hold the status line until the first event, but no longer than one keepalive
        // interval: a quick upstream error keeps its real status, a slow upstream gets a 200
        // and keepalives.
        let wait = settings.keepalive_interval.min(settings.request_timeout);
        match tokio::time::timeout(wait, &mut pending).await {
            Ok(mut dispatched) => {
                outcome.dispatched(&mut dispatched);
                match dispatched.result {
                    Ok(Answer {
                        headers,
                        body: AnswerBody::Stream { first, rest },
                    }) => {
                        outcome.status = 200;
                        let headers = tollgate_headers(headers, &outcome);
                        let relay =
                            Relay::streaming(first, rest, settings, requested_model, outcome);
                        sse_response(headers, relay)
                    }
                    // The upstream ignored `stream`: pass its whole answer on.
                    whole => answer_whole(outcome, whole),
                }
            }
            Err(_) => {
                outcome.status = 200;
                let relay = Relay::waiting(pending, settings, requested_model, outcome);
                sse_response(HeaderMap::new(), relay)
            }
        }
    }
}

/// Answers with a whole body from dispatch.
fn answer_whole(mut outcome: Outcome, result: Result<Answer, GatewayError>) -> Response<Body> {
    match result {
        Ok(Answer {
            headers,
            body: AnswerBody::Complete(bytes),
        }) => {
            outcome.usage = find_usage(&bytes);
            outcome.status = 200;
            outcome.completed = true;
            let headers = tollgate_headers(headers, &outcome);
            let mut resp = json_response(StatusCode::OK, bytes);
            resp.headers_mut().extend(headers);
            resp
        }
        Ok(Answer {
            body: AnswerBody::Stream { .. },
            ..
        }) => refuse(
            outcome,
            GatewayError::UpstreamFailed(
                "the backend streamed an answer that was asked for whole".into(),
            ),
        ),
        Err(e) => refuse(outcome, e),
    }
}

/// Adds `x-tollgate-backend` and `x-tollgate-attempts` to the upstream's passed headers.
fn tollgate_headers(mut headers: HeaderMap, outcome: &Outcome) -> HeaderMap {
    if let Some(v) = outcome
        .backend()
        .and_then(|b| HeaderValue::from_str(b).ok())
    {
        headers.insert(HeaderName::from_static("x-tollgate-backend"), v);
    }
    headers.insert(
        HeaderName::from_static("x-tollgate-attempts"),
        HeaderValue::from(outcome.attempts),
    );
    headers
}

/// Ends a request with an error, noting it in the request's log line.
fn refuse(mut outcome: Outcome, error: GatewayError) -> Response<Body> {
    outcome.status = error.status().as_u16();
    outcome.error = Some(error.code());
    outcome.completed = true;
    let mut resp = error_response(&error);
    if outcome.attempts > 0 {
        let headers = tollgate_headers(HeaderMap::new(), &outcome);
        resp.headers_mut().extend(headers);
    }
    resp
}

fn require(
    method: &Method,
    wanted: Method,
    path: &str,
    allow: &'static str,
) -> Result<(), GatewayError> {
    if *method == wanted {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_owned(),
            allow,
        })
    }
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn sse_response(headers: HeaderMap, relay: Relay) -> Response<Body> {
    let mut resp = Response::new(Body::Relay(Box::new(relay)));
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx (and proxies that copy it) not to buffer the stream.
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    resp
}

/// The OpenAI-shaped error response, with `retry-after` and `allow` where they apply.
pub fn error_response(error: &GatewayError) -> Response<Body> {
    let mut resp = json_response(error.status(), error.body());
    if let Some(wait) = error.retry_after() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let GatewayError::MethodNotAllowed { allow, .. } = error {
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// Decodes `%XX` escapes in a path segment (model ids may arrive with `/` or `:` escaped).
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("nvidia%3Ameta%2Fllama"), "nvidia:meta/llama");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
