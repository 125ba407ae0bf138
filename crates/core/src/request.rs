//! The routed endpoints and the request a connector receives, parsed once from the client's
//! body and validated just enough to route it.

use bytes::Bytes;

use crate::error::GatewayError;
use crate::json::{JsonError, JsonObject};

/// A protocol clients speak to tollgate (a *door*) and backends speak natively. A request whose
/// door and backend differ is translated (`tollgate-translate`); one whose protocols match
/// passes through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI Chat Completions (and the legacy completions and embeddings endpoints).
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Messages,
}

impl Protocol {
    /// The `door` label of logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Chat => "chat",
            Protocol::Responses => "responses",
            Protocol::Messages => "anthropic",
        }
    }
}

/// An endpoint that tollgate routes by `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/responses`.
    Responses,
}

impl Endpoint {
    /// The path below an OpenAI-style API root (`{api_url}/{path}`, where `api_url` ends in
    /// `/v1`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages/count_tokens",
            Endpoint::Responses => "responses",
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Responses => "responses",
        }
    }

    /// The protocol this endpoint belongs to.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
                Protocol::Chat
            }
            Endpoint::Messages | Endpoint::CountTokens => Protocol::Messages,
            Endpoint::Responses => Protocol::Responses,
        }
    }

    /// Whether the endpoint can answer with an SSE stream.
    pub fn streams(self) -> bool {
        !matches!(self, Endpoint::Embeddings | Endpoint::CountTokens)
    }
}

/// A client request as parsed at the edge: the fields tollgate acts on, and the whole body.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub endpoint: Endpoint,
    /// The model the client asked for, before routing.
    pub model: String,
    /// Whether the client asked for an SSE stream.
    pub stream: bool,
    /// The body as sent; `model` is rewritten per target when forwarded.
    pub body: JsonObject,
}

impl ClientRequest {
    /// Parses and validates a body for `endpoint`. Each refusal names the field at fault.
    pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<Self, GatewayError> {
        Self::parse_shared(endpoint, &Bytes::copy_from_slice(bytes))
    }

    /// Like [`ClientRequest::parse`], with field values kept as slices of `bytes` (no copy).
    pub fn parse_shared(endpoint: Endpoint, bytes: &Bytes) -> Result<Self, GatewayError> {
        Self::parse_routed(endpoint, bytes, None)
    }

    /// Like [`ClientRequest::parse_shared`] for a request whose model the path names
    /// (`/v1/models/{name}/-/…`): the body's `model` may then be absent, and `model` reads as
    /// `routed`.
    pub fn parse_routed(
        endpoint: Endpoint,
        bytes: &Bytes,
        routed: Option<&str>,
    ) -> Result<Self, GatewayError> {
        // Every `JsonError` is the client's: its message says which problem (syntax, kind, depth).
        let body = JsonObject::parse_bytes(bytes)
            .map_err(|e: JsonError| GatewayError::invalid(e.to_string()))?;
        let model = match body.decode::<String>("model") {
            Ok(Some(m)) if !m.trim().is_empty() => m,
            Ok(_) if routed.is_some() => routed.unwrap_or_default().to_owned(),
            Ok(_) => {
                return Err(GatewayError::invalid_field(
                    "model",
                    "missing required field `model` (a non-empty string)",
                ))
            }
            Err(_) => {
                return Err(GatewayError::invalid_field(
                    "model",
                    "field `model` must be a string",
                ))
            }
        };
        let stream = match body.decode::<Option<bool>>("stream") {
            Ok(v) => v.flatten().unwrap_or(false),
            Err(_) => {
                return Err(GatewayError::invalid_field(
                    "stream",
                    "field `stream` must be a boolean",
                ))
            }
        };
        match endpoint {
            Endpoint::ChatCompletions => {
                match body.raw("messages") {
                    None => {
                        return Err(GatewayError::invalid_field(
                            "messages",
                            "missing required field `messages` (an array)",
                        ))
                    }
                    // Raw values carry no surrounding white space, so the first byte tells the kind.
                    Some(raw) if !raw.starts_with(b"[") => {
                        return Err(GatewayError::invalid_field(
                            "messages",
                            "field `messages` must be an array",
                        ))
                    }
                    Some(_) => {}
                }
            }
            Endpoint::Messages | Endpoint::CountTokens => match body.raw("messages") {
                None => {
                    return Err(GatewayError::invalid_field(
                        "messages",
                        "missing required field `messages` (an array)",
                    ))
                }
                Some(raw) if !raw.starts_with(b"[") => {
                    return Err(GatewayError::invalid_field(
                        "messages",
                        "field `messages` must be an array",
                    ))
                }
                Some(_) => {}
            },
            Endpoint::Responses => match body.raw("input") {
                None => {
                    return Err(GatewayError::invalid_field(
                        "input",
                        "missing required field `input` (a string or an array of items)",
                    ))
                }
                Some(raw) if !(raw.starts_with(b"[") || raw.starts_with(b"\"")) => {
                    return Err(GatewayError::invalid_field(
                        "input",
                        "field `input` must be a string or an array of items",
                    ))
                }
                Some(_) => {}
            },
            Endpoint::Completions => require(&body, "prompt")?,
            Endpoint::Embeddings => require(&body, "input")?,
        }
        for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            if body.decode::<Option<u64>>(field).is_err() {
                return Err(GatewayError::invalid_field(
                    field,
                    format!("field `{field}` must be a non-negative integer"),
                ));
            }
        }
        Ok(ClientRequest {
            endpoint,
            model,
            stream,
            body,
        })
    }
}

