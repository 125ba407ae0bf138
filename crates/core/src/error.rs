//! `GatewayError`: every failure tollgate reports, with the HTTP status, the OpenAI error
//! `type` and `code` it maps to, and its wire body (SPEC §9).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

/// One failure as a client sees it.
///
/// Variants carry only what the client may read: messages are written by tollgate (or are an
/// upstream's own error body, scrubbed of the upstream key by the connector), never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed: bad JSON, a missing or mistyped field.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        /// The offending field, when there is one.
        param: Option<String>,
    },
    /// No client key, or one that is not configured.
    #[error("{0}")]
    InvalidApiKey(String),
    /// The client key exists but may not use this model.
    #[error("{0}")]
    PermissionDenied(String),
    /// The model does not route, or a backend's model lists refuse it.
    #[error("{0}")]
    ModelNotFound(String),
    /// The path is not one of tollgate's endpoints.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method; `allow` lists the methods that do.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    /// The request body is larger than `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    RequestTooLarge { limit: u64 },
    /// A request with the same idempotency key is being answered right now.
    #[error("{0}")]
    InFlight(String),
    /// An idempotency key came back with a different request body.
    #[error("{0}")]
    KeyReused(String),
    /// The client did not send its request body in time (`server.body_read_timeout`,
    /// `server.body_gap_timeout`): 408.
    #[error("{0}")]
    RequestTimeout(String),
    /// A limit refused the request.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The upstream answered with an error status. `body` is already OpenAI-shaped (either
    /// the upstream's own error object or one tollgate wrote around its text).
    #[error("upstream answered {status}")]
    Upstream {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached, or broke the exchange (connect refused, reset,
    /// malformed response).
    #[error("{0}")]
    UpstreamFailed(String),
    /// No backend can take the request (none configured usable, or all skipped).
    #[error("{0}")]
    BackendUnavailable(String),
    /// The upstream did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A bug or an impossible state inside tollgate.
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl GatewayError {
    /// Shorthand for a 400 about one field.
    pub fn invalid_field(param: &str, message: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    /// Shorthand for a 400 not tied to one field.
    pub fn invalid(message: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
            GatewayError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::InFlight(_) => StatusCode::CONFLICT,
            GatewayError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::Upstream { status, .. } => *status,
            GatewayError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            GatewayError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::ModelNotFound(_)
            | GatewayError::NotFound(_)
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::RequestTooLarge { .. }
            | GatewayError::InFlight(_)
            | GatewayError::KeyReused(_)
            | GatewayError::RequestTimeout(_) => "invalid_request_error",
            GatewayError::InvalidApiKey(_) => "authentication_error",
            GatewayError::PermissionDenied(_) => "permission_error",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::Upstream { .. } | GatewayError::UpstreamFailed(_) => "upstream_error",
            GatewayError::BackendUnavailable(_) | GatewayError::Internal(_) => "server_error",
            GatewayError::UpstreamTimeout(_) => "timeout_error",
        }
    }

    /// The OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. } => "invalid_request_error",
            GatewayError::InvalidApiKey(_) => "invalid_api_key",
            GatewayError::PermissionDenied(_) => "permission_denied",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::RequestTooLarge { .. } => "request_too_large",
            GatewayError::RequestTimeout(_) => "request_timeout",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::InFlight(_) => "request_in_flight",
            GatewayError::KeyReused(_) => "idempotency_key_reused",
            GatewayError::Upstream { .. } | GatewayError::UpstreamFailed(_) => "upstream_error",
            GatewayError::BackendUnavailable(_) => "backend_unavailable",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    /// How long the client should wait before retrying, when tollgate knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { retry_after, .. }
            | GatewayError::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The OpenAI-shaped JSON body: `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Bytes {
        if let GatewayError::Upstream { body, .. } = self {
            return body.clone();
        }
        let message = self.to_string();
        let param = match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        };
        openai_error_body(&message, self.kind(), param, self.code())
    }

    /// The error as one SSE event, for a stream whose 200 is already on the wire.
    pub fn sse_event(&self) -> Bytes {
        let body = self.body();
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

/// Writes the OpenAI error envelope.
pub fn openai_error_body(message: &str, kind: &str, param: Option<&str>, code: &str) -> Bytes {
    let envelope = Envelope {
        error: Detail {
            message,
            kind,
            param,
            code,
        },
    };
    // Serializing a struct of strings into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.body()).expect("error body is JSON")
    }

    #[test]
    fn every_variant_has_the_openai_shape() {
        let all = [
            GatewayError::invalid_field("model", "`model` is required"),
            GatewayError::InvalidApiKey("bad key".into()),
            GatewayError::PermissionDenied("no".into()),
            GatewayError::ModelNotFound("x".into()),
            GatewayError::RequestTooLarge { limit: 10 },
            GatewayError::RequestTimeout("slow body".into()),
            GatewayError::RateLimited {
                message: "slow".into(),
                retry_after: None,
            },
            GatewayError::UpstreamFailed("reset".into()),
            GatewayError::BackendUnavailable("none".into()),
            GatewayError::UpstreamTimeout("late".into()),
        ];
        let statuses = [400, 401, 403, 404, 413, 408, 429, 502, 503, 504];
        for (e, status) in all.iter().zip(statuses) {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            let v = parsed(e);
            let err = &v["error"];
            assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(err["type"], e.kind());
            assert_eq!(err["code"], e.code());
            assert!(err.get("param").is_some());
        }
        assert_eq!(parsed(&all[0])["error"]["param"], "model");
    }

    #[test]
    fn upstream_body_is_passed_as_is() {
        let body =
            Bytes::from_static(br#"{"error":{"message":"m","type":"t","param":null,"code":"c"}}"#);
        let e = GatewayError::Upstream {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: body.clone(),
            retry_after: None,
        };
        assert_eq!(e.body(), body);
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.sse_event().starts_with(b"data: {\"error\""));
        assert!(e.sse_event().ends_with(b"\n\n"));
    }
}
