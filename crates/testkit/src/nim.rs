//! A strict fake NVIDIA NIM: HTTP/1.1 only, `401` unless `Authorization: Bearer nvapi-…`, and
//! the hosted API's schema check — any chat-completions field outside NIM's schema answers
//! `422` with FastAPI's `extra_forbidden` detail, as `integrate.api.nvidia.com` does. Requests
//! that pass are answered by the fake's script, like any [`FakeUpstream`].

use std::sync::Arc;

use crate::{Answer, FakeUpstream, Gate, Options, Recorded};

/// The prefix of every NVIDIA API key.
pub const KEY_PREFIX: &str = "nvapi-";

/// Top-level fields NIM's `/v1/chat/completions` schema accepts. It is the OpenAI request of
/// 2023 (what NIM was built against) plus NVIDIA's `nvext` extension; newer OpenAI fields
/// (`max_completion_tokens`, `stream_options`, `parallel_tool_calls`, `store`, `metadata`,
/// `service_tier`, `reasoning_effort` …) are extra and forbidden.
pub const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "n",
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "user",
    "nvext",
];

/// Fields the schema requires.
const REQUIRED: &[&str] = &["model", "messages"];

/// Options for a strict NIM listing `models` on `GET /v1/models`.
pub fn options(models: &[&str]) -> Options {
    Options {
        http1_only: true,
        models: models.iter().map(|m| m.to_string()).collect(),
        gate: Some(gate()),
    }
}

/// Starts a strict NIM listing `models`.
pub async fn start(models: &[&str]) -> FakeUpstream {
    FakeUpstream::start_with(options(models)).await
}

/// The checks NIM makes before a model sees the request.
pub fn gate() -> Gate {
    Arc::new(|req: &Recorded| {
        if !authorized(req.header("authorization")) {
            return Some(unauthorized());
        }
        if req.path.ends_with("/chat/completions") {
            return schema_error(&req.body);
        }
        None
    })
}

/// Whether `value` is `Bearer nvapi-…` exactly: one space, no stray white space, a key.
pub fn authorized(value: Option<&str>) -> bool {
    value
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|key| key.strip_prefix(KEY_PREFIX))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
}

/// The hosted API's 401, a problem-details body.
fn unauthorized() -> Answer {
    let body = serde_json::json!({
        "type": "urn:kaizen:problem-details:unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "Authentication failed"
    });
    Answer::json(401, &body.to_string())
}

/// The 422 FastAPI writes for `body`, or `None` when it fits the schema.
pub fn schema_error(body: &[u8]) -> Option<Answer> {
    let parsed: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let detail = serde_json::json!([{
                "type": "json_invalid",
                "loc": ["body", 0],
                "msg": "JSON decode error",
                "ctx": {"error": e.to_string()}
            }]);
            return Some(unprocessable(detail));
        }
    };
    let Some(fields) = parsed.as_object() else {
        let detail = serde_json::json!([{
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": parsed
        }]);
        return Some(unprocessable(detail));
    };
    let mut detail = Vec::new();
    for required in REQUIRED {
        if !fields.contains_key(*required) {
            detail.push(serde_json::json!({
                "type": "missing",
                "loc": ["body", required],
                "msg": "Field required",
                "input": parsed
            }));
        }
    }
    for (name, value) in fields {
        if !CHAT_FIELDS.contains(&name.as_str()) {
            detail.push(serde_json::json!({
                "type": "extra_forbidden",
                "loc": ["body", name],
                "msg": "Extra inputs are not permitted",
                "input": value
            }));
        }
    }
    (!detail.is_empty()).then(|| unprocessable(serde_json::Value::Array(detail)))
}

fn unprocessable(detail: serde_json::Value) -> Answer {
    Answer::json(422, &serde_json::json!({ "detail": detail }).to_string())
}

/// The fields a 422 from this fake names as extra (for assertions).
pub fn forbidden_fields(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    v["detail"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["type"] == "extra_forbidden")
        .filter_map(|d| d["loc"][1].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(answer: &Answer) -> (u16, String) {
        match answer {
            Answer::Json { status, body, .. } => (*status, body.clone()),
            other => panic!("expected JSON, got {other:?}"),
        }
    }

    #[test]
    fn keys_must_be_bearer_nvapi() {
        assert!(authorized(Some("Bearer nvapi-abc")));
        for bad in [
            None,
            Some("nvapi-abc"),
            Some("Bearer sk-abc"),
            Some("Bearer  nvapi-abc"),
            Some("Bearer nvapi-abc "),
            Some("Bearer nvapi-"),
            Some("bearer nvapi-abc"),
        ] {
            assert!(!authorized(bad), "{bad:?}");
        }
    }

    #[test]
    fn extra_fields_are_forbidden_one_by_one() {
        assert!(
            schema_error(br#"{"model":"m","messages":[],"max_tokens":5,"stream":true}"#).is_none()
        );
        let answer = schema_error(
            br#"{"model":"m","messages":[],"stream_options":{"include_usage":true},"max_completion_tokens":5}"#,
        )
        .expect("refused");
        let (status, body) = body_of(&answer);
        assert_eq!(status, 422);
        // serde_json maps are sorted: the fields come in name order.
        assert_eq!(
            forbidden_fields(body.as_bytes()),
            ["max_completion_tokens", "stream_options"]
        );
        let (status, body) = body_of(&schema_error(br#"{"model":"m"}"#).expect("refused"));
        assert_eq!(status, 422);
        assert!(body.contains(r#""type":"missing""#), "{body}");
        assert_eq!(body_of(&schema_error(b"{").expect("refused")).0, 422);
    }
}
