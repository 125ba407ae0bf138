//! Limits and budgets with the memory store, end to end over TCP: exact rpm under a burst,
//! daily budgets that concurrency cannot overshoot (the upstream's own count is the judge),
//! `max_tokens_per_request` on every door, `x-ratelimit-*`, backends skipped when over their
//! limits, and idempotency keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_testkit::client::post;
use tollgate_testkit::{Answer, FakeUpstream, Gate, Options, Recorded};

use crate::common::*;

const BODY: &str = r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#;

/// An upstream whose usage is what the request allowed: 10 prompt tokens and all of
/// `max_tokens` generated — the worst case a budget must survive.
async fn greedy_upstream() -> FakeUpstream {
    let gate: Gate = Arc::new(|req: &Recorded| {
        let asked = req.json()["max_tokens"].as_u64().unwrap_or(16);
        let body = serde_json::json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": asked, "total_tokens": 10 + asked}
        });
        Some(Answer::json(200, &body.to_string()))
    });
    FakeUpstream::start_with(Options {
        gate: Some(gate),
        ..Options::default()
    })
    .await
}

fn keyed(url: &str, limits: &str) -> String {
    format!(
        "{}auth:\n  keys:\n    - {{ name: team, key: team-key, limits: {limits} }}\n{NO_RETRIES}",
        openai_backend(url)
    )
}

const AUTH: [(&str, &str); 1] = [("authorization", "Bearer team-key")];

