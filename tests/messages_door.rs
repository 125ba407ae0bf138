//! The Anthropic Messages door end to end: the official `anthropic` SDK through tollgate to a
//! strict fake NIM (422 for any field outside its schema). Each scenario asserts what the SDK
//! saw and the chat.completions body the fake received — the backend's key, never the client's;
//! raw streams pass the Anthropic grammar checker; Claude Code's recorded requests go through.

mod common;

use std::time::Duration;

use common::doors::{chat_answer, chat_stream, run_sdk, sdk, start, Piece, CLIENT_KEY, NIM_KEY};
use tollgate_testkit::client::{get, post, send};
use tollgate_testkit::{nim, Answer, FakeUpstream, Step, StreamEnd};
use tollgate_translate::anthropic::grammar;

const MODEL: &str = "meta/llama-3.1-8b-instruct";

fn config(nim: &str, vllm: &str) -> String {
    format!(
        r#"backends:
  nvidia:
    api_url: {nim}
    health_check: false
  vllm:
    type: openai
    api_url: {vllm}
    api_key: sk-vllm-SECRET-1
    reasoning: chat_template_kwargs.enable_thinking
anthropic:
  models:
    "claude-opus*": "vllm:qwen/qwen3-32b"
    "claude-*": "nvidia:{MODEL}"
auth:
  keys:
    - {{ name: claude, key: {CLIENT_KEY} }}
failure_handling:
  retries: 1
  backoff: {{ initial_ms: 1, max_ms: 5 }}
  keepalive_interval: 1
"#
    )
}

