//! Provider pass-through (`/v1/providers/{backend}/-/{path}`): a request sent to one backend
//! as it came — any method, any path below its `api_url`, the query kept, the body streamed and
//! never parsed — with the backend's own key and headers instead of the client's. What is
//! checked here: that the path cannot climb out of `api_url`, which client headers may go
//! along, and that an error answer cannot carry a secret back.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use http_body_util::BodyExt;
use tollgate_core::GatewayError;

use crate::mask::Masker;

/// Headers that belong to one connection (RFC 9110 §7.6.1) or to the gateway, never forwarded.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    // The client's gateway key (SPEC §5: never forwarded upstream) and its cookies.
    "authorization",
    "x-api-key",
    "cookie",
    // The gateway sends its own request id.
    "x-request-id",
    // Answers come back uncompressed: an error answer is read and masked of secrets, which
    // a gzip body would hide from the masker.
    "accept-encoding",
];

/// Why a pass-through to `backend` is refused, if it is: it reads no model and counts no
/// tokens, so a key that denies models or limits tokens, and a backend with model lists or
/// token limits, would have their rules bypassed. Request limits (`rpm`) still apply.
pub fn refusal(
    backend: &str,
    key: Option<&crate::auth::ClientKey>,
    key_limits: tollgate_core::config::LimitsConfig,
    config: &tollgate_core::config::BackendConfig,
) -> Option<GatewayError> {
    let tokens = |l: &tollgate_core::config::LimitsConfig| {
        l.tpm.is_some() || l.tokens_per_day.is_some() || l.max_tokens_per_request.is_some()
    };
    if let Some(key) = key {
        if key.denies_any() {
            return Some(GatewayError::PermissionDenied(format!(
                "key `{}` denies some models, and pass-through cannot tell which model a request uses",
                key.name
            )));
        }
        if tokens(&key_limits) {
            return Some(GatewayError::PermissionDenied(format!(
                "key `{}` has token limits, and pass-through cannot count tokens",
                key.name
            )));
        }
    }
    if !config.allowed_models.is_empty() || !config.denied_models.is_empty() {
        return Some(GatewayError::PermissionDenied(format!(
            "backend `{backend}` has model lists, and pass-through cannot tell which model a request uses"
        )));
    }
    if config.limits.as_ref().is_some_and(tokens) {
        return Some(GatewayError::PermissionDenied(format!(
            "backend `{backend}` has token limits, and pass-through cannot count tokens"
        )));
    }
    None
}

/// The most of an upstream error answer read to mask it.
const ERROR_BODY_LIMIT: usize = 1024 * 1024;

/// `rest` (the raw path after `/-/`) and the query, checked to stay below the backend's
/// `api_url`: no `.` or `..` segment (also percent-encoded), no empty segment, no encoded `/`
/// or `\`, no backslash, no scheme (an absolute URL), no control character.
pub fn path(rest: &str, query: Option<&str>) -> Result<String, GatewayError> {
    let refuse = |why: &str| {
        GatewayError::invalid_field("path", format!("pass-through path `{rest}`: {why}"))
    };
    if rest.is_empty() {
        return Err(refuse(
            "empty: name a path below the backend's api_url after `/-/`",
        ));
    }
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || rest.contains('\\') {
        return Err(refuse("encoded slashes and backslashes are not allowed"));
    }
    if rest.contains("://") || lower.starts_with("http:") || lower.starts_with("https:") {
        return Err(refuse("an absolute URL is not a path"));
    }
    for segment in rest.split('/') {
        let decoded = crate::app::percent_decode(segment);
        if segment.is_empty() || decoded == "." || decoded == ".." {
            return Err(refuse("empty, `.` and `..` segments are not allowed"));
        }
        if decoded.chars().any(char::is_control) {
            return Err(refuse("control characters are not allowed"));
        }
    }
    Ok(match query {
        Some(q) if !q.is_empty() => format!("{rest}?{q}"),
        _ => rest.to_owned(),
    })
}

/// The client's headers that go along: all but hop-by-hop ones (and any the client's
/// `Connection` header names), the client's key, cookies and the gateway's own.
pub fn headers(client: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = client
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in client {
        let n = name.as_str();
        if DROPPED.contains(&n) || n.starts_with("x-tollgate-") || named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// An upstream error answer, read (bounded) and masked of every configured secret: an error
/// is where an upstream echoes what it was sent.
pub async fn masked_error(
    mut body: tollgate_core::ForwardBody,
    masker: &Masker,
) -> Result<Bytes, GatewayError> {
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::UpstreamFailed(format!("reading the backend's error answer failed: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > ERROR_BODY_LIMIT {
                return Err(GatewayError::UpstreamFailed(format!(
                    "the backend's error answer is over {ERROR_BODY_LIMIT} bytes"
                )));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(masker.mask_bytes(read.freeze()))
}

/// `x-tollgate-backend` on a pass-through answer.
pub fn backend_header(backend: &str, headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(backend) {
        headers.insert(HeaderName::from_static("x-tollgate-backend"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_api_url() {
        assert_eq!(path("models", None).expect("ok"), "models");
        assert_eq!(
            path("chat/completions", Some("a=1")).expect("ok"),
            "chat/completions?a=1"
        );
        assert_eq!(
            path("files/file-1%20x", None).expect("ok"),
            "files/file-1%20x"
        );
        for bad in [
            "",
            "../admin",
            "models/../../etc",
            "%2e%2e/x",
            "a/%2E/b",
            "a%2fb",
            "a%2F..%2Fb",
            "a%5cb",
            "a\\b",
            "http://evil.example/x",
            "//evil.example/x",
            "a//b",
            "x/%0a",
        ] {
            assert!(path(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_and_keys_stay_behind() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "gateway"),
            ("content-type", "application/json"),
            ("anthropic-beta", "b1"),
            ("x-tollgate-debug", "1"),
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "anthropic-beta"]);
    }
}
