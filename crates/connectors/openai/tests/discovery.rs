//! Model discovery and the first-use health check of the shared OpenAI-compatible path,
//! against a fake upstream on 127.0.0.1: what `list_models`/`unusable_reason` answer, and
//! which `GET /models` the upstream actually received.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tollgate_core::config::BackendConfig;
use tollgate_core::{
    BuildContext, Connector, Endpoint, Env, GatewayError, JsonObject, ReplyBody, Request,
};
use tollgate_openai::{CommonOptions, NoHooks, OpenAiCompatible, Settings, OPENAI};
use tollgate_testkit::{Answer, FakeUpstream, Options, Step, StreamEnd};

fn backend(url: &str) -> BackendConfig {
    BackendConfig {
        kind: Some("openai".into()),
        api_url: Some(url.to_owned()),
        api_key: Some(tollgate_core::Secret::new("sk-test-key")),
        ..BackendConfig::default()
    }
}

fn connector(config: &BackendConfig, settings: &Settings, refresh: u64) -> OpenAiCompatible {
    let env = Env::from_map(HashMap::new());
    let ctx = BuildContext {
        name: "up",
        config,
        env: &env,
    };
    let common = CommonOptions {
        models_refresh: refresh,
        ..CommonOptions::default()
    };
    match OpenAiCompatible::build(&ctx, settings, common, Arc::new(NoHooks)) {
        Ok(c) => c,
        Err(problems) => panic!("config refused: {problems:?}"),
    }
}

fn chat(stream: bool) -> Request {
    let body = if stream {
        r#"{"model":"x","messages":[],"stream":true}"#
    } else {
        r#"{"model":"x","messages":[]}"#
    };
    Request {
        endpoint: Endpoint::ChatCompletions,
        model: "m".into(),
        stream,
        body: JsonObject::parse(body.as_bytes()).expect("json"),
        request_id: "req-1".into(),
        headers: Default::default(),
    }
}

/// Waits (up to 5 s) until `check` holds.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn discovery_is_cached_and_refreshed() {
    let up = FakeUpstream::start_with(Options {
        models: vec!["a".into(), "b".into()],
        ..Default::default()
    })
    .await;
    let c = connector(&backend(&up.url()), &OPENAI, 1);
    assert_eq!(c.list_models().await.expect("list"), ["a", "b"]);
    assert_eq!(c.list_models().await.expect("list"), ["a", "b"]);
    assert_eq!(up.model_lists(), 1, "the second answer came from the cache");

    up.set_models(&["c"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.list_models().await.expect("list"), ["c"]);
    assert_eq!(up.model_lists(), 2);
    let sent = &up.received()[0];
    assert_eq!(sent.path, "/v1/models");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test-key"));
}

/// SPEC §5: discovery first; the static `models` only when discovery is impossible or fails.
#[tokio::test]
async fn discovery_comes_first_and_static_models_are_the_fallback() {
    let up = FakeUpstream::start_with(Options {
        models: vec!["discovered".into()],
        ..Default::default()
    })
    .await;
    let mut config = backend(&up.url());
    config.models = vec!["pinned".into()];
    let c = connector(&config, &OPENAI, 300);
    assert_eq!(c.list_models().await.expect("list"), ["discovered"]);
    assert_eq!(up.model_lists(), 1);

    // Discovery failing before it ever succeeded: the static list stands in.
    let failing = FakeUpstream::start().await;
    failing.set_models_answer(Some(Answer::error(500, "down", "unavailable")));
    let mut config = backend(&failing.url());
    config.models = vec!["pinned".into()];
    let c = connector(&config, &OPENAI, 300);
    assert_eq!(c.list_models().await.expect("list"), ["pinned"]);
    assert_eq!(failing.model_lists(), 1, "discovery was asked");

    // Discovery impossible (a type that needs a key, and none): static, nothing asked.
    struct KeyNeeded;
    impl tollgate_openai::Hooks for KeyNeeded {
        fn may_discover(&self, has_key: bool) -> bool {
            has_key
        }
    }
    let quiet = FakeUpstream::start().await;
    let mut config = backend(&quiet.url());
    config.api_key = None;
    config.models = vec!["pinned".into()];
    let env = Env::from_map(HashMap::new());
    let ctx = BuildContext {
        name: "up",
        config: &config,
        env: &env,
    };
    let c = OpenAiCompatible::build(&ctx, &OPENAI, CommonOptions::default(), Arc::new(KeyNeeded))
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(c.list_models().await.expect("list"), ["pinned"]);
    assert_eq!(quiet.model_lists(), 0);
}

