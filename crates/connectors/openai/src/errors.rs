//! Turning upstream failures into `GatewayError`s a client may read: OpenAI-shaped, with the
//! upstream's status, and never carrying the upstream key.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tollgate_core::error::openai_error_body;
use tollgate_core::{GatewayError, Secret};

/// Longest upstream text quoted in an error message.
const QUOTE_LIMIT: usize = 500;

/// An upstream error status and body → the client's error. An OpenAI-shaped body passes
/// as is; anything else (FastAPI `detail`, plain text, HTML) is quoted inside one.
pub fn upstream_error(
    backend: &str,
    status: StatusCode,
    body: &[u8],
    key: Option<&Secret>,
    retry_after: Option<Duration>,
) -> GatewayError {
    let body = scrub(body, key);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let body = match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(err) if err.get("message").is_some_and(|m| m.is_string()) => body,
        _ => {
            let quoted = parsed
                .as_ref()
                .and_then(describe_json)
                .unwrap_or_else(|| quote_text(&body));
            let message = if quoted.is_empty() {
                format!("backend `{backend}` answered {status}")
            } else {
                format!("backend `{backend}` answered {status}: {quoted}")
            };
            let (kind, code) = kind_and_code(status);
            openai_error_body(&message, kind, None, code)
        }
    };
    GatewayError::Upstream {
        status,
        body,
        retry_after,
    }
}

/// Whether an event's data is an error frame: a JSON object whose top-level `error` is set.
#[cfg(test)]
pub(crate) fn is_error_frame(payload: &[u8]) -> bool {
    is_error_frame_scanned(payload, tollgate_core::Marks::scan(payload))
}

/// Whether an event's data, `marks` scanned from it, is an error frame: a JSON object whose
/// top-level `error` is set. Most chunks are ruled out by the scan; only a chunk with a
/// non-null `error` key is parsed.
pub(crate) fn is_error_frame_scanned(payload: &[u8], marks: tollgate_core::Marks) -> bool {
    marks.error && tollgate_core::Peek::read(payload).error.is_some()
}

/// An error frame that arrived before any data: the upstream refused the request after
/// committing its 200 (OpenRouter does, once it has sent `: OPENROUTER PROCESSING`). It
/// becomes the error it stands for, so the client sees a real status and the gateway may
/// fall back: the status is the frame's numeric `code` when that is an HTTP error status,
/// else 502.
pub(crate) fn early_stream_error(
    backend: &str,
    payload: &[u8],
    key: Option<&Secret>,
) -> GatewayError {
    let error = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|mut v| v.get_mut("error").map(serde_json::Value::take))
        .unwrap_or(serde_json::Value::Null);
    let status = error
        .get("code")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = serde_json::json!({ "error": error }).to_string();
    upstream_error(backend, status, body.as_bytes(), key, None)
}

/// The error text of non-OpenAI JSON error bodies (`{"error":"…"}`, `{"detail":…}`, …).
fn describe_json(v: &serde_json::Value) -> Option<String> {
    for field in ["error", "detail", "message", "title"] {
        match v.get(field) {
            Some(serde_json::Value::String(s)) => return Some(truncate(s)),
            Some(other @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => {
                return Some(truncate(&other.to_string()))
            }
            _ => {}
        }
    }
    None
}

fn quote_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    truncate(text.trim())
}