fn require(body: &JsonObject, field: &str) -> Result<(), GatewayError> {
    if body.contains(field) {
        Ok(())
    } else {
        Err(GatewayError::invalid_field(
            field,
            format!("missing required field `{field}`"),
        ))
    }
}

/// What a connector sends upstream: one target's model and the body to forward.
#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: Endpoint,
    /// The model as the upstream knows it (the part after `backend:`).
    pub model: String,
    pub stream: bool,
    /// The client's body; the connector writes `model` and applies its quirks.
    pub body: JsonObject,
    /// The request id, sent upstream as `x-request-id`.
    pub request_id: String,
    /// Client headers meant for a backend that speaks the door's protocol natively
    /// (`anthropic-beta`, `anthropic-version`); empty otherwise.
    pub headers: http::HeaderMap,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(e: GatewayError) -> Option<String> {
        match e {
            GatewayError::InvalidRequest { param, .. } => param,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn chat_validation_names_the_field() {
        let chat = Endpoint::ChatCompletions;
        let ok = ClientRequest::parse(chat, br#"{"model":"m","messages":[],"stream":true}"#)
            .expect("valid");
        assert!(ok.stream);
        assert_eq!(ok.model, "m");
        let cases: [(&[u8], Option<&str>); 8] = [
            (b"{", None),
            (b"[]", None),
            (br#"{"messages":[]}"#, Some("model")),
            (br#"{"model":7,"messages":[]}"#, Some("model")),
            (br#"{"model":"m"}"#, Some("messages")),
            (br#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (
                br#"{"model":"m","messages":[],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                br#"{"model":"m","messages":[],"max_tokens":-1}"#,
                Some("max_tokens"),
            ),
        ];
        for (body, param) in cases {
            let e = ClientRequest::parse(chat, body).expect_err("invalid");
            assert_eq!(
                param_of(e).as_deref(),
                param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn null_stream_means_not_streaming() {
        let r = ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[],"stream":null}"#,
        )
        .expect("valid");
        assert!(!r.stream);
    }

    #[test]
    fn other_endpoints_need_their_input() {
        assert!(
            ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"m","input":"x"}"#).is_ok()
        );
        let e =
            ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"m"}"#).expect_err("no input");
        assert_eq!(param_of(e).as_deref(), Some("input"));
        let e = ClientRequest::parse(Endpoint::Completions, br#"{"model":"m"}"#)
            .expect_err("no prompt");
        assert_eq!(param_of(e).as_deref(), Some("prompt"));
    }
}
