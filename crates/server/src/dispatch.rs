//! Dispatch: sending a request to its targets in order until one answers, before any byte
//! of an answer reached the client. For a stream, "answers" means its first event arrived.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use tollgate_core::config::OutputBudget;
use tollgate_core::{
    ClientRequest, Endpoint, EventStream, GatewayError, JsonObject, Protocol, ReplyBody, Request,
    SseEvent, Target,
};
use tollgate_translate::{anthropic, responses, to_messages, ChatTarget};

use crate::breaker::Permit;
use crate::limits::Skipped;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::retry::{self, Verdict};
use crate::runtime::Runtime;
use tollgate_store::{Reservation, ScopeState};

/// A target's successful answer.
pub struct Answer {
    /// Allow-listed upstream headers.
    pub headers: HeaderMap,
    pub body: AnswerBody,
    /// The protocol the backend answered in (the door's, or Chat when translated).
    pub wire: Protocol,
}

pub enum AnswerBody {
    Complete(Bytes),
    /// A stream whose first event is already in hand.
    Stream {
        first: SseEvent,
        rest: EventStream,
    },
}

/// What dispatching came to, with the attempts it took.
pub struct Dispatched {
    pub result: Result<Answer, GatewayError>,
    /// The target that answered, or the last one tried.
    pub target: Option<Target>,
    pub attempts: u32,
    /// When the first attempt started (none when no target could be tried).
    pub upstream_started: Option<Instant>,
    /// The answering backend's reservation, when it has limits, and the tokens it holds.
    pub reservation: Option<Reservation>,
    pub reserved: u64,
    /// The answering backend's limits state, for `x-ratelimit-*` when the key has none.
    pub limit_state: Option<ScopeState>,
}

impl Dispatched {
    fn failed(
        error: GatewayError,
        target: Option<Target>,
        attempts: u32,
        started: Option<Instant>,
    ) -> Self {
        Dispatched {
            result: Err(error),
            target,
            attempts,
            upstream_started: started,
            reservation: None,
            reserved: 0,
            limit_state: None,
        }
    }
}

impl Outcome {
    /// Takes what dispatch found into the request's outcome.
    pub fn dispatched(&mut self, d: &mut Dispatched) {
        self.target = d.target.take();
        self.attempts = d.attempts;
        self.upstream_started = d.upstream_started.map(Instant::into_std);
        if let Some(reservation) = d.reservation.take() {
            self.reservations.push((reservation, d.reserved));
        }
    }
}

/// Everything dispatch needs, owned, so its future can outlive the handler (a stream commits
/// its 200 before the first event when the upstream is slow).
pub struct Job {
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub targets: Vec<Target>,
    /// The client's request, as its door parsed it.
    pub request: ClientRequest,
    pub request_id: String,
    pub deadline: Instant,
    /// Client headers for a backend that speaks the door's protocol natively.
    pub native_headers: HeaderMap,
    /// The client key's `max_tokens_per_request`.
    pub key_cap: Option<u64>,
    /// The tokens the request reserves, asked of each backend with limits.
    pub estimate: u64,
    /// The dashboard's trace of the request, when it is enabled.
    pub trace: Option<crate::dashboard::Trace>,
}

