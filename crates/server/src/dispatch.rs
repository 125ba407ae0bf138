//! Dispatch: sending a request to its targets in order until one answers, before any byte
//! of an answer reached the client. For a stream, "answers" means its first event arrived.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use tollgate_core::{
    ClientRequest, EventStream, GatewayError, ReplyBody, Request, SseEvent, Target,
};

use crate::breaker::Permit;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::retry::{self, Verdict};
use crate::runtime::Runtime;

/// A target's successful answer.
pub struct Answer {
    /// Allow-listed upstream headers.
    pub headers: HeaderMap,
    pub body: AnswerBody,
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
}

impl Outcome {
    /// Takes what dispatch found into the request's outcome.
    pub fn dispatched(&mut self, d: &mut Dispatched) {
        self.target = d.target.take();
        self.attempts = d.attempts;
        self.upstream_started = d.upstream_started.map(Instant::into_std);
    }
}

/// Tries `targets` in order, each up to `1 + retries` times with backoff, skipping backends
/// whose circuit is open. The runtime snapshot is owned so the future can outlive the
/// handler (a stream commits its 200 before the first event when the upstream is slow).
pub async fn dispatch(
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    targets: Vec<Target>,
    request: ClientRequest,
    request_id: String,
    deadline: Instant,
) -> Dispatched {
    let settings = runtime.retry;
    let mut upstream_started = None;
    let mut attempts = 0;
    let mut last: Option<(Target, GatewayError)> = None;
    let mut open_circuits: Vec<Arc<str>> = Vec::new();
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
        // A smaller output budget, once the upstream said the request overflows its context.
        let mut budget: Option<u64> = None;
        let mut retries = 0;
        loop {
            let permit = backend.breaker.permit();
            if permit == Permit::Refused {
                open_circuits.push(target.backend.clone());
                break;
            }
            attempts += 1;
            upstream_started.get_or_insert_with(Instant::now);
            // Cloning a body copies no value: keys and values are slices of the client's body.
            let mut body = request.body.clone();
            if let Some(budget) = budget {
                retry::apply_budget(&mut body, budget);
            }
            let upstream = Request {
                endpoint: request.endpoint,
                model: target.model.clone(),
                stream: request.stream,
                body,
                request_id: request_id.clone(),
            };
            let tried = attempt(
                backend.connector.as_ref(),
                upstream,
                &target,
                runtime.relay.max_silent_wait,
            );
            let outcome = match tokio::time::timeout_at(deadline, tried).await {
                Ok(outcome) => outcome,
                Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                    "the request exceeded server.request_timeout ({}s)",
                    runtime.relay.request_timeout.as_secs()
                ))),
            };
            let error = match outcome {
                Ok(answer) => {
                    if backend.breaker.succeeded() {
                        metrics.circuit(&target.backend, false);
                    }
                    return Dispatched {
                        result: Ok(answer),
                        target: Some(target),
                        attempts,
                        upstream_started,
                    };
                }
                Err(e) => e,
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
                if let Some(fits) = retry::fitting_budget(&error, &request.body) {
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
                    return Dispatched {
                        result: Err(error),
                        target: Some(target),
                        attempts,
                        upstream_started,
                    }
                }
            }
        }
        if timed_out_overall(deadline) {
            break;
        }
    }
    let (target, error) = match last {
        Some((t, e)) => (Some(t), e),
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
    Dispatched {
        result: Err(error),
        target,
        attempts,
        upstream_started,
    }
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
    first_event: Duration,
) -> Result<Answer, GatewayError> {
    let reply = connector.send(upstream).await?;
    match reply.body {
        ReplyBody::Complete(bytes) => Ok(Answer {
            headers: reply.headers,
            body: AnswerBody::Complete(bytes),
        }),
        ReplyBody::Events(mut events) => {
            match tokio::time::timeout(first_event, events.next()).await {
                Ok(Some(Ok(first))) => Ok(Answer {
                    headers: reply.headers,
                    body: AnswerBody::Stream {
                        first,
                        rest: events,
                    },
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
