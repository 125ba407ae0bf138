//! An upstream SSE body as a stream of whole events.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http_body::Body as _;
use hyper::body::Incoming;
use tollgate_core::{EventStream, GatewayError, SseEvent, SseSplitter};

use crate::connector::Hooks;

/// Wraps an upstream body. Dropping the stream drops the body, which closes the upstream
/// connection (an unfinished HTTP/1.1 body cannot go back to the pool).
pub fn event_stream(body: Incoming, backend: Arc<str>, hooks: Arc<dyn Hooks>) -> EventStream {
    Box::pin(Events {
        body,
        backend,
        hooks,
        splitter: SseSplitter::new(),
        ready: VecDeque::new(),
        scratch: Vec::new(),
        ended: false,
    })
}

struct Events {
    body: Incoming,
    backend: Arc<str>,
    hooks: Arc<dyn Hooks>,
    splitter: SseSplitter,
    /// Whole events split from chunks already read.
    ready: VecDeque<SseEvent>,
    /// Reused output buffer for the splitter.
    scratch: Vec<SseEvent>,
    ended: bool,
}

impl Stream for Events {
    type Item = Result<SseEvent, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                match this.hooks.on_event(event) {
                    Some(event) => return Poll::Ready(Some(Ok(event))),
                    None => continue,
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.splitter.push(data, &mut this.scratch);
                        this.ready.extend(this.scratch.drain(..));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(GatewayError::UpstreamFailed(format!(
                        "backend `{}` broke the stream: {e}",
                        this.backend
                    )))));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.splitter.finish().is_some() {
                        return Poll::Ready(Some(Err(GatewayError::UpstreamFailed(format!(
                            "backend `{}` ended the stream inside an event",
                            this.backend
                        )))));
                    }
                }
            }
        }
    }
}
