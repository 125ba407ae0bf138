//! The anthropic connector against the strict fake Anthropic (`tollgate_testkit::anthropic`)
//! over real TCP on 127.0.0.1: the headers and body the upstream received, streams relayed
//! event by event, Anthropic's errors turned into the gateway's (529 → 503, early
//! `event: error` → an error, the key never shown), and the paged model list.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use tollgate_anthropic::{Anthropic, AnthropicOptions};
use tollgate_core::config::BackendConfig;
use tollgate_core::{
    BuildContext, Connector, Endpoint, Env, GatewayError, JsonObject, Protocol, Registry, Reply,
    ReplyBody, Request, Secret, SseEvent,
};
use tollgate_testkit::anthropic as fake;
use tollgate_testkit::{Answer, FakeUpstream};

const KEY: &str = "sk-ant-test-KEY123456";

fn backend(url: &str) -> BackendConfig {
    BackendConfig {
        kind: Some("anthropic".into()),
        api_url: Some(url.to_owned()),
        api_key: Some(Secret::new(KEY)),
        ..BackendConfig::default()
    }
}

fn build_with(
    config: &BackendConfig,
    options: &AnthropicOptions,
    env: &[(&str, &str)],
) -> Anthropic {
    let env = Env::from_map(
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    );
    let ctx = BuildContext {
        name: "claude",
        config,
        env: &env,
    };
    match Anthropic::build(&ctx, options) {
        Ok(c) => c,
        Err(problems) => panic!("config refused: {problems:?}"),
    }
}

fn connector(config: &BackendConfig) -> Anthropic {
    build_with(config, &AnthropicOptions::default(), &[])
}

const BODY: &str = r#"{"model":"claude-client-name","max_tokens":64,"messages":[{"role":"user","content":"h\u00e9llo  there"}],"metadata":{"user_id":"u-1"},"temperature":0.5}"#;

fn messages(body: &str, stream: bool, headers: &[(&str, &str)]) -> Request {
    let mut h = HeaderMap::new();
    for (name, value) in headers {
        h.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    Request {
        endpoint: Endpoint::Messages,
        model: "claude-target-1".into(),
        stream,
        body: JsonObject::parse(body.as_bytes()).expect("json"),
        request_id: "req-42".into(),
        headers: h,
    }
}

fn stream_body() -> String {
    BODY.replacen('{', r#"{"stream":true,"#, 1)
}

async fn events(reply: Reply) -> Vec<Result<SseEvent, GatewayError>> {
    let ReplyBody::Events(stream) = reply.body else {
        panic!("expected a stream");
    };
    stream.collect().await
}

fn upstream_error(e: GatewayError) -> (StatusCode, serde_json::Value, Option<Duration>) {
    match e {
        GatewayError::Upstream {
            status,
            body,
            retry_after,
        } => (
            status,
            serde_json::from_slice(&body).expect("error body is JSON"),
            retry_after,
        ),
        other => panic!("expected an upstream error, got {other:?}"),
    }
}

#[tokio::test]
async fn headers_and_body_as_anthropic_wants_them() {
    let up = fake::start(&[]).await;
    up.push(fake::message("hi there"));
    let c = connector(&backend(&up.url()));
    let reply = c.send(messages(BODY, false, &[])).await.expect("answered");
    let ReplyBody::Complete(answer) = reply.body else {
        panic!("expected a whole answer");
    };
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(
        answer["content"][0]["text"], "hi there",
        "the answer is relayed as is"
    );
    assert_eq!(reply.headers["x-upstream-request-id"], "req_fake");

    let sent = up.last_call();
    assert_eq!(sent.method, http::Method::POST);
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None, "no Bearer header");
    assert_eq!(sent.header("anthropic-beta"), None);
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("accept"), Some("application/json"));
    assert_eq!(sent.header("x-request-id"), Some("req-42"));
    assert_eq!(sent.version, http::Version::HTTP_11, "plain http: HTTP/1.1");
    // Byte for byte, but for the model.
    assert_eq!(
        std::str::from_utf8(&sent.body).expect("utf8"),
        BODY.replace("claude-client-name", "claude-target-1")
    );
}