/// Every call the fake received passes NIM's schema, carries the backend key and no client key.
fn assert_clean(up: &FakeUpstream) {
    for call in up.calls() {
        assert!(
            nim::schema_error(&call.body).is_none(),
            "the strict NIM would refuse: {}",
            String::from_utf8_lossy(&call.body)
        );
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {NIM_KEY}").as_str())
        );
        for (_, value) in call.headers.iter() {
            assert!(!String::from_utf8_lossy(value.as_bytes()).contains(CLIENT_KEY));
        }
        assert!(!String::from_utf8_lossy(&call.body).contains(CLIENT_KEY));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_runs_every_messages_scenario_through_a_strict_nim() {
    if !sdk("anthropic") {
        return;
    }
    let up = nim::start(&[MODEL]).await;
    let vllm = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &vllm.url())).await;

    // Text, whole and streamed; the model asked for is echoed.
    up.push(chat_answer("Hello there"));
    up.push(chat_stream(
        &[Piece::Text("Hel"), Piece::Text("lo")],
        "stop",
        StreamEnd::Finish,
    ));
    let r = run_sdk("anthropic_sdk.py", "text", gw.addr).await;
    assert_eq!(
        r["whole"],
        serde_json::json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(r["whole_model"], "claude-sonnet-5-5");
    assert_eq!(r["whole_stop"], "end_turn");
    assert_eq!(r["whole_usage"], serde_json::json!([11, 7]));
    assert_eq!(r["stream_text"], "Hello");
    assert_eq!(r["stream_stop"], "end_turn");
    assert_eq!(
        r["stream_usage"],
        serde_json::json!([11, 7]),
        "the backend's real counts at the end"
    );
    let calls = up.calls();
    let whole = calls[0].json();
    assert_eq!(whole["model"], MODEL, "claude-* mapped by anthropic.models");
    assert_eq!(whole["max_tokens"], 1024);
    assert_eq!(
        whole["messages"][0],
        serde_json::json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(whole["messages"][1]["role"], "user");
    assert_eq!(calls[1].json()["stream"], true);
    assert_clean(&up);

    // A tool call whose arguments arrive in fragments.
    up.push(chat_stream(
        &[
            Piece::ToolStart {
                index: 0,
                id: "call_1",
                name: "get_weather",
            },
            Piece::ToolArgs {
                index: 0,
                args: "{\"city\": \"Pa",
            },
            Piece::ToolArgs {
                index: 0,
                args: "ris\", \"un",
            },
            Piece::ToolArgs {
                index: 0,
                args: "it\": \"C\"}",
            },
        ],
        "tool_calls",
        StreamEnd::Finish,
    ));
    let r = run_sdk("anthropic_sdk.py", "tool_call", gw.addr).await;
    assert_eq!(r["stop"], "tool_use");
    let tool = r["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "tool_use"))
        .expect("a tool_use block");
    assert_eq!(tool["name"], "get_weather");
    assert_eq!(
        tool["input"],
        serde_json::json!({"city": "Paris", "unit": "C"})
    );
    let sent = up.last_call().json();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["required"],
        serde_json::json!(["city"])
    );
    assert_clean(&up);

    // Two calls in one turn.
    up.push(chat_stream(
        &[
            Piece::ToolStart {
                index: 0,
                id: "call_a",
                name: "get_weather",
            },
            Piece::ToolArgs {
                index: 0,
                args: "{\"city\":\"Paris\"}",
            },
            Piece::ToolStart {
                index: 1,
                id: "call_b",
                name: "get_weather",
            },
            Piece::ToolArgs {
                index: 1,
                args: "{\"city\":\"Rome\"}",
            },
        ],
        "tool_calls",
        StreamEnd::Finish,
    ));
    let r = run_sdk("anthropic_sdk.py", "parallel", gw.addr).await;
    let inputs: Vec<_> = r["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["input"]["city"].clone())
        .collect();
    assert_eq!(
        inputs,
        [serde_json::json!("Paris"), serde_json::json!("Rome")]
    );

    // The follow-up with a tool_result.
    up.push(chat_answer("Sunny in Paris."));
    let r = run_sdk("anthropic_sdk.py", "follow_up", gw.addr).await;
    assert_eq!(r["blocks"][0]["text"], "Sunny in Paris.");
    let sent = up.last_call().json();
    let messages = sent["messages"].as_array().expect("messages");
    let call = messages
        .iter()
        .position(|m| m["role"] == "assistant")
        .expect("assistant turn");
    assert_eq!(messages[call]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        messages[call]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(messages[call + 1]["role"], "tool");
    assert_eq!(messages[call + 1]["tool_call_id"], "toolu_1");
    assert!(messages[call + 1]["content"]
        .as_str()
        .is_some_and(|c| c.contains("sunny, 21C")));
    assert_clean(&up);

    // Thinking from `reasoning_content`, on a backend configured for it.
    vllm.push(chat_stream(
        &[
            Piece::Reasoning("Let me "),
            Piece::Reasoning("think."),
            Piece::Text("42"),
        ],
        "stop",
        StreamEnd::Finish,
    ));
    let r = run_sdk("anthropic_sdk.py", "thinking", gw.addr).await;
    assert_eq!(
        r["blocks"],
        serde_json::json!([{"type": "thinking", "thinking": "Let me think."}, {"type": "text", "text": "42"}])
    );
    let sent = vllm.last_call();
    assert_eq!(sent.json()["model"], "qwen/qwen3-32b");
    assert_eq!(
        sent.json()["chat_template_kwargs"],
        serde_json::json!({"enable_thinking": true})
    );
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-vllm-SECRET-1")
    );

    // A stream cut mid-answer: the SDK raises.
    up.push(chat_stream(&[Piece::Text("par")], "stop", StreamEnd::Cut));
    let r = run_sdk("anthropic_sdk.py", "cut", gw.addr).await;
    // The SDK raises on `event: error` (an APIStatusError, one of its APIErrors).
    assert!(
        r["raised"].as_str().is_some_and(|e| e.ends_with("Error")),
        "{r}"
    );

    // Upstream limits and overload, in Anthropic's shapes (after one retry each).
    up.push(Answer::error(429, "slow down", "rate_limit_exceeded"));
    up.push(Answer::error(429, "slow down", "rate_limit_exceeded"));
    let r = run_sdk("anthropic_sdk.py", "rate_limited", gw.addr).await;
    assert_eq!(
        (r["status"].as_u64(), r["type"].as_str()),
        (Some(429), Some("rate_limit_error"))
    );
    up.push(Answer::error(503, "busy", "busy"));
    up.push(Answer::error(503, "busy", "busy"));
    let r = run_sdk("anthropic_sdk.py", "overloaded", gw.addr).await;
    assert_eq!(r["status"], 529, "{r}");
    assert_eq!(r["type"], "overloaded_error");
    assert_eq!(r["class"], "OverloadedError");

    // count_tokens: the local estimate, answered without an upstream call.
    let before = up.calls().len();
    let r = run_sdk("anthropic_sdk.py", "count_tokens", gw.addr).await;
    assert!(r["input_tokens"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_eq!(up.calls().len(), before);

    // 20 s of upstream silence mid-stream with a 1 s keepalive: pings, then a normal end.
    let metrics = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("tollgate_keepalives_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let before = metrics(&get(gw.addr, "/metrics", &[]).await.text());
    let mut slow = match chat_stream(&[Piece::Text("slow-and-steady")], "stop", StreamEnd::Finish) {
        Answer::Sse { steps, .. } => steps,
        _ => unreachable!("a stream"),
    };
    slow.insert(1, Step::Pause(Duration::from_secs(20)));
    up.push(Answer::Sse {
        status: 200,
        steps: slow,
        end: StreamEnd::Finish,
    });
    let r = run_sdk("anthropic_sdk.py", "slow", gw.addr).await;
    assert_eq!(r["text"], "slow-and-steady");
    assert_eq!(r["stop"], "end_turn");
    let pings = metrics(&get(gw.addr, "/metrics", &[]).await.text()) - before;
    assert!(pings >= 15.0, "only {pings} keepalives in 20 s of silence");
}

#[tokio::test]
async fn raw_streams_follow_the_grammar_and_keepalives_are_pings() {
    let up = nim::start(&[MODEL]).await;
    let vllm = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &vllm.url())).await;
    let key = [("x-api-key", CLIENT_KEY)];
    let body = r#"{"model":"claude-sonnet-5-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    let mut steps = match chat_stream(
        &[Piece::Text("a"), Piece::Text("b")],
        "stop",
        StreamEnd::Finish,
    ) {
        Answer::Sse { steps, .. } => steps,
        _ => unreachable!("a stream"),
    };
    steps.insert(1, Step::Pause(Duration::from_millis(2500)));
    up.push(Answer::Sse {
        status: 200,
        steps,
        end: StreamEnd::Finish,
    });
    let r = post(gw.addr, "/v1/messages?beta=true", &key, body).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains("event: ping\ndata: {\"type\":\"ping\"}\n\n"),
        "{text}"
    );
    let summary = grammar::check(&r.body).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(summary.text, "ab");
    assert!(!text.contains("[DONE]"));

    // Broken after the 200: `event: error`, no message_stop, and the grammar checker agrees.
    up.push(chat_stream(&[Piece::Text("par")], "stop", StreamEnd::Cut));
    let r = post(gw.addr, "/v1/messages", &key, body).await;
    let summary = grammar::check(&r.body).expect("a failed stream is still grammatical");
    assert!(summary.error.is_some(), "{}", r.text());
    assert!(!summary.events.iter().any(|e| e == "message_stop"));

    // Errors on this door are Anthropic-shaped, with Anthropic's statuses.
    let r = post(gw.addr, "/v1/messages", &[], body).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = post(
        gw.addr,
        "/v1/messages",
        &key,
        r#"{"model":"claude-x","max_tokens":5}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = send(gw.addr, http::Method::GET, "/v1/messages", &key, "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["type"], "error");
}

#[tokio::test]
async fn claude_code_requests_reach_a_strict_nim_without_a_422() {
    let load = |name: &str| -> serde_json::Value {
        let path = format!(
            "{}/tests/fixtures/clients/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    };
    let up = nim::start(&[MODEL]).await;
    let vllm = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &vllm.url())).await;
    let key = [
        ("x-api-key", CLIENT_KEY),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        ),
    ];

    // The start-up probe.
    let probes = load("claude-code-2.1.330-probes.json");
    let r = send(gw.addr, http::Method::HEAD, "/api/hello", &[], "").await;
    assert_eq!(r.status, 200);
    let probe = probes["requests"][1]["body"].clone();

    let turns = load("claude-code-2.1.330-tool-turn.json");
    for (i, body) in [
        probe,
        turns["requests"][0]["body"].clone(),
        turns["requests"][1]["body"].clone(),
    ]
    .into_iter()
    .enumerate()
    {
        // Claude Code's own model names go where anthropic.models says (opus → vllm here):
        // send these to the strict NIM.
        let mut body = body;
        body["model"] = serde_json::json!("claude-sonnet-5-5");
        up.push(chat_stream(&[Piece::Text("ok")], "stop", StreamEnd::Finish));
        let r = post(gw.addr, "/v1/messages?beta=true", &key, &body.to_string()).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        grammar::check(&r.body).unwrap_or_else(|e| panic!("request {i}: {e}"));
        let sent = up.last_call();
        assert!(
            nim::schema_error(&sent.body).is_none(),
            "request {i}: {}",
            String::from_utf8_lossy(&sent.body)
        );
        let json = sent.json();
        // Claude Code asks for 128,000 output tokens; nothing Anthropic-only is forwarded.
        assert_eq!(json["model"], MODEL);
        for dropped in [
            "thinking",
            "context_management",
            "output_config",
            "metadata",
            "system",
        ] {
            assert!(
                json.get(dropped).is_none(),
                "request {i}: {dropped} forwarded"
            );
        }
        let text = String::from_utf8_lossy(&sent.body).into_owned();
        assert!(
            !text.contains("cache_control") && !text.contains("defer_loading"),
            "request {i}"
        );
        let roles: Vec<&str> = json["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["role"].as_str().unwrap_or(""))
            .collect();
        // `role: system` entries inside `messages` stay system messages, in place.
        assert_eq!(roles[0], "system", "request {i}: {roles:?}");
        assert!(roles.contains(&"user"));
        if i == 2 {
            let tool = roles
                .iter()
                .position(|r| *r == "tool")
                .expect("the tool_result");
            assert_eq!(roles[tool - 1], "assistant");
            assert_eq!(json["messages"][tool]["tool_call_id"], "toolu_fake_1");
            assert!(json["messages"][tool]["content"]
                .as_str()
                .is_some_and(|c| c.contains("MAGIC-42")));
        }
    }
}