/// Sends `n` requests at once; their statuses and answers.
async fn burst(
    addr: std::net::SocketAddr,
    n: usize,
    body: &'static str,
) -> Vec<tollgate_testkit::client::Collected> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(async move { post(addr, CHAT, &AUTH, body).await }))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_rpm_key_admits_exactly_60_of_100_sent_at_once() {
    let up = FakeUpstream::start().await;
    let gw = start(&keyed(&up.url(), "{ rpm: 60 }")).await;
    let answers = burst(gw.addr, 100, BODY).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, refused.len()), (60, 40));
    assert_eq!(
        up.calls().len(),
        60,
        "the upstream saw exactly the admitted requests"
    );
    for r in &refused {
        let wait: u64 = r
            .header("retry-after")
            .expect("retry-after")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&wait), "{wait}");
        let err = &r.json()["error"];
        assert_eq!(err["code"], "rate_limit_exceeded");
        let message = err["message"].as_str().unwrap_or("");
        assert!(
            message.contains("rpm (60 requests per minute)"),
            "{message}"
        );
        assert!(!message.contains("team-key"));
    }
    // The answers carry OpenAI's headers: after the burst none is left.
    let last = post(gw.addr, CHAT, &AUTH, BODY).await;
    assert_eq!(last.status, 429);
    let first_ok = answers.iter().find(|r| r.status == 200).expect("an answer");
    assert_eq!(first_ok.header("x-ratelimit-limit-requests"), Some("60"));
    assert!(first_ok.header("x-ratelimit-remaining-requests").is_some());
    assert!(first_ok
        .header("x-ratelimit-reset-requests")
        .is_some_and(|v| v.ends_with('s')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_holds_against_concurrency() {
    let up = greedy_upstream().await;
    let gw = start(&keyed(&up.url(), "{ tokens_per_day: 1000 }")).await;
    const ASK: &str =
        r#"{"model":"up:m","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let answers = burst(gw.addr, 50, ASK).await;
    let used: u64 = up
        .calls()
        .iter()
        .map(|c| 10 + c.json()["max_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        used <= 1000,
        "the upstream generated {used} tokens under a 1000-token budget"
    );
    let admitted = answers.iter().filter(|r| r.status == 200).count();
    assert!(
        admitted >= 8,
        "reservations of ~100 tokens each fit about 9: {admitted}"
    );
    // The refusal points at 00:00 UTC.
    let refused = answers.iter().find(|r| r.status == 429).expect("a refusal");
    let wait: u64 = refused
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("secs");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let to_midnight = 86_400 - now % 86_400;
    assert!(
        wait.abs_diff(to_midnight) <= 5,
        "retry-after {wait}, midnight in {to_midnight}"
    );
    assert!(
        refused
            .text()
            .contains("tokens_per_day (1000 tokens per UTC day"),
        "{}",
        refused.text()
    );
    assert_eq!(
        refused.header("x-ratelimit-limit-tokens"),
        None,
        "a refusal says its limit in words"
    );
    let ok = answers.iter().find(|r| r.status == 200).expect("an answer");
    assert_eq!(ok.header("x-ratelimit-limit-tokens"), Some("1000"));
}

#[tokio::test]
async fn max_tokens_per_request_clamps_what_every_door_sends() {
    let up = FakeUpstream::start().await;
    up.set_default(Answer::chat("ok"));
    let gw = start(&keyed(&up.url(), "{ max_tokens_per_request: 100 }")).await;
    let cases = [
        (
            CHAT,
            r#"{"model":"up:m","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            CHAT,
            r#"{"model":"up:m","max_completion_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (CHAT, BODY),
        (
            "/v1/messages",
            r#"{"model":"up:m","max_tokens":128000,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/responses",
            r#"{"model":"up:m","max_output_tokens":5000,"input":"hi"}"#,
        ),
        ("/v1/responses", r#"{"model":"up:m","input":"hi"}"#),
    ];
    for (path, body) in cases {
        let r = post(gw.addr, path, &AUTH, body).await;
        assert_eq!(r.status, 200, "{path} {body}: {}", r.text());
        let sent = up.last_call().json();
        let budget = sent["max_tokens"]
            .as_u64()
            .or(sent["max_completion_tokens"].as_u64());
        assert_eq!(budget, Some(100), "{path} {body}: sent {sent}");
    }
    // A smaller ask stays as it is.
    let r = post(
        gw.addr,
        CHAT,
        &AUTH,
        r#"{"model":"up:m","max_tokens":7,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last_call().json()["max_tokens"], 7);
}

#[tokio::test]
async fn a_backend_over_its_limits_is_skipped_and_the_route_falls_over() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    let gw = start(&format!(
        "backends:\n  a: {{ type: openai, api_url: \"{}\", limits: {{ rpm: 1 }} }}\n  b: {{ type: openai, api_url: \"{}\" }}\nroutes:\n  r: [\"a:m\", \"b:m\"]\n  only-a: [\"a:m\"]\n{NO_RETRIES}",
        a.url(),
        b.url()
    ))
    .await;
    let body = r#"{"model":"r","messages":[]}"#;
    for expected in ["a", "b", "b"] {
        let r = post(gw.addr, CHAT, &[], body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-tollgate-backend"), Some(expected));
    }
    assert_eq!((a.calls().len(), b.calls().len()), (1, 2));
    // With nowhere to fall over, a 429 naming the backend's limits.
    let r = post(gw.addr, CHAT, &[], r#"{"model":"only-a","messages":[]}"#).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(
        r.text().contains("backend a over its limits"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_answered_once() {
    let up = FakeUpstream::start().await;
    up.set_default(Answer::chat("once").after(Duration::from_millis(300)));
    let gw = start(&openai_backend(&up.url())).await;
    let with_key = |key: &'static str| [("idempotency-key", key)];

    let first = post(gw.addr, CHAT, &with_key("k-1"), BODY).await;
    assert_eq!(first.status, 200);
    // The stored answer is written off the answer's path: give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = post(gw.addr, CHAT, &with_key("k-1"), BODY).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(up.calls().len(), 1, "the upstream saw one request");

    // The same key with another body: 422.
    let other = r#"{"model":"up:m","messages":[{"role":"user","content":"something else"}]}"#;
    let r = post(gw.addr, CHAT, &with_key("k-1"), other).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");

    // Two at once: one runs, the other gets 409 while it does.
    let addr = gw.addr;
    let a = tokio::spawn(async move {
        post(addr, CHAT, &[("anthropic-idempotency-key", "k-2")], BODY).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = post(addr, CHAT, &[("anthropic-idempotency-key", "k-2")], BODY).await;
    let a = a.await.expect("task");
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 409);
    assert_eq!(b.json()["error"]["code"], "request_in_flight");
    assert_eq!(up.calls().len(), 2);
}
