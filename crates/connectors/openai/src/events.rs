//! An upstream SSE body as a stream of whole events.
//!
//! An error frame (`data: {"error":…}`) ends the stream: whatever follows it is dropped, because
//! some servers still send `data: [DONE]` after one (vLLM, hence self-hosted NIM) and a client
//! must never see a broken stream end like a complete one. An error frame before any data is
//! not forwarded at all but returned as the error it stands for, so the gateway can still
//! answer with a real status or fall back to the next target.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http_body::Body as _;
use tollgate_core::{EventStream, EventTooLarge, GatewayError, Secret, SseEvent, SseSplitter};

use crate::connector::Hooks;
use crate::errors::{early_stream_error, is_error_frame_scanned};
use crate::h1::UpBody;

/// Wraps an upstream body. Dropping the stream drops the body, which closes the upstream
/// connection (an unfinished HTTP/1.1 body cannot go back to the pool).
pub fn event_stream(
    body: UpBody,
    backend: Arc<str>,
    key: Option<Secret>,
    hooks: Arc<dyn Hooks>,
    hide_usage: bool,
) -> EventStream {
    Box::pin(Events {
        body,
        backend,
        key,
        hooks,
        hide_usage,
        splitter: SseSplitter::new(),
        ready: VecDeque::new(),
        scratch: Vec::new(),
        data_seen: false,
        ended: false,
        too_large: None,
    })
}

struct Events {
    body: UpBody,
    backend: Arc<str>,
    /// To scrub an early error frame turned into an error body.
    key: Option<Secret>,
    hooks: Arc<dyn Hooks>,
    /// The gateway asked for `include_usage` itself: the usage-only chunk is not the client's.
    hide_usage: bool,
    splitter: SseSplitter,
    /// Whole events split from chunks already read.
    ready: VecDeque<SseEvent>,
    /// Reused output buffer for the splitter.
    scratch: Vec<SseEvent>,
    /// Whether an event with data went out (comments do not count).
    data_seen: bool,
    ended: bool,
    /// The splitter refused an event: reported once the events before it went out.
    too_large: Option<EventTooLarge>,
}

impl Events {
    /// Passes one event on, ending the stream at an error frame.
    fn emit(&mut self, event: SseEvent) -> Result<SseEvent, GatewayError> {
        let Some(payload) = event.payload() else {
            return Ok(event);
        };
        // Scanned once: the relay reads the marks from the event.
        let marks = tollgate_core::Marks::scan(&payload);
        if !is_error_frame_scanned(&payload, marks) {
            self.data_seen = true;
            // OpenAI's extra final chunk for `include_usage`: no choices, a usage object.
            let usage_only = self.hide_usage && marks.usage_only_scanned(&payload);
            drop(payload);
            let event = event.with_marks(marks);
            return Ok(if usage_only { event.hidden() } else { event });
        }
        self.ended = true;
        self.ready.clear();
        self.too_large = None;
        if self.data_seen {
            return Ok(event);
        }
        Err(early_stream_error(
            &self.backend,
            &payload,
            self.key.as_ref(),
        ))
    }
}

impl Stream for Events {
    type Item = Result<SseEvent, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                match this.hooks.on_event(event) {
                    Some(event) => return Poll::Ready(Some(this.emit(event))),
                    None => continue,
                }
            }
            if let Some(e) = this.too_large.take() {
                return Poll::Ready(Some(Err(GatewayError::UpstreamFailed(format!(
                    "backend `{}` sent a stream event longer than {} bytes",
                    this.backend, e.limit
                )))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let pushed = this.splitter.push(data, &mut this.scratch);
                        this.ready.extend(this.scratch.drain(..));
                        if let Err(e) = pushed {
                            // The events before the oversized one still go out, then the
                            // error: the relay ends the stream with an error event.
                            this.ended = true;
                            this.too_large = Some(e);
                        }
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
