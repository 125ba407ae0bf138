//! `Gateway`: the request's whole path in one place —
//! request id → endpoint → auth → body limit → parse → route → key policy → dispatch → relay.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use tollgate_core::{
    find_usage, ClientRequest, Endpoint, Env, GatewayError, JsonObject, Problem, Protocol, Registry,
};

use crate::body::Body;
use crate::dispatch::{dispatch, Answer, AnswerBody, Job};
use crate::door::{self, Reply};
use crate::intake::read_body;
use crate::kept_headers::{Kind, X_TOLLGATE_ATTEMPTS, X_TOLLGATE_BACKEND};
use crate::limits;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::relay::{Pending, Relay};
use crate::runtime::{Closing, Live, Runtime};
use crate::{catalogue, request_id};
use tollgate_store::{Begin, Claim, StoredAnswer};

/// The gateway: its live runtime and what it needs to rebuild one.
pub struct Gateway {
    live: Live,
    registry: Registry,
    env: Env,
    /// Lives as long as the gateway, across reloads.
    metrics: Arc<Metrics>,
    /// Ends open streams when the shutdown grace is over; shared by every runtime.
    closing: Arc<Closing>,
    /// The live dashboard's requests, windows and sessions; kept across reloads.
    pub(crate) dashboard: Arc<crate::dashboard::Dashboard>,
}

impl Gateway {
    pub fn new(mut runtime: Runtime, registry: Registry, env: Env) -> Arc<Gateway> {
        let closing = runtime.relay.closing.clone();
        runtime.relay.closing = closing.clone();
        Arc::new(Gateway {
            live: Live::new(runtime),
            registry,
            env,
            metrics: Arc::new(Metrics::new()),
            closing,
            dashboard: Arc::default(),
        })
    }

    /// Ends every stream still open with an error event: the shutdown grace is over.
    pub fn close_streams(&self) {
        self.closing.close();
    }