/// Tries `targets` in order, each up to `1 + retries` times with backoff, skipping backends
/// whose circuit is open.
pub async fn dispatch(job: Job) -> Dispatched {
    let Job {
        runtime,
        metrics,
        targets,
        request,
        request_id,
        deadline,
        native_headers,
        key_cap,
        estimate,
        trace,
    } = job;
    let settings = runtime.retry;
    let mut upstream_started = None;
    let mut attempts = 0;
    let mut last: Option<(Target, GatewayError)> = None;
    let mut open_circuits: Vec<Arc<str>> = Vec::new();
    // Backends skipped by their own limits, with when they take requests again.
    let mut over_limit: Vec<(Arc<str>, Duration)> = Vec::new();
    let mut store_down = false;
    for (i, target) in targets.into_iter().enumerate() {
        let Some(backend) = runtime.backends.get(&target.backend) else {
            // The router only yields configured backends; a miss means a bug, not a client error.
            let e = GatewayError::Internal(format!("backend `{}` is not built", target.backend));
            last = Some((target, e));
            continue;
        };
        if let (true, Some((from, _))) = (i > 0, &last) {
            tracing::info!(request_id = %request_id, from = %from.backend, to = %target.backend, "falling back to the next target");
            metrics.fallback(&from.backend);
        }
        // The request as this backend takes it: untouched when it speaks the door's protocol,
        // else translated (once per target, reused by its retries).
        let (endpoint, wire, planned) = match plan(&request, backend, &target.model, key_cap) {
            Ok(p) => p,
            // A backend that cannot serve this endpoint at all: the next target may.
            Err(e @ GatewayError::BackendUnavailable(_)) => {
                last = Some((target, e));
                continue;
            }
            Err(e) => return Dispatched::failed(e, Some(target), attempts, upstream_started),
        };
        // A smaller output budget, once the upstream said the request overflows its context.
        let mut budget: Option<u64> = None;
        let mut retries = 0;
        loop {
            // A backend over its own limits is skipped like an open circuit, before its
            // breaker is asked (a half-open probe is not spent on it).
            // (count_tokens asks a backend nothing it must count.)
            let held = if request.endpoint == Endpoint::CountTokens {
                Ok(crate::limits::Admitted::default())
            } else {
                runtime
                    .limiter
                    .admit_backend(&target.backend, estimate, &metrics)
                    .await
            };
            let held = match held {
                Ok(held) => held,
                Err(Skipped::OverLimit { retry_after }) => {
                    over_limit.push((target.backend.clone(), retry_after));
                    crate::dashboard::skipped(&trace, &target, "over_limit");
                    break;
                }
                Err(Skipped::StoreDown) => {
                    store_down = true;
                    crate::dashboard::skipped(&trace, &target, "store_down");
                    break;
                }
            };
            let permit = backend.breaker.permit();
            if permit == Permit::Refused {
                open_circuits.push(target.backend.clone());
                crate::dashboard::skipped(&trace, &target, "circuit_open");
                break;
            }
            attempts += 1;
            crate::dashboard::attempt(&trace, &target, attempts);
            upstream_started.get_or_insert_with(Instant::now);
            // Cloning a body copies no value: keys and values are slices of the client's body.
            let mut body = planned.clone();
            if let Some(budget) = budget {
                retry::apply_budget(&mut body, endpoint, budget);
            }
            let upstream = Request {
                endpoint,
                model: target.model.clone(),
                stream: request.stream,
                body,
                request_id: request_id.clone(),
                headers: if wire == request.endpoint.protocol() {
                    native_headers.clone()
                } else {
                    HeaderMap::new()
                },
            };
            let outcome = {
                // Pinned where it is made: moved into the timeout by value, the attempt's
                // whole state (kilobytes) would be copied on every request.
                let tried = std::pin::pin!(attempt(
                    backend.connector.as_ref(),
                    upstream,
                    &target,
                    wire,
                    runtime.relay.max_silent_wait,
                ));
                match tokio::time::timeout_at(deadline, tried).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                        "the request exceeded server.request_timeout ({}s)",
                        runtime.relay.request_timeout.as_secs()
                    ))),
                }
            };
            crate::dashboard::attempted(&trace, attempts, &outcome);
            let error = match outcome {
                Err(e) => runtime.relay.masker.mask_error(e),
                Ok(answer) => {
                    if backend.breaker.succeeded() {
                        metrics.circuit(&target.backend, false);
                    }
                    return Dispatched {
                        result: Ok(answer),
                        target: Some(target),
                        attempts,
                        upstream_started,
                        reservation: held.reservation,
                        reserved: estimate,
                        limit_state: held.state,
                    };
                }
            };
            metrics.upstream_error(&target.backend, error_kind(&error));
            if retry::is_backend_fault(&error) {
                if backend.breaker.failed(permit) {
                    tracing::warn!(backend = %target.backend, "circuit opened");
                    metrics.circuit(&target.backend, true);
                }
            } else if permit == Permit::Probe && backend.breaker.succeeded() {
                // The backend answered: it is up, even if the answer was a refusal.
                metrics.circuit(&target.backend, false);
            }
            tracing::warn!(
                request_id = %request_id,
                backend = %target.backend,
                model = %target.model,
                attempt = attempts,
                status = error.status().as_u16(),
                error = %error,
                "attempt failed"
            );
            // The output budget overflowed the context: once, ask for what fits.
            if budget.is_none() {
                if let Some(fits) = retry::fitting_budget(&error, &planned) {
                    budget = Some(fits);
                    tracing::info!(request_id = %request_id, budget = fits, "retrying with a smaller max_tokens");
                    continue;
                }
            }
            match retry::judge(&error) {
                // No retry into an open circuit (this failure may have opened it) or past the
                // request's deadline.
                Verdict::Retry { after }
                    if retries < settings.retries && !backend.breaker.is_open() =>
                {
                    let wait = retry::backoff(settings.backoff, retries + 1, after)
                        .filter(|wait| Instant::now() + *wait < deadline);
                    match wait {
                        Some(wait) => {
                            retries += 1;
                            metrics.retry(&target.backend);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        // The upstream asked for a longer wait than we allow, or the request
                        // has no time left for it: the next target.
                        None => {
                            last = Some((target, error));
                            break;
                        }
                    }
                }
                Verdict::Retry { .. } | Verdict::NextTarget => {
                    last = Some((target, error));
                    break;
                }
                Verdict::Stop => {
                    return Dispatched::failed(error, Some(target), attempts, upstream_started)
                }
            }
        }
        if timed_out_overall(deadline) {
            break;
        }
    }
    let (target, error) = match last {
        Some((t, e)) => (Some(t), e),
        None if !over_limit.is_empty() => {
            let names: Vec<&str> = over_limit.iter().map(|(n, _)| n.as_ref()).collect();
            let wait = over_limit.iter().map(|(_, w)| *w).min();
            (
                None,
                GatewayError::RateLimited {
                    message: format!(
                        "backend{} {} over {} limits",
                        if names.len() == 1 { "" } else { "s" },
                        names.join(", "),
                        if names.len() == 1 { "its" } else { "their" },
                    ),
                    retry_after: wait,
                },
            )
        }
        None if store_down => (None, crate::limits::store_down()),
        None if !open_circuits.is_empty() => {
            let names: Vec<&str> = open_circuits.iter().map(|n| n.as_ref()).collect();
            (
                None,
                GatewayError::BackendUnavailable(format!(
                    "circuit open for backend{} {}: too many recent failures",
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                )),
            )
        }
        None => (
            None,
            GatewayError::BackendUnavailable("no target to try".into()),
        ),
    };
    Dispatched::failed(error, target, attempts, upstream_started)
}

