//! Non-streaming proxying: content, fields, headers and upstream errors.

use tollgate_testkit::client::post;
use tollgate_testkit::{Answer, FakeUpstream};

use crate::common::*;

#[tokio::test]
async fn chat_reaches_upstream_with_unknown_fields_untouched() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("The answer is 42."));
    let gw = start(&openai_backend(&up.url())).await;

    let body = r#"{"model":"up:gpt-4o","messages":[{"role":"user","content":"Hi \u00e9"}],"temperature":1.0,"x_future_param":{"nested":[1,2.50,"s"]},"tools":[]}"#;
    let resp = post(
        gw.addr,
        CHAT,
        &[("x-request-id", "test-req-1"), ("x-custom", "client-only")],
        body,
    )
    .await;

    assert_eq!(resp.status, 200, "{}", resp.text());
    let json = resp.json();
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "The answer is 42."
    );
    assert_eq!(resp.header("x-request-id"), Some("test-req-1"));
    assert_eq!(resp.header("x-tollgate-backend"), Some("up"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_no_upstream_key(&resp);

    let sent = up.last_call();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(sent.header("x-request-id"), Some("test-req-1"));
    assert_eq!(
        sent.header("x-custom"),
        None,
        "client headers are not forwarded"
    );
    let text = String::from_utf8(sent.body.to_vec()).expect("utf8");
    // Raw values pass byte for byte: number spelling and escapes included.
    assert!(
        text.contains(r#""x_future_param":{"nested":[1,2.50,"s"]}"#),
        "{text}"
    );
    assert!(text.contains(r#""temperature":1.0"#), "{text}");
    assert!(text.contains(r#""content":"Hi \u00e9""#), "{text}");
    assert_eq!(
        sent.json()["model"],
        "gpt-4o",
        "the backend prefix is stripped"
    );
}

#[tokio::test]
async fn completions_and_embeddings_are_routed_by_model() {
    let up = FakeUpstream::start().await;
    up.push(Answer::json(
        200,
        r#"{"object":"text_completion","choices":[{"text":"ok"}]}"#,
    ));
    up.push(Answer::json(
        200,
        r#"{"object":"list","data":[{"embedding":[0.5]}]}"#,
    ));
    let gw = start(&openai_backend(&up.url())).await;

    let r = post(
        gw.addr,
        "/v1/completions",
        &[],
        r#"{"model":"up:m1","prompt":"p","echo":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["text"], "ok");
    let r = post(
        gw.addr,
        "/v1/embeddings",
        &[],
        r#"{"model":"up:e1","input":["a","b"]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["embedding"][0], 0.5);

    let calls = up.calls();
    assert_eq!(calls[0].path, "/v1/completions");
    assert_eq!(calls[0].json()["model"], "m1");
    assert_eq!(calls[0].json()["echo"], true);
    assert_eq!(calls[1].path, "/v1/embeddings");
    assert_eq!(calls[1].json()["input"], serde_json::json!(["a", "b"]));
}

#[tokio::test]
async fn upstream_errors_keep_status_and_openai_shape() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!("{}{NO_RETRIES}", openai_backend(&up.url()))).await;
    let chat = r#"{"model":"up:m","messages":[]}"#;

    // An OpenAI-shaped error passes through as is.
    up.push(Answer::error(429, "slow down", "rate_limit_exceeded").with_header("retry-after", "7"));
    let r = post(gw.addr, CHAT, &[], chat).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "slow down");
    assert_eq!(r.header("retry-after"), Some("7"));

    // A FastAPI-style 422 is wrapped, keeping its status and detail.
    up.push(Answer::json(
        422,
        r#"{"detail":[{"type":"extra_forbidden","loc":["body","foo"]}]}"#,
    ));
    let r = post(gw.addr, CHAT, &[], chat).await;
    assert_eq!(r.status, 422);
    let msg = r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(msg.contains("extra_forbidden"), "{msg}");

    // Plain-text 5xx.
    up.push(Answer::json(503, "upstream overloaded"));
    let r = post(gw.addr, CHAT, &[], chat).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "upstream_error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("overloaded")));

    // An upstream echoing our key back never shows it to the client.
    up.push(Answer::error(
        401,
        &format!("bad key {UPSTREAM_KEY}"),
        "invalid_api_key",
    ));
    let r = post(gw.addr, CHAT, &[], chat).await;
    assert_eq!(r.status, 401);
    assert_no_upstream_key(&r);
    assert_eq!(up.calls().len(), 4);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_hung_upstream_is_504() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let hung = FakeUpstream::start().await;
    hung.set_default(Answer::Hang);
    let gw = start(&format!(
        "backends:\n  dead: {{ type: openai, api_url: \"http://{dead}/v1\" }}\n  slow: {{ type: openai, api_url: \"{}\", timeout: 1 }}\n{NO_RETRIES}",
        hung.url()
    ))
    .await;
    let r = post(gw.addr, CHAT, &[], r#"{"model":"dead:m","messages":[]}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    let started = std::time::Instant::now();
    let r = post(gw.addr, CHAT, &[], r#"{"model":"slow:m","messages":[]}"#).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(hung.calls().len(), 1);
}

#[tokio::test]
async fn a_route_falls_back_to_its_next_target() {
    let primary = FakeUpstream::start().await;
    let secondary = FakeUpstream::start().await;
    primary.push(Answer::error(503, "down", "unavailable"));
    secondary.push(Answer::chat("from the fallback"));
    let gw = start(&format!(
        "backends:\n  a: {{ type: openai, api_url: \"{}\" }}\n  b: {{ type: openai, api_url: \"{}\" }}\nroutes:\n  smart: [\"a:m1\", \"b:m2\"]\n{NO_RETRIES}",
        primary.url(),
        secondary.url()
    ))
    .await;
    let r = post(gw.addr, CHAT, &[], r#"{"model":"smart","messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "from the fallback"
    );
    assert_eq!(r.header("x-tollgate-backend"), Some("b"));
    assert_eq!(r.header("x-tollgate-attempts"), Some("2"));
    assert_eq!(primary.last_call().json()["model"], "m1");
    assert_eq!(secondary.last_call().json()["model"], "m2");

    // A client error is not retried elsewhere.
    primary.push(Answer::error(400, "bad request", "invalid"));
    let r = post(gw.addr, CHAT, &[], r#"{"model":"smart","messages":[]}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(secondary.calls().len(), 1);
}

#[tokio::test]
async fn force_model_and_default_backend_apply() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!(
        "{}default_backend: up\nforce_model: meta/llama3-70b\n",
        openai_backend(&up.url())
    ))
    .await;
    let r = post(gw.addr, CHAT, &[], r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last_call().json()["model"], "meta/llama3-70b");
}
