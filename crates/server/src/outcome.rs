//! `Outcome`: what one request came to, written as one log line when the request ends —
//! including when the client goes away mid-stream. Never a prompt, a body or a key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::{Endpoint, Target, Usage};

pub struct Outcome {
    pub request_id: String,
    /// The client key's name, when keys are configured.
    pub key: Option<String>,
    pub endpoint: Endpoint,
    pub stream: bool,
    /// The target that answered (or was tried last).
    pub target: Option<Target>,
    pub attempts: u32,
    /// The HTTP status sent; for a stream, 200 even if it later broke.
    pub status: u16,
    /// Why the request failed, in a few words, when it did.
    pub error: Option<&'static str>,
    pub started: Instant,
    /// Time to the first upstream event, for streams.
    pub first_event: Option<Duration>,
    pub usage: Option<Usage>,
    /// False until the response was fully written (a client that left mid-stream).
    pub completed: bool,
}

impl Outcome {
    pub fn new(request_id: String, key: Option<String>, endpoint: Endpoint, stream: bool) -> Self {
        Outcome {
            request_id,
            key,
            endpoint,
            stream,
            target: None,
            attempts: 0,
            status: 0,
            error: None,
            started: Instant::now(),
            first_event: None,
            usage: None,
            completed: false,
        }
    }

    pub fn backend(&self) -> Option<&Arc<str>> {
        self.target.as_ref().map(|t| &t.backend)
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let ttft_ms = self.first_event.map(|d| d.as_secs_f64() * 1000.0);
        let (backend, model) = match &self.target {
            Some(t) => (t.backend.as_ref(), t.model.as_str()),
            None => ("", ""),
        };
        let usage = self.usage.unwrap_or_default();
        tracing::info!(
            target: "tollgate::request",
            request_id = %self.request_id,
            key = self.key.as_deref().unwrap_or(""),
            endpoint = self.endpoint.label(),
            stream = self.stream,
            backend,
            model,
            status = self.status,
            error = self.error.unwrap_or(""),
            attempts = self.attempts,
            latency_ms,
            ttft_ms,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            completed = self.completed,
            "request"
        );
    }
}
