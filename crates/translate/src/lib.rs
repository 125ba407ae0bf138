//! tollgate-translate: pure translators between the three protocols tollgate's doors speak —
//! OpenAI Chat Completions, OpenAI Responses and Anthropic Messages. Requests, whole answers
//! and SSE streams, byte-in/byte-out, with no I/O and no server, so each translator can be
//! fuzzed and benchmarked alone.
//!
//! The server decides *whether* to translate (a door's protocol against the protocols a backend
//! speaks natively) and drives these functions; everything here only decides *how*.
//!
//! - [`anthropic`]: Messages request → chat.completions body; chat.completions answer and
//!   stream → Messages answer and event stream; Anthropic-shaped errors; count_tokens.
//! - [`responses`]: Responses request → chat.completions body; chat.completions answer and
//!   stream → Responses object and event stream.
//! - [`to_messages`]: the other way, for a backend that speaks only Messages: chat.completions
//!   request → Messages body; Messages answer and stream → chat.completions answer and stream.
//! - [`chat`]: the chat.completions wire types both read (answers and stream chunks).

pub mod anthropic;
pub mod chat;
pub mod responses;
pub mod sse;
pub mod to_messages;

use bytes::BytesMut;

/// What the backend behind a translated request accepts beyond the chat.completions basics.
/// Built from the backend's configuration by the server; the translators only read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatTarget {
    /// How a request for reasoning (Anthropic `thinking`, Responses `reasoning.effort`) is
    /// expressed for this backend.
    pub reasoning: Reasoning,
    /// Whether `top_k` may be sent (vLLM accepts it; OpenAI and NIM's strict schema do not).
    pub top_k: bool,
}

/// A backend's reasoning control.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reasoning {
    /// The backend has none (or it is not configured): reasoning requests are dropped.
    #[default]
    Drop,
    /// `reasoning_effort: "low" | "medium" | "high"` (OpenAI o-series, gpt-oss on NIM/vLLM).
    Effort,
    /// `chat_template_kwargs: {<name>: true|false}` (vLLM-served models: Qwen3
    /// `enable_thinking`, DeepSeek V3.1 `thinking`).
    TemplateFlag(String),
}

/// A request the translator refuses: answered 400 `invalid_request_error`, naming `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    pub message: String,
    /// The offending field's path (`messages[2].content[0].type`), when there is one.
    pub param: Option<String>,
}

impl TranslateError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError {
            message: message.into(),
            param: Some(param.into()),
        }
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TranslateError {}

/// A failure after the client's 200 was sent, told in-stream in the door's own shape.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The HTTP status the failure would have had (502 broken upstream, 504 timeout, the
    /// status of an upstream error frame …).
    pub status: u16,
    /// Tollgate's OpenAI-style error code (`upstream_error`, `upstream_timeout` …).
    pub code: &'a str,
    /// Words for a person; never a secret (the server scrubs upstream text first).
    pub message: &'a str,
}

/// Turns one upstream event stream into the client's. The server's relay owns the timers
/// (keepalive, silence, deadline), reads usage and decides whether the upstream stream was
/// complete; a translator only rewrites events, so it never sees a keepalive.
///
/// Each call appends zero or more whole SSE events to `out`.
pub trait StreamTranslator: Send {
    /// One upstream event's data (the joined `data:` lines, `[DONE]` included).
    fn event(&mut self, data: &[u8], out: &mut BytesMut);

    /// The upstream stream is over and was complete: close what is open and end the stream
    /// the way the door's protocol ends a successful one.
    fn finish(&mut self, out: &mut BytesMut);

    /// The stream broke after the 200: end it with the door's error event(s), never with the
    /// protocol's success ending.
    fn fail(&mut self, failure: &Failure<'_>, out: &mut BytesMut);
}
