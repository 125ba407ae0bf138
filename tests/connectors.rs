//! The nvidia and openrouter connectors end to end: a real gateway on 127.0.0.1:0 in front of
//! fake upstreams (a strict NIM from `tollgate_testkit::nim`, a plain fake for OpenRouter).
//! Each test asserts what the client received and what the upstream was sent, and that no
//! upstream key ever reaches a client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tollgate_core::{Config, Env, Registry};
use tollgate_server::{Gateway, Runtime, Serving};
use tollgate_testkit::client::{get, post, sse_data, stream_text, Collected};
use tollgate_testkit::{chunk_event, nim, Answer, FakeUpstream, Options, Step, StreamEnd};

const CHAT: &str = "/v1/chat/completions";

/// Upstream keys used below. Every one carries `SECRET`, so a leak is easy to spot.
const NIM_KEY: &str = "nvapi-SECRET-yaml-0123";
const NIM_ENV_KEY: &str = "nvapi-SECRET-env-4567";
const LOCAL_KEY: &str = "nvapi-SECRET-local-89";
const OR_KEY: &str = "sk-or-v1-SECRET-abcdef";

struct TestGateway {
    addr: SocketAddr,
    /// Serving until the test ends.
    _serving: Serving,
}

fn registry() -> Registry {
    let mut r = Registry::new();
    tollgate_mock::register(&mut r);
    tollgate_openai::register(&mut r);
    tollgate_nvidia::register(&mut r);
    tollgate_openrouter::register(&mut r);
    r
}

/// Starts a gateway for `yaml`, with `vars` as its whole environment.
async fn start(yaml: &str, vars: &[(&str, &str)]) -> TestGateway {
    let config: Config = serde_yaml::from_str(yaml).expect("test config parses");
    let env = Env::from_map(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    );
    let registry = registry();
    let runtime = match Runtime::build(config, &registry, &env, None) {
        Ok(r) => r,
        Err(problems) => panic!("test config invalid: {problems:?}"),
    };
    let gateway = Gateway::new(runtime, registry, env);
    let serving = Serving::start(gateway, "127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    TestGateway {
        addr: serving.addr(),
        _serving: serving,
    }
}

/// Fails when any upstream key (or any part marked `SECRET`) is in a response header or body.
fn assert_no_upstream_key(resp: &Collected) {
    for (name, value) in &resp.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains("SECRET"),
            "header {name} leaks an upstream key: {v}"
        );
    }
    let body = resp.text();
    for key in [NIM_KEY, NIM_ENV_KEY, LOCAL_KEY, OR_KEY] {
        assert!(!body.contains(key), "body leaks {key}: {body}");
    }
    assert!(!body.contains("SECRET"), "body leaks a key: {body}");
}

/// POSTs a chat body and checks the answer for key leaks.
async fn chat(gw: &TestGateway, body: &str) -> Collected {
    let resp = post(gw.addr, CHAT, &[], body).await;
    assert_no_upstream_key(&resp);
    resp
}

/// GETs and checks the answer for key leaks.
async fn fetch(gw: &TestGateway, path: &str) -> Collected {
    let resp = get(gw.addr, path, &[]).await;
    assert_no_upstream_key(&resp);
    resp
}

