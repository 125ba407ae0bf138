//! Dispatch: sending a request to its targets in order until one answers, before any byte
//! of an answer reached the client. For a stream, "answers" means its first event arrived.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use tollgate_core::{
    ClientRequest, EventStream, GatewayError, ReplyBody, Request, SseEvent, Target,
};

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
}

/// Tries `targets` in order. The runtime snapshot is owned so the future can outlive the
/// handler (a stream commits its 200 before the first event when the upstream is slow).
pub async fn dispatch(
    runtime: Arc<Runtime>,
    targets: Vec<Target>,
    request: ClientRequest,
    request_id: String,
) -> Dispatched {
    let mut attempts = 0;
    let mut last: Option<(Target, GatewayError)> = None;
    let count = targets.len();
    let mut body = Some(request.body);
    for (i, target) in targets.into_iter().enumerate() {
        let Some(backend) = runtime.backends.get(&target.backend) else {
            // The router only yields configured backends; a miss means a bug, not a client error.
            let e = GatewayError::Internal(format!("backend `{}` is not built", target.backend));
            last = Some((target, e));
            continue;
        };
        // The last target may take the body; earlier ones need a copy for their successors.
        let this_body = if i + 1 == count {
            body.take().unwrap_or_default()
        } else {
            body.as_ref().cloned().unwrap_or_default()
        };
        attempts += 1;
        let upstream = Request {
            endpoint: request.endpoint,
            model: target.model.clone(),
            stream: request.stream,
            body: this_body,
            request_id: request_id.clone(),
        };
        let outcome = match backend.connector.send(upstream).await {
            Ok(reply) => match reply.body {
                ReplyBody::Complete(bytes) => Ok(Answer {
                    headers: reply.headers,
                    body: AnswerBody::Complete(bytes),
                }),
                ReplyBody::Events(mut events) => match events.next().await {
                    Some(Ok(first)) => Ok(Answer {
                        headers: reply.headers,
                        body: AnswerBody::Stream {
                            first,
                            rest: events,
                        },
                    }),
                    Some(Err(e)) => Err(e),
                    None => Err(GatewayError::UpstreamFailed(format!(
                        "backend `{}` ended the stream before its first event",
                        target.backend
                    ))),
                },
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(answer) => {
                return Dispatched {
                    result: Ok(answer),
                    target: Some(target),
                    attempts,
                }
            }
            Err(e) => {
                tracing::warn!(
                    request_id = %request_id,
                    backend = %target.backend,
                    model = %target.model,
                    status = e.status().as_u16(),
                    error = %e,
                    "attempt failed"
                );
                let next = i + 1 < count && falls_through(&e);
                last = Some((target, e));
                if !next {
                    break;
                }
            }
        }
    }
    let (target, error) = match last {
        Some((t, e)) => (Some(t), e),
        None => (
            None,
            GatewayError::BackendUnavailable("no target to try".into()),
        ),
    };
    Dispatched {
        result: Err(error),
        target,
        attempts,
    }
}

/// Whether an error belongs to the target (so the next target may do better) rather than to
/// the request (which every target would refuse).
fn falls_through(e: &GatewayError) -> bool {
    match e {
        GatewayError::UpstreamFailed(_)
        | GatewayError::UpstreamTimeout(_)
        | GatewayError::BackendUnavailable(_)
        | GatewayError::Internal(_) => true,
        GatewayError::Upstream { status, .. } => {
            matches!(status.as_u16(), 401 | 403 | 404 | 408 | 410 | 429) || status.is_server_error()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn upstream(status: u16) -> GatewayError {
        GatewayError::Upstream {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::new(),
            retry_after: None,
        }
    }

    #[test]
    fn client_errors_stop_target_errors_fall_through() {
        for s in [400, 413, 422] {
            assert!(!falls_through(&upstream(s)), "{s}");
        }
        for s in [401, 403, 404, 408, 410, 429, 500, 502, 503, 504] {
            assert!(falls_through(&upstream(s)), "{s}");
        }
        assert!(falls_through(&GatewayError::UpstreamFailed("reset".into())));
    }
}
