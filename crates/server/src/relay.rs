//! The streaming relay: upstream SSE events go to the client as the exact bytes received,
//! one frame per event, as they arrive. While the upstream is silent for the keepalive
//! interval — before its first event too — a keepalive frame goes out instead. A stream
//! that breaks ends with an error event and never with `[DONE]`.
//!
//! The relay is the response body itself, polled by hyper: no task and no channel, so
//! backpressure is the socket's, and a client that leaves drops the relay, which drops the
//! upstream stream and closes that connection at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tollgate_core::config::KeepaliveFormat;
use tollgate_core::{find_usage, EventStream, GatewayError, Marks, Peek, SseEvent};

use crate::dispatch::{AnswerBody, Dispatched};
use crate::outcome::Outcome;
use crate::runtime::RelaySettings;

/// The comment keepalive: ignored by every SSE parser.
const COMMENT_KEEPALIVE: &[u8] = b": keepalive\n\n";

/// Dispatch still running after the 200 was committed.
pub type Pending = Pin<Box<dyn Future<Output = Dispatched> + Send>>;

enum State {
    /// Waiting for a target's first event (the upstream was slower than the keepalive
    /// interval, so the 200 went out first).
    Waiting(Pending),
    Streaming(EventStream),
    Finished,
}

/// What the relay has seen of the stream, to tell a complete stream from a broken one.
#[derive(Default)]
struct Seen {
    done: bool,
    error_frame: bool,
    finish_reason: bool,
    /// The stream's `id`, `model`, `created`, for `chunk` keepalives.
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
}

pub struct Relay {
    state: State,
    /// An event to send before polling the upstream again (the first one, from dispatch).
    queued: Option<SseEvent>,
    settings: RelaySettings,
    /// Fires each keepalive interval; re-armed lazily from `last_sent`.
    keepalive: Pin<Box<Sleep>>,
    last_sent: Instant,
    /// `server.request_timeout` for the whole request.
    deadline: Pin<Box<Sleep>>,
    /// Fires `max_silent_wait` after the last upstream event; re-armed lazily from
    /// `last_event`. Keepalives do not count: they are ours, not the upstream's.
    silence: Pin<Box<Sleep>>,
    last_event: Instant,
    seen: Seen,
    /// The model the client asked for, used in `chunk` keepalives until the stream names one.
    requested_model: String,
    outcome: Outcome,
}

impl Relay {
    fn new(
        state: State,
        queued: Option<SseEvent>,
        settings: RelaySettings,
        requested_model: String,
        outcome: Outcome,
    ) -> Self {
        let now = Instant::now();
        let deadline = Instant::from_std(outcome.started) + settings.request_timeout;
        // A relay that starts waiting was committed because the client had already heard
        // nothing for one interval: its first keepalive is due at once.
        let last_sent = match state {
            State::Waiting(_) => now.checked_sub(settings.keepalive_interval).unwrap_or(now),
            _ => now,
        };
        Relay {
            state,
            queued,
            settings,
            keepalive: Box::pin(tokio::time::sleep_until(
                last_sent + settings.keepalive_interval,
            )),
            last_sent,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            silence: Box::pin(tokio::time::sleep_until(now + settings.max_silent_wait)),
            last_event: now,
            seen: Seen::default(),
            requested_model,
            outcome,
        }
    }

    /// A relay for a stream whose first event is already in hand.
    pub fn streaming(
        first: SseEvent,
        rest: EventStream,
        settings: RelaySettings,
        requested_model: String,
        outcome: Outcome,
    ) -> Self {
        Relay::new(
            State::Streaming(rest),
            Some(first),
            settings,
            requested_model,
            outcome,
        )
    }