    /// Draining has started: streams that would never end by themselves (the dashboard's
    /// events) end now; requests in flight go on.
    pub fn draining(&self) {
        self.dashboard.drain();
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
        let mut next = Runtime::build(config, &self.registry, &self.env, Some(&current))?;
        next.relay.closing = self.closing.clone();
        Ok(next)
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
        self.dashboard.swapped(&old, &runtime);
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
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
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
        // A kept answer's headers hold it already (`kept_headers`); an upstream's own id never
        // passes as `x-request-id`.
        let held = resp.headers().get(&request_id::HEADER);
        if held.is_none_or(|v| v != request_id.as_str()) {
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert(request_id::HEADER, v);
            }
        }
        resp
    }

    async fn route<B>(
        &self,
        req: http::Request<B>,
        request_id: &str,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        // Clients configured with a base URL without `/v1` call the same endpoints.
        let api_path = path
            .strip_prefix("/v1")
            .filter(|p| p.starts_with('/'))
            .unwrap_or(path);
        let method = req.method().clone();
        // The proxy futures are boxed: hyper keeps the service future's slot, at its full
        // size, for as long as the connection lives — a held stream included — so the large
        // proxy state is freed when the response starts instead.
        let endpoint = endpoint_of(api_path);
        if let Some(endpoint) = endpoint {
            if method != Method::POST {
                let e = not_allowed(&method, path, "POST");
                return Ok(door::error_response(endpoint.protocol(), &e));
            }
            return Ok(Box::pin(self.proxy(endpoint, req, request_id, None)).await);
        }
        // Pass-through: `/v1/providers/{backend}/-/{path}` goes to that backend as it came.
        // (Owned before any await: a future holding these borrows would not be `Send`.)
        let provider = api_path
            .strip_prefix("/providers/")
            .and_then(|p| p.split_once("/-/"))
            .map(|(backend, rest)| (percent_decode(backend), rest.to_owned()));
        if let Some((backend, rest)) = provider {
            return Ok(Box::pin(self.pass_through(backend, rest, req, request_id)).await);
        }
        // Model-entity routing: `/v1/models/{name}/-/{endpoint}` routes to that name's targets,
        // whatever the body's model says.
        let entity = api_path
            .strip_prefix("/models/")
            .and_then(|p| p.split_once("/-/"))
            .map(|(name, rest)| {
                let rest = rest.strip_prefix("v1/").unwrap_or(rest);
                (percent_decode(name), endpoint_of(&format!("/{rest}")))
            });
        if let Some((name, endpoint)) = entity {
            let Some(endpoint) = endpoint else {
                return Err(GatewayError::NotFound(format!(
                    "no endpoint at {path}: after `/-/` comes an endpoint such as chat/completions"
                )));
            };
            if method != Method::POST {
                let e = not_allowed(&method, path, "POST");
                return Ok(door::error_response(endpoint.protocol(), &e));
            }
            return Ok(Box::pin(self.proxy(endpoint, req, request_id, Some(name))).await);
        }
        match api_path {
            "/health/live" | "/health/ready" if path.starts_with("/health") => {
                require(&method, Method::GET, path, "GET")?;
                Ok(if api_path == "/health/live" {
                    json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
                } else {
                    catalogue::readiness(&self.runtime())
                })
            }
            // Claude Code probes `HEAD /api/hello` (and some clients `HEAD /`) before it starts.
            "/" | "/api/hello" if method == Method::HEAD || method == Method::GET => {
                Ok(Response::new(Body::empty()))
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
            _ if crate::dashboard::owns(path) => {
                Ok(Box::pin(self.dashboard.serve(req, self.runtime(), &self.env)).await)
            }
            _ => {
                // Agents retry unknown paths (Codex and Claude Code five times): each one is
                // a request of its own in the log and the metrics.
                let outcome = Outcome::new(
                    request_id.to_owned(),
                    "unknown",
                    Protocol::Chat,
                    self.metrics.clone(),
                );
                Ok(refuse(
                    outcome,
                    GatewayError::NotFound(format!("no endpoint at {path}")),
                ))
            }
        }
    }

    /// The routed endpoints: authenticate, parse, route, dispatch, and answer whole or
    /// as a relayed stream, in the door's protocol.
    async fn proxy<B>(
        &self,
        endpoint: Endpoint,
        req: http::Request<B>,
        request_id: &str,
        routed: Option<String>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // One snapshot for the whole request, however long its stream runs.
        let runtime = self.runtime();
        let door = endpoint.protocol();
        let mut outcome = Outcome::new(
            request_id.to_owned(),
            endpoint.label(),
            door,
            self.metrics.clone(),
        );
        outcome.trace = self.dashboard.begin(&runtime, &outcome);

        let key = match runtime.keys.authenticate(req.headers()) {
            Ok(key) => key,
            Err(e) => return refuse(outcome, e),
        };
        outcome.key = key.as_ref().map(|k| k.name.clone());
        let native_headers = native_headers(door, req.headers());
        let idempotency = idempotency_key(req.headers());
        let bytes = match read_body(req, runtime.max_body_bytes).await {
            Ok(b) => b,
            Err(e) => return refuse(outcome, e),
        };
        let request = match ClientRequest::parse_routed(endpoint, &bytes, routed.as_deref()) {
            Ok(r) => r,
            Err(e) => return refuse(outcome, e),
        };
        let stream = request.stream && endpoint.streams();
        outcome.stream = stream;
        // The path's model, when it names one; else the Messages door maps `claude-*` names to
        // the models that serve them.
        let routed = match (&routed, door) {
            (Some(name), _) => Some(name.as_str()),
            (None, Protocol::Messages) => runtime.config.anthropic.map_model(&request.model),
            (None, _) => None,
        };
        let targets = match runtime.router.resolve(routed.unwrap_or(&request.model)) {
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
        // count_tokens goes to the targets that can count (a Messages backend), else the
        // gateway's own estimate answers.
        let targets = if endpoint == Endpoint::CountTokens {
            let counting: Vec<_> = targets
                .into_iter()
                .filter(|t| {
                    runtime
                        .backends
                        .get(&t.backend)
                        .is_some_and(|b| b.connector.speaks(Protocol::Messages))
                })
                .collect();
            if counting.is_empty() {
                return count_tokens_locally(outcome, &request.body);
            }
            counting
        } else {
            targets
        };

        // Idempotency keys: a non-stream request answered once within the TTL.
        let mut claim = None;
        if let (false, Some(idem)) = (stream, idempotency) {
            let scope = limits::key_scope(outcome.key.as_deref());
            match idempotent(&runtime, &scope, &idem, endpoint, routed, &bytes).await {
                // The store is down and `on_error: open`: answered, without the guarantee.
                Ok(None) => {}
                Ok(Some(Begin::Claimed(c))) => claim = Some(c),
                Ok(Some(Begin::Replay(answer))) => return replay(outcome, answer),
                Ok(Some(Begin::InFlight)) => {
                    return refuse(
                        outcome,
                        GatewayError::InFlight(
                            "a request with this idempotency key is being answered now".into(),
                        ),
                    )
                }
                Ok(Some(Begin::Mismatch)) => {
                    return refuse(
                        outcome,
                        GatewayError::KeyReused(
                            "this idempotency key was used with a different request body".into(),
                        ),
                    )
                }
                Err(e) => return refuse(outcome, e),
            }
        }

        // Limits: the key's scope now; each backend's before each attempt there (dispatch).
        let limiter = &runtime.limiter;
        let key = limiter.key(outcome.key.as_deref());
        let key_limits = key.limits;
        let counted =
            endpoint != Endpoint::CountTokens && (key_limits.counts() || limiter.backends_count());
        let estimate = if counted {
            let cap =
                limits::output_cap(endpoint, &request.body, key_limits.max_tokens_per_request);
            limits::estimate(endpoint, &request.body, cap)
        } else {
            0
        };
        // The key's quota state, for `x-ratelimit-*` (written straight into the answer's
        // headers, else the answering backend's).
        let mut key_state = None;
        if key_limits.counts() && endpoint != Endpoint::CountTokens {
            match limiter.admit_key(&key, estimate, &self.metrics).await {
                Ok(admitted) => {
                    key_state = admitted.state;
                    if let Some(reservation) = admitted.reservation {
                        outcome.reservations.push((reservation, estimate));
                    }
                }
                Err(e) => return refuse(outcome, e),
            }
        }

        let settings = runtime.relay.clone();
        let reply = Reply::new(endpoint, &request.body, request_id, request.model.clone());
        // Dispatch keeps to the request's deadline itself, so a timeout still names the
        // target it was waiting on.
        let deadline = tokio::time::Instant::from_std(outcome.started) + settings.request_timeout;
        let mut pending: Pending = Box::pin(dispatch(Job {
            runtime: runtime.clone(),
            metrics: self.metrics.clone(),
            targets,
            // Before `request` moves into the job.
            trace: crate::dashboard::dispatching(&outcome, &request),
            request,
            request_id: request_id.to_owned(),
            deadline,
            native_headers,
            key_cap: key_limits.max_tokens_per_request,
            estimate,
        }));
        if !stream {
            let mut dispatched = pending.await;
            outcome.dispatched(&mut dispatched);
            let limit_state = key_state.or(dispatched.limit_state);
            let resp = answer_whole(outcome, &reply, dispatched.result, limit_state, request_id);
            if let Some(claim) = claim {
                remember(claim, &resp);
            }
            return resp;
        }
        // Hold the status line until the first event, but no longer than one keepalive
        // interval: a quick upstream error keeps its real status, a slow upstream gets a 200
        // and keepalives.
        let wait = settings.keepalive_interval.min(settings.request_timeout);
        crate::dashboard::held(&outcome, wait);
        match tokio::time::timeout(wait, &mut pending).await {
            Ok(mut dispatched) => {
                outcome.dispatched(&mut dispatched);
                let limit_state = key_state.or(dispatched.limit_state);
                match dispatched.result {
                    Ok(Answer {
                        headers,
                        body: AnswerBody::Stream { first, rest },
                        wire,
                    }) => {
                        let kept =
                            kept_headers(Kind::Stream, &outcome, limit_state, request_id, headers);
                        let kept = kept.map_err(|mut headers| {
                            tollgate_headers(&mut headers, &outcome);
                            limit_headers(limit_state, &mut headers);
                            headers
                        });
                        outcome.status = 200;
                        crate::dashboard::committed(&outcome, false);
                        let relay = Relay::streaming(first, rest, wire, reply, settings, outcome);
                        match kept {
                            Ok(map) => {
                                let mut resp = Response::new(Body::Relay(Box::new(relay)));
                                *resp.headers_mut() = map;
                                resp
                            }
                            Err(headers) => sse_response(headers, relay),
                        }
                    }
                    // The upstream ignored `stream`: pass its whole answer on.
                    whole => answer_whole(outcome, &reply, whole, limit_state, request_id),
                }
            }
            Err(_) => {
                outcome.status = 200;
                crate::dashboard::committed(&outcome, true);
                let relay = Relay::waiting(pending, reply, settings, outcome);
                let mut headers = HeaderMap::new();
                limit_headers(key_state, &mut headers);
                sse_response(headers, relay)
            }
        }
    }
}

/// The routed endpoint at `path` (below `/v1`).
fn endpoint_of(path: &str) -> Option<Endpoint> {
    Some(match path {
        "/chat/completions" => Endpoint::ChatCompletions,
        "/completions" => Endpoint::Completions,
        "/embeddings" => Endpoint::Embeddings,
        "/messages" => Endpoint::Messages,
        "/messages/count_tokens" => Endpoint::CountTokens,
        "/responses" => Endpoint::Responses,
        _ => return None,
    })
}

impl Gateway {
    /// A pass-through request to `backend` (see `passthrough.rs`): the key must allow the whole
    /// backend (`backend:*`), limits count it as a request (no tokens), and the answer streams
    /// back as the backend sends it — an error answer masked of every secret.
    async fn pass_through<B>(
        &self,
        backend: String,
        rest: String,
        req: http::Request<B>,
        request_id: &str,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let runtime = self.runtime();
        let mut outcome = Outcome::new(
            request_id.to_owned(),
            "passthrough",
            Protocol::Chat,
            self.metrics.clone(),
        );
        outcome.trace = self.dashboard.begin(&runtime, &outcome);
        let key = match runtime.keys.authenticate(req.headers()) {
            Ok(key) => key,
            Err(e) => return refuse(outcome, e),
        };
        outcome.key = key.as_ref().map(|k| k.name.clone());
        // Owned from here on: nothing borrowed from the runtime is held across an await.
        let Some((name, connector)) = runtime
            .backends
            .get_key_value(backend.as_str())
            .map(|(n, b)| (n.clone(), b.connector.clone()))
        else {
            return refuse(
                outcome,
                GatewayError::NotFound(format!("no backend named `{backend}`")),
            );
        };
        if let Some(key) = &key {
            if !key.permits(&name, "*") {
                return refuse(
                    outcome,
                    GatewayError::PermissionDenied(format!(
                        "key `{}` may not use backend `{name}` (pass-through needs `{name}:*` in its allowed models)",
                        key.name
                    )),
                );
            }
        }
        // Pass-through reads no model and counts no tokens: a key or backend whose rules
        // need either is refused it rather than bypassed.
        let backend_config = &runtime.backends[&*name].config;
        let key_limits = runtime.limiter.key_limits(outcome.key.as_deref());
        let refusal =
            crate::passthrough::refusal(&name, key.as_deref(), key_limits, backend_config);
        if let Some(e) = refusal {
            return refuse(outcome, e);
        }
        let path_and_query = match crate::passthrough::path(&rest, req.uri().query()) {
            Ok(p) => p,
            Err(e) => return refuse(outcome, e),
        };
        outcome.target = Some(tollgate_core::Target {
            backend: name.clone(),
            model: String::new(),
        });
        // Limits count a pass-through as a request; it reserves no tokens (none are read).
        let key = runtime.limiter.key(outcome.key.as_deref());
        let admitted = runtime.limiter.admit_key(&key, 0, &self.metrics).await;
        match admitted {
            Ok(admitted) => outcome
                .reservations
                .extend(admitted.reservation.map(|r| (r, 0))),
            Err(e) => return refuse(outcome, e),
        }
        let admitted = runtime.limiter.admit_backend(&name, 0, &self.metrics).await;
        match admitted {
            Ok(admitted) => outcome
                .reservations
                .extend(admitted.reservation.map(|r| (r, 0))),
            Err(crate::limits::Skipped::OverLimit { retry_after }) => {
                let e = GatewayError::RateLimited {
                    message: format!("backend {name} over its limits"),
                    retry_after: Some(retry_after),
                };
                return refuse(outcome, e);
            }
            Err(crate::limits::Skipped::StoreDown) => {
                let e = limits::store_down();
                return refuse(outcome, e);
            }
        }
        let (parts, body) = req.into_parts();
        // Streamed as it arrives, within the body size limit.
        let limit = usize::try_from(runtime.max_body_bytes).unwrap_or(usize::MAX);
        let body = http_body_util::BodyExt::boxed_unsync(http_body_util::Limited::new(body, limit));
        let forward = tollgate_core::Forward {
            method: parts.method,
            path_and_query,
            headers: crate::passthrough::headers(&parts.headers),
            body,
            request_id: request_id.to_owned(),
        };
        outcome.attempts = 1;
        outcome.upstream_started = Some(std::time::Instant::now());
        let answer = match connector.forward(forward).await {
            Ok(answer) => answer,
            Err(e) => return refuse(outcome, runtime.relay.masker.mask_error(e)),
        };
        outcome.answered = true;
        let (mut parts, body) = answer.into_parts();
        crate::passthrough::backend_header(&name, &mut parts.headers);
        outcome.status = parts.status.as_u16();
        if parts.status.is_client_error() || parts.status.is_server_error() {
            // An error answer is read, to be masked: upstreams echo what they were sent.
            let body = match crate::passthrough::masked_error(body, &runtime.relay.masker).await {
                Ok(b) => b,
                Err(e) => return refuse(outcome, e),
            };
            outcome.error = Some("upstream_error");
            outcome.completed = true;
            parts.headers.remove(http::header::CONTENT_LENGTH);
            return Response::from_parts(parts, Body::full(body));
        }
        Response::from_parts(parts, Body::forward(body, outcome))
    }
}

/// The client headers a backend speaking the door's protocol natively is sent:
/// `anthropic-version` and `anthropic-beta` on the Messages door (betas change the request
/// schema, so an Anthropic backend must see them).
fn native_headers(door: Protocol, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if door == Protocol::Messages {
        for name in [&ANTHROPIC_VERSION, &ANTHROPIC_BETA] {
            for value in headers.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
    }
    out
}

/// `x-ratelimit-*` for the key's state, else the answering backend's.
fn limit_headers(state: Option<tollgate_store::ScopeState>, headers: &mut HeaderMap) {
    if let Some(state) = state {
        limits::headers(&state, headers);
    }
}

/// Header names of the hot path, built once: a lookup or insert by `&str` parses and validates
/// the name on every request.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const ANTHROPIC_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("anthropic-idempotency-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The `Idempotency-Key` (Stripe's name) or `anthropic-idempotency-key` a request carries.
fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    [&IDEMPOTENCY_KEY, &ANTHROPIC_IDEMPOTENCY_KEY]
        .into_iter()
        .find_map(|name| headers.get(name)?.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_owned)
}

/// Looks an idempotency key up in the store, claiming it when free. The fingerprint is the
/// endpoint and the body's SHA-256: the same key with another body is another request.
async fn idempotent(
    runtime: &Runtime,
    scope: &str,
    key: &str,
    endpoint: Endpoint,
    routed: Option<&str>,
    body: &[u8],
) -> Result<Option<Begin>, GatewayError> {
    // The same body sent to another model (a model-entity path) is another request.
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(endpoint.label().as_bytes());
    ctx.update(b"\0");
    ctx.update(routed.unwrap_or("").as_bytes());
    ctx.update(b"\0");
    ctx.update(body);
    let fingerprint = ctx.finish();
    let store = runtime.limiter.store();
    match store
        .begin(
            scope,
            key,
            fingerprint.as_ref(),
            limits::IDEMPOTENCY_TTL,
            std::time::SystemTime::now(),
        )
        .await
    {
        Ok(begin) => Ok(Some(begin)),
        Err(e) => {
            tracing::warn!(error = %e, "the idempotency store could not answer");
            match runtime.config.state.on_error {
                tollgate_core::config::OnError::Open => Ok(None),
                tollgate_core::config::OnError::Closed => Err(limits::store_down()),
            }
        }
    }
}

/// The headers a replayed answer keeps (nothing time-dependent, nothing per attempt).
const REPLAYED_HEADERS: &[&str] = &["content-type", "x-tollgate-backend"];

/// Keeps the answer of a claimed idempotency key — unless it is one a retry should get past
/// (a 5xx, a 429, a 409): then the claim is dropped and the next request with the key runs.
fn remember(claim: Claim, resp: &Response<Body>) {
    let status = resp.status().as_u16();
    let Body::Full(Some(body)) = resp.body() else {
        return;
    };
    if status >= 500 || status == 429 || status == 409 {
        return;
    }
    let headers = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = resp.headers().get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_owned()))
        })
        .collect();
    let answer = StoredAnswer {
        status,
        headers,
        body: body.clone(),
    };
    // Stored off the answer's path: a repeat that arrives before it lands gets 409.
    tokio::spawn(async move {
        if let Err(e) = claim.complete(answer, std::time::SystemTime::now()).await {
            tracing::warn!(error = %e, "an idempotent answer could not be stored");
        }
    });
}

