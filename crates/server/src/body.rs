//! The response body type: a whole buffer, or a streaming relay.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::relay::Relay;

/// Every response tollgate writes.
pub enum Body {
    /// A complete body; its length is known, so HTTP/1.1 sends `content-length`.
    Full(Option<Bytes>),
    /// An SSE relay; boxed because it is much larger than a buffer.
    Relay(Box<Relay>),
    /// The dashboard's live event stream.
    Events(Box<crate::dashboard::Events>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Relay(relay) => relay.poll_frame(cx).map(|f| f.map(Ok)),
            Body::Events(events) => events.poll_frame(cx).map(|f| f.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Relay(_) => SizeHint::default(),
            Body::Events(_) => SizeHint::default(),
        }
    }
}
