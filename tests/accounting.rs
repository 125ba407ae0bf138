//! Accounting and routing edges found in review: what is charged when an answer carries no
//! usage or never starts, which targets count tokens, a stream whose upstream stays open after
//! its last event, idempotency across model-entity paths, output budgets through translation,
//! and what pass-through may not bypass.
mod common;

use std::collections::HashMap;

use tollgate_core::{Config, Env};
use tollgate_server::{Gateway, Runtime, Serving};
use tollgate_testkit::client::post;
use tollgate_testkit::{anthropic, Answer, FakeUpstream, Step, StreamEnd};

const ANT_KEY: &str = "sk-ant-SECRET-backend-0123";

async fn start(yaml: &str) -> Serving {
    let config: Config = serde_yaml::from_str(yaml).expect("test config parses");
    let env = Env::from_map(HashMap::from([
        ("ANTHROPIC_API_KEY".to_string(), ANT_KEY.to_string()),
        ("NVIDIA_API_KEY".to_string(), "nvapi-x-0123456".to_string()),
    ]));
    let mut registry = common::doors::registry();
    tollgate_anthropic::register(&mut registry);
    let runtime = Runtime::build(config, &registry, &env, None).expect("valid config");
    Serving::start(Gateway::new(runtime, registry, env), "127.0.0.1:0")
        .await
        .expect("bind")
}

#[tokio::test]
async fn count_tokens_with_a_chat_backend_first_in_the_route() {
    let ant = anthropic::start(&["claude-x"]).await;
    let oa = FakeUpstream::start().await;
    let gw = start(&format!(
        "backends:\n  anthropic:\n    api_url: {}\n  oa:\n    type: openai\n    api_url: {}\nroutes:\n  both: [\"oa:m\", \"anthropic:claude-x\"]\nfailure_handling:\n  retries: 0\n",
        ant.url(),
        oa.url()
    ))
    .await;
    let r = post(
        gw.addr(),
        "/v1/messages/count_tokens",
        &[("anthropic-version", "2023-06-01")],
        r#"{"model":"both","messages":[{"role":"user","content":"hello"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The Messages backend counted; the chat backend first in the route was never asked.
    let counted = ant.last_call();
    assert!(
        counted.path.ends_with("/messages/count_tokens"),
        "{}",
        counted.path
    );
    assert_eq!(counted.json()["model"], "claude-x");
    assert!(
        oa.calls().is_empty(),
        "the chat backend was sent {:?}",
        oa.calls()
    );
}

fn usageless_stream() -> Answer {
    let chunk = |c: &str, f: Option<&str>| {
        let v = serde_json::json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":c},"finish_reason":f}]});
        Step::Raw(format!("data: {v}\n\n"))
    };
    Answer::Sse {
        status: 200,
        steps: vec![
            chunk("hi", None),
            chunk("", Some("stop")),
            Step::Raw("data: [DONE]\n\n".into()),
        ],
        end: StreamEnd::Finish,
    }
}

/// Three 1000-token streams whose upstream reports no usage, under a 1500-token day set by
/// `backend_limits` (on the backend) or `key_limits` (server-wide, the keyless scope).
async fn usageless_streams_under(backend_limits: &str, key_limits: &str) {
    let up = FakeUpstream::start().await;
    up.set_default(usageless_stream());
    // nvidia: tollgate does not ask for stream usage.
    let gw = start(&format!(
        "backends:\n  nvidia:\n    api_url: {}\n    health_check: false\n{backend_limits}{key_limits}failure_handling:\n  retries: 0\n",
        up.url()
    ))
    .await;
    let body = r#"{"model":"nvidia:m","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = post(gw.addr(), "/v1/chat/completions", &[], body).await;
        statuses.push(r.status);
    }
    // No usage came back: the 1000+ tokens held are charged, so the next two are over the day.
    assert_eq!(statuses, [200, 429, 429]);
    assert_eq!(
        up.calls().len(),
        1,
        "the second request should be over the 1500-token day"
    );
}