/// The stored answer of an idempotency key, sent again.
fn replay(mut outcome: Outcome, answer: StoredAnswer) -> Response<Body> {
    outcome.status = answer.status;
    outcome.completed = true;
    let mut resp = Response::new(Body::full(answer.body));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    resp
}

/// `count_tokens` for a backend without its own: the local estimate
/// (`tollgate_translate::anthropic::estimate_input_tokens`), answered at once.
fn count_tokens_locally(mut outcome: Outcome, body: &JsonObject) -> Response<Body> {
    let n = tollgate_translate::anthropic::estimate_input_tokens(body);
    outcome.status = 200;
    outcome.completed = true;
    json_response(
        StatusCode::OK,
        Bytes::from(format!("{{\"input_tokens\":{n}}}")),
    )
}

/// Answers with a whole body from dispatch (or its error), with the `x-ratelimit-*` headers of
/// `limits`.
fn answer_whole(
    mut outcome: Outcome,
    reply: &Reply,
    result: Result<Answer, GatewayError>,
    limits: Option<tollgate_store::ScopeState>,
    request_id: &str,
) -> Response<Body> {
    // Every refusal below carries them too.
    let refuse = |outcome, error| {
        let mut resp = refuse(outcome, error);
        limit_headers(limits, resp.headers_mut());
        resp
    };
    match result {
        Ok(Answer {
            headers,
            body: AnswerBody::Complete(bytes),
            wire,
        }) => {
            // Usage is read from what the backend sent, before any translation.
            outcome.usage = find_usage(&bytes);
            outcome.answered = true;
            let bytes = match reply.whole(wire, bytes) {
                Ok(b) => b,
                Err(e) => return refuse(outcome, e),
            };
            outcome.status = 200;
            outcome.completed = true;
            let kept = kept_headers(Kind::Json, &outcome, limits, request_id, headers);
            let headers = match kept {
                Ok(map) => {
                    let mut resp = Response::new(Body::full(bytes));
                    *resp.headers_mut() = map;
                    return resp;
                }
                Err(headers) => headers,
            };
            let mut resp = json_response(StatusCode::OK, bytes);
            if !headers.is_empty() {
                resp.headers_mut().extend(headers);
            }
            // After the upstream's passed headers: tollgate's own and the limits' win.
            limit_headers(limits, resp.headers_mut());
            tollgate_headers(resp.headers_mut(), &outcome);
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

/// An answer's headers as a copy of kept ones (`kept_headers`); `Err(upstream)` when they must
/// be built one by one.
fn kept_headers(
    kind: Kind,
    outcome: &Outcome,
    limits: Option<tollgate_store::ScopeState>,
    request_id: &str,
    upstream: HeaderMap,
) -> Result<HeaderMap, HeaderMap> {
    match outcome.backend() {
        Some(backend) => crate::kept_headers::answer(
            kind,
            limits.as_ref(),
            backend,
            attempts_value(outcome.attempts),
            request_id,
            upstream,
        ),
        None => Err(upstream),
    }
}

/// Adds `x-tollgate-backend` and `x-tollgate-attempts` to the upstream's passed headers.
fn tollgate_headers(headers: &mut HeaderMap, outcome: &Outcome) {
    if let Some(v) = outcome
        .backend()
        .and_then(|b| HeaderValue::from_str(b).ok())
    {
        headers.insert(X_TOLLGATE_BACKEND, v);
    }
    headers.insert(X_TOLLGATE_ATTEMPTS, attempts_value(outcome.attempts));
}

/// `x-tollgate-attempts`' value: a constant for the usual counts (a number formatted into a
/// new value costs an allocation per answer).
fn attempts_value(attempts: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(attempts as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(attempts),
    }
}

/// Ends a request with an error in its door's shape, noting it in the request's log line.
fn refuse(mut outcome: Outcome, error: GatewayError) -> Response<Body> {
    outcome.error = Some(error.code());
    outcome.completed = true;
    let mut resp = door::error_response(outcome.door, &error);
    outcome.status = resp.status().as_u16();
    if outcome.attempts > 0 {
        tollgate_headers(resp.headers_mut(), &outcome);
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
        Err(not_allowed(method, path, allow))
    }
}

fn not_allowed(method: &Method, path: &str, allow: &'static str) -> GatewayError {
    GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
        allow,
    }
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    // Room for what an answer gets (content type, the x-tollgate-* and x-ratelimit-* headers,
    // the request id, the upstream's few) in the first allocation: no grow when limits add six.
    *resp.headers_mut() = HeaderMap::with_capacity(12);
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
    door::error_response(Protocol::Chat, error)
}

/// Decodes `%XX` escapes in a path segment (model ids may arrive with `/` or `:` escaped).
pub(crate) fn percent_decode(s: &str) -> String {
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
    fn attempts_read_as_numbers() {
        for n in [0u32, 1, 2, 9, 10, 11, 12345, u32::MAX] {
            assert_eq!(attempts_value(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("nvidia%3Ameta%2Fllama"), "nvidia:meta/llama");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