#[tokio::test]
async fn failed_discovery_is_not_fatal_keeps_the_last_list_and_is_not_retried_at_once() {
    let up = FakeUpstream::start_with(Options {
        models: vec!["a".into()],
        ..Default::default()
    })
    .await;
    let c = connector(&backend(&up.url()), &OPENAI, 1);
    assert_eq!(c.list_models().await.expect("list"), ["a"]);

    up.set_models_answer(Some(Answer::error(503, "down", "unavailable")));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.list_models().await.expect("stale list"), ["a"]);
    assert_eq!(up.model_lists(), 2);
    // Within the retry pause, a dead upstream is not asked again.
    assert_eq!(c.list_models().await.expect("stale list"), ["a"]);
    assert_eq!(up.model_lists(), 2);
    assert_eq!(
        c.unusable_reason(),
        None,
        "discovery failing is only logged"
    );

    // Nothing listening at all: an empty catalogue, not an error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let c = connector(&backend(&format!("http://{dead}/v1")), &OPENAI, 300);
    assert!(c.list_models().await.expect("empty").is_empty());
}

#[tokio::test]
async fn health_check_runs_once_in_the_background_and_never_stalls_a_request() {
    let up = FakeUpstream::start().await;
    // The check's `GET /models` never answers; requests must not wait for it.
    up.set_models_answer(Some(Answer::Hang));
    let mut config = backend(&up.url());
    config.health_check = Some(true);
    config.timeout = 60;
    let c = connector(&config, &OPENAI, 300);
    for _ in 0..3 {
        let reply = tokio::time::timeout(Duration::from_secs(10), c.send(chat(false)))
            .await
            .expect("the request does not wait for the health check")
            .expect("answered");
        assert!(matches!(reply.body, ReplyBody::Complete(_)));
    }
    assert!(eventually(|| up.model_lists() == 1).await);
    assert_eq!(up.model_lists(), 1, "the check runs once");
    assert_eq!(up.calls().len(), 3);
}

#[tokio::test]
async fn a_failed_health_check_is_reported_until_the_upstream_answers() {
    let up = FakeUpstream::start().await;
    up.set_models_answer(Some(Answer::error(
        401,
        "bad key sk-test-key",
        "invalid_api_key",
    )));
    up.push(Answer::error(500, "boom", "server_error"));
    let mut config = backend(&up.url());
    config.health_check = Some(true);
    let c = connector(&config, &OPENAI, 300);
    assert_eq!(
        c.unusable_reason(),
        None,
        "nothing is checked before first use"
    );

    // The request is still attempted (and its own error returned).
    let err = c.send(chat(false)).await.expect_err("500");
    assert!(matches!(err, GatewayError::Upstream { status, .. } if status == 500));
    assert!(eventually(|| c.unusable_reason().is_some()).await);
    let reason = c.unusable_reason().expect("reason");
    assert!(reason.contains("401"), "{reason}");
    assert!(!reason.contains("sk-test-key"), "{reason}");

    // The next success clears it.
    c.send(chat(false)).await.expect("answered");
    assert_eq!(c.unusable_reason(), None);
}

#[tokio::test]
async fn the_health_check_seeds_the_catalogue() {
    let up = FakeUpstream::start_with(Options {
        models: vec!["m1".into()],
        ..Default::default()
    })
    .await;
    let mut config = backend(&up.url());
    config.health_check = Some(true);
    let c = connector(&config, &OPENAI, 300);
    c.send(chat(false)).await.expect("answered");
    assert!(eventually(|| up.model_lists() == 1).await);
    // Give the check a moment to store what it fetched, then list without a second GET.
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = c.list_models().await.expect("list");
        if up.model_lists() == 1 && listed == ["m1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(listed, ["m1"]);
    assert_eq!(up.model_lists(), 1);
}

#[tokio::test]
async fn an_error_frame_ends_the_stream_and_a_first_one_is_an_error() {
    let up = FakeUpstream::start().await;
    let c = connector(&backend(&up.url()), &OPENAI, 300);

    // After data: the frame is forwarded, and the `[DONE]` vLLM sends after it is not.
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(tollgate_testkit::chunk_event("partial")),
            Step::Raw("data: {\"error\":{\"message\":\"engine died\",\"code\":500}}\n\n".into()),
            Step::Raw("data: [DONE]\n\n".into()),
        ],
        end: StreamEnd::Finish,
    });
    let reply = c.send(chat(true)).await.expect("stream");
    let ReplyBody::Events(events) = reply.body else {
        panic!("expected a stream");
    };
    let got: Vec<String> = events
        .map(|e| String::from_utf8_lossy(e.expect("event").raw()).into_owned())
        .collect()
        .await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("partial"));
    assert!(got[1].contains("engine died"));

    // Before any data: the stream is the error, with the frame's code as status.
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(": still working\n\n".into()),
            Step::Raw("data: {\"error\":{\"message\":\"no provider\",\"code\":503}}\n\n".into()),
        ],
        end: StreamEnd::Finish,
    });
    let reply = c.send(chat(true)).await.expect("stream");
    let ReplyBody::Events(mut events) = reply.body else {
        panic!("expected a stream");
    };
    let first = events.next().await.expect("comment").expect("ok");
    assert!(first.payload().is_none());
    match events.next().await {
        Some(Err(GatewayError::Upstream { status, body, .. })) => {
            assert_eq!(status, 503);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["error"]["message"], "no provider");
        }
        other => panic!("expected the upstream error, got {other:?}"),
    }
    assert!(events.next().await.is_none());
}
