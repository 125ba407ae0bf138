//! Failure handling: retries with backoff, fallback routes, circuit breakers, timeouts and the
//! context-length retry — every one only before a byte of the answer reached the client.

use std::time::{Duration, Instant};

use tollgate_testkit::client::{post, sse_data, stream_text};
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

const CHAT_BODY: &str = r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Fast backoff so tests do not wait on it (retry-after is still honoured).
const FAST: &str = "failure_handling:\n  backoff: { initial_ms: 10, max_ms: 3000 }\n";

/// A port nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}/v1")
}

fn two_backends(a: &str, b: &str, extra: &str) -> String {
    format!(
        "backends:\n  a: {{ type: openai, api_url: \"{a}\" }}\n  b: {{ type: openai, api_url: \"{b}\" }}\nroutes:\n  r: [\"a:m1\", \"b:m2\"]\n{extra}"
    )
}

#[tokio::test]
async fn retries_until_success_and_reports_attempts() {
    let up = FakeUpstream::start().await;
    up.push(Answer::error(503, "busy", "overloaded"));
    up.push(Answer::error(503, "busy", "overloaded"));
    up.push(Answer::chat("third time lucky"));
    let gw = start(&format!("{}{FAST}", openai_backend(&up.url()))).await;
    let r = post(gw.addr, CHAT, &[], CHAT_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "third time lucky"
    );
    assert_eq!(r.header("x-tollgate-attempts"), Some("3"));
    assert_eq!(up.calls().len(), 3);
    // Each retry sent the same body.
    let bodies: Vec<_> = up.calls().iter().map(|c| c.body.clone()).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_is_returned() {
    let up = FakeUpstream::start().await;
    up.set_default(Answer::error(502, "bad gateway upstream", "bad_gateway"));
    let gw = start(&format!(
        "{}{FAST}  retries: 1\n",
        openai_backend(&up.url())
    ))
    .await;
    let r = post(gw.addr, CHAT, &[], CHAT_BODY).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["message"], "bad gateway upstream");
    assert_eq!(up.calls().len(), 2, "one attempt and one retry");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let up = FakeUpstream::start().await;
    up.push(Answer::error(429, "slow down", "rate_limit_exceeded").with_header("retry-after", "1"));
    up.push(Answer::chat("ok"));
    let gw = start(&format!("{}{FAST}", openai_backend(&up.url()))).await;
    let r = post(gw.addr, CHAT, &[], CHAT_BODY).await;
    assert_eq!(r.status, 200);
    let calls = up.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at.duration_since(calls[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn a_long_retry_after_moves_to_the_next_target_instead() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    a.push(
        Answer::error(429, "come back in an hour", "rate_limit_exceeded")
            .with_header("retry-after", "3600"),
    );
    let gw = start(&two_backends(&a.url(), &b.url(), FAST)).await;
    let started = Instant::now();
    let r = post(gw.addr, CHAT, &[], r#"{"model":"r","messages":[]}"#).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.header("x-tollgate-backend"), Some("b"));
    assert_eq!(a.calls().len(), 1);
}

#[tokio::test]
async fn a_refusing_primary_falls_back_streamed_and_not() {
    let b = FakeUpstream::start().await;
    b.push(Answer::chat("fallback whole"));
    b.push(Answer::chat_stream(&["fallback ", "stream"]));
    let gw = start(&two_backends(&dead_url(), &b.url(), FAST)).await;
    let r = post(gw.addr, CHAT, &[], r#"{"model":"r","messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "fallback whole"
    );
    assert_eq!(
        r.header("x-tollgate-attempts"),
        Some("4"),
        "3 on the dead primary, then b"
    );
    let r = post(gw.addr, CHAT, &[], STREAM_BODY).await;
    assert_eq!(r.status, 200);
    assert_eq!(stream_text(&r.body), "fallback stream");
    assert_eq!(b.last_call().json()["model"], "m2");
}

#[tokio::test]
async fn a_stream_cut_before_its_first_event_falls_back() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    a.set_default(Answer::Sse {
        status: 200,
        steps: vec![],
        end: StreamEnd::Cut,
    });
    b.push(Answer::chat_stream(&["from ", "b"]));
    let gw = start(&two_backends(&a.url(), &b.url(), FAST)).await;
    let r = post(gw.addr, CHAT, &[], STREAM_BODY).await;
    assert_eq!(r.status, 200);
    assert_eq!(stream_text(&r.body), "from b");
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(a.calls().len(), 3, "retried on a before falling back");
}

#[tokio::test]
async fn a_stream_cut_after_its_first_event_is_an_error_event_without_fallback() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    a.push(Answer::Sse {
        status: 200,
        steps: vec![Step::Raw(chunk_event("half"))],
        end: StreamEnd::Cut,
    });
    let gw = start(&two_backends(&a.url(), &b.url(), FAST)).await;
    let r = post(gw.addr, CHAT, &[], STREAM_BODY).await;
    assert_eq!(r.status, 200);
    let data = sse_data(&r.body);
    assert_eq!(stream_text(&r.body), "half");
    assert!(
        data.last().is_some_and(|d| d.contains("\"error\"")),
        "{data:?}"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert!(
        b.calls().is_empty(),
        "no fallback once content reached the client"
    );
    assert_eq!(
        a.calls().len(),
        1,
        "no retry once content reached the client"
    );
}

#[tokio::test]
async fn an_open_circuit_skips_the_backend_until_one_probe_after_cooldown() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    a.set_default(Answer::error(500, "broken", "internal"));
    let gw = start(&two_backends(
        &a.url(),
        &b.url(),
        "failure_handling:\n  retries: 0\n  circuit_breaker: { failures: 2, cooldown: 1 }\n",
    ))
    .await;
    let ask = || post(gw.addr, CHAT, &[], r#"{"model":"r","messages":[]}"#);
    for _ in 0..2 {
        let r = ask().await;
        assert_eq!(r.header("x-tollgate-backend"), Some("b"));
    }
    assert_eq!(a.calls().len(), 2);
    let (calls, conns) = (a.calls().len(), a.connections());
    // Open: a is skipped without a connection attempt.
    for _ in 0..3 {
        let r = ask().await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-tollgate-attempts"),
            Some("1"),
            "only b was tried"
        );
    }
    assert_eq!((a.calls().len(), a.connections()), (calls, conns));
    let ready = tollgate_testkit::client::get(gw.addr, "/health/ready", &[]).await;
    assert_eq!(ready.json()["backends"]["a"]["status"], "circuit_open");

    // After the cooldown exactly one probe goes to a; it fails and the circuit reopens.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ask().await;
    assert_eq!(a.calls().len(), calls + 1, "one probe");
    ask().await;
    assert_eq!(
        a.calls().len(),
        calls + 1,
        "reopened after the failed probe"
    );

    // A successful probe closes it.
    a.set_default(Answer::chat("a is back"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = ask().await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "a is back");
    let r = ask().await;
    assert_eq!(r.header("x-tollgate-backend"), Some("a"));
}

#[tokio::test]
async fn all_circuits_open_is_503_backend_unavailable() {
    let a = FakeUpstream::start().await;
    a.set_default(Answer::error(503, "down", "down"));
    let gw = start(&format!(
        "{}failure_handling:\n  retries: 0\n  circuit_breaker: {{ failures: 1, cooldown: 60 }}\n",
        openai_backend(&a.url())
    ))
    .await;
    assert_eq!(post(gw.addr, CHAT, &[], CHAT_BODY).await.status, 503);
    let r = post(gw.addr, CHAT, &[], CHAT_BODY).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "backend_unavailable");
    assert!(r.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("circuit open")));
    assert_eq!(a.calls().len(), 1);
}

