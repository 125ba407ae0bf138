//! Bad input: each mistake is a clear OpenAI-shaped error with the right status, and the
//! gateway keeps serving afterwards.

use bytes::Bytes;
use http::Method;
use tollgate_testkit::client::{post, send};
use tollgate_testkit::FakeUpstream;

use crate::common::*;

#[tokio::test]
async fn each_mistake_gets_its_status_and_the_server_keeps_serving() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!(
        "{}server:\n  max_body_bytes: 1000\n",
        openai_backend(&up.url())
    ))
    .await;

    let cases: [(&str, &str, u16, Option<&str>); 6] = [
        (CHAT, "{not json", 400, None),
        (CHAT, r#"{"messages":[]}"#, 400, Some("model")),
        (
            CHAT,
            r#"{"model":"up:m","messages":{"role":"user"}}"#,
            400,
            Some("messages"),
        ),
        (
            CHAT,
            r#"{"model":"up:m","messages":[],"stream":"yes"}"#,
            400,
            Some("stream"),
        ),
        (CHAT, r#"{"model":"nobackend:m","messages":[]}"#, 404, None),
        ("/v1/embeddings", r#"{"model":"up:m"}"#, 400, Some("input")),
    ];
    for (path, body, status, param) in cases {
        let r = post(gw.addr, path, &[], body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let e = &r.json()["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(e["type"].is_string() && e["code"].is_string());
        if let Some(param) = param {
            assert_eq!(e["param"], param, "{body}");
            assert!(e["message"].as_str().is_some_and(|m| m.contains(param)));
        }
        assert!(r.header("x-request-id").is_some());
    }

    let big = format!(
        r#"{{"model":"up:m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let r = post(gw.addr, CHAT, &[], &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");

    let r = send(gw.addr, Method::GET, CHAT, &[], Bytes::new()).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");

    let r = send(gw.addr, Method::POST, "/v2/unknown", &[], Bytes::new()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");

    assert!(up.calls().is_empty(), "no bad request reached the upstream");
    let r = post(gw.addr, CHAT, &[], r#"{"model":"up:m","messages":[]}"#).await;
    assert_eq!(r.status, 200, "still serving");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    // No content-length: the limit applies while reading.
    let gw = start("backends:\n  mock: {}\nserver:\n  max_body_bytes: 100\n").await;
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let chunks: Vec<Result<_, std::convert::Infallible>> = (0..3)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b' '; 80]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let req = http::Request::post(CHAT)
        .header("host", "x")
        .body(body)
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 413);
}
