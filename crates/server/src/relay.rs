//! The streaming relay: upstream SSE events go to the client as they arrive — the exact
//! bytes received when the client speaks the backend's protocol, or rewritten by the door's
//! translator when it does not. While the upstream is silent for the keepalive interval —
//! before its first event too — a keepalive frame goes out instead. A stream that breaks ends
//! with the door's error event and never with its success ending (`[DONE]`, `message_stop`,
//! `response.completed`).
//!
//! Every event already buffered goes out in one frame (one write), capped at
//! [`MAX_FRAME`]: an upstream that sends a burst (a batching server under load, a translated
//! door) costs one write per burst, not one per event.
//!
//! The relay is the response body itself, polled by hyper: no task and no channel, so
//! backpressure is the socket's, and a client that leaves drops the relay, which drops the
//! upstream stream and closes that connection at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tollgate_core::config::KeepaliveFormat;
use tollgate_core::{find_usage, EventStream, GatewayError, Marks, Peek, Protocol, SseEvent};
use tollgate_translate::StreamTranslator;

use crate::dispatch::{AnswerBody, Dispatched};
use crate::door::{self, Reply};
use crate::outcome::Outcome;
use crate::runtime::RelaySettings;

/// The comment keepalive: ignored by every SSE parser.
const COMMENT_KEEPALIVE: &[u8] = b": keepalive\n\n";

/// The most bytes one frame gathers from buffered events before it is written.
pub const MAX_FRAME: usize = 64 * 1024;

/// What a frame that gathers more than one event starts with (a 20-chunk chat stream is
/// about 3.5 KiB).
const GATHER_START: usize = 8 * 1024;

/// Dispatch still running after the 200 was committed.
pub type Pending = Pin<Box<dyn Future<Output = Dispatched> + Send>>;

enum State {
    /// Waiting for a target's first event (the upstream was slower than the keepalive
    /// interval, so the 200 went out first).
    Waiting(Pending),
    Streaming(EventStream),
    Finished,
}

/// How upstream events become the client's.
enum Shape {
    /// Not known until dispatch answers (the backend decides the wire protocol).
    Undecided(Reply),
    /// Same protocol on both sides: events go out as received.
    Pass,
    /// The door's translator writes the client's events.
    Translate(Box<dyn StreamTranslator>),
}

/// What the relay has seen of the stream, to tell a complete stream from a broken one.
#[derive(Default)]
struct Seen {
    /// The wire protocol's success ending (`[DONE]`, `message_stop`, `response.completed`).
    done: bool,
    error_frame: bool,
    finish_reason: bool,
    /// Data events sent to the client (a passed-through Responses stream numbers its events).
    sent: u64,
    /// The stream's `id`, `model`, `created`, for `chunk` keepalives.
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
}

/// The frame being gathered: a lone passed-through event stays the upstream's own buffer;
/// a second one (or a translator's output) makes it a copy.
#[derive(Default)]
struct Gather {
    first: Option<Bytes>,
    buf: BytesMut,
}

