//! Secrets stay masked across backends: whatever an upstream error echoes — a secret
//! configured in `backends.*.headers`, another backend's key, a key variable — reaches the
//! client as `***`, in error bodies and in mid-stream error frames alike.

use tollgate_testkit::client::post;
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

const HEADER_SECRET: &str = "hdr-SECRET-value-9911";
const OTHER_KEY: &str = "sk-other-SECRET-key-7788";
const ENV_KEY: &str = "sk-env-SECRET-openai-55";

fn config(url: &str) -> String {
    format!(
        "{}    headers: {{ X-Custom-Auth: {HEADER_SECRET} }}\n  other:\n    type: openai\n    api_url: http://127.0.0.1:9/v1\n    api_key: {OTHER_KEY}\n{NO_RETRIES}",
        openai_backend(url)
    )
}

/// The `openai` type's key variable: a secret of the on-demand `openai` backend.
fn env() -> std::collections::HashMap<String, String> {
    [("OPENAI_API_KEY".to_string(), ENV_KEY.to_string())].into()
}

fn echo() -> String {
    format!("bad credentials {HEADER_SECRET} {OTHER_KEY} {UPSTREAM_KEY} {ENV_KEY}")
}

fn assert_masked(text: &str) {
    for secret in [HEADER_SECRET, OTHER_KEY, UPSTREAM_KEY, ENV_KEY] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(!text.contains("SECRET"), "a secret leaked: {text}");
    assert!(text.contains("bad credentials ***"), "{text}");
}

#[tokio::test]
async fn an_upstream_error_echoing_any_configured_secret_is_masked() {
    let up = FakeUpstream::start().await;
    up.push(Answer::error(400, &echo(), "invalid"));
    // Plain text, not OpenAI-shaped: quoted into tollgate's own error.
    up.push(Answer::json(502, &echo()));
    let gw = start_with_env(&config(&up.url()), env()).await;
    let body = r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#;

    let r = post(gw.addr, CHAT, &[], body).await;
    assert_eq!(r.status, 400);
    assert_masked(&r.text());
    let r = post(gw.addr, CHAT, &[], body).await;
    assert_eq!(r.status, 502);
    assert_masked(&r.text());
    // The header secret did reach the upstream it was configured for.
    assert_eq!(up.last_call().header("x-custom-auth"), Some(HEADER_SECRET));
}

#[tokio::test]
async fn a_mid_stream_error_frame_echoing_a_secret_is_masked() {
    let up = FakeUpstream::start().await;
    let frame = serde_json::json!({"error": {"message": echo(), "code": 500}});
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(chunk_event("par")),
            Step::Raw(format!("data: {frame}\n\n")),
        ],
        end: StreamEnd::Finish,
    });
    let gw = start_with_env(&config(&up.url()), env()).await;
    let r = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_masked(&r.text());
    assert!(!r.text().contains("[DONE]"));
}