#[tokio::test]
async fn the_clients_version_wins_and_its_beta_is_forwarded() {
    let up = fake::start(&[]).await;
    up.set_default(fake::message("ok"));
    let c = connector(&backend(&up.url()));
    c.send(messages(
        BODY,
        false,
        &[
            ("anthropic-version", "2024-10-22"),
            (
                "anthropic-beta",
                "interleaved-thinking-2025-05-14,context-1m",
            ),
        ],
    ))
    .await
    .expect("answered");
    let sent = up.last_call();
    assert_eq!(sent.header("anthropic-version"), Some("2024-10-22"));
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14,context-1m")
    );
    assert_eq!(sent.headers.get_all("anthropic-version").iter().count(), 1);

    // The configured version is the default, and `default_headers` / `headers` apply.
    let mut config = backend(&up.url());
    config
        .default_headers
        .insert("anthropic-beta".into(), "configured-beta".into());
    config.headers.insert("x-team".into(), "search".into());
    let options = AnthropicOptions {
        version: "2025-02-01".into(),
        ..AnthropicOptions::default()
    };
    let c = build_with(&config, &options, &[]);
    c.send(messages(BODY, false, &[])).await.expect("answered");
    let sent = up.last_call();
    assert_eq!(sent.header("anthropic-version"), Some("2025-02-01"));
    assert_eq!(sent.header("anthropic-beta"), Some("configured-beta"));
    assert_eq!(sent.header("x-team"), Some("search"));
    c.send(messages(BODY, false, &[("anthropic-beta", "clients-beta")]))
        .await
        .expect("answered");
    assert_eq!(
        up.last_call().header("anthropic-beta"),
        Some("clients-beta")
    );
}

