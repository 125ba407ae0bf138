//! The response body type: a whole buffer, a streaming relay, or a pass-through answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::outcome::Outcome;
use crate::relay::Relay;

/// Why a response body broke: only a pass-through answer can (its upstream broke it), and then
/// hyper aborts the connection, so the client sees a cut rather than a short body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response tollgate writes.
pub enum Body {
    /// A complete body; its length is known, so HTTP/1.1 sends `content-length`.
    Full(Option<Bytes>),
    /// An SSE relay; boxed because it is much larger than a buffer.
    Relay(Box<Relay>),
    /// A pass-through answer, streamed as the backend sends it.
    Forward(Box<Forwarded>),
    /// The dashboard's live event stream.
    Events(Box<crate::dashboard::Events>),
}

/// A backend's answer to a pass-through request, with the request's outcome, which is
/// reported when the answer ends (or the client leaves).
pub struct Forwarded {
    pub body: tollgate_core::ForwardBody,
    pub outcome: Outcome,
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        Body::Full(None)
    }

    /// A pass-through answer. It counts as complete once the server has it all: at its end, or
    /// at once when it has no body (HEAD, 204, 304, length 0), which the server never polls.
    pub fn forward(body: tollgate_core::ForwardBody, mut outcome: Outcome) -> Self {
        if http_body::Body::is_end_stream(&body) {
            outcome.completed = true;
        }
        Body::Forward(Box::new(Forwarded { body, outcome }))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Relay(relay) => relay.poll_frame(cx).map(|f| f.map(Ok)),
            Body::Forward(forwarded) => {
                let polled = Pin::new(&mut forwarded.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => forwarded.outcome.completed = true,
                    // The last frame: the server asks for no more once the body says so.
                    Poll::Ready(Some(Ok(_))) if forwarded.body.is_end_stream() => {
                        forwarded.outcome.completed = true;
                    }
                    Poll::Ready(Some(Err(_))) => {
                        forwarded.outcome.error = Some("stream_broken");
                        forwarded.outcome.completed = true;
                    }
                    _ => {}
                }
                polled
            }
            Body::Events(events) => events.poll_frame(cx).map(|f| f.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Relay(_) | Body::Events(_) => false,
            Body::Forward(f) => f.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Relay(_) => SizeHint::default(),
            Body::Forward(f) => f.body.size_hint(),
            Body::Events(_) => SizeHint::default(),
        }
    }
}