/// A chat stream whose upstream sends `steps` and then hangs, through a gateway with these
/// `failure_handling` times: what the client got, how long it took, and the upstream.
async fn silent_stream(
    steps: Vec<Step>,
    keepalive_interval: u64,
    max_silent_wait: u64,
) -> (tollgate_testkit::client::Collected, Duration, FakeUpstream) {
    let up = FakeUpstream::start().await;
    up.push(Answer::Sse {
        status: 200,
        steps,
        end: StreamEnd::Hang,
    });
    let gw = start(&format!(
        "{}failure_handling:\n  keepalive_interval: {keepalive_interval}\n  max_silent_wait: {max_silent_wait}\n",
        openai_backend(&up.url())
    ))
    .await;
    let started = Instant::now();
    let r = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","stream":true,"messages":[]}"#,
    )
    .await;
    (r, started.elapsed(), up)
}

/// The last event of a stream the gateway ended: its error code.
fn last_error_code(r: &tollgate_testkit::client::Collected) -> serde_json::Value {
    let data = sse_data(&r.body);
    let last: serde_json::Value = serde_json::from_str(data.last().expect("events")).expect("json");
    last["error"]["code"].clone()
}

#[tokio::test]
async fn a_silent_stream_is_ended_after_max_silent_wait() {
    let (r, took, up) = silent_stream(vec![Step::Raw(chunk_event("hello"))], 1, 2).await;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(last_error_code(&r), "upstream_timeout");
    assert!(
        r.text().contains(": keepalive"),
        "keepalives flowed meanwhile"
    );
    assert!(
        up.wait_open_at_most(0, Duration::from_secs(1)).await,
        "upstream closed"
    );
}

