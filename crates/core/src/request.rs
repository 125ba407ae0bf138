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
        // The usual values are read straight from their raw text (`plain_string`, `flag`,
        // `plain_count`); anything else goes through serde as before, errors included.
        let model = match body.get("model").and_then(plain_string) {
            Some(m) => Ok(Some(m.to_owned())),
            None => body.decode::<String>("model"),
        };
        let model = match model {
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
        let stream = match body.raw("stream") {
            None | Some(b"null" | b"false") => Ok(Some(Some(false))),
            Some(b"true") => Ok(Some(Some(true))),
            Some(_) => body.decode::<Option<bool>>("stream"),
        };
        let stream = match stream {
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
            let plain = body.raw(field).is_none_or(plain_count);
            if !plain && body.decode::<Option<u64>>(field).is_err() {
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

/// The text of a raw JSON string without escapes — what serde decodes it to (a raw value is
/// valid JSON, so such a string holds no control character). `None` for anything else.
fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Whether a raw value is `null` or an integer serde reads as a `u64` without question:
/// digits only, no leading zero, at most 19 of them (19 digits always fit in a `u64`).
fn plain_count(raw: &[u8]) -> bool {
    raw == b"null"
        || (!raw.is_empty()
            && raw.len() <= 19
            && raw.iter().all(u8::is_ascii_digit)
            && (raw[0] != b'0' || raw.len() == 1))
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

    #[test]
    fn raw_fast_paths_read_as_serde_does() {
        for raw in [
            r#""m""#,
            r#""""#,
            r#""up:m""#,
            r#""a\"b""#,
            r#""\u0041""#,
            "null",
            "1",
            r#""é""#,
        ] {
            if let Some(fast) = plain_string(raw) {
                assert_eq!(
                    serde_json::from_str::<String>(raw).ok().as_deref(),
                    Some(fast)
                );
            }
        }
        assert_eq!(plain_string(r#""up:m""#), Some("up:m"));
        assert_eq!(plain_string(r#""a\"b""#), None);
        for raw in [
            "0",
            "7",
            "64",
            "00",
            "01",
            "-1",
            "1.0",
            "1e3",
            "null",
            "true",
            "\"5\"",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "",
        ] {
            if plain_count(raw.as_bytes()) {
                assert!(serde_json::from_str::<Option<u64>>(raw).is_ok(), "{raw}");
            }
        }
        assert!(plain_count(b"64") && plain_count(b"0") && plain_count(b"null"));
        assert!(!plain_count(b"01") && !plain_count(b"-1") && !plain_count(b"1.5"));
        // Through the whole parse: the same requests and the same refusals as before.
        let ok = ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"up:m","messages":[],"stream":true,"max_tokens":64}"#,
        )
        .expect("valid");
        assert_eq!((ok.model.as_str(), ok.stream), ("up:m", true));
        let escaped = ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"a\u002fb","messages":[],"stream":null}"#,
        )
        .expect("valid");
        assert_eq!((escaped.model.as_str(), escaped.stream), ("a/b", false));
        for (body, param) in [
            (&br#"{"model":null,"messages":[]}"#[..], "model"),
            (br#"{"model":"m","messages":[],"stream":"yes"}"#, "stream"),
            (
                br#"{"model":"m","messages":[],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                br#"{"model":"m","messages":[],"max_tokens":1.5}"#,
                "max_tokens",
            ),
        ] {
            let e = ClientRequest::parse(Endpoint::ChatCompletions, body).expect_err("refused");
            assert_eq!(param_of(e).as_deref(), Some(param));
        }
        assert!(ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[],"max_tokens":1e2}"#
        )
        .is_err());
    }

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