    /// A relay that first waits for dispatch to finish.
    pub fn waiting(
        pending: Pending,
        settings: RelaySettings,
        requested_model: String,
        outcome: Outcome,
    ) -> Self {
        Relay::new(
            State::Waiting(pending),
            None,
            settings,
            requested_model,
            outcome,
        )
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if let Some(event) = self.queued.take() {
            return Poll::Ready(Some(self.forward(event)));
        }
        match &mut self.state {
            State::Finished => return Poll::Ready(None),
            State::Waiting(pending) => {
                if let Poll::Ready(dispatched) = pending.as_mut().poll(cx) {
                    return Poll::Ready(Some(self.start(dispatched)));
                }
            }
            State::Streaming(_) => {
                while let State::Streaming(events) = &mut self.state {
                    match events.as_mut().poll_next(cx) {
                        Poll::Pending => break,
                        // An event the gateway asked for itself (the usage chunk): read, not sent.
                        Poll::Ready(Some(Ok(event))) if event.is_hidden() => {
                            self.observe(&event);
                            self.last_event = Instant::now();
                        }
                        Poll::Ready(Some(Ok(event))) => {
                            return Poll::Ready(Some(self.forward(event)))
                        }
                        Poll::Ready(Some(Err(e))) => {
                            return Poll::Ready(Some(self.fail(e, "stream_broken")))
                        }
                        Poll::Ready(None) => {
                            if self.seen.done || self.seen.error_frame || self.seen.finish_reason {
                                self.state = State::Finished;
                                self.outcome.completed = true;
                                return Poll::Ready(None);
                            }
                            let e = GatewayError::UpstreamFailed(
                                "the backend ended the stream before it was complete".into(),
                            );
                            return Poll::Ready(Some(self.fail(e, "stream_incomplete")));
                        }
                    }
                }
            }
        }

        if self.deadline.as_mut().poll(cx).is_ready() {
            let e = GatewayError::UpstreamTimeout(format!(
                "the request exceeded server.request_timeout ({}s)",
                self.settings.request_timeout.as_secs()
            ));
            return Poll::Ready(Some(self.fail(e, "request_timeout")));
        }
        if matches!(self.state, State::Streaming(_)) {
            while self.silence.as_mut().poll(cx).is_ready() {
                let due = self.last_event + self.settings.max_silent_wait;
                if Instant::now() >= due {
                    let e = GatewayError::UpstreamTimeout(format!(
                        "the backend sent nothing for failure_handling.max_silent_wait ({}s)",
                        self.settings.max_silent_wait.as_secs()
                    ));
                    return Poll::Ready(Some(self.fail(e, "upstream_silent")));
                }
                self.silence.as_mut().reset(due);
            }
        }
        while self.keepalive.as_mut().poll(cx).is_ready() {
            let due = self.last_sent + self.settings.keepalive_interval;
            if Instant::now() >= due {
                self.last_sent = Instant::now();
                self.keepalive
                    .as_mut()
                    .reset(self.last_sent + self.settings.keepalive_interval);
                self.outcome.metrics().keepalive();
                return Poll::Ready(Some(Frame::data(self.keepalive_frame())));
            }
            // Events went out since the timer was armed: wait the rest of the interval.
            self.keepalive.as_mut().reset(due);
        }
        Poll::Pending
    }

    /// Dispatch finished after the 200 went out: stream its answer, or end with its error.
    fn start(&mut self, mut dispatched: Dispatched) -> Frame<Bytes> {
        self.outcome.dispatched(&mut dispatched);
        match dispatched.result {
            Ok(answer) => match answer.body {
                AnswerBody::Stream { first, rest } => {
                    self.state = State::Streaming(rest);
                    self.forward(first)
                }
                AnswerBody::Complete(_) => {
                    let e = GatewayError::UpstreamFailed(
                        "the backend answered without a stream".into(),
                    );
                    self.fail(e, "not_a_stream")
                }
            },
            Err(e) => self.fail(e, "upstream_error"),
        }
    }

    /// Sends one upstream event unchanged, noting what the gateway must know of it.
    fn forward(&mut self, event: SseEvent) -> Frame<Bytes> {
        self.observe(&event);
        self.last_sent = Instant::now();
        self.last_event = self.last_sent;
        Frame::data(event.into_raw())
    }

    fn observe(&mut self, event: &SseEvent) {
        let Some(payload) = event.payload() else {
            return; // a comment, e.g. an upstream's own keepalive
        };
        if self.outcome.first_event.is_none() {
            self.outcome.first_event = Some(self.outcome.started.elapsed());
        }
        if payload.trim_ascii() == b"[DONE]" {
            self.seen.done = true;
            return;
        }
        // Most chunks carry only a delta: scan for what matters, parse only what has it.
        let marks = Marks::scan(&payload);
        self.seen.error_frame |= marks.error;
        self.seen.finish_reason |= marks.finished;
        if marks.usage {
            if let Some(usage) = find_usage(&payload) {
                self.outcome.usage = Some(usage);
            }
        }
        // `chunk` keepalives reuse the stream's id and model: read them once.
        if self.settings.keepalive_format == KeepaliveFormat::Chunk && self.seen.id.is_none() {
            let peek = Peek::read(&payload);
            self.seen.id = peek.id.map(|s| s.into_owned());
            self.seen.model = peek.model.map(|s| s.into_owned());
            self.seen.created = peek.created;
        }
    }

    /// Ends the stream with an error event (and no `[DONE]`).
    fn fail(&mut self, error: GatewayError, why: &'static str) -> Frame<Bytes> {
        // A failure after content went out is the upstream's (or the deadline's); one before
        // (dispatch's own error) was counted by dispatch.
        if self.outcome.first_event.is_some() {
            if let Some(backend) = self.outcome.backend() {
                self.outcome.metrics().upstream_error(backend, why);
            }
        }
        tracing::warn!(request_id = %self.outcome.request_id, error = %error, "stream ended with an error");
        self.state = State::Finished;
        self.outcome.error = Some(why);
        self.outcome.completed = true;
        Frame::data(error.sse_event())
    }

    fn keepalive_frame(&self) -> Bytes {
        match self.settings.keepalive_format {
            KeepaliveFormat::Comment => Bytes::from_static(COMMENT_KEEPALIVE),
            KeepaliveFormat::Chunk => {
                let id = self
                    .seen
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("chatcmpl-{}", self.outcome.request_id));
                let model = self.seen.model.as_deref().unwrap_or(&self.requested_model);
                let created = self.seen.created.unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                });
                let chunk = serde_json::json!({
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": null}],
                });
                SseEvent::data(chunk.to_string().as_bytes()).into_raw()
            }
        }
    }
}