fn timed_out_overall(deadline: Instant) -> bool {
    Instant::now() >= deadline
}

/// The `kind` label of an upstream error.
pub fn error_kind(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::UpstreamFailed(_) => "transport",
        GatewayError::UpstreamTimeout(_) => "timeout",
        GatewayError::Upstream { status, .. } => match status.as_u16() {
            429 => "status_429",
            s if s >= 500 => "status_5xx",
            _ => "status_4xx",
        },
        _ => "other",
    }
}

/// One attempt on one target: its answer, and for a stream its first event, within
/// `first_event` once the headers are in.
async fn attempt(
    connector: &dyn tollgate_core::Connector,
    upstream: Request,
    target: &Target,
    wire: Protocol,
    first_event: Duration,
) -> Result<Answer, GatewayError> {
    let reply = connector.send(upstream).await?;
    match reply.body {
        ReplyBody::Complete(bytes) => Ok(Answer {
            headers: reply.headers,
            body: AnswerBody::Complete(bytes),
            wire,
        }),
        ReplyBody::Events(mut events) => {
            match tokio::time::timeout(first_event, events.next()).await {
                Ok(Some(Ok(first))) => Ok(Answer {
                    headers: reply.headers,
                    body: AnswerBody::Stream {
                        first,
                        rest: events,
                    },
                    wire,
                }),
                Ok(Some(Err(e))) => Err(e),
                Ok(None) => Err(GatewayError::UpstreamFailed(format!(
                    "backend `{}` ended the stream before its first event",
                    target.backend
                ))),
                Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                    "backend `{}` sent no event within failure_handling.max_silent_wait ({}s)",
                    target.backend,
                    first_event.as_secs()
                ))),
            }
        }
    }
}

