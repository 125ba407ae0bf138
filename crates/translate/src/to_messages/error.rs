//! Anthropic errors told the OpenAI way. Connectors hand the server OpenAI-shaped error bodies
//! (the server re-shapes them per door), so an Anthropic
//! `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` becomes
//! `{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":…}}`.
//!
//! Statuses are those of Anthropic's error reference, except `529 overloaded_error`, which
//! becomes 503: 529 is no standard status, and 503 is what retry logic, circuit breakers and
//! the OpenAI SDKs read as "busy, try again" (the Messages door turns 503 back into 529).

use bytes::Bytes;
use serde::Deserialize;
use tollgate_core::error::openai_error_body;

use super::wire::{ErrorObject, Text};

/// Longest piece of a non-Anthropic error body quoted in the message.
const QUOTE_LIMIT: usize = 500;

/// An Anthropic error answer (`status`, body) → the status the gateway uses and an
/// OpenAI-shaped body. Bodies of another shape (a proxy's HTML, plain text) are quoted.
pub fn openai_error(status: u16, anthropic_body: &[u8]) -> (u16, Bytes) {
    let status = if status == 529 { 503 } else { status };
    let envelope = read(anthropic_body);
    let error = envelope.as_ref().and_then(|e| e.error.as_ref());
    let kind = error.and_then(|e| e.kind.as_deref());
    let message = match error.and_then(|e| e.message.as_deref()) {
        Some(m) => m.to_owned(),
        None => quote(status, anthropic_body),
    };
    (status, body(status, kind, &message))
}

/// The data of an `event: error` (a stream that failed after its 200) → the status its error
/// `type` stands for, and the OpenAI-shaped body. The event carries no status of its own.
pub fn event_error(data: &[u8]) -> (u16, Bytes) {
    match read(data) {
        Some(envelope) => error_object(envelope.error.as_ref(), data),
        None => openai_error(502, data),
    }
}

/// An already parsed error object (of an `error` event whose `data` is `raw`) → status and
/// OpenAI-shaped body.
pub(crate) fn error_object(error: Option<&ErrorObject<'_>>, raw: &[u8]) -> (u16, Bytes) {
    let kind = error.and_then(|e| e.kind.as_deref());
    let status = kind.map_or(502, status_of);
    let message = match error.and_then(|e| e.message.as_deref()) {
        Some(m) => m.to_owned(),
        None => quote(status, raw),
    };
    (status, body(status, kind, &message))
}

/// The HTTP status Anthropic's reference gives each error `type` (overload already as 503).
pub fn status_of(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "overloaded_error" => 503,
        "timeout_error" => 504,
        _ => 502,
    }
}

/// The OpenAI-style `type` and `code` tollgate gives an error of `status` when the upstream
/// named none (the same table as the OpenAI-compatible connector's).
pub(crate) fn kind_and_code(status: u16) -> (&'static str, &'static str) {
    match status {
        401 | 403 => ("authentication_error", "upstream_auth_error"),
        404 => ("invalid_request_error", "model_not_found"),
        408 | 504 => ("timeout_error", "upstream_timeout"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "invalid_request_error"),
        _ => ("upstream_error", "upstream_error"),
    }
}

fn body(status: u16, anthropic_kind: Option<&str>, message: &str) -> Bytes {
    let (fallback_kind, code) = kind_and_code(status);
    // Anthropic says "prompt is too long: 210000 tokens > 200000 maximum", or "input length
    // and `max_tokens` exceed context limit" — OpenAI clients look for this code instead.
    let code =
        if message.starts_with("prompt is too long") || message.contains("exceed context limit") {
            "context_length_exceeded"
        } else {
            code
        };
    openai_error_body(message, anthropic_kind.unwrap_or(fallback_kind), None, code)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
}

fn read(body: &[u8]) -> Option<Envelope<'_>> {
    serde_json::from_slice(body).ok()
}

fn quote(status: u16, body: &[u8]) -> String {
    // An `{"error": "text"}` body (some proxies) still says something.
    if let Ok(flat) = serde_json::from_slice::<FlatError<'_>>(body) {
        return flat.error.0.into_owned();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("the backend answered {status}");
    }
    let mut end = text.len().min(QUOTE_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < text.len() { "…" } else { "" };
    format!("the backend answered {status}: {}{ellipsis}", &text[..end])
}

#[derive(Deserialize)]
struct FlatError<'a> {
    #[serde(borrow)]
    error: Text<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn overload_is_503_and_openai_shaped() {
        let (status, b) = openai_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        assert_eq!(status, 503);
        let v = json(&b);
        assert_eq!(v["error"]["message"], "Overloaded");
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(v["error"]["code"], "upstream_error");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn statuses_stay_and_codes_follow_them() {
        let (status, b) = openai_error(
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!(status, 429);
        assert_eq!(json(&b)["error"]["code"], "rate_limit_exceeded");
        let (status, b) = openai_error(
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
        );
        assert_eq!(status, 400);
        assert_eq!(json(&b)["error"]["code"], "context_length_exceeded");
        let (_, b) = openai_error(401, br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#);
        assert_eq!(json(&b)["error"]["code"], "upstream_auth_error");
    }

    #[test]
    fn other_shapes_are_quoted() {
        let (status, b) = openai_error(502, b"<html>bad gateway</html>");
        assert_eq!(status, 502);
        let v = json(&b);
        assert_eq!(v["error"]["type"], "upstream_error");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad gateway")));
        let (_, b) = openai_error(500, br#"{"error":"flat"}"#);
        assert_eq!(json(&b)["error"]["message"], "flat");
        let (_, b) = openai_error(500, b"");
        assert_eq!(json(&b)["error"]["message"], "the backend answered 500");
        let long = "x".repeat(2000);
        let (_, b) = openai_error(500, long.as_bytes());
        assert!(json(&b)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() < 600));
    }

    #[test]
    fn stream_errors_take_the_status_of_their_type() {
        let (status, b) = event_error(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(status, 503);
        assert_eq!(json(&b)["error"]["type"], "overloaded_error");
        let (status, _) =
            event_error(br#"{"type":"error","error":{"type":"rate_limit_error","message":"m"}}"#);
        assert_eq!(status, 429);
        assert_eq!(event_error(b"garbage").0, 502);
        for (kind, status) in [
            ("invalid_request_error", 400),
            ("authentication_error", 401),
            ("billing_error", 402),
            ("permission_error", 403),
            ("not_found_error", 404),
            ("request_too_large", 413),
            ("api_error", 500),
            ("timeout_error", 504),
            ("something_new", 502),
        ] {
            assert_eq!(status_of(kind), status, "{kind}");
        }
    }
}