impl Gather {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.buf.len()
    }

    fn push(&mut self, bytes: Bytes) {
        if self.first.is_none() && self.buf.is_empty() {
            self.first = Some(bytes);
            return;
        }
        self.spill();
        self.buf.extend_from_slice(&bytes);
    }

    /// Where a translator writes: after whatever was gathered.
    fn writer(&mut self) -> &mut BytesMut {
        self.spill();
        &mut self.buf
    }

    fn spill(&mut self) {
        if let Some(first) = self.first.take() {
            // A burst gathers a few KiB: one allocation instead of a doubling per event.
            self.buf.reserve(first.len().max(GATHER_START));
            self.buf.extend_from_slice(&first);
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

pub struct Relay {
    state: State,
    /// An event to send before polling the upstream again (the first one, from dispatch).
    queued: Option<SseEvent>,
    shape: Shape,
    /// The client's protocol.
    door: Protocol,
    /// The backend's protocol (what the events being read are); the door's until known.
    wire: Protocol,
    settings: RelaySettings,
    /// One timer for the three times below, armed at the earliest ([`Relay::next_due`]).
    /// Each is checked again when it fires, so a time that moved later (an event went out or
    /// came in since) costs only an early wake and a re-arm, not a timer reset per event.
    timer: Pin<Box<Sleep>>,
    /// A keepalive is due `keepalive_interval` after this.
    last_sent: Instant,
    /// `server.request_timeout` for the whole request.
    deadline: Instant,
    /// While streaming, the upstream has failed `max_silent_wait` after this. Keepalives do
    /// not count: they are ours, not the upstream's.
    last_event: Instant,
    seen: Seen,
    gather: Gather,
    /// The model the client asked for, used in `chunk` keepalives until the stream names one.
    requested_model: String,
    /// Resolves when the shutdown grace is over; registered at the first poll.
    closing: Pin<Box<tokio::sync::futures::OwnedNotified>>,
    outcome: Outcome,
}

impl Relay {
    /// A relay in `state`; `wire` is the backend's protocol when dispatch has answered.
    fn new(
        state: State,
        queued: Option<SseEvent>,
        reply: Reply,
        wire: Option<Protocol>,
        settings: RelaySettings,
        outcome: Outcome,
    ) -> Self {
        let door = reply.door();
        let requested_model = reply.requested_model().to_owned();
        let mut refused = None;
        let shape = match wire {
            None => Shape::Undecided(reply),
            Some(wire) => match reply.translator(wire) {
                Ok(Some(t)) => Shape::Translate(t),
                Ok(None) => Shape::Pass,
                Err(e) => {
                    refused = Some(e);
                    Shape::Pass
                }
            },
        };
        let now = Instant::now();
        let deadline = Instant::from_std(outcome.started) + settings.request_timeout;
        // A relay that starts waiting was committed because the client had already heard
        // nothing for one interval: its first keepalive is due at once.
        let last_sent = match state {
            State::Waiting(_) => now.checked_sub(settings.keepalive_interval).unwrap_or(now),
            _ => now,
        };
        let mut first_due = deadline.min(last_sent + settings.keepalive_interval);
        if matches!(state, State::Streaming(_)) {
            first_due = first_due.min(now + settings.max_silent_wait);
        }
        let closing = Box::pin(settings.closing.closed());
        let mut relay = Relay {
            state,
            queued,
            shape,
            door,
            wire: wire.unwrap_or(door),
            settings,
            timer: Box::pin(tokio::time::sleep_until(first_due)),
            last_sent,
            deadline,
            last_event: now,
            seen: Seen::default(),
            gather: Gather::default(),
            requested_model,
            closing,
            outcome,
        };
        // Dispatch only plans translations it has; a pair without one is a bug, told
        // in-stream rather than hidden.
        if let Some(e) = refused {
            relay.queued = None;
            relay.fail(e, "untranslatable");
        }
        relay
    }

    /// A relay for a stream whose first event is already in hand, read in `wire`'s protocol.
    pub fn streaming(
        first: SseEvent,
        rest: EventStream,
        wire: Protocol,
        reply: Reply,
        settings: RelaySettings,
        outcome: Outcome,
    ) -> Self {
        Relay::new(
            State::Streaming(rest),
            Some(first),
            reply,
            Some(wire),
            settings,
            outcome,
        )
    }

    /// A relay that first waits for dispatch to finish.
    pub fn waiting(
        pending: Pending,
        reply: Reply,
        settings: RelaySettings,
        outcome: Outcome,
    ) -> Self {
        Relay::new(
            State::Waiting(pending),
            None,
            reply,
            None,
            settings,
            outcome,
        )
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        // Checked first, so that a busy stream cannot outlast the shutdown grace (the
        // signal's future is polled, to be woken by it, only where this poll waits).
        if !matches!(self.state, State::Finished) && self.settings.closing.is_closed() {
            let e = GatewayError::BackendUnavailable(
                "tollgate is shutting down: the stream was still open when server.shutdown_grace ended".into(),
            );
            return self.fail_now(e, "shutdown");
        }
        if let State::Waiting(pending) = &mut self.state {
            if let Poll::Ready(dispatched) = pending.as_mut().poll(cx) {
                self.start(dispatched);
            }
        }
        let mut took = false;
        if let Some(event) = self.queued.take() {
            self.take_in(event);
            took = true;
        }
        // Everything the upstream already sent goes into this frame, up to its cap.
        while self.gather.len() < MAX_FRAME {
            let State::Streaming(events) = &mut self.state else {
                break;
            };
            match events.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(event))) => {
                    self.take_in(event);
                    took = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    let e = self.settings.masker.mask_error(e);
                    self.fail(e, "stream_broken")
                }
                Poll::Ready(None) => self.end_of_stream(),
            }
        }
        // One reading of the clock for all the events taken in by this poll.
        let now = took.then(Instant::now);
        if let Some(now) = now {
            self.last_event = now;
        }
        if let Some(frame) = self.gather.take() {
            self.last_sent = now.unwrap_or_else(Instant::now);
            return Poll::Ready(Some(Frame::data(frame)));
        }
        if matches!(self.state, State::Finished) {
            return Poll::Ready(None);
        }

        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= self.deadline {
                let e = GatewayError::UpstreamTimeout(format!(
                    "the request exceeded server.request_timeout ({}s)",
                    self.settings.request_timeout.as_secs()
                ));
                return self.fail_now(e, "request_timeout");
            }
            if matches!(self.state, State::Streaming(_))
                && now >= self.last_event + self.settings.max_silent_wait
            {
                let e = GatewayError::UpstreamTimeout(format!(
                    "the backend sent nothing for failure_handling.max_silent_wait ({}s)",
                    self.settings.max_silent_wait.as_secs()
                ));
                return self.fail_now(e, "upstream_silent");
            }
            let keepalive_due = now >= self.last_sent + self.settings.keepalive_interval;
            if keepalive_due {
                self.last_sent = now;
            }
            let due = self.next_due();
            self.timer.as_mut().reset(due);
            if keepalive_due {
                self.outcome.metrics().keepalive();
                crate::dashboard::keepalive(&self.outcome);
                return Poll::Ready(Some(Frame::data(self.keepalive_frame())));
            }
        }
        if self.closing.as_mut().poll(cx).is_ready() {
            let e = GatewayError::BackendUnavailable(
                "tollgate is shutting down: the stream was still open when server.shutdown_grace ended".into(),
            );
            return self.fail_now(e, "shutdown");
        }
        Poll::Pending
    }

    /// When the timer must fire next: the request's deadline, the next keepalive, and while
    /// streaming the silence limit, whichever comes first.
    fn next_due(&self) -> Instant {
        let due = self
            .deadline
            .min(self.last_sent + self.settings.keepalive_interval);
        match self.state {
            State::Streaming(_) => due.min(self.last_event + self.settings.max_silent_wait),
            _ => due,
        }
    }

    /// Dispatch finished after the 200 went out: stream its answer, or end with its error.
    fn start(&mut self, mut dispatched: Dispatched) {
        self.outcome.dispatched(&mut dispatched);
        let answer = match dispatched.result {
            Ok(answer) => answer,
            // Dispatch masked it already.
            Err(e) => return self.fail(e, "upstream_error"),
        };
        let (first, rest) = match answer.body {
            AnswerBody::Stream { first, rest } => (first, rest),
            // The upstream ignored `stream` (after the 200 went out): its whole chat answer is
            // told as the stream it would have been.
            AnswerBody::Complete(bytes) => match synthetic_stream(answer.wire, &bytes) {
                Some((first, rest)) => (first, rest),
                None => {
                    let e = GatewayError::UpstreamFailed(
                        "the backend answered without a stream".into(),
                    );
                    return self.fail(e, "not_a_stream");
                }
            },
        };
        self.wire = answer.wire;
        let shape = std::mem::replace(&mut self.shape, Shape::Pass);
        self.shape = match shape {
            Shape::Undecided(reply) => match reply.translator(answer.wire) {
                Ok(Some(t)) => Shape::Translate(t),
                Ok(None) => Shape::Pass,
                Err(e) => return self.fail(e, "untranslatable"),
            },
            decided => decided,
        };
        self.state = State::Streaming(rest);
        self.queued = Some(first);
        // The silence limit starts to count: the timer may have to fire sooner.
        let due = self.next_due();
        if due < self.timer.deadline() {
            self.timer.as_mut().reset(due);
        }
    }

    /// Takes one upstream event into the frame being gathered: as it is, through the
    /// translator, or not at all (an event the gateway asked for itself).
    fn take_in(&mut self, event: SseEvent) {
        crate::dashboard::event(&self.outcome);
        let Some(payload) = event.payload() else {
            // A comment (an upstream's own keepalive): passed on when passing through; a
            // translated door writes its own keepalives.
            if matches!(self.shape, Shape::Pass) {
                self.gather.push(event.into_raw());
            }
            return;
        };
        self.observe(&event, &payload);
        if self.seen.error_frame {
            self.error_frame(&event, &payload);
            return;
        }
        match &mut self.shape {
            Shape::Translate(translator) => translator.event(&payload, self.gather.writer()),
            // The usage chunk tollgate asked for itself: read, not relayed.
            _ if event.is_hidden() => {}
            _ => {
                self.seen.sent += 1;
                drop(payload);
                self.gather.push(event.into_raw());
            }
        }
        // The protocol's own ending: the stream is over, whether or not the upstream closes
        // its body (some keep the connection open after `[DONE]`).
        if self.seen.done {
            self.end_of_stream();
        }
    }

    /// An upstream error frame after the 200: the stream's end, counted as that error.
    fn error_frame(&mut self, event: &SseEvent, payload: &[u8]) {
        if let Some(backend) = self.outcome.backend() {
            self.outcome
                .metrics()
                .upstream_error(backend, "stream_error_frame");
        }
        self.outcome.error = Some("upstream_error_frame");
        self.outcome.completed = true;
        let masker = &self.settings.masker;
        let e = masker.mask_error(frame_error(self.wire, payload));
        self.outcome.broken_status = Some(e.status().as_u16());
        match &mut self.shape {
            Shape::Translate(translator) => {
                door::fail_through(translator.as_mut(), &e, self.gather.writer());
            }
            _ => self.gather.push(masker.mask_bytes(event.raw().clone())),
        }
        tracing::warn!(request_id = %self.outcome.request_id, "the backend ended the stream with an error frame");
        self.state = State::Finished;
    }

    /// The upstream body ended: complete when the wire protocol's ending (or a finish
    /// reason) was seen, broken otherwise.
    fn end_of_stream(&mut self) {
        if self.seen.done || self.seen.finish_reason {
            if let Shape::Translate(translator) = &mut self.shape {
                translator.finish(self.gather.writer());
            }
            self.state = State::Finished;
            self.outcome.completed = true;
            return;
        }
        let e = GatewayError::UpstreamFailed(
            "the backend ended the stream before it was complete".into(),
        );
        self.fail(e, "stream_incomplete");
    }

    /// Reads what the gateway must know of one event, in the wire protocol's terms.
    fn observe(&mut self, event: &SseEvent, payload: &[u8]) {
        if self.outcome.first_event.is_none() {
            self.outcome.first_event = Some(self.outcome.started.elapsed());
            crate::dashboard::first_event(&self.outcome);
        }
        match self.wire {
            Protocol::Chat => self.observe_chat(event, payload),
            Protocol::Messages | Protocol::Responses => {
                let name = event_name(event.raw());
                let (done, failed, usage) = match self.wire {
                    Protocol::Messages => (
                        name == b"message_stop",
                        name == b"error",
                        name == b"message_start" || name == b"message_delta",
                    ),
                    _ => (
                        name == b"response.completed" || name == b"response.incomplete",
                        name == b"response.failed" || name == b"error",
                        name == b"response.completed" || name == b"response.incomplete",
                    ),
                };
                self.seen.done |= done;
                self.seen.error_frame |= failed;
                if usage {
                    if let Some(found) = find_usage(payload) {
                        let so_far = self.outcome.usage.unwrap_or_default();
                        self.outcome.usage = Some(so_far.merge(found));
                    }
                }
            }
        }
    }

    fn observe_chat(&mut self, event: &SseEvent, payload: &[u8]) {
        if payload.trim_ascii() == b"[DONE]" {
            self.seen.done = true;
            return;
        }
        // Most chunks carry only a delta: scan for what matters (or read what the connector
        // found), parse only what has it.
        let marks = event.marks().unwrap_or_else(|| Marks::scan(payload));
        self.seen.error_frame |= marks.error;
        self.seen.finish_reason |= marks.finished;
        if marks.usage {
            if let Some(usage) = find_usage(payload) {
                self.outcome.usage = Some(usage);
            }
        }
        // `chunk` keepalives reuse the stream's id and model: read them once.
        if self.door == Protocol::Chat
            && self.settings.keepalive_format == KeepaliveFormat::Chunk
            && self.seen.id.is_none()
        {
            let peek = Peek::read(payload);
            self.seen.id = peek.id.map(|s| s.into_owned());
            self.seen.model = peek.model.map(|s| s.into_owned());
            self.seen.created = peek.created;
        }
    }

    /// Ends the stream with the door's error event (and no success ending).
    fn fail(&mut self, error: GatewayError, why: &'static str) {
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
        self.outcome.broken_status = Some(error.status().as_u16());
        self.outcome.completed = true;
        match &mut self.shape {
            Shape::Translate(translator) => {
                door::fail_through(translator.as_mut(), &error, self.gather.writer())
            }
            _ => {
                let event = door::error_event(self.door, &error, self.seen.sent);
                self.gather.push(event);
            }
        }
    }

    /// `fail`, written at once (from a timer, outside the gathering loop).
    fn fail_now(&mut self, error: GatewayError, why: &'static str) -> Poll<Option<Frame<Bytes>>> {
        self.fail(error, why);
        Poll::Ready(self.gather.take().map(Frame::data))
    }

    fn keepalive_frame(&self) -> Bytes {
        match self.door {
            Protocol::Messages => Bytes::from_static(tollgate_translate::anthropic::PING),
            Protocol::Responses => Bytes::from_static(COMMENT_KEEPALIVE),
            Protocol::Chat => match self.settings.keepalive_format {
                KeepaliveFormat::Comment => Bytes::from_static(COMMENT_KEEPALIVE),
                KeepaliveFormat::Chunk => self.chunk_keepalive(),
            },
        }
    }

    fn chunk_keepalive(&self) -> Bytes {
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

/// A whole chat.completion as the chunks of its stream: one with the whole message, one with
/// the usage (the gateway's own, as if it had asked `include_usage`), `[DONE]`. `None` for
/// another protocol's answer, or one that does not read as a chat.completion.
fn synthetic_stream(wire: Protocol, body: &[u8]) -> Option<(SseEvent, EventStream)> {
    if wire != Protocol::Chat {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let choice = v["choices"].get(0)?;
    let message = &choice["message"];
    let mut delta = serde_json::json!({"role": "assistant", "content": message["content"]});
    for field in ["reasoning_content", "reasoning"] {
        if !message[field].is_null() {
            delta[field] = message[field].clone();
        }
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        let calls: Vec<serde_json::Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = serde_json::json!(i);
                c
            })
            .collect();
        delta["tool_calls"] = serde_json::Value::Array(calls);
    }
    let chunk = |choices: serde_json::Value| {
        serde_json::json!({
            "id": v["id"], "object": "chat.completion.chunk", "created": v["created"],
            "model": v["model"], "choices": choices,
        })
    };
    let first = chunk(serde_json::json!([{
        "index": 0, "delta": delta, "finish_reason": choice["finish_reason"]
    }]));
    let mut rest = Vec::new();
    if !v["usage"].is_null() {
        let mut usage = chunk(serde_json::json!([]));
        usage["usage"] = v["usage"].clone();
        rest.push(Ok(SseEvent::data(usage.to_string().as_bytes()).hidden()));
    }
    rest.push(Ok(SseEvent::data(b"[DONE]")));
    let first = SseEvent::data(first.to_string().as_bytes());
    Some((first, Box::pin(futures_util::stream::iter(rest))))
}