/// The ids `/v1/models` lists.
async fn model_ids(gw: &TestGateway) -> Vec<String> {
    let r = fetch(gw, "/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

// ---------------------------------------------------------------------------------------
// NVIDIA NIM
// ---------------------------------------------------------------------------------------

/// What OpenAI SDKs send today, and NIM's schema forbids.
const MODERN_CHAT: &str = r#""messages":[{"role":"user","content":"Hi"}],"temperature":0.2,"max_completion_tokens":32,"stream_options":{"include_usage":true},"parallel_tool_calls":false,"store":false"#;

#[tokio::test]
async fn nim_gets_max_tokens_and_no_stream_options_streamed_and_not() {
    let up = nim::start(&["meta/llama3-70b"]).await;
    let gw = start(
        &format!(
            "backends:\n  nvidia:\n    api_url: {}\n    api_key: {NIM_KEY}\n",
            up.url()
        ),
        &[],
    )
    .await;

    up.push(Answer::chat("Hello from NIM."));
    let r = chat(
        &gw,
        &format!(r#"{{"model":"nvidia:meta/llama3-70b",{MODERN_CHAT}}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from NIM."
    );
    assert_eq!(r.header("x-tollgate-backend"), Some("nvidia"));

    up.push(Answer::chat_stream(&["Hel", "lo"]));
    let r = chat(
        &gw,
        &format!(r#"{{"model":"nvidia:meta/llama3-70b","stream":true,{MODERN_CHAT}}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream_text(&r.body), "Hello");
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));

    let calls = up.calls();
    assert_eq!(calls.len(), 2);
    for (sent, streamed) in calls.iter().zip([false, true]) {
        assert_eq!(sent.path, "/v1/chat/completions");
        // (HTTP/1.1 only is shown in tests/edge.rs, against a fake that also accepts h2c.)
        assert_eq!(sent.header("authorization"), Some(bearer(NIM_KEY).as_str()));
        let body = sent.json();
        assert_eq!(body["model"], "meta/llama3-70b");
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["temperature"], 0.2);
        for gone in [
            "max_completion_tokens",
            "stream_options",
            "parallel_tool_calls",
            "store",
        ] {
            assert!(body.get(gone).is_none(), "`{gone}` reached NIM: {body}");
        }
        assert_eq!(
            body.get("stream").and_then(|s| s.as_bool()),
            streamed.then_some(true)
        );
    }
}

#[tokio::test]
async fn nim_keeps_a_given_max_tokens_and_drop_fields_replaces_the_default() {
    let up = nim::start(&[]).await;
    let gw = start(
        &format!(
            "backends:\n  nvidia: {{ api_url: \"{0}\", api_key: {NIM_KEY} }}\n  bare: {{ type: nvidia, api_url: \"{0}\", api_key: {NIM_KEY}, drop_fields: [] }}\n  custom: {{ type: nvidia, api_url: \"{0}\", api_key: {NIM_KEY}, drop_fields: [x_trace] }}\n",
            up.url()
        ),
        &[],
    )
    .await;

    let r = chat(
        &gw,
        r#"{"model":"nvidia:m","messages":[],"max_tokens":10,"max_completion_tokens":99}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_call().json()["max_tokens"], 10, "never overwritten");

    // `drop_fields: []` keeps only the fixed rewrites: `store` reaches the strict NIM, which
    // refuses it — and the client sees NIM's status and reason.
    let r = chat(
        &gw,
        r#"{"model":"bare:m","messages":[],"store":true,"max_completion_tokens":5,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("extra_forbidden") && msg.contains("store"),
        "{msg}"
    );
    assert!(
        !msg.contains("stream_options") && !msg.contains("max_completion_tokens"),
        "{msg}"
    );
    let sent = up.last_call().json();
    assert_eq!(sent["store"], true);
    assert_eq!(sent["max_tokens"], 5);

    // A list of its own drops exactly what it names.
    let r = chat(
        &gw,
        r#"{"model":"custom:m","messages":[],"x_trace":"abc","seed":7}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last_call().json();
    assert!(sent.get("x_trace").is_none());
    assert_eq!(sent["seed"], 7);
}

#[tokio::test]
async fn nim_key_precedence_yaml_over_env_and_cleaned() {
    let a = nim::start(&[]).await;
    let b = nim::start(&[]).await;
    let gw = start(
        &format!(
            "backends:\n  nvidia: {{ api_url: \"{}\", api_key: \" Bearer {NIM_KEY} \" }}\n  fallback: {{ type: nvidia, api_url: \"{}\" }}\n",
            a.url(),
            b.url()
        ),
        &[("NVIDIA_API_KEY", &format!("  Bearer {NIM_ENV_KEY}\n"))],
    )
    .await;
    for model in ["nvidia:m", "fallback:m"] {
        let r = chat(&gw, &format!(r#"{{"model":"{model}","messages":[]}}"#)).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
    }
    // The YAML key wins over NVIDIA_API_KEY, and copy-paste debris is gone.
    assert_eq!(
        a.last_call().header("authorization"),
        Some(bearer(NIM_KEY).as_str())
    );
    // With no YAML key, the variable is used, cleaned the same way.
    assert_eq!(
        b.last_call().header("authorization"),
        Some(bearer(NIM_ENV_KEY).as_str())
    );
}

#[tokio::test]
async fn nim_without_a_key_skips_discovery_and_lists_static_models() {
    let up = nim::start(&["discovered/model"]).await;
    let gw = start(
        &format!(
            "backends:\n  nvidia: {{ api_url: \"{0}\", models: [\"meta/llama3-70b\"] }}\n  empty: {{ type: nvidia, api_url: \"{0}\", health_check: false }}\n",
            up.url()
        ),
        &[],
    )
    .await;
    assert_eq!(model_ids(&gw).await, ["nvidia:meta/llama3-70b"]);
    assert_eq!(up.model_lists(), 0, "no key: GET /models is never asked");

    // Requests are still forwarded, and NIM's own 401 comes back.
    let r = chat(&gw, r#"{"model":"empty:meta/llama3-70b","messages":[]}"#).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.last_call().header("authorization"), None);
    assert_eq!(up.model_lists(), 0);
}

#[tokio::test]
async fn models_lists_discovered_ids_of_hosted_and_local_nim() {
    let hosted = nim::start(&["meta/llama3-70b", "mistralai/mixtral-8x22b-instruct-v0.1"]).await;
    let local = nim::start(&["meta/llama-3.1-8b-instruct"]).await;
    let gw = start(
        &format!(
            "backends:\n  nvidia: {{ api_url: \"{}\" }}\n  local-nim: {{ type: nvidia, api_url: \"{}\", api_key: {LOCAL_KEY} }}\n",
            hosted.url(),
            local.url()
        ),
        &[("NVIDIA_API_KEY", NIM_ENV_KEY)],
    )
    .await;
    assert_eq!(
        model_ids(&gw).await,
        [
            "local-nim:meta/llama-3.1-8b-instruct",
            "nvidia:meta/llama3-70b",
            "nvidia:mistralai/mixtral-8x22b-instruct-v0.1",
        ]
    );
    let r = fetch(&gw, "/v1/models/local-nim:meta/llama-3.1-8b-instruct").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        hosted.received()[0].header("authorization"),
        Some(bearer(NIM_ENV_KEY).as_str())
    );
    assert_eq!(
        local.received()[0].header("authorization"),
        Some(bearer(LOCAL_KEY).as_str())
    );
    // Cached: asking again costs no upstream call.
    model_ids(&gw).await;
    assert_eq!((hosted.model_lists(), local.model_lists()), (1, 1));

    // Each instance gets its own requests, and a model missing from the catalogue is still
    // forwarded (catalogues lag behind deployments).
    let r = chat(
        &gw,
        r#"{"model":"local-nim:meta/llama-3.1-8b-instruct","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        local.last_call().json()["model"],
        "meta/llama-3.1-8b-instruct"
    );
    let r = chat(&gw, r#"{"model":"nvidia:brand-new/model","messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(hosted.last_call().json()["model"], "brand-new/model");
}

#[tokio::test]
async fn a_failing_nim_health_check_is_reported_but_requests_are_still_tried() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let gw = start(
        &format!(
            // No retries: one request is one connection attempt, so the breaker stays closed.
            "backends:\n  nvidia: {{ api_url: \"http://{dead}/v1\", api_key: {NIM_KEY} }}\n  mock: {{}}\nfailure_handling:\n  retries: 0\n"
        ),
        &[],
    )
    .await;
    let r = fetch(&gw, "/health/ready").await;
    assert_eq!(
        r.json()["backends"]["nvidia"]["status"],
        "ok",
        "nothing checked before use"
    );

    let r = chat(&gw, r#"{"model":"nvidia:m","messages":[]}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());

    let mut ready = serde_json::Value::Null;
    for _ in 0..200 {
        ready = fetch(&gw, "/health/ready").await.json();
        if ready["backends"]["nvidia"]["status"] == "unavailable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        ready["backends"]["nvidia"]["status"], "unavailable",
        "{ready}"
    );
    let reason = ready["backends"]["nvidia"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("health check"), "{reason}");
    assert_eq!(ready["status"], "ready", "the mock backend is still usable");

    // Reported, not enforced: the next request is still sent.
    let r = chat(&gw, r#"{"model":"nvidia:m","messages":[]}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// OpenRouter
// ---------------------------------------------------------------------------------------

fn openrouter_config(url: &str, extra: &str) -> String {
    format!(
        "backends:\n  openrouter:\n    api_url: {url}\n    headers: {{ HTTP-Referer: \"https://example.org\", X-Title: \"my-app\" }}\n{extra}"
    )
}

const OR_ENV: &[(&str, &str)] = &[("OPENROUTER_API_KEY", OR_KEY)];

#[tokio::test]
async fn openrouter_gets_its_headers_and_key() {
    let up = FakeUpstream::start_with(Options {
        models: vec!["meta-llama/llama-3.1-8b-instruct".into()],
        ..Default::default()
    })
    .await;
    let gw = start(&openrouter_config(&up.url(), ""), OR_ENV).await;

    let r = chat(
        &gw,
        r#"{"model":"openrouter:meta-llama/llama-3.1-8b-instruct","messages":[],"stream_options":{"include_usage":true},"max_completion_tokens":9}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last_call();
    assert_eq!(sent.header("http-referer"), Some("https://example.org"));
    assert_eq!(sent.header("x-title"), Some("my-app"));
    assert_eq!(sent.header("authorization"), Some(bearer(OR_KEY).as_str()));
    // OpenRouter takes OpenAI's newer fields as they are.
    let body = sent.json();
    assert_eq!(body["model"], "meta-llama/llama-3.1-8b-instruct");
    assert_eq!(body["max_completion_tokens"], 9);
    assert_eq!(body["stream_options"]["include_usage"], true);

    assert_eq!(
        model_ids(&gw).await,
        ["openrouter:meta-llama/llama-3.1-8b-instruct"]
    );
    assert_eq!(
        up.model_lists(),
        1,
        "no health check by default, one discovery"
    );
}

#[tokio::test]
async fn openrouter_processing_comments_are_not_relayed() {
    let up = FakeUpstream::start().await;
    let gw = start(&openrouter_config(&up.url(), ""), OR_ENV).await;
    let mut steps = vec![
        Step::Raw(": OPENROUTER PROCESSING\n\n".into()),
        Step::Pause(Duration::from_millis(20)),
        Step::Raw(": OPENROUTER PROCESSING\n\n".into()),
    ];
    steps.extend(Answer::stream_steps(&["Hi", " there"], Duration::ZERO));
    up.push(Answer::Sse {
        status: 200,
        steps,
        end: StreamEnd::Finish,
    });
    let r = chat(
        &gw,
        r#"{"model":"openrouter:x","messages":[],"stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("OPENROUTER PROCESSING"), "{}", r.text());
    assert_eq!(stream_text(&r.body), "Hi there");
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(up.calls().len(), 1);
}

/// OpenRouter's mid-stream error: an error object on a chunk whose choice finishes with `error`.
fn openrouter_error_frame(code: &str, message: &str) -> String {
    let frame = serde_json::json!({
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": "x",
        "provider": "SomeProvider",
        "error": {"code": code.parse::<u64>().map(serde_json::Value::from).unwrap_or_else(|_| code.into()), "message": message},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    });
    format!("data: {frame}\n\n")
}

#[tokio::test]
async fn openrouter_mid_stream_error_reaches_the_client_without_done() {
    let up = FakeUpstream::start().await;
    let gw = start(&openrouter_config(&up.url(), ""), OR_ENV).await;
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(": OPENROUTER PROCESSING\n\n".into()),
            Step::Raw(chunk_event("partial ")),
            Step::Raw(openrouter_error_frame(
                "server_error",
                "Provider disconnected",
            )),
            // Whatever an upstream sends after its error frame must not make the stream
            // look complete.
            Step::Raw("data: [DONE]\n\n".into()),
        ],
        end: StreamEnd::Finish,
    });
    let r = chat(
        &gw,
        r#"{"model":"openrouter:x","messages":[],"stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "committed with the first chunk");
    let data = sse_data(&r.body);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    assert_eq!(stream_text(&r.body), "partial ");
    let last: serde_json::Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["message"], "Provider disconnected", "{last}");
}

#[tokio::test]
async fn openrouter_error_before_any_data_keeps_its_status_or_falls_back() {
    let up = FakeUpstream::start().await;
    let gw = start(
        &openrouter_config(
            &up.url(),
            "  mock: { reply: \"from the fallback\" }\nroutes:\n  smart: [\"openrouter:x\", \"mock:mock-1\"]\nfailure_handling:\n  retries: 0\n",
        ),
        OR_ENV,
    )
    .await;
    let early_error = |code: &str, message: &str| Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(": OPENROUTER PROCESSING\n\n".into()),
            Step::Raw(openrouter_error_frame(code, message)),
        ],
        end: StreamEnd::Finish,
    };

    // Alone: the client gets the error's own status, not a 200 stream.
    up.push(early_error(
        "429",
        &format!("rate limited for key {OR_KEY}"),
    ));
    let r = chat(
        &gw,
        r#"{"model":"openrouter:x","messages":[],"stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.starts_with("rate limited for key"), "{msg}");

    // In a route: the next target answers instead.
    up.push(early_error("502", "no provider available"));
    let r = chat(&gw, r#"{"model":"smart","messages":[],"stream":true}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tollgate-backend"), Some("mock"));
    assert_eq!(stream_text(&r.body), "from the fallback");
    assert_eq!(up.calls().len(), 2);
}

// ---------------------------------------------------------------------------------------
// Example configurations
// ---------------------------------------------------------------------------------------

#[test]
fn example_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let env = Env::from_map(HashMap::from([(
        "NVIDIA_API_KEY".to_owned(),
        NIM_ENV_KEY.to_owned(),
    )]));
    for name in ["nvidia-hosted.yaml", "local-nim.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("example exists");
        let config: Config = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(problems) = Runtime::build(config, &registry(), &env, None) {
            panic!("{name}: {problems:?}");
        }
    }
}
