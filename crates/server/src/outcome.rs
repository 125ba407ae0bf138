//! `Outcome`: what one request came to, recorded once when the request ends — including when
//! the client goes away mid-stream — as one log line and its metrics. Never a prompt, a body
//! or a key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::{Protocol, Target, Usage};

use crate::metrics::{Finished, Metrics};

pub struct Outcome {
    pub request_id: String,
    /// The client key's name, when keys are configured.
    pub key: Option<String>,
    /// The endpoint's label (`Endpoint::label`), `passthrough` for a provider pass-through,
    /// `unknown` for a path that is no endpoint (still logged and counted).
    pub endpoint: &'static str,
    /// The protocol the client spoke.
    pub door: Protocol,
    pub stream: bool,
    /// The target that answered (or was tried last).
    pub target: Option<Target>,
    pub attempts: u32,
    /// The HTTP status sent; for a stream, 200 even if it later broke.
    pub status: u16,
    /// Why the request failed, in a few words, when it did.
    pub error: Option<&'static str>,
    /// For a stream that broke after its 200: the status its failure stands for (502, 504,
    /// an upstream error frame's own). Metrics count the request under it, not under 200.
    pub broken_status: Option<u16>,
    pub started: Instant,
    /// When the first upstream attempt started; what precedes it is the gateway's own time.
    pub upstream_started: Option<Instant>,
    /// Time to the first upstream event, for streams.
    pub first_event: Option<Duration>,
    pub usage: Option<Usage>,
    /// False until the response was fully written (a client that left mid-stream).
    pub completed: bool,
    /// Tokens held in the limits store (the key's, and the answering backend's), settled with
    /// the real usage when the request ends.
    /// Each with the tokens it holds: what is charged when the upstream answered but reported
    /// no usage (a stream cut short, a backend that counts nothing).
    pub reservations: crate::limits::Reservations,
    /// Whether an answer started: a whole answer, or a stream's first upstream event. A
    /// request that fails before (every target refused, even after a committed 200) is
    /// charged nothing.
    pub answered: bool,
    /// The dashboard's trace of this request, while the dashboard is enabled.
    pub trace: Option<crate::dashboard::Trace>,
    metrics: Arc<Metrics>,
}

impl Outcome {
    pub fn new(
        request_id: String,
        endpoint: &'static str,
        door: Protocol,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.inflight(1.0);
        Outcome {
            request_id,
            key: None,
            endpoint,
            door,
            stream: false,
            target: None,
            attempts: 0,
            status: 0,
            error: None,
            broken_status: None,
            started: Instant::now(),
            upstream_started: None,
            first_event: None,
            usage: None,
            completed: false,
            reservations: crate::limits::Reservations::default(),
            answered: false,
            trace: None,
            metrics,
        }
    }

    pub fn backend(&self) -> Option<&Arc<str>> {
        self.target.as_ref().map(|t| &t.backend)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Outcome {
    /// Settles the request's reservations: the real usage when the upstream reported it; the
    /// reservation itself when an answer started but its usage is unknown (so leaving early is
    /// no way round a budget); nothing when no answer started (a refusal, a failed attempt).
    fn settle(&mut self) {
        if self.reservations.is_empty() {
            return;
        }
        let used = self
            .usage
            .map(|u| u.total_tokens.max(u.prompt_tokens + u.completion_tokens));
        let answered = self.answered || self.first_event.is_some();
        let now = std::time::SystemTime::now();
        for (reservation, held) in self.reservations.drain() {
            match used {
                Some(tokens) => reservation.settle(tokens, now),
                None if answered => reservation.settle(held, now),
                None => drop(reservation),
            }
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.settle();
        crate::dashboard::finish(self);
        // One clock read for both.
        let now = Instant::now();
        let total = now.saturating_duration_since(self.started);
        let upstream = self
            .upstream_started
            .map(|t| now.saturating_duration_since(t));
        let (backend, model) = match &self.target {
            Some(t) => (t.backend.as_ref(), t.model.as_str()),
            None => ("", ""),
        };
        // A client that left before the end gets no status line of ours to count; 499 is the
        // convention (nginx) for "client closed the request".
        let status = if self.completed { self.status } else { 499 };
        let counted = self
            .broken_status
            .filter(|_| self.completed)
            .unwrap_or(status);
        self.metrics.inflight(-1.0);
        let endpoint = self.endpoint;
        self.metrics.finished(&Finished {
            door: self.door.label(),
            endpoint,
            backend: self.target.as_ref().map(|t| t.backend.as_ref()),
            model: self.target.as_ref().map(|t| t.model.as_str()),
            key: self.key.as_deref(),
            status: counted,
            total,
            first_token: self.first_event,
            upstream,
            usage: self.usage,
        });
        let usage = self.usage.unwrap_or_default();
        let line = RequestLine {
            request_id: self.request_id.as_str(),
            key: self.key.as_deref().unwrap_or(""),
            door: self.door.label(),
            endpoint,
            stream: self.stream,
            backend,
            model,
            status,
            error: self.error.unwrap_or(""),
            attempts: self.attempts,
            latency_ms: total.as_secs_f64() * 1000.0,
            ttft_ms: self.first_event.map(|d| d.as_secs_f64() * 1000.0),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            completed: self.completed,
        };
        match LINE_WRITER.get() {
            // The writer is the JSON format's own: the same line as below, without tracing's
            // dispatch on the way. The filter still decides whether it is written.
            Some(write) => {
                if tracing::enabled!(target: "tollgate::request", tracing::Level::INFO) {
                    write(&line);
                }
            }
            None => line.log(),
        }
    }
}

/// The one log line a request ends with (target `tollgate::request`, level INFO).
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub request_id: &'a str,
    pub key: &'a str,
    pub door: &'a str,
    pub endpoint: &'a str,
    pub stream: bool,
    pub backend: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub error: &'a str,
    pub attempts: u32,
    pub latency_ms: f64,
    /// Absent from the line when `None`.
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub completed: bool,
}

impl RequestLine<'_> {
    /// Writes the line through tracing, as every format but the writer's does.
    pub fn log(&self) {
        // Every value is a plain str or number (no `%`/`?`, no format string): recording them
        // costs no formatting.
        tracing::info!(
            target: "tollgate::request",
            message = "request",
            request_id = self.request_id,
            key = self.key,
            door = self.door,
            endpoint = self.endpoint,
            stream = self.stream,
            backend = self.backend,
            model = self.model,
            status = self.status,
            error = self.error,
            attempts = self.attempts,
            latency_ms = self.latency_ms,
            ttft_ms = self.ttft_ms,
            prompt_tokens = self.prompt_tokens,
            completion_tokens = self.completion_tokens,
            completed = self.completed,
        );
    }
}

/// A writer of request lines set by the process's logging (its JSON format), in place of
/// tracing's event path for the line every request writes.
static LINE_WRITER: std::sync::OnceLock<fn(&RequestLine<'_>)> = std::sync::OnceLock::new();

/// Sets the request line's writer, once per process; false if one was set already.
pub fn set_line_writer(write: fn(&RequestLine<'_>)) -> bool {
    LINE_WRITER.set(write).is_ok()
}