#[tokio::test]
async fn api_url_works_with_or_without_v1_and_count_tokens_has_its_path() {
    let up = fake::start(&[]).await;
    up.set_default(Answer::json(200, r#"{"input_tokens":17}"#));
    let c = connector(&backend(&format!("http://{}", up.addr())));
    let mut req = messages(
        r#"{"model":"m","messages":[{"role":"user","content":"count me"}]}"#,
        false,
        &[],
    );
    req.endpoint = Endpoint::CountTokens;
    let reply = c.send(req).await.expect("counted");
    let ReplyBody::Complete(body) = reply.body else {
        panic!("whole");
    };
    assert_eq!(&body[..], br#"{"input_tokens":17}"#);
    assert_eq!(up.last_call().path, "/v1/messages/count_tokens");

    let c = connector(&backend(&format!("http://{}/v1/", up.addr())));
    up.push(fake::message("x"));
    c.send(messages(BODY, false, &[])).await.expect("answered");
    assert_eq!(up.last_call().path, "/v1/messages");
}

#[tokio::test]
async fn stream_events_are_relayed_whole() {
    let up = fake::start(&[]).await;
    let expected = fake::text_events(&["Hel", "lo", " world"]);
    up.push(fake::text_stream(&["Hel", "lo", " world"]));
    let c = connector(&backend(&up.url()));
    let reply = c
        .send(messages(&stream_body(), true, &[]))
        .await
        .expect("stream");
    let got: Vec<String> = events(reply)
        .await
        .into_iter()
        .map(|e| String::from_utf8(e.expect("event").into_raw().to_vec()).expect("utf8"))
        .collect();
    assert_eq!(got, expected, "each event exactly as sent");
    assert_eq!(up.last_call().header("accept"), Some("text/event-stream"));

    up.push(fake::tool_stream(
        "Let me look.",
        "toolu_01",
        "get_weather",
        &["{\"ci", "ty\": \"Paris\"}"],
    ));
    let reply = c
        .send(messages(&stream_body(), true, &[]))
        .await
        .expect("stream");
    let got = events(reply).await;
    assert_eq!(
        got.len(),
        fake::tool_events(
            "Let me look.",
            "toolu_01",
            "get_weather",
            &["{\"ci", "ty\": \"Paris\"}"]
        )
        .len()
    );
    assert!(got.iter().all(Result::is_ok));
}

#[tokio::test]
async fn overloaded_is_503_and_rate_limits_keep_their_wait() {
    let up = fake::start(&[]).await;
    let c = connector(&backend(&up.url()));

    up.push(fake::overloaded());
    let (status, body, wait) =
        upstream_error(c.send(messages(BODY, false, &[])).await.expect_err("529"));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["message"], "Overloaded");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(body["error"].get("code").is_some(), "OpenAI-shaped: {body}");
    assert_eq!(wait, None);

    up.push(fake::rate_limited(7));
    let (status, body, wait) =
        upstream_error(c.send(messages(BODY, false, &[])).await.expect_err("429"));
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(wait, Some(Duration::from_secs(7)));

    // The fake's own schema check: a refused body is a 400 naming the field.
    let (status, body, _) = upstream_error(
        c.send(messages(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"n":2}"#,
            false,
            &[],
        ))
        .await
        .expect_err("400"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["message"],
        "n: Extra inputs are not permitted"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn an_error_event_before_any_data_is_an_error() {
    let up = fake::start(&[]).await;
    let c = connector(&backend(&up.url()));
    for (kind, status) in [
        ("overloaded_error", StatusCode::SERVICE_UNAVAILABLE),
        ("rate_limit_error", StatusCode::TOO_MANY_REQUESTS),
        ("api_error", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        up.push(fake::early_error(kind, "try later"));
        let reply = c
            .send(messages(&stream_body(), true, &[]))
            .await
            .expect("the 200 came");
        let got = events(reply).await;
        assert_eq!(got.len(), 1, "{kind}: the error ends the stream");
        let Some(Err(e)) = got.into_iter().next() else {
            panic!("{kind}: expected an error");
        };
        let (s, body, _) = upstream_error(e);
        assert_eq!(s, status, "{kind}");
        assert_eq!(body["error"]["message"], "try later");
        assert_eq!(body["error"]["type"], kind);
    }
}

#[tokio::test]
async fn an_error_event_after_data_is_relayed_and_ends_the_stream() {
    let up = fake::start(&[]).await;
    let c = connector(&backend(&up.url()));
    up.push(fake::error_midway(
        &["partial"],
        "overloaded_error",
        "Overloaded",
    ));
    let reply = c
        .send(messages(&stream_body(), true, &[]))
        .await
        .expect("stream");
    let got: Vec<SseEvent> = events(reply)
        .await
        .into_iter()
        .map(|e| e.expect("events, not errors"))
        .collect();
    let last = String::from_utf8(got.last().expect("events").raw().to_vec()).expect("utf8");
    assert!(last.starts_with("event: error\n"), "{last}");
    assert!(last.contains("overloaded_error"));
}

#[tokio::test]
async fn the_key_is_never_in_an_error() {
    let up = fake::start(&[]).await;
    let c = connector(&backend(&up.url()));
    // An upstream (or a proxy in front of it) that echoes the key.
    up.push(fake::error(
        401,
        "authentication_error",
        &format!("invalid x-api-key {KEY}"),
    ));
    let e = c.send(messages(BODY, false, &[])).await.expect_err("401");
    for text in [
        format!("{e:?}"),
        e.to_string(),
        String::from_utf8_lossy(&e.body()).into_owned(),
    ] {
        assert!(!text.contains("KEY123456"), "{text}");
    }
    assert!(String::from_utf8_lossy(&e.body()).contains("invalid x-api-key ***"));

    up.push(Answer::json(502, &format!("<html>proxy saw {KEY}</html>")));
    let e = c.send(messages(BODY, false, &[])).await.expect_err("502");
    assert!(!String::from_utf8_lossy(&e.body()).contains("KEY123456"));

    up.push(fake::early_error("api_error", &format!("bad key {KEY}")));
    let reply = c
        .send(messages(&stream_body(), true, &[]))
        .await
        .expect("200");
    let e = events(reply).await.pop().expect("one").expect_err("error");
    assert!(!String::from_utf8_lossy(&e.body()).contains("KEY123456"));

    // A key the fake refuses: the 401 names no key either.
    let mut config = backend(&up.url());
    config.api_key = Some(Secret::new("not-an-anthropic-key"));
    let e = connector(&config)
        .send(messages(BODY, false, &[]))
        .await
        .expect_err("401");
    let (status, body, _) = upstream_error(e);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "invalid x-api-key");
}

#[tokio::test]
async fn auth_header_overrides_x_api_key() {
    let up = fake::start(&[]).await;
    let mut config = backend(&up.url());
    config.auth_header = Some("Authorization: Bearer {{ key }}".into());
    let c = connector(&config);
    // The strict fake wants x-api-key, so it refuses; what matters is what was sent.
    let e = c.send(messages(BODY, false, &[])).await.expect_err("401");
    assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    let sent = up.last_call();
    assert_eq!(
        sent.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(sent.header("x-api-key"), None);
}

#[tokio::test]
async fn the_key_comes_from_the_config_then_the_variable() {
    let up = fake::start(&[]).await;
    up.set_default(fake::message("ok"));
    let mut config = backend(&up.url());
    config.api_key = None;
    let c = build_with(
        &config,
        &AnthropicOptions::default(),
        &[("ANTHROPIC_API_KEY", " sk-ant-from-env ")],
    );
    c.send(messages(BODY, false, &[])).await.expect("answered");
    assert_eq!(up.last_call().header("x-api-key"), Some("sk-ant-from-env"));

    let c = build_with(
        &backend(&up.url()),
        &AnthropicOptions::default(),
        &[("ANTHROPIC_API_KEY", "sk-ant-from-env")],
    );
    c.send(messages(BODY, false, &[])).await.expect("answered");
    assert_eq!(
        up.last_call().header("x-api-key"),
        Some(KEY),
        "the config's key wins"
    );
}

#[tokio::test]
async fn only_messages_are_spoken() {
    let up = fake::start(&[]).await;
    let c = connector(&backend(&up.url()));
    assert!(c.speaks(Protocol::Messages));
    assert!(!c.speaks(Protocol::Chat));
    assert!(!c.speaks(Protocol::Responses));
    let mut req = messages(r#"{"model":"m","messages":[]}"#, false, &[]);
    req.endpoint = Endpoint::ChatCompletions;
    let e = c.send(req).await.expect_err("refused");
    assert!(matches!(e, GatewayError::InvalidRequest { .. }), "{e:?}");
    assert!(up.calls().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn models_come_from_the_list_with_the_key_and_are_cached_and_no_health_check_by_default() {
    let up = fake::start(&["claude-a", "claude-b"]).await;
    up.set_default(fake::message("ok"));
    let c = connector(&backend(&up.url()));
    c.send(messages(BODY, false, &[])).await.expect("answered");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(up.model_lists(), 0, "no health check unless configured");
    assert_eq!(
        c.list_models().await.expect("list"),
        ["claude-a", "claude-b"]
    );
    assert_eq!(
        c.list_models().await.expect("list"),
        ["claude-a", "claude-b"]
    );
    assert_eq!(up.model_lists(), 1, "the second list came from the cache");
    let asked = up
        .received()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .expect("asked");
    assert_eq!(asked.header("x-api-key"), Some(KEY));
    assert_eq!(asked.header("anthropic-version"), Some("2023-06-01"));

    // Without a key there is nothing to discover: the static list (here none).
    let mut config = backend(&up.url());
    config.api_key = None;
    assert!(connector(&config)
        .list_models()
        .await
        .expect("empty")
        .is_empty());
    assert_eq!(up.model_lists(), 1);

    // With the check on, the first request triggers one list in the background.
    let mut config = backend(&up.url());
    config.health_check = Some(true);
    let c = connector(&config);
    c.send(messages(BODY, false, &[])).await.expect("answered");
    for _ in 0..200 {
        if up.model_lists() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.model_lists(), 2);
}

/// A models endpoint that pages by `after_id`, recording each query (the shared fake answers
/// `/models` with one list and does not record queries).
async fn pager(pages: Vec<Vec<&'static str>>) -> (String, Arc<Mutex<Vec<(String, HeaderMap)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let pages = pages.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let query = req.uri().query().unwrap_or_default().to_owned();
                        record
                            .lock()
                            .expect("lock")
                            .push((query.clone(), req.headers().clone()));
                        let after = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("after_id="))
                            .map(str::to_owned);
                        let at = match after {
                            None => 0,
                            Some(id) => pages
                                .iter()
                                .position(|p| p.last() == Some(&id.as_str()))
                                .map_or(pages.len(), |i| i + 1),
                        };
                        let page = pages.get(at).cloned().unwrap_or_default();
                        let body = fake::models_page(&page, at + 1 < pages.len());
                        async move {
                            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn models_follow_the_pages() {
    let (url, seen) = pager(vec![
        vec!["claude-1", "claude-2"],
        vec!["claude-3"],
        vec!["claude-4", "claude-5"],
    ])
    .await;
    let c = connector(&backend(&url));
    assert_eq!(
        c.list_models().await.expect("list"),
        ["claude-1", "claude-2", "claude-3", "claude-4", "claude-5"]
    );
    let seen = seen.lock().expect("lock").clone();
    let queries: Vec<&str> = seen.iter().map(|(q, _)| q.as_str()).collect();
    assert_eq!(
        queries,
        [
            "limit=1000",
            "limit=1000&after_id=claude-2",
            "limit=1000&after_id=claude-3"
        ]
    );
    for (_, headers) in &seen {
        assert_eq!(headers["x-api-key"], KEY);
        assert_eq!(headers["anthropic-version"], "2023-06-01");
    }
}

#[tokio::test]
async fn a_cursor_that_does_not_move_stops_the_paging() {
    // Every page says there is more and points at the same last id.
    let up = FakeUpstream::start().await;
    up.set_models_answer(Some(Answer::json(200, &fake::models_page(&["same"], true))));
    let c = connector(&backend(&up.url()));
    assert_eq!(c.list_models().await.expect("list"), ["same", "same"]);
    assert_eq!(
        up.model_lists(),
        2,
        "the second page repeats the cursor: stop"
    );
    // And a dead upstream is an empty list, not an error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let c = connector(&backend(&format!("http://{addr}")));
    assert!(c.list_models().await.expect("empty").is_empty());
}

#[tokio::test]
async fn the_type_registers_with_its_defaults_and_checks_its_options() {
    let mut registry = Registry::new();
    tollgate_anthropic::register(&mut registry);
    let info = registry.info("anthropic").expect("described");
    assert_eq!(info.default_url, "https://api.anthropic.com");
    assert_eq!(info.key_var, Some("ANTHROPIC_API_KEY"));
    let env = Env::from_map(HashMap::new());
    let yaml = |text: &str| -> BackendConfig { serde_yaml::from_str(text).expect("yaml") };
    assert!(registry
        .build(
            "anthropic",
            &yaml("version: \"2023-06-01\"\nmodels_refresh: 60\n"),
            &env
        )
        .is_ok());
    let problems = registry
        .build("anthropic", &yaml("versoin: x\n"), &env)
        .err()
        .expect("typo refused");
    assert!(problems[0].message.contains("versoin"), "{problems:?}");
    let problems = registry
        .build(
            "anthropic",
            &yaml("version: \"\"\nauth_header: \"X-Api-Key: key\"\n"),
            &env,
        )
        .err()
        .expect("refused");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "backends.anthropic.auth_header",
            "backends.anthropic.version"
        ]
    );
}

/// Claude Code's recorded turns (`tests/fixtures/clients/`), as the Messages door passes them
/// on: the strict fake accepts them, and they arrive as sent but for the model.
#[tokio::test]
async fn claude_codes_recorded_turns_pass_through_to_a_strict_anthropic() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../tests/fixtures/clients/claude-code-2.1.330-tool-turn.json"
    );
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let up = fake::start(&[]).await;
    let c = connector(&backend(&up.url()));
    let requests = fixture["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 2);
    for recorded in requests {
        let body = recorded["body"].to_string();
        let model = recorded["body"]["model"].as_str().expect("model");
        let headers: Vec<(&str, &str)> = ["anthropic-version", "anthropic-beta"]
            .iter()
            .filter_map(|h| Some((*h, recorded["headers"][*h].as_str()?)))
            .collect();
        assert_eq!(headers.len(), 2);
        up.push(fake::text_stream(&["ok"]));
        let reply = c
            .send(messages(&body, true, &headers))
            .await
            .unwrap_or_else(|e| panic!("refused: {}", String::from_utf8_lossy(&e.body())));
        assert!(events(reply).await.iter().all(Result::is_ok));
        let sent = up.last_call();
        assert_eq!(
            std::str::from_utf8(&sent.body).expect("utf8"),
            body.replacen(
                &format!("\"model\":\"{model}\""),
                "\"model\":\"claude-target-1\"",
                1
            )
        );
        assert_eq!(
            sent.header("anthropic-beta"),
            recorded["headers"]["anthropic-beta"].as_str()
        );
    }
}
