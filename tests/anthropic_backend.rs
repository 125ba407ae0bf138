//! The `anthropic` backend end to end, against a fake Anthropic API that checks `x-api-key`,
//! `anthropic-version` and the Messages schema: the official `openai` SDK through the Chat door
//! (translated to Messages and back), the official `anthropic` SDK through the Messages door
//! (passed through byte for byte), and a route that falls over from Anthropic to NIM.

mod common;

use std::collections::HashMap;

use common::doors::{chat_answer, run_sdk, sdk, CLIENT_KEY, NIM_KEY};
use tollgate_core::{Config, Env};
use tollgate_server::{Gateway, Runtime, Serving};
use tollgate_testkit::{anthropic, nim};

const ANT_KEY: &str = "sk-ant-SECRET-backend-0123";

async fn start(yaml: &str) -> Serving {
    let config: Config = serde_yaml::from_str(yaml).expect("test config parses");
    let env = Env::from_map(HashMap::from([
        ("ANTHROPIC_API_KEY".to_string(), ANT_KEY.to_string()),
        ("NVIDIA_API_KEY".to_string(), NIM_KEY.to_string()),
    ]));
    let mut registry = common::doors::registry();
    tollgate_anthropic::register(&mut registry);
    let runtime = Runtime::build(config, &registry, &env, None).expect("valid config");
    Serving::start(Gateway::new(runtime, registry, env), "127.0.0.1:0")
        .await
        .expect("bind")
}

fn config(ant: &str, extra: &str) -> String {
    format!(
        "backends:\n  anthropic:\n    api_url: {ant}\nauth:\n  keys:\n    - {{ name: app, key: {CLIENT_KEY} }}\nfailure_handling:\n  retries: 0\n{extra}"
    )
}

