//! Streaming: events relayed as sent, keepalives while the upstream is silent, broken
//! streams never dressed up as success, client disconnects cancelling the upstream.

use std::time::{Duration, Instant};

use http::Method;
use tollgate_testkit::client::{open, post, sse_data, stream_text};
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

const STREAM: &str =
    r#"{"model":"up:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn keepalive_config(url: &str, interval: u64, format: &str) -> String {
    format!(
        "{}failure_handling:\n  keepalive_interval: {interval}\n  keepalive_format: {format}\n  retries: 0\n",
        openai_backend(url)
    )
}

#[tokio::test]
async fn events_are_relayed_byte_for_byte() {
    let up = FakeUpstream::start().await;
    let steps = Answer::stream_steps(&["Hel", "lo", " world"], Duration::ZERO);
    let expected: String = steps
        .iter()
        .filter_map(|s| match s {
            Step::Raw(r) => Some(r.clone()),
            Step::Pause(_) => None,
        })
        .collect();
    up.push(Answer::Sse {
        status: 200,
        steps,
        end: StreamEnd::Finish,
    });
    let gw = start(&openai_backend(&up.url())).await;

    let r = post(gw.addr, CHAT, &[], STREAM).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert_eq!(r.text(), expected);
    assert_eq!(stream_text(&r.body), "Hello world");
    assert_no_upstream_key(&r);

    let sent = up.last_call();
    assert_eq!(sent.json()["stream"], true);
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
}

#[tokio::test]
async fn a_cut_stream_ends_with_an_error_event_and_no_done() {
    let up = FakeUpstream::start().await;
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(chunk_event("par")),
            Step::Raw(chunk_event("tial")),
        ],
        end: StreamEnd::Cut,
    });
    let gw = start(&openai_backend(&up.url())).await;
    let r = post(gw.addr, CHAT, &[], STREAM).await;
    assert_eq!(r.status, 200);
    let data = sse_data(&r.body);
    assert_eq!(stream_text(&r.body), "partial");
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: serde_json::Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["type"], "upstream_error", "{last}");
}

#[tokio::test]
async fn a_stream_ending_early_without_done_is_an_error() {
    let up = FakeUpstream::start().await;
    up.push(Answer::Sse {
        status: 200,
        steps: vec![Step::Raw(chunk_event("only"))],
        end: StreamEnd::Finish,
    });
    let gw = start(&openai_backend(&up.url())).await;
    let r = post(gw.addr, CHAT, &[], STREAM).await;
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data[1].contains("\"error\""), "{data:?}");
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_connection() {
    let up = FakeUpstream::start().await;
    up.push(Answer::Sse {
        status: 200,
        steps: vec![Step::Raw(chunk_event("first"))],
        end: StreamEnd::Hang,
    });
    let gw = start(&openai_backend(&up.url())).await;
    let mut resp = open(gw.addr, Method::POST, CHAT, &[], STREAM).await;
    assert_eq!(resp.status, 200);
    let (_, first) = resp.next_chunk().await.expect("a chunk").expect("ok");
    assert!(String::from_utf8_lossy(&first).contains("first"));
    assert_eq!(up.open_connections(), 1);
    resp.disconnect();
    assert!(
        up.wait_open_at_most(0, Duration::from_secs(1)).await,
        "upstream connection still open 1 s after the client left"
    );
}

#[tokio::test]
async fn client_disconnect_before_the_first_event_closes_the_upstream_connection() {
    let up = FakeUpstream::start().await;
    up.push(Answer::Hang);
    let gw = start(&keepalive_config(&up.url(), 1, "comment")).await;
    let mut resp = open(gw.addr, Method::POST, CHAT, &[], STREAM).await;
    assert_eq!(resp.status, 200, "committed after one keepalive interval");
    let (_, ka) = resp.next_chunk().await.expect("chunk").expect("ok");
    assert_eq!(&ka[..], b": keepalive\n\n");
    assert_eq!(up.open_connections(), 1);
    resp.disconnect();
    assert!(up.wait_open_at_most(0, Duration::from_secs(1)).await);
}

/// Counts keepalive comments between two instants.
fn keepalives_between(chunks: &[(Instant, bytes::Bytes)], from: usize, to: usize) -> usize {
    chunks[from..to]
        .iter()
        .filter(|(_, c)| &c[..] == b": keepalive\n\n")
        .count()
}

#[tokio::test]
async fn keepalives_flow_before_the_first_byte_and_between_chunks() {
    let up = FakeUpstream::start().await;
    let mut steps = vec![Step::Raw(chunk_event("Hello"))];
    steps.push(Step::Pause(Duration::from_secs(3)));
    steps.extend(Answer::stream_steps(&[" there"], Duration::ZERO));
    // Silent 3 s before even the status line, then 3 s between chunks.
    up.push(
        Answer::Sse {
            status: 200,
            steps,
            end: StreamEnd::Finish,
        }
        .after(Duration::from_secs(3)),
    );
    let gw = start(&keepalive_config(&up.url(), 1, "comment")).await;

    let started = Instant::now();
    let mut resp = open(gw.addr, Method::POST, CHAT, &[], STREAM).await;
    assert_eq!(resp.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "headers were held too long"
    );
    let (chunks, error) = resp.read_all().await;
    assert!(error.is_none());
    let is_content = |c: &bytes::Bytes| String::from_utf8_lossy(c).contains("Hello");
    let first = chunks
        .iter()
        .position(|(_, c)| is_content(c))
        .expect("content arrived");
    let second = chunks
        .iter()
        .position(|(_, c)| String::from_utf8_lossy(c).contains(" there"))
        .expect("second chunk");
    assert!(
        keepalives_between(&chunks, 0, first) >= 2,
        "before first byte: {chunks:?}"
    );
    assert!(
        keepalives_between(&chunks, first, second) >= 2,
        "between chunks: {chunks:?}"
    );
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert_eq!(stream_text(&body), "Hello there");
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn a_quick_upstream_error_keeps_its_status() {
    let up = FakeUpstream::start().await;
    up.push(
        Answer::error(429, "rate limited", "rate_limit_exceeded").after(Duration::from_millis(300)),
    );
    let gw = start(&keepalive_config(&up.url(), 1, "comment")).await;
    let r = post(gw.addr, CHAT, &[], STREAM).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "rate limited");
}

