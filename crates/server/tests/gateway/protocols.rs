//! HTTP versions on both sides: h2c clients, and backends spoken to over HTTP/2 only.

use std::time::Duration;

use http::Method;
use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_testkit::client::{open, post, stream_text};
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn http2_only_backend_multiplexes_requests_on_one_h2c_connection() {
    let up = FakeUpstream::start().await;
    // A stream that stays open (one chunk, then silence) while other requests run beside it:
    // over HTTP/1.1 each of them would need a connection of its own.
    up.push(Answer::Sse {
        status: 200,
        steps: vec![Step::Raw(chunk_event("held"))],
        end: StreamEnd::Hang,
    });
    up.push(Answer::chat("whole answer"));
    up.push(Answer::chat_stream(&["str", "eamed"]));
    let gw = start(&format!(
        "{}    http2_only: true\n",
        openai_backend(&up.url())
    ))
    .await;

    let mut held = open(
        gw.addr,
        Method::POST,
        CHAT,
        &[],
        r#"{"model":"up:m","stream":true,"messages":[{"role":"user","content":"hold"}]}"#,
    )
    .await;
    assert_eq!(held.status, 200);
    let first = held.next_chunk().await.expect("first event").expect("ok");
    assert_eq!(stream_text(&first.1), "held");

    let whole = chat(gw.addr, "beside", false).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(
        whole.json()["choices"][0]["message"]["content"],
        "whole answer"
    );
    let streamed = chat(gw.addr, "again", true).await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert_eq!(stream_text(&streamed.body), "streamed");
    assert!(streamed.text().trim_end().ends_with("data: [DONE]"));

    let calls = up.calls();
    assert_eq!(calls.len(), 3);
    let contents: Vec<_> = calls
        .iter()
        .map(|c| c.json()["messages"][0]["content"].clone())
        .collect();
    assert_eq!(contents, ["hold", "beside", "again"]);
    for call in &calls {
        assert_eq!(call.version, Version::HTTP_2, "{}", call.path);
        assert_eq!(call.path, "/v1/chat/completions");
        assert_eq!(call.json()["model"], "m");
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {UPSTREAM_KEY}").as_str())
        );
    }
    assert_eq!(
        up.connections(),
        1,
        "one h2c connection carries the held stream and the requests beside it"
    );
    drop(held);
}

#[tokio::test]
async fn default_backends_speak_http1_to_cleartext_upstreams() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("ok"));
    let gw = start(&openai_backend(&up.url())).await;
    let resp = chat(gw.addr, "hi", false).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.last_call().version, Version::HTTP_11);
}

#[tokio::test]
async fn http2_only_is_an_openai_option_checked_as_such() {
    let yaml = format!(
        "{}    http2_only: yes please\n",
        openai_backend("http://127.0.0.1:9/v1")
    );
    let config: tollgate_core::Config = serde_yaml::from_str(&yaml).expect("yaml");
    let env = tollgate_core::Env::from_map(Default::default());
    let problems = match tollgate_server::Runtime::build(config, &registry(), &env, None) {
        Ok(_) => panic!("a string is not a boolean"),
        Err(problems) => problems,
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "backends.up");
    assert!(
        problems[0].message.contains("expected a boolean"),
        "{problems:?}"
    );
}

/// Posts a one-message chat for the model `up:m`.
async fn chat(
    addr: std::net::SocketAddr,
    content: &str,
    stream: bool,
) -> tollgate_testkit::client::Collected {
    let body = serde_json::json!({
        "model": "up:m",
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    });
    post(addr, CHAT, &[], &body.to_string()).await
}

/// Reads until the server's first frame header arrives; returns its type byte.
async fn first_frame_type(stream: &mut tokio::net::TcpStream) -> u8 {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("the server answered within 5 s")
        .expect("read a frame header");
    head[3]
}

#[tokio::test]
async fn h2c_clients_are_served_even_when_the_preface_arrives_in_pieces() {
    let gw = start("backends:\n  mock: {}\n").await;

    // Whole preface in one write.
    let mut whole = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    whole
        .write_all(&[PREFACE, SETTINGS].concat())
        .await
        .expect("write");
    assert_eq!(first_frame_type(&mut whole).await, 4, "SETTINGS first");

    // Split inside the preface, with a pause: the sniffer waits for the rest.
    let mut split = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    split.set_nodelay(true).expect("nodelay");
    split.write_all(&PREFACE[..7]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(60)).await;
    split
        .write_all(&[&PREFACE[7..], SETTINGS].concat())
        .await
        .expect("write");
    assert_eq!(first_frame_type(&mut split).await, 4, "SETTINGS first");

    // A full request over HTTP/2 with hyper's client, proxied to an upstream.
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("answered over h2"));
    let proxied = start(&openai_backend(&up.url())).await;
    let tcp = tokio::net::TcpStream::connect(proxied.addr)
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}{CHAT}", proxied.addr))
        .header("content-type", "application/json")
        .header("x-request-id", "h2-client-1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"up:m","messages":[{"role":"user","content":"over h2"}]}"#,
        )))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"h2-client-1"[..])
    );
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["choices"][0]["message"]["content"], "answered over h2");
    let sent = up.last_call();
    assert_eq!(sent.json()["messages"][0]["content"], "over h2");
    assert_eq!(sent.json()["model"], "m");
    assert_eq!(sent.header("x-request-id"), Some("h2-client-1"));
}

#[tokio::test]
async fn http2_only_against_an_http1_only_upstream_is_a_clear_502() {
    let up = FakeUpstream::start_with(tollgate_testkit::Options {
        http1_only: true,
        ..Default::default()
    })
    .await;
    let gw = start(&format!(
        "{}    http2_only: true\n{NO_RETRIES}",
        openai_backend(&up.url())
    ))
    .await;
    let resp = chat(gw.addr, "hi", false).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()["error"]["code"], "upstream_error");
    assert_no_upstream_key(&resp);
    assert!(up.calls().is_empty(), "no HTTP/1.1 request was made");
}