/// What the fake received: the backend key, never the client's; the version header.
fn assert_headers(call: &tollgate_testkit::Recorded, version: &str) {
    assert_eq!(call.header("x-api-key"), Some(ANT_KEY));
    assert_eq!(call.header("authorization"), None);
    assert_eq!(call.header("anthropic-version"), Some(version));
    for (_, v) in call.headers.iter() {
        assert!(!String::from_utf8_lossy(v.as_bytes()).contains(CLIENT_KEY));
    }
    assert!(
        anthropic::check_messages(&call.body).is_ok(),
        "{}",
        String::from_utf8_lossy(&call.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_talks_to_an_anthropic_backend() {
    if !sdk("openai") {
        return;
    }
    let up = anthropic::start(&["claude-sonnet-4-6"]).await;
    let gw = start(&config(&up.url(), "")).await;

    up.push(anthropic::message("Hello there"));
    let r = run_sdk("backend_sdk.py", "chat", gw.addr()).await;
    assert_eq!(r["text"], "Hello there");
    assert_eq!(
        r["model"], "anthropic:claude-sonnet-4-6",
        "the model asked for is echoed"
    );
    assert_eq!(r["finish"], "stop");
    let usage = r["usage"].as_array().expect("usage");
    assert!(
        usage[0].as_u64() > Some(0)
            && usage[2] == usage[0].as_u64().unwrap_or(0) + usage[1].as_u64().unwrap_or(0),
        "{r}"
    );
    let call = up.last_call();
    // The Chat door's requests get the backend's default version.
    assert_headers(&call, anthropic::VERSION);
    let sent = call.json();
    assert_eq!(sent["model"], "claude-sonnet-4-6");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 200);
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hi");

    up.push(anthropic::text_stream(&["Hel", "lo"]));
    let r = run_sdk("backend_sdk.py", "stream", gw.addr()).await;
    assert_eq!(r["text"], "Hello");
    assert_eq!(r["finish"], "stop");
    assert!(r["usage"][1].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_headers(&up.last_call(), anthropic::VERSION);
    assert_eq!(up.last_call().json()["stream"], true);

    up.push(anthropic::tool_stream(
        "",
        "toolu_1",
        "get_weather",
        &["{\"ci", "ty\": \"Pa", "ris\"}"],
    ));
    let r = run_sdk("backend_sdk.py", "tool", gw.addr()).await;
    assert_eq!(r["finish"], "tool_calls");
    let call = &r["calls"][0];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(call["arguments"].as_str().unwrap_or("")).ok(),
        Some(serde_json::json!({"city": "Paris"}))
    );
    let sent = up.last_call().json();
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        serde_json::json!(["city"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_reaches_an_anthropic_backend_byte_for_byte() {
    if !sdk("anthropic") {
        return;
    }
    let up = anthropic::start(&["claude-sonnet-4-6"]).await;
    let gw = start(&config(&up.url(), "default_backend: anthropic\n")).await;
    let decode = |r: &serde_json::Value| -> Vec<u8> {
        let hex = r["sent"].as_str().unwrap_or("");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    };

    up.push(anthropic::message("Hello there"));
    let r = run_sdk("backend_sdk.py", "native", gw.addr()).await;
    assert_eq!(r["text"], "Hello there");
    let call = up.last_call();
    // The client's own anthropic-version goes through (the SDK's, not the backend default).
    let version = r["version"].as_str().expect("the SDK sends a version");
    assert_headers(&call, version);
    assert_eq!(
        call.body.as_ref(),
        decode(&r).as_slice(),
        "the client's body, byte for byte"
    );
    assert_eq!(
        call.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );

    up.push(anthropic::text_stream(&["Hel", "lo"]));
    let r = run_sdk("backend_sdk.py", "native_stream", gw.addr()).await;
    assert_eq!(r["text"], "Hello");
    assert_eq!(r["stop"], "end_turn");
    let call = up.last_call();
    assert_headers(&call, r["version"].as_str().expect("version"));
    assert_eq!(call.body.as_ref(), decode(&r).as_slice());
}

#[tokio::test]
async fn a_route_falls_over_from_an_overloaded_anthropic_to_nim() {
    let up = anthropic::start(&["claude-sonnet-4-6"]).await;
    let nim_up = nim::start(&["z-ai/glm4.7"]).await;
    let gw = start(&format!(
        "backends:\n  anthropic:\n    api_url: {}\n  nvidia:\n    api_url: {}\n    health_check: false\nroutes:\n  smart: [\"anthropic:claude-sonnet-4-6\", \"nvidia:z-ai/glm4.7\"]\nfailure_handling:\n  retries: 0\n",
        up.url(),
        nim_up.url()
    ))
    .await;
    up.push(anthropic::overloaded());
    nim_up.push(chat_answer("from NIM"));
    let r = tollgate_testkit::client::post(
        gw.addr(),
        "/v1/chat/completions",
        &[],
        r#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from NIM");
    assert_eq!(r.header("x-tollgate-backend"), Some("nvidia"));
    assert_eq!(up.calls().len(), 1, "Anthropic was tried first");
    assert!(nim::schema_error(&nim_up.last_call().body).is_none());

    // On the Messages door the same route works the other way round.
    up.push(anthropic::overloaded());
    nim_up.push(chat_answer("from NIM again"));
    let r = tollgate_testkit::client::post(
        gw.addr(),
        "/v1/messages",
        &[],
        r#"{"model":"smart","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], "from NIM again");
    assert_eq!(r.json()["model"], "smart");
}

#[tokio::test]
async fn the_responses_door_reaches_an_anthropic_backend_through_chat() {
    let up = anthropic::start(&["claude-sonnet-4-6"]).await;
    let gw = start(&config(&up.url(), "")).await;
    let auth = [("authorization", format!("Bearer {CLIENT_KEY}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();

    up.push(anthropic::message("Hello there"));
    let r = tollgate_testkit::client::post(
        gw.addr(),
        "/v1/responses",
        &auth,
        r#"{"model":"anthropic:claude-sonnet-4-6","input":"hi","max_output_tokens":64}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response");
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "Hello there");
    let sent = up.last_call();
    assert_headers(&sent, anthropic::VERSION);
    assert_eq!(sent.json()["max_tokens"], 64);

    up.push(anthropic::text_stream(&["Hel", "lo"]));
    let r = tollgate_testkit::client::post(
        gw.addr(),
        "/v1/responses",
        &auth,
        r#"{"model":"anthropic:claude-sonnet-4-6","input":"hi","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let summary = tollgate_translate::responses::grammar::check(&r.body)
        .unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(summary.items[0].text, "Hello");
    assert!(
        summary.usage.is_some_and(|u| u.output_tokens > 0),
        "{summary:?}"
    );
}

#[tokio::test]
async fn pass_through_reaches_nim_and_anthropic_with_their_own_keys() {
    let ant = anthropic::start(&["claude-sonnet-4-6"]).await;
    let nim_up = nim::start(&["meta/llama-3.1-8b-instruct"]).await;
    let gw = start(&format!(
        "backends:\n  anthropic:\n    api_url: {}\n  nvidia:\n    api_url: {}\n    health_check: false\n",
        ant.url(),
        nim_up.url()
    ))
    .await;
    let r = tollgate_testkit::client::get(gw.addr(), "/v1/providers/nvidia/-/models", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"][0]["id"], "meta/llama-3.1-8b-instruct");
    let sent = nim_up.received().pop().expect("a call");
    assert_eq!(sent.path, "/v1/models");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {NIM_KEY}").as_str())
    );

    nim_up.push(tollgate_testkit::Answer::chat_stream(&["ni", "m"]));
    let r = tollgate_testkit::client::post(
        gw.addr(),
        "/v1/providers/nvidia/-/chat/completions",
        &[],
        r#"{"model":"meta/llama-3.1-8b-instruct","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(tollgate_testkit::client::stream_text(&r.body), "nim");
    assert_eq!(nim_up.last_call().path, "/v1/chat/completions");

    // Anthropic's pass-through gets its x-api-key and version, not a Bearer.
    ant.push(anthropic::message("native"));
    let r = tollgate_testkit::client::post(
        gw.addr(),
        "/v1/providers/anthropic/-/messages",
        &[("anthropic-version", "2023-06-01")],
        r#"{"model":"claude-sonnet-4-6","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = ant.last_call();
    assert_eq!(sent.path, "/v1/messages");
    assert_headers(&sent, "2023-06-01");
}