#[tokio::test]
async fn a_backend_budget_is_charged_for_a_stream_without_usage() {
    usageless_streams_under("    limits: { tokens_per_day: 1500 }\n", "").await;
}

#[tokio::test]
async fn a_key_budget_is_charged_for_a_stream_without_usage() {
    usageless_streams_under("", "limits: { tokens_per_day: 1500 }\n").await;
}

#[tokio::test]
async fn a_pass_through_post_keeps_its_connection() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!(
        "backends:\n  up:\n    type: openai\n    api_url: {}\n    api_key: sk-up-0123456789\n",
        up.url()
    ))
    .await;
    let mut closes = 0;
    for _ in 0..20 {
        up.push(Answer::chat("x"));
        let r = post(
            gw.addr(),
            "/v1/providers/up/-/chat/completions",
            &[],
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        if r.header("connection") == Some("close") {
            closes += 1;
        }
    }
    assert_eq!(closes, 0, "pass-through answers with Connection: close");
    assert_eq!(up.calls().len(), 20);
}

#[tokio::test]
async fn a_stream_whose_upstream_stays_open_after_done() {
    let up = FakeUpstream::start().await;
    let chunk = |c: &str, f: Option<&str>| {
        let v = serde_json::json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":c},"finish_reason":f}]});
        Step::Raw(format!("data: {v}\n\n"))
    };
    up.set_default(Answer::Sse {
        status: 200,
        steps: vec![
            chunk("hi", None),
            chunk("", Some("stop")),
            Step::Raw("data: [DONE]\n\n".into()),
        ],
        end: StreamEnd::Hang,
    });
    let gw = start(&format!(
        "backends:\n  nvidia:\n    api_url: {}\n    health_check: false\nfailure_handling:\n  retries: 0\n  keepalive_interval: 1\n  max_silent_wait: 3\n",
        up.url()
    ))
    .await;
    let r = post(
        gw.addr(),
        "/v1/chat/completions",
        &[],
        r#"{"model":"nvidia:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    // The stream ends at `[DONE]`: no silence error appended after the protocol's end.
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("error"), "an error after [DONE]: {text}");
    assert_eq!(text.matches("data: [DONE]").count(), 1);
}