/// The silence limit shorter than the keepalive interval: the stream ends `max_silent_wait`
/// after its last event, not at the next keepalive.
#[tokio::test]
async fn silence_shorter_than_the_keepalive_interval_ends_the_stream_in_time() {
    let steps = vec![
        Step::Raw(chunk_event("one")),
        Step::Pause(Duration::from_millis(600)),
        Step::Raw(chunk_event("two")),
    ];
    let (r, took, _up) = silent_stream(steps, 10, 1).await;
    // The second chunk at 0.6 s, silent until 1.6 s; the first keepalive would be due at 10 s.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    assert!(r.text().contains("two"), "{}", r.text());
    assert!(!r.text().contains(": keepalive"), "{}", r.text());
    assert_eq!(last_error_code(&r), "upstream_timeout");
}

#[tokio::test]
async fn a_context_length_400_is_retried_once_with_a_fitting_max_tokens() {
    let up = FakeUpstream::start().await;
    up.push(Answer::error(
        400,
        "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (1000 in the messages, 8000 in the completion). Please reduce the length of the messages or completion.",
        "context_length_exceeded",
    ));
    up.push(Answer::chat("fits now"));
    let gw = start(&openai_backend(&up.url())).await;
    let r = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","max_tokens":8000,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = up.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].json()["max_tokens"], 8000);
    assert_eq!(calls[1].json()["max_tokens"], 7192);

    // The prompt alone overflowing is the client's to fix: no retry.
    up.push(Answer::error(400, "This model's maximum context length is 100 tokens. However, your messages resulted in 500 tokens.", "context_length_exceeded"));
    let r = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","max_tokens":10,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(up.calls().len(), 3);
}

#[tokio::test]
async fn a_circuit_opened_by_this_request_returns_the_real_error() {
    let up = FakeUpstream::start().await;
    up.set_default(Answer::error(503, "the real reason", "overloaded"));
    let gw = start(&format!(
        "{}failure_handling:\n  retries: 5\n  backoff: {{ initial_ms: 1, max_ms: 10 }}\n  circuit_breaker: {{ failures: 2, cooldown: 60 }}\n",
        openai_backend(&up.url())
    ))
    .await;
    let r = post(gw.addr, CHAT, &[], CHAT_BODY).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"]["message"],
        "the real reason",
        "not a circuit message"
    );
    assert_eq!(up.calls().len(), 2, "no retry into the circuit it opened");
    let metrics = tollgate_testkit::client::get(gw.addr, "/metrics", &[])
        .await
        .text();
    assert!(
        metrics.contains("tollgate_retries_total{backend=\"up\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_circuit_open{backend=\"up\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn request_timeout_names_the_target_it_waited_on() {
    let up = FakeUpstream::start().await;
    up.set_default(Answer::Hang);
    let gw = start(&format!(
        "{}server:\n  request_timeout: 1\n",
        openai_backend(&up.url())
    ))
    .await;
    let started = Instant::now();
    let r = post(gw.addr, CHAT, &[], CHAT_BODY).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    assert_eq!(r.header("x-tollgate-backend"), Some("up"));
}
