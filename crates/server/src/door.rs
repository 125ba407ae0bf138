//! Doors: the protocols clients speak to tollgate (OpenAI Chat, OpenAI Responses, Anthropic
//! Messages). A door shapes its errors, its keepalives and its in-stream error events, and
//! knows how to answer in its own protocol when the backend spoke another: the translators
//! themselves are `tollgate-translate`'s, this module only picks and drives them.
//!
//! Everything else — auth, routing, limits, dispatch, retries, breakers, metrics, logs — is
//! the same code for every door.

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Response, StatusCode};
use tollgate_core::{Endpoint, GatewayError, JsonObject, Protocol, SseSplitter};
use tollgate_translate::to_messages::{self, ChatReplyContext, MessagesToChat};
use tollgate_translate::{anthropic, responses, Failure, StreamTranslator};

use crate::app::json_response;
use crate::body::Body;

/// The error response of `door`: OpenAI-shaped on the OpenAI doors, Anthropic-shaped (with
/// Anthropic's statuses: upstream overload is 529 `overloaded_error`) on the Messages door.
pub fn error_response(door: Protocol, error: &GatewayError) -> Response<Body> {
    let mut resp = match door {
        Protocol::Chat | Protocol::Responses => json_response(error.status(), error.body()),
        Protocol::Messages => {
            let (status, body) = anthropic_error(error);
            json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
            )
        }
    };
    if let Some(wait) = error.retry_after() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let GatewayError::MethodNotAllowed { allow, .. } = error {
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// An error as Anthropic writes it: status and body.
fn anthropic_error(error: &GatewayError) -> (u16, Bytes) {
    match error {
        // Upstream bodies are OpenAI-shaped by the connectors' contract.
        GatewayError::Upstream { status, body, .. } => {
            anthropic::error_from_openai(status.as_u16(), body)
        }
        other => anthropic::error_body(other.status().as_u16(), &other.to_string()),
    }
}

/// The in-stream error event of `door` for a stream passed through untouched (no
/// translator): a chat `data: {"error":…}` frame, an Anthropic `event: error`, or a
/// Responses `error` event numbered after the `events` the client already received.
pub fn error_event(door: Protocol, error: &GatewayError, events: u64) -> Bytes {
    match door {
        Protocol::Chat => error.sse_event(),
        Protocol::Messages => {
            let (_, body) = anthropic_error(error);
            let mut out = BytesMut::with_capacity(body.len() + 24);
            out.extend_from_slice(b"event: error\ndata: ");
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\n\n");
            out.freeze()
        }
        Protocol::Responses => {
            let event = serde_json::json!({
                "type": "error",
                "code": error.code(),
                "message": error.to_string(),
                "param": null,
                "sequence_number": events,
            });
            let mut out = BytesMut::new();
            tollgate_translate::sse::write_named(&mut out, "error", &event);
            out.freeze()
        }
    }
}

/// A failure as a translator tells it in-stream.
pub fn failure_of(error: &GatewayError) -> (u16, &'static str, String) {
    let message = match error {
        GatewayError::Upstream { body, .. } => upstream_message(body),
        other => other.to_string(),
    };
    (error.status().as_u16(), error.code(), message)
}

/// The `error.message` of an OpenAI-shaped body, or the body as text.
fn upstream_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// What a door needs to answer in its own protocol when the backend spoke another one: the
/// client's request (for the echoed model, tool names, the input-token estimate) and the ids
/// to give the answer. Contexts are built only when a translation is needed.
pub struct Reply {
    door: Protocol,
    /// The client's request, kept for the Responses and Messages doors (whose answers echo
    /// it); empty on the Chat door.
    request: JsonObject,
    request_id: String,
    /// The model name the client asked for, echoed in translated answers.
    requested_model: String,
    /// Chat door: the client asked for the final usage chunk (`stream_options`).
    include_usage: bool,
}

impl Reply {
    /// The reply of a request on `endpoint`; `request` is the client's body.
    pub fn new(
        endpoint: Endpoint,
        request: &JsonObject,
        request_id: &str,
        requested_model: String,
    ) -> Reply {
        let door = endpoint.protocol();
        let include_usage = door == Protocol::Chat
            && request.contains("stream_options")
            && to_messages::chat_reply_context(request, String::new(), String::new()).include_usage;
        Reply {
            door,
            // Only the translating doors need the client's request again, for the answer.
            request: match door {
                Protocol::Chat => JsonObject::default(),
                _ => request.clone(),
            },
            request_id: request_id.to_owned(),
            requested_model,
            include_usage,
        }
    }

    pub fn door(&self) -> Protocol {
        self.door
    }

    pub fn requested_model(&self) -> &str {
        &self.requested_model
    }

    /// The stream translator from `wire` (what the backend spoke) to the door's protocol;
    /// `None` when they are the same and events pass through untouched.
    pub fn translator(
        self,
        wire: Protocol,
    ) -> Result<Option<Box<dyn StreamTranslator>>, GatewayError> {
        if wire == self.door {
            return Ok(None);
        }
        match (self.door, wire) {
            (Protocol::Messages, Protocol::Chat) => {
                let ctx = self.anthropic_context();
                Ok(Some(Box::new(anthropic::ChatToMessages::new(ctx))))
            }
            (Protocol::Responses, Protocol::Chat) => {
                let ctx = self.responses_context()?;
                Ok(Some(Box::new(responses::ChatToResponses::new(ctx))))
            }
            (Protocol::Chat, Protocol::Messages) => {
                let ctx = self.chat_context(self.include_usage);
                Ok(Some(Box::new(MessagesToChat::new(ctx))))
            }
            // No direct translator: through Chat, whose usage chunk the second one needs.
            (Protocol::Responses, Protocol::Messages) => {
                let first = MessagesToChat::new(self.chat_context(true));
                let second = responses::ChatToResponses::new(self.responses_context()?);
                Ok(Some(Box::new(Chain::new(first, second))))
            }
            (door, wire) => Err(untranslatable(door, wire)),
        }
    }

    /// A whole answer of `wire` in the door's protocol.
    pub fn whole(&self, wire: Protocol, body: Bytes) -> Result<Bytes, GatewayError> {
        if wire == self.door {
            return Ok(body);
        }
        let unreadable = |e: tollgate_translate::TranslateError| {
            GatewayError::UpstreamFailed(format!(
                "the backend's answer could not be translated: {e}"
            ))
        };
        match (self.door, wire) {
            (Protocol::Messages, Protocol::Chat) => {
                anthropic::from_chat_response(&body, &self.anthropic_context()).map_err(unreadable)
            }
            (Protocol::Responses, Protocol::Chat) => {
                responses::from_chat_response(&body, &self.responses_context()?).map_err(unreadable)
            }
            (Protocol::Chat, Protocol::Messages) => {
                to_messages::to_chat_response(&body, &self.chat_context(false)).map_err(unreadable)
            }
            (Protocol::Responses, Protocol::Messages) => {
                let chat = to_messages::to_chat_response(&body, &self.chat_context(false))
                    .map_err(unreadable)?;
                responses::from_chat_response(&chat, &self.responses_context()?).map_err(unreadable)
            }
            (door, wire) => Err(untranslatable(door, wire)),
        }
    }

    fn chat_context(&self, include_usage: bool) -> ChatReplyContext {
        ChatReplyContext {
            id: format!("chatcmpl-{}", self.request_id),
            model: self.requested_model.clone(),
            include_usage,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    fn anthropic_context(&self) -> anthropic::ReplyContext {
        anthropic::reply_context(
            &self.request,
            format!("msg_{}", self.request_id),
            self.requested_model.clone(),
        )
    }

    fn responses_context(&self) -> Result<responses::ReplyContext, GatewayError> {
        // Pushed, not `format!`ed: the id is built once per request on the Responses door.
        let mut id = String::with_capacity(5 + self.request_id.len());
        id.push_str("resp_");
        id.push_str(&self.request_id);
        responses::reply_context(&self.request, id, self.requested_model.clone()).map_err(invalid)
    }
}

fn untranslatable(door: Protocol, wire: Protocol) -> GatewayError {
    GatewayError::Internal(format!(
        "no translation from {} answers to the {} door",
        wire.label(),
        door.label()
    ))
}

/// A translator's refusal as a 400 naming the field.
pub fn invalid(e: tollgate_translate::TranslateError) -> GatewayError {
    GatewayError::InvalidRequest {
        message: e.message,
        param: e.param,
    }
}

/// Writes a failure through a translator.
pub fn fail_through(
    translator: &mut dyn StreamTranslator,
    error: &GatewayError,
    out: &mut BytesMut,
) {
    let (status, code, message) = failure_of(error);
    translator.fail(
        &Failure {
            status,
            code,
            message: &message,
        },
        out,
    );
}

/// Two translators in a row (Messages → Chat → Responses): the first's events are split and
/// each one's data fed to the second. Only for pairs with no direct translator.
struct Chain<A, B> {
    first: A,
    second: B,
    between: BytesMut,
    splitter: SseSplitter,
    events: Vec<tollgate_core::SseEvent>,
}

impl<A: StreamTranslator, B: StreamTranslator> Chain<A, B> {
    fn new(first: A, second: B) -> Self {
        Chain {
            first,
            second,
            between: BytesMut::new(),
            splitter: SseSplitter::new(),
            events: Vec::new(),
        }
    }

    /// Feeds what the first wrote into the second.
    fn pass(&mut self, out: &mut BytesMut) {
        if self.between.is_empty() {
            return;
        }
        // The first writes whole events, so nothing is left over (and none is over the cap).
        let _ = self
            .splitter
            .push(self.between.split().freeze(), &mut self.events);
        for event in self.events.drain(..) {
            if let Some(data) = event.payload() {
                self.second.event(&data, out);
            }
        }
    }
}

impl<A: StreamTranslator, B: StreamTranslator> StreamTranslator for Chain<A, B> {
    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        self.first.event(data, &mut self.between);
        self.pass(out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.first.finish(&mut self.between);
        self.pass(out);
        self.second.finish(out);
    }

    fn fail(&mut self, failure: &Failure<'_>, out: &mut BytesMut) {
        // The failure is told in the client's protocol only.
        self.second.fail(failure, out);
    }
}