#[tokio::test]
async fn a_late_upstream_error_becomes_an_error_event() {
    let up = FakeUpstream::start().await;
    up.push(
        Answer::error(429, "rate limited late", "rate_limit_exceeded")
            .after(Duration::from_millis(1600)),
    );
    let gw = start(&keepalive_config(&up.url(), 1, "comment")).await;
    let r = post(gw.addr, CHAT, &[], STREAM).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with(": keepalive\n\n"), "{}", r.text());
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&data[0]).expect("json");
    assert_eq!(v["error"]["message"], "rate limited late");
}

#[tokio::test]
async fn chunk_keepalives_reuse_the_stream_id_and_model() {
    let up = FakeUpstream::start().await;
    let mut steps = vec![Step::Raw(chunk_event("a"))];
    steps.push(Step::Pause(Duration::from_millis(1500)));
    steps.extend(Answer::stream_steps(&["b"], Duration::ZERO));
    up.push(Answer::Sse {
        status: 200,
        steps,
        end: StreamEnd::Finish,
    });
    let gw = start(&keepalive_config(&up.url(), 1, "chunk")).await;
    let r = post(gw.addr, CHAT, &[], STREAM).await;
    let data = sse_data(&r.body);
    let empties: Vec<serde_json::Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["choices"][0]["delta"]["content"] == "")
        .collect();
    assert!(!empties.is_empty(), "{data:?}");
    assert_eq!(empties[0]["id"], "chatcmpl-fake");
    assert_eq!(empties[0]["model"], "fake-model");
    assert_eq!(empties[0]["object"], "chat.completion.chunk");
    assert_eq!(stream_text(&r.body), "ab");
    assert!(!r.text().contains(": keepalive"));
}

#[tokio::test]
async fn request_timeout_ends_a_stream_with_an_error_event() {
    let up = FakeUpstream::start().await;
    up.push(Answer::Sse {
        status: 200,
        steps: vec![Step::Raw(chunk_event("x"))],
        end: StreamEnd::Hang,
    });
    let gw = start(&format!(
        "{}server:\n  request_timeout: 2\nfailure_handling:\n  keepalive_interval: 1\n",
        openai_backend(&up.url())
    ))
    .await;
    let started = Instant::now();
    let r = post(gw.addr, CHAT, &[], STREAM).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let data = sse_data(&r.body);
    let last: serde_json::Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "upstream_timeout");
    assert!(up.wait_open_at_most(0, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn client_disconnect_while_headers_are_held_closes_the_upstream_connection() {
    use tokio::io::AsyncWriteExt;
    let up = FakeUpstream::start().await;
    up.push(Answer::Hang);
    // A long interval: the client leaves while the gateway still holds the status line.
    let gw = start(&keepalive_config(&up.url(), 30, "comment")).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let req = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{STREAM}",
        STREAM.len()
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    assert!(up.wait_calls(1, Duration::from_secs(2)).await);
    assert_eq!(up.open_connections(), 1);
    drop(tcp);
    assert!(
        up.wait_open_at_most(0, Duration::from_secs(1)).await,
        "upstream connection still open 1 s after the client left"
    );
}

/// OpenAI's stream shape with `include_usage`: a last chunk with no choices and the usage.
fn openai_usage_stream() -> Answer {
    let usage = r#"data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1,"model":"fake-model","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}"#;
    let finish = r#"data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1,"model":"fake-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(chunk_event("to")),
            Step::Raw(chunk_event("ken")),
            Step::Raw(format!("{finish}\n\n")),
            Step::Raw(format!("{usage}\n\n")),
            Step::Raw("data: [DONE]\n\n".into()),
        ],
        end: StreamEnd::Finish,
    }
}

#[tokio::test]
async fn usage_is_asked_for_counted_and_not_shown_to_a_client_that_did_not_ask() {
    let up = FakeUpstream::start().await;
    up.push(openai_usage_stream());
    up.push(openai_usage_stream());
    let gw = start(&openai_backend(&up.url())).await;

    let r = post(gw.addr, CHAT, &[], STREAM).await;
    assert_eq!(stream_text(&r.body), "token");
    let data = sse_data(&r.body);
    assert!(
        !r.text().contains("\"usage\""),
        "the gateway's own usage chunk leaked: {data:?}"
    );
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        up.calls()[0].json()["stream_options"],
        serde_json::json!({"include_usage": true})
    );
    let metrics = tollgate_testkit::client::get(gw.addr, "/metrics", &[])
        .await
        .text();
    assert!(
        metrics.contains(
            r#"tollgate_tokens_total{door="chat",backend="up",model="m",key="",kind="prompt"} 11"#
        ),
        "{metrics}"
    );

    // A client that asks gets the chunk, and its own stream_options go up unchanged.
    let asked =
        r#"{"model":"up:m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let r = post(gw.addr, CHAT, &[], asked).await;
    assert!(
        r.text().contains(r#""usage":{"prompt_tokens":11"#),
        "{}",
        r.text()
    );
    assert_eq!(
        up.calls()[1].body,
        bytes::Bytes::from(asked.replace("up:m", "m"))
    );
}