#[tokio::test]
async fn a_failed_slow_stream_is_not_charged() {
    let up = FakeUpstream::start().await;
    up.push(Answer::error(503, "down", "down").after(std::time::Duration::from_millis(1500)));
    up.push(Answer::chat_stream(&["ok"]));
    let gw = start(&format!(
        "backends:\n  nvidia:\n    api_url: {}\n    health_check: false\nlimits: {{ tokens_per_day: 1500 }}\nfailure_handling:\n  retries: 0\n  keepalive_interval: 1\n",
        up.url()
    ))
    .await;
    let body = r#"{"model":"nvidia:m","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let first = post(gw.addr(), "/v1/chat/completions", &[], body).await;
    // Committed to a 200 by the keepalive, then the upstream failed: an error event.
    assert!(first.text().contains("error"), "{}", first.text());
    let second = post(gw.addr(), "/v1/chat/completions", &[], body).await;
    assert_eq!(
        second.status, 200,
        "the failed first request used no tokens"
    );
    assert!(second.text().contains("ok"), "{}", second.text());
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_the_model_of_the_path() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("from a"));
    up.push(Answer::chat("from b"));
    let gw = start(&format!(
        "backends:\n  nvidia:\n    api_url: {}\n    health_check: false\nroutes:\n  a: [\"nvidia:ma\"]\n  b: [\"nvidia:mb\"]\n",
        up.url()
    ))
    .await;
    let body = r#"{"model":"ignored","messages":[{"role":"user","content":"hi"}]}"#;
    let key = [("idempotency-key", "same-key-1")];
    let a = post(gw.addr(), "/v1/models/a/-/v1/chat/completions", &key, body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let again = post(gw.addr(), "/v1/models/a/-/v1/chat/completions", &key, body).await;
    assert_eq!(again.text(), a.text(), "the same request is replayed");
    // The same body to another model is another request: not answered with model a's reply.
    let b = post(gw.addr(), "/v1/models/b/-/v1/chat/completions", &key, body).await;
    assert_eq!(b.status, 422, "{}", b.text());
    let sent: Vec<String> = up
        .calls()
        .iter()
        .map(|c| c.json()["model"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sent, ["ma"]);
}

#[tokio::test]
async fn the_default_output_budget_reaches_an_anthropic_backend_through_translation() {
    let ant = anthropic::start(&["claude-x"]).await;
    ant.push(anthropic::message("hi"));
    ant.push(anthropic::message("hi"));
    let gw = start(&format!(
        "backends:\n  anthropic:\n    api_url: {}\n    output_budget: {{ default_max_tokens: 321, hard_max_tokens: 2000 }}\n",
        ant.url()
    ))
    .await;
    // No max_tokens: the backend's default, not the translation's own.
    let r = post(
        gw.addr(),
        "/v1/chat/completions",
        &[],
        r#"{"model":"anthropic:claude-x","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ant.last_call().json()["max_tokens"], 321);
    // Asking for more than the hard cap: lowered to it.
    let r = post(
        gw.addr(),
        "/v1/chat/completions",
        &[],
        r#"{"model":"anthropic:claude-x","max_tokens":128000,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ant.last_call().json()["max_tokens"], 2000);
}

#[tokio::test]
async fn pass_through_is_refused_where_it_would_bypass_model_or_token_rules() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!(
        "backends:\n  up:\n    type: openai\n    api_url: {u}\n    api_key: sk-up-0123456789\n  listed:\n    type: openai\n    api_url: {u}\n    api_key: sk-up-0123456789\n    allowed_models: [\"gpt-*\"]\n  counted:\n    type: openai\n    api_url: {u}\n    api_key: sk-up-0123456789\n    limits: {{ tpm: 1000 }}\n\
auth:\n  keys:\n    - {{ name: plain, key: tg-plain-0123456789 }}\n    - {{ name: tokens, key: tg-tokens-0123456789, limits: {{ tokens_per_day: 1000 }} }}\n    - {{ name: denies, key: tg-denies-0123456789, denied_models: [\"up:o1*\"] }}\n",
        u = up.url()
    ))
    .await;
    let body = r#"{"model":"o1-pro","messages":[{"role":"user","content":"hi"}]}"#;
    let as_key = |k: &'static str| [("authorization", k)];
    for (path, key, why) in [
        (
            "/v1/providers/up/-/chat/completions",
            "Bearer tg-tokens-0123456789",
            "token limits",
        ),
        (
            "/v1/providers/up/-/chat/completions",
            "Bearer tg-denies-0123456789",
            "denies some models",
        ),
        (
            "/v1/providers/listed/-/chat/completions",
            "Bearer tg-plain-0123456789",
            "model lists",
        ),
        (
            "/v1/providers/counted/-/chat/completions",
            "Bearer tg-plain-0123456789",
            "token limits",
        ),
    ] {
        let r = post(gw.addr(), path, &as_key(key), body).await;
        assert_eq!(r.status, 403, "{path} {key}: {}", r.text());
        assert!(r.text().contains(why), "{}", r.text());
    }
    assert!(
        up.calls().is_empty(),
        "nothing refused reached the upstream"
    );
    up.push(Answer::chat("x"));
    let r = post(
        gw.addr(),
        "/v1/providers/up/-/chat/completions",
        &as_key("Bearer tg-plain-0123456789"),
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last_call();
    assert_eq!(sent.json()["model"], "o1-pro");
    assert!(sent.headers.get("accept-encoding").is_none());
}