fn truncate(s: &str) -> String {
    if s.len() <= QUOTE_LIMIT {
        return s.to_owned();
    }
    let mut end = QUOTE_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Replaces any copy of the upstream key with `***` (some servers echo the header back).
fn scrub(body: &[u8], key: Option<&Secret>) -> Bytes {
    let Some(key) = key.map(Secret::expose).filter(|k| k.len() >= 4) else {
        return Bytes::copy_from_slice(body);
    };
    let finder = memchr::memmem::Finder::new(key.as_bytes());
    if finder.find(body).is_none() {
        return Bytes::copy_from_slice(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"***");
        rest = &rest[at + key.len()..];
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

fn kind_and_code(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        401 | 403 => ("authentication_error", "upstream_auth_error"),
        404 => ("invalid_request_error", "model_not_found"),
        408 => ("timeout_error", "upstream_timeout"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "invalid_request_error"),
        _ => ("upstream_error", "upstream_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.body()).expect("json")
    }

    #[test]
    fn openai_shaped_errors_pass_untouched() {
        let body = br#"{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let e = upstream_error("b", StatusCode::TOO_MANY_REQUESTS, body, None, None);
        assert_eq!(&e.body()[..], &body[..]);
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn other_shapes_are_wrapped_with_their_status() {
        let e = upstream_error(
            "nim",
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"detail":[{"type":"extra_forbidden","loc":["body","stream_options"]}]}"#,
            None,
            None,
        );
        assert_eq!(e.status().as_u16(), 422);
        let v = json_of(&e);
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(
            msg.contains("extra_forbidden") && msg.contains("`nim`"),
            "{msg}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");

        let e = upstream_error(
            "b",
            StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
            None,
            None,
        );
        let v = json_of(&e);
        assert_eq!(v["error"]["code"], "upstream_error");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad gateway")));
    }

    #[test]
    fn error_frames_are_told_from_chunks() {
        assert!(is_error_frame(br#"{"error":{"message":"boom"}}"#));
        assert!(is_error_frame(
            br#"{"id":"x","error":{"code":502,"message":"m"},"choices":[]}"#
        ));
        assert!(!is_error_frame(br#"{"error":null,"choices":[]}"#));
        // The word inside content is escaped, and nested keys are not the frame's own.
        assert!(!is_error_frame(
            br#"{"choices":[{"delta":{"content":"an \"error\" here"}}]}"#
        ));
        assert!(!is_error_frame(
            br#"{"choices":[{"delta":{"x":{"error":1}}}]}"#
        ));
        assert!(!is_error_frame(b"[DONE]"));
    }

    #[test]
    fn the_scanned_check_agrees_with_a_search_and_a_parse() {
        // The check before the scan was shared with the relay: a substring search, then a parse.
        let before = |p: &[u8]| {
            memchr::memmem::find(p, br#""error""#).is_some()
                && tollgate_core::Peek::read(p).error.is_some()
        };
        let frames: [&[u8]; 12] = [
            br#"{"error":{"message":"boom"}}"#,
            br#"{ "error" : { "message" : "boom" } }"#,
            br#"{"error":"a string"}"#,
            br#"{"error":null}"#,
            br#"{"error" :  null, "choices": []}"#,
            br#"{"choices":[{"delta":{"content":""error": 1"}}]}"#,
            br#"{"choices":[{"delta":{"x":{"error":1}}}]}"#,
            br#"{"id":"x","choices":[{"delta":{"content":"hi"}}],"error":{"code":500}}"#,
            br#"{"error":{"message":"late"},"error":null}"#,
            br#"{"usage":{"prompt_tokens":1},"choices":[]}"#,
            b"[DONE]",
            b"",
        ];
        for frame in frames {
            assert_eq!(
                is_error_frame(frame),
                before(frame),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn early_error_frames_take_their_code_as_status() {
        let e = early_stream_error(
            "or",
            br#"{"id":"g","error":{"code":429,"message":"Provider rate limited"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#,
            None,
            );
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(json_of(&e)["error"]["message"], "Provider rate limited");

        let e = early_stream_error(
            "or",
            br#"{"error":{"code":"server_error","message":"m"}}"#,
            None,
        );
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let e = early_stream_error(
            "or",
            br#"{"error":"flat text nvapi-KEY1"}"#,
            Some(&Secret::new("nvapi-KEY1")),
        );
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let v = json_of(&e);
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains("flat text ***"), "{msg}");
    }

    #[test]
    fn upstream_key_is_scrubbed() {
        let key = Secret::new("nvapi-SECRET123");
        let e = upstream_error(
            "b",
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"message":"bad key nvapi-SECRET123","type":"x"}}"#,
            Some(&key),
            None,
        );
        let text = String::from_utf8(e.body().to_vec()).expect("utf8");
        assert!(!text.contains("SECRET123"), "{text}");
        assert!(text.contains("bad key ***"));
    }
}
