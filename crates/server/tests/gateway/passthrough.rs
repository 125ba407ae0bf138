//! Provider pass-through (`/v1/providers/{backend}/-/{path}`) and model-entity routing
//! (`/v1/models/{name}/-/{endpoint}`): what reaches the fake upstream (the backend's key, the
//! path and query intact, the body untouched, no client key or hop-by-hop header), what the
//! client gets back, and the paths that must not climb out of `api_url`.

use tollgate_testkit::client::{get, post, send};
use tollgate_testkit::{Answer, FakeUpstream};

use crate::common::*;

fn keyed(url: &str) -> String {
    format!(
        "{}auth:\n  keys:\n    - {{ name: all, key: key-all }}\n    - {{ name: narrow, key: key-narrow, allowed_models: [\"up:gpt-*\"] }}\n{NO_RETRIES}",
        openai_backend(url)
    )
}

const ALL: [(&str, &str); 1] = [("authorization", "Bearer key-all")];

#[tokio::test]
async fn requests_reach_the_backend_as_they_came_with_its_own_key() {
    let up = FakeUpstream::start_with(tollgate_testkit::Options {
        models: vec!["m1".into(), "m2".into()],
        ..Default::default()
    })
    .await;
    let gw = start(&keyed(&up.url())).await;

    let r = get(gw.addr, "/v1/providers/up/-/models?limit=5&order=asc", &ALL).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"][1]["id"], "m2");
    assert_eq!(r.header("x-tollgate-backend"), Some("up"));
    let sent = up.received().pop().expect("the models call");
    assert_eq!(sent.path, "/v1/models");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );

    // A stream, body byte for byte (white space and all), with a header of the client's.
    up.push(Answer::chat_stream(&["pa", "ss"]));
    let body = "{ \"model\" : \"m1\", \"stream\": true, \"messages\": [] , \"x_new\": 1 }";
    let r = post(
        gw.addr,
        "/v1/providers/up/-/chat/completions",
        &[
            ALL[0],
            ("x-custom", "kept"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "dropped"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(tollgate_testkit::client::stream_text(&r.body), "pass");
    let sent = up.last_call();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body.as_ref(), body.as_bytes(), "untouched");
    assert_eq!(sent.header("x-custom"), Some("kept"));
    assert_eq!(sent.header("x-secret-hop"), None);
    for (_, v) in sent.headers.iter() {
        assert!(
            !String::from_utf8_lossy(v.as_bytes()).contains("key-all"),
            "the client key was forwarded"
        );
    }
    assert_no_upstream_key(&r);

    // Upstream answers pass with their status; their headers through the allow-list; an
    // error body echoing the key comes back masked.
    up.push(
        Answer::error(
            404,
            &format!("no such thing for {UPSTREAM_KEY}"),
            "not_found",
        )
        .with_header("set-cookie", "s=1")
        .with_header("x-ratelimit-remaining-requests", "9"),
    );
    let r = send(
        gw.addr,
        http::Method::DELETE,
        "/v1/providers/up/-/files/file-1",
        &ALL,
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.header("set-cookie").is_none());
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("9"));
    assert_no_upstream_key(&r);
    assert_eq!(up.last_call().method, http::Method::DELETE);

    // An answer with no body is complete at once (the server never polls its body): counted
    // under its own status, not as a client that left (499).
    up.push(Answer::json(204, ""));
    let r = send(
        gw.addr,
        http::Method::DELETE,
        "/v1/providers/up/-/files/file-2",
        &ALL,
        "",
    )
    .await;
    assert_eq!(r.status, 204);

    // Logged and counted as a pass-through.
    let metrics = get(gw.addr, "/metrics", &[]).await.text();
    assert!(
        metrics.contains(r#"endpoint="passthrough",status="2xx",key="all"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"endpoint="passthrough",status="4xx",key="all"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn keys_need_the_whole_backend_and_paths_cannot_escape() {
    let up = FakeUpstream::start().await;
    let gw = start(&keyed(&up.url())).await;
    let r = get(
        gw.addr,
        "/v1/providers/up/-/models",
        &[("authorization", "Bearer key-narrow")],
    )
    .await;
    assert_eq!(
        r.status, 403,
        "a key for some models only may not pass through"
    );
    let r = get(gw.addr, "/v1/providers/up/-/models", &[]).await;
    assert_eq!(r.status, 401);
    let r = get(gw.addr, "/v1/providers/ghost/-/models", &ALL).await;
    assert_eq!(r.status, 404);
    for path in [
        "/v1/providers/up/-/../../admin",
        "/v1/providers/up/-/models/../../x",
        "/v1/providers/up/-/%2e%2e/x",
        "/v1/providers/up/-/a%2Fb",
        "/v1/providers/up/-/a%5c..%5cb",
        "/v1/providers/up/-/http://evil.example/x",
        "/v1/providers/up/-//evil.example/x",
    ] {
        let r = get(gw.addr, path, &ALL).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    assert!(up.received().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn a_model_entity_path_routes_to_that_name_whatever_the_body_says() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    a.push(Answer::error(503, "down", "down"));
    b.push(Answer::chat("from b"));
    let gw = start(&format!(
        "backends:\n  a: {{ type: openai, api_url: \"{}\" }}\n  b: {{ type: openai, api_url: \"{}\" }}\nroutes:\n  fast: [\"a:m\", \"b:m\"]\n{NO_RETRIES}",
        a.url(),
        b.url()
    ))
    .await;
    let r = post(
        gw.addr,
        "/v1/models/fast/-/v1/chat/completions",
        &[],
        r#"{"model":"something-else","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "from b",
        "fell back along the route"
    );
    assert_eq!(b.last_call().json()["model"], "m");
    // The body may leave the model out; `backend:model` names work too (percent-encoded).
    b.push(Answer::chat("direct"));
    let r = post(
        gw.addr,
        "/v1/models/b%3Ameta%2Fllama/-/chat/completions",
        &[],
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.last_call().json()["model"], "meta/llama");
    let r = post(gw.addr, "/v1/models/fast/-/v1/nowhere", &[], "{}").await;
    assert_eq!(r.status, 404);
}