/// The endpoint, protocol and body a request is sent to `backend` with: the client's own when
/// the backend speaks the door's protocol, else a translation to one it speaks. The output
/// budget (`output_budget`) is applied to whatever is sent.
fn plan(
    request: &ClientRequest,
    backend: &crate::runtime::Backend,
    model: &str,
    key_cap: Option<u64>,
) -> Result<(Endpoint, Protocol, JsonObject), GatewayError> {
    let connector = backend.connector.as_ref();
    let door = request.endpoint.protocol();
    // `max_tokens_per_request` (the key's, the backend's) caps the output budget too.
    let cap = [
        key_cap,
        backend.config.limits.and_then(|l| l.max_tokens_per_request),
    ]
    .into_iter()
    .flatten()
    .min();
    let budget = backend.budget.capped(cap);
    let (endpoint, wire, mut body) = if connector.speaks(door) {
        (request.endpoint, door, request.body.clone())
    } else {
        match request.endpoint {
            Endpoint::Messages if connector.speaks(Protocol::Chat) => {
                let chat = anthropic::to_chat(&request.body, &backend.chat_target(model))
                    .map_err(crate::door::invalid)?;
                (Endpoint::ChatCompletions, Protocol::Chat, chat)
            }
            Endpoint::Responses if connector.speaks(Protocol::Chat) => {
                let chat = responses::to_chat(&request.body, &backend.chat_target(model))
                    .map_err(crate::door::invalid)?;
                (Endpoint::ChatCompletions, Protocol::Chat, chat)
            }
            // A backend that speaks only Messages (Anthropic).
            // The budget is applied to the chat body first: the translation fills in a
            // `max_tokens` of its own when there is none, which would hide `default_max_tokens`.
            Endpoint::ChatCompletions if connector.speaks(Protocol::Messages) => {
                let mut chat = request.body.clone();
                apply_output_budget(&mut chat, Endpoint::ChatCompletions, budget);
                let messages = to_messages::from_chat(&chat).map_err(crate::door::invalid)?;
                (Endpoint::Messages, Protocol::Messages, messages)
            }
            Endpoint::Responses if connector.speaks(Protocol::Messages) => {
                let mut chat = responses::to_chat(&request.body, &ChatTarget::default())
                    .map_err(crate::door::invalid)?;
                apply_output_budget(&mut chat, Endpoint::ChatCompletions, budget);
                let messages = to_messages::from_chat(&chat).map_err(crate::door::invalid)?;
                (Endpoint::Messages, Protocol::Messages, messages)
            }
            other => {
                return Err(GatewayError::BackendUnavailable(format!(
                    "no target can serve `{}` requests",
                    other.label()
                )))
            }
        }
    };
    apply_output_budget(&mut body, endpoint, budget);
    Ok((endpoint, wire, body))
}

/// Applies `budget` to the output-budget field of `endpoint`'s body: the default when it has
/// none, the hard cap when it asks for more.
fn apply_output_budget(body: &mut JsonObject, endpoint: Endpoint, budget: OutputBudget) {
    if budget == OutputBudget::default() {
        return;
    }
    match endpoint {
        Endpoint::Messages => {
            anthropic::clamp_max_tokens(body, budget.default_max_tokens, budget.hard_max_tokens)
        }
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses => {
            let fields = retry::budget_fields(endpoint);
            let asked = fields
                .iter()
                .filter_map(|f| body.decode::<u64>(f).ok().flatten())
                .max();
            match budget.apply(asked) {
                Some(n) if Some(n) != asked => {
                    if asked.is_none() {
                        body.insert(fields[0], &n);
                    } else {
                        retry::apply_budget(body, endpoint, n);
                    }
                }
                _ => {}
            }
        }
        Endpoint::Embeddings | Endpoint::CountTokens => {}
    }
}
