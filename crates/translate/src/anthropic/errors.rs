//! Anthropic-shaped errors: `{"type":"error","error":{"type":…,"message":…}}` with the status
//! and `type` the Anthropic API reference and the SDKs use (400 `invalid_request_error`, 401
//! `authentication_error`, 402 `billing_error`, 403 `permission_error`, 404 `not_found_error`,
//! 413 `request_too_large`, 429 `rate_limit_error`, 500 `api_error`, 504 `timeout_error`,
//! 529 `overloaded_error`), and the keepalive event.
//!
//! An upstream's 503 (NIM and vLLM say "overloaded" that way) is told as 529
//! `overloaded_error`: the Anthropic SDKs and Claude Code retry 529 by themselves.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::events::{ErrorBody, ErrorOut};
use super::text::Str;

/// The Messages stream's keepalive: the SDKs skip `ping` events.
pub const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";

/// The status to answer with and the Anthropic error `type` for an error of `status`.
pub(crate) fn classify(status: u16) -> (u16, &'static str) {
    match status {
        400 => (400, "invalid_request_error"),
        401 => (401, "authentication_error"),
        402 => (402, "billing_error"),
        403 => (403, "permission_error"),
        404 => (404, "not_found_error"),
        408 => (408, "timeout_error"),
        413 => (413, "request_too_large"),
        429 => (429, "rate_limit_error"),
        503 | 529 => (529, "overloaded_error"),
        504 => (504, "timeout_error"),
        // Anthropic uses `invalid_request_error` for the 4xx it does not list.
        405..=499 => (status, "invalid_request_error"),
        _ => (status.max(500), "api_error"),
    }
}

/// The status to send and the Anthropic error body for an error of `status`.
pub fn error_body(status: u16, message: &str) -> (u16, Bytes) {
    let (status, kind) = classify(status);
    (status, body(kind, message))
}

fn body(kind: &str, message: &str) -> Bytes {
    let error = ErrorBody {
        kind: "error",
        error: ErrorOut { kind, message },
    };
    // Serializing two strings into memory cannot fail.
    serde_json::to_vec(&error)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// An upstream's error body (OpenAI's `{"error":{"message",…}}`, FastAPI's
/// `{"detail":…}` from NIM, a bare `{"message"}` or plain text) told in Anthropic's shape.
///
/// A context-length refusal gets the words `prompt is too long` in front: that is the
/// message Anthropic sends for it, and Claude Code looks for those words to offer compaction.
pub fn error_from_openai(status: u16, openai_error_body: &[u8]) -> (u16, Bytes) {
    let found = read_upstream_error(openai_error_body);
    let message = found
        .message
        .unwrap_or_else(|| fallback_message(status, openai_error_body));
    let too_long = found.code.as_deref() == Some("context_length_exceeded")
        || message.contains("maximum context length")
        || message.contains("context length is")
        || message.contains("context_length_exceeded");
    let message = if too_long && !message.starts_with("prompt is too long") {
        format!("prompt is too long: {message}")
    } else {
        message
    };
    error_body(status, &message)
}

/// What an upstream error body says, whichever shape it has.
#[derive(Default)]
struct Found {
    message: Option<String>,
    code: Option<String>,
}

fn read_upstream_error(body: &[u8]) -> Found {
    #[derive(Deserialize)]
    struct Shape<'a> {
        #[serde(borrow, default)]
        error: Option<&'a RawValue>,
        #[serde(borrow, default)]
        detail: Option<&'a RawValue>,
        #[serde(borrow, default)]
        message: Option<Str<'a>>,
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(borrow, default)]
        message: Option<Str<'a>>,
        #[serde(borrow, default)]
        code: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Detail<'a> {
        #[serde(borrow, default)]
        msg: Option<Str<'a>>,
        #[serde(default)]
        loc: Vec<serde_json::Value>,
    }
    let Ok(shape) = serde_json::from_slice::<Shape<'_>>(body) else {
        return Found::default();
    };
    if let Some(error) = shape.error {
        if let Ok(s) = serde_json::from_str::<Str<'_>>(error.get()) {
            return Found {
                message: Some(s.0.into_owned()),
                code: None,
            };
        }
        if let Ok(inner) = serde_json::from_str::<Inner<'_>>(error.get()) {
            let code = inner
                .code
                .and_then(|c| serde_json::from_str::<Str<'_>>(c.get()).ok())
                .map(|c| c.0.into_owned());
            return Found {
                message: inner.message.map(|m| m.0.into_owned()),
                code,
            };
        }
    }
    if let Some(detail) = shape.detail {
        if let Ok(s) = serde_json::from_str::<Str<'_>>(detail.get()) {
            return Found {
                message: Some(s.0.into_owned()),
                code: None,
            };
        }
        // FastAPI validation errors: name each field and why (NIM's 422 `extra_forbidden`).
        if let Ok(items) = serde_json::from_str::<Vec<Detail<'_>>>(detail.get()) {
            let parts: Vec<String> = items
                .iter()
                .map(|d| {
                    let loc: Vec<String> = d
                        .loc
                        .iter()
                        .filter(|l| l.as_str() != Some("body"))
                        .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                        .collect();
                    let msg = d.msg.as_deref().unwrap_or("invalid");
                    if loc.is_empty() {
                        msg.to_owned()
                    } else {
                        format!("{}: {msg}", loc.join("."))
                    }
                })
                .collect();
            if !parts.is_empty() {
                return Found {
                    message: Some(parts.join("; ")),
                    code: None,
                };
            }
        }
    }
    Found {
        message: shape.message.map(|m| m.0.into_owned()),
        code: None,
    }
}

