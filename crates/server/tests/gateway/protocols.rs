//! HTTP versions on both sides: h2c clients, and backends spoken to over HTTP/2 only.

use std::time::Duration;

use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_testkit::client::{post, stream_text};
use tollgate_testkit::{Answer, FakeUpstream};

use crate::common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn http2_only_backend_multiplexes_requests_on_one_h2c_connection() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("whole answer"));
    up.push(Answer::chat_stream(&["str", "eamed"]));
    up.push(Answer::chat("third"));
    let gw = start(&format!(
        "{}    http2_only: true\n",
        openai_backend(&up.url())
    ))
    .await;

    let whole = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(
        whole.json()["choices"][0]["message"]["content"],
        "whole answer"
    );
    let streamed = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert_eq!(stream_text(&streamed.body), "streamed");
    assert!(streamed.text().trim_end().ends_with("data: [DONE]"));
    let third = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","messages":[{"role":"user","content":"again"}]}"#,
    )
    .await;
    assert_eq!(third.json()["choices"][0]["message"]["content"], "third");

    let calls = up.calls();
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert_eq!(call.version, Version::HTTP_2, "{}", call.path);
        assert_eq!(call.path, "/v1/chat/completions");
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {UPSTREAM_KEY}").as_str())
        );
    }
    assert_eq!(calls[2].json()["messages"][0]["content"], "again");
    assert_eq!(
        up.connections(),
        1,
        "one h2c connection carries every request"
    );
}

#[tokio::test]
async fn default_backends_speak_http1_to_cleartext_upstreams() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("ok"));
    let gw = start(&openai_backend(&up.url())).await;
    let resp = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
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

    // A full request over HTTP/2 with hyper's client.
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}{CHAT}", gw.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"mock:echo","messages":[{"role":"user","content":"over h2"}]}"#,
        )))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );
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
    let resp = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()["error"]["code"], "upstream_error");
    assert_no_upstream_key(&resp);
    assert!(up.calls().is_empty(), "no HTTP/1.1 request was made");
}