/// The value of an event's `event:` line (empty when it has none).
fn event_name(raw: &[u8]) -> &[u8] {
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"event:") {
            return value.strip_prefix(b" ").unwrap_or(value);
        }
    }
    b""
}

/// An upstream error frame as the error it stands for: its numeric `code` (or `status`) as
/// the status when that is an HTTP error status, else 502; its message as the message.
fn frame_error(wire: Protocol, payload: &[u8]) -> GatewayError {
    if wire == Protocol::Messages {
        // Anthropic's `error` event: its type tells the status (overloaded → 503 …).
        let (status, body) = tollgate_translate::to_messages::event_error(payload);
        return GatewayError::Upstream {
            status: http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
            body,
            retry_after: None,
        };
    }
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let error = match wire {
        Protocol::Responses if v["type"] == "response.failed" => &v["response"]["error"],
        Protocol::Responses => &v,
        _ => &v["error"],
    };
    let status = error["code"]
        .as_u64()
        .or_else(|| error["status"].as_u64())
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(502);
    let message = error["message"]
        .as_str()
        .unwrap_or("the backend ended the stream with an error")
        .to_owned();
    let body =
        tollgate_core::error::openai_error_body(&message, "upstream_error", None, "upstream_error");
    GatewayError::Upstream {
        status: http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
        body,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::stream;

    use super::*;
    use crate::metrics::Metrics;
    use crate::runtime::Closing;

    fn settings() -> RelaySettings {
        RelaySettings {
            closing: Arc::new(Closing::default()),
            masker: Arc::default(),
            keepalive_interval: Duration::from_secs(8),
            keepalive_format: KeepaliveFormat::Comment,
            request_timeout: Duration::from_secs(60),
            max_silent_wait: Duration::from_secs(60),
        }
    }

    fn chunk(i: usize) -> SseEvent {
        SseEvent::data(
            format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":"t{i}"}},"finish_reason":null}}]}}"#
            )
            .as_bytes(),
        )
    }

    /// Every poll result until the relay ends.
    fn drain(mut relay: Relay) -> Vec<Bytes> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut frames = Vec::new();
        loop {
            match relay.poll_frame(&mut cx) {
                Poll::Ready(Some(frame)) => frames.push(frame.into_data().unwrap_or_default()),
                Poll::Ready(None) => return frames,
                Poll::Pending => panic!("a burst already in hand should not wait"),
            }
        }
    }

    fn relay(events: Vec<SseEvent>, door: Endpoint) -> Relay {
        let outcome = Outcome::new(
            "r".into(),
            door.label(),
            door.protocol(),
            Arc::new(Metrics::new()),
        );
        let mut rest: Vec<Result<SseEvent, GatewayError>> = events.into_iter().map(Ok).collect();
        let first = match rest.remove(0) {
            Ok(e) => e,
            Err(_) => unreachable!("built from Ok events"),
        };
        let reply = Reply::new(door, &tollgate_core::JsonObject::default(), "r", "m".into());
        Relay::streaming(
            first,
            Box::pin(stream::iter(rest)),
            Protocol::Chat,
            reply,
            settings(),
            outcome,
        )
    }

    use tollgate_core::Endpoint;

    #[tokio::test]
    async fn a_burst_goes_out_in_one_frame() {
        let mut events: Vec<SseEvent> = (0..20).map(chunk).collect();
        events.push(SseEvent::data(
            br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ));
        events.push(SseEvent::data(b"[DONE]"));
        let expected: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
        let frames = drain(relay(events, Endpoint::ChatCompletions));
        assert_eq!(frames.len(), 1, "22 buffered events, one write");
        assert_eq!(frames[0].as_ref(), expected.as_slice(), "byte for byte");
    }

    #[tokio::test]
    async fn a_frame_stops_growing_at_its_cap() {
        let big = "x".repeat(20 * 1024);
        let mut events: Vec<SseEvent> = (0..10)
            .map(|_| {
                SseEvent::data(
                    format!(r#"{{"choices":[{{"delta":{{"content":"{big}"}}}}]}}"#).as_bytes(),
                )
            })
            .collect();
        events.push(SseEvent::data(b"[DONE]"));
        let total: usize = events.iter().map(|e| e.raw().len()).sum();
        let frames = drain(relay(events, Endpoint::ChatCompletions));
        assert!(frames.len() >= 3, "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.len() < MAX_FRAME + 21 * 1024));
        assert_eq!(frames.iter().map(Bytes::len).sum::<usize>(), total);
    }

    #[tokio::test]
    async fn a_translated_burst_goes_out_in_one_frame_too() {
        let mut events: Vec<SseEvent> = (0..20).map(chunk).collect();
        events.push(SseEvent::data(
            br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ));
        events.push(SseEvent::data(b"[DONE]"));
        let frames = drain(relay(events, Endpoint::Messages));
        assert_eq!(frames.len(), 1);
        let summary = tollgate_translate::anthropic::grammar::check(&frames[0]).expect("grammar");
        assert_eq!(
            summary.text,
            (0..20).map(|i| format!("t{i}")).collect::<String>()
        );
    }
}