/// The body itself when it is short text, else a sentence naming the status.
fn fallback_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() && text.len() <= 512 && !text.starts_with('<') {
        text.to_owned()
    } else {
        format!("the backend answered with status {status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn statuses_map_to_anthropic_types() {
        for (status, sent, kind) in [
            (400, 400, "invalid_request_error"),
            (401, 401, "authentication_error"),
            (403, 403, "permission_error"),
            (404, 404, "not_found_error"),
            (413, 413, "request_too_large"),
            (422, 422, "invalid_request_error"),
            (429, 429, "rate_limit_error"),
            (500, 500, "api_error"),
            (502, 502, "api_error"),
            (503, 529, "overloaded_error"),
            (504, 504, "timeout_error"),
            (529, 529, "overloaded_error"),
        ] {
            let (got, body) = error_body(status, "why");
            assert_eq!(got, sent, "{status}");
            let v = parsed(&body);
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{status}");
            assert_eq!(v["error"]["message"], "why");
        }
    }

    #[test]
    fn openai_errors_keep_their_message() {
        let (status, body) = error_from_openai(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(status, 429);
        assert_eq!(parsed(&body)["error"]["message"], "slow down");
        assert_eq!(parsed(&body)["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn context_length_errors_say_prompt_is_too_long() {
        let (status, body) = error_from_openai(
            400,
            br#"{"object":"error","message":"This model's maximum context length is 32768 tokens. However, you requested 40000 tokens.","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(status, 400);
        let msg = parsed(&body)["error"]["message"]
            .as_str()
            .map(str::to_owned);
        assert!(
            msg.as_deref().is_some_and(|m| m
                .starts_with("prompt is too long: This model's maximum context length is 32768")),
            "{msg:?}"
        );
        let (_, body) = error_from_openai(
            400,
            br#"{"error":{"message":"too many tokens","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(
            parsed(&body)["error"]["message"],
            "prompt is too long: too many tokens"
        );
    }

    #[test]
    fn nim_validation_errors_name_the_fields() {
        let (status, body) = error_from_openai(
            422,
            br#"{"detail":[{"type":"extra_forbidden","loc":["body","metadata"],"msg":"Extra inputs are not permitted","input":{}}]}"#,
        );
        assert_eq!(status, 422);
        assert_eq!(
            parsed(&body)["error"]["message"],
            "metadata: Extra inputs are not permitted"
        );
        assert_eq!(parsed(&body)["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn overload_and_odd_bodies() {
        let (status, body) = error_from_openai(503, b"Service Unavailable");
        assert_eq!(status, 529);
        assert_eq!(parsed(&body)["error"]["type"], "overloaded_error");
        assert_eq!(parsed(&body)["error"]["message"], "Service Unavailable");
        let (_, body) = error_from_openai(502, b"<html>bad gateway</html>");
        assert_eq!(
            parsed(&body)["error"]["message"],
            "the backend answered with status 502"
        );
        let (_, body) = error_from_openai(500, br#"{"error":"boom"}"#);
        assert_eq!(parsed(&body)["error"]["message"], "boom");
    }

    #[test]
    fn ping_is_an_sse_event() {
        assert_eq!(PING, b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }
}
