//! The OpenAI Responses door end to end: the official `openai` SDK's `responses.create` and
//! `responses.stream` through tollgate to a strict fake NIM, which answers 422 to any field its
//! schema does not have. Each scenario asserts what the SDK saw (its models parse every event)
//! and the chat.completions body the fake received; raw streams pass the grammar checker.

mod common;

use common::doors::{chat_answer, chat_stream, nim_config, run_sdk, sdk, start, Piece, NIM_KEY};
use tollgate_testkit::client::post;
use tollgate_testkit::{nim, StreamEnd};

const MODEL: &str = "meta/llama-3.1-8b-instruct";

fn assert_no_422(up: &tollgate_testkit::FakeUpstream) {
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_runs_every_responses_scenario_through_a_strict_nim() {
    if !sdk("openai") {
        return;
    }
    let up = nim::start(&[MODEL]).await;
    let gw = start(&nim_config(&up.url(), "")).await;

    // Text, whole and streamed.
    up.push(chat_answer("Hello there"));
    up.push(chat_stream(
        &[Piece::Text("Hel"), Piece::Text("lo")],
        "stop",
        StreamEnd::Finish,
    ));
    let r = run_sdk("responses_sdk.py", "text", gw.addr).await;
    assert_eq!(r["whole_text"], "Hello there");
    assert_eq!(
        r["whole_model"],
        format!("nvidia:{MODEL}"),
        "the model asked for is echoed"
    );
    assert_eq!(r["whole_usage"], serde_json::json!([11, 7, 18]));
    assert_eq!(r["stream_text"], "Hello");
    assert_eq!(r["stream_usage"], serde_json::json!([11, 7]));
    let calls = up.calls();
    let whole = calls[0].json();
    assert_eq!(whole["model"], MODEL);
    assert_eq!(whole["max_tokens"], 50, "max_output_tokens → max_tokens");
    assert_eq!(
        whole["messages"],
        serde_json::json!([{"role": "user", "content": "hi"}])
    );
    let streamed = calls[1].json();
    assert_eq!(streamed["stream"], true);
    assert_eq!(streamed["messages"][0]["role"], "system");
    assert_eq!(streamed["messages"][0]["content"], "Be brief.");
    assert_no_422(&up);

    // A function call whose arguments arrive in fragments.
    up.push(chat_stream(
        &[
            Piece::ToolStart {
                index: 0,
                id: "call_1",
                name: "get_weather",
            },
            Piece::ToolArgs {
                index: 0,
                args: "{\"ci",
            },
            Piece::ToolArgs {
                index: 0,
                args: "ty\": \"Pa",
            },
            Piece::ToolArgs {
                index: 0,
                args: "ris\"}",
            },
        ],
        "tool_calls",
        StreamEnd::Finish,
    ));
    let r = run_sdk("responses_sdk.py", "tool_call", gw.addr).await;
    let items = r["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{r}");
    assert_eq!(items[0]["type"], "function_call");
    assert_eq!(items[0]["name"], "get_weather");
    assert_eq!(items[0]["call_id"], "call_1");
    assert_eq!(items[0]["arguments"], "{\"city\": \"Paris\"}");
    let sent = up.last_call().json();
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_no_422(&up);

    // The follow-up with the call's output.
    up.push(chat_answer("It is sunny in Paris."));
    let r = run_sdk("responses_sdk.py", "follow_up", gw.addr).await;
    assert_eq!(r["text"], "It is sunny in Paris.");
    let sent = up.last_call().json();
    let messages = sent["messages"].as_array().expect("messages");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], "call_1");
    assert_eq!(messages[2]["content"], "sunny, 21C");
    assert_no_422(&up);

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
                args: "{\"city\":",
            },
            Piece::ToolArgs {
                index: 1,
                args: "\"Rome\"}",
            },
        ],
        "tool_calls",
        StreamEnd::Finish,
    ));
    let r = run_sdk("responses_sdk.py", "parallel", gw.addr).await;
    let items = r["items"].as_array().expect("items");
    let calls: Vec<(&str, &str)> = items
        .iter()
        .filter(|i| i["type"] == "function_call")
        .map(|i| {
            (
                i["call_id"].as_str().unwrap_or(""),
                i["arguments"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_a", "{\"city\":\"Paris\"}"),
            ("call_b", "{\"city\":\"Rome\"}")
        ]
    );
    assert_no_422(&up);

    // Reasoning text from `reasoning_content`.
    up.push(chat_stream(
        &[
            Piece::Reasoning("Let me "),
            Piece::Reasoning("think."),
            Piece::Text("42"),
        ],
        "stop",
        StreamEnd::Finish,
    ));
    let r = run_sdk("responses_sdk.py", "reasoning", gw.addr).await;
    let items = r["items"].as_array().expect("items");
    assert_eq!(items[0]["type"], "reasoning", "{r}");
    assert_eq!(items[0]["text"], "Let me think.");
    assert_eq!(items[1]["text"], "42");
    // No reasoning control is configured for this backend: `reasoning` is not forwarded.
    assert!(up.last_call().json().get("reasoning_effort").is_none());
    assert_no_422(&up);

    // max_output_tokens reached.
    up.push(chat_stream(
        &[Piece::Text("one two")],
        "length",
        StreamEnd::Finish,
    ));
    let r = run_sdk("responses_sdk.py", "incomplete", gw.addr).await;
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["reason"], "max_output_tokens");
    assert_eq!(up.last_call().json()["max_tokens"], 3);

    // A stream cut mid-answer: the SDK raises.
    up.push(chat_stream(&[Piece::Text("par")], "stop", StreamEnd::Cut));
    let r = run_sdk("responses_sdk.py", "cut", gw.addr).await;
    assert_eq!(r["raised"], "APIError", "{r}");

    // Stored conversations do not exist on a translated backend: a clear 400, nothing sent.
    let before = up.calls().len();
    let r = run_sdk("responses_sdk.py", "error", gw.addr).await;
    assert_eq!(r["status"], 400);
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("previous_response_id")),
        "{r}"
    );
    assert_eq!(up.calls().len(), before);
}

#[tokio::test]
async fn codex_turns_translate_for_a_strict_nim_and_tool_names_survive() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clients/codex-0.169.0-tool-turn.json"
        ))
        .expect("fixture"),
    )
    .expect("json");
    let up = nim::start(&[MODEL]).await;
    let gw = start(&nim_config(
        &up.url(),
        &format!("default_backend: nvidia\nforce_model: nvidia:{MODEL}\n"),
    ))
    .await;

    // The first turn: the model calls exec_command and a namespaced multi-agent tool.
    let first = &fixture["requests"][0]["body"];
    let sent_tools = |call: &tollgate_testkit::Recorded| -> Vec<String> {
        call.json()["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    up.push(chat_stream(&[Piece::Text("")], "stop", StreamEnd::Finish));
    let r = post(gw.addr, "/v1/responses", &[], &first.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let call = up.last_call();
    assert_no_422(&up);
    let names = sent_tools(&call);
    assert!(names.contains(&"exec_command".to_string()), "{names:?}");
    let namespaced = names
        .iter()
        .find(|n| n.contains("close_agent"))
        .cloned()
        .expect("the namespaced tool reaches the chat upstream under a chat name");
    assert!(
        namespaced
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{namespaced}"
    );

    up.push(chat_stream(
        &[
            Piece::ToolStart {
                index: 0,
                id: "call_x",
                name: "exec_command",
            },
            Piece::ToolArgs {
                index: 0,
                args: "{\"cmd\":\"cat secret.txt\"}",
            },
            Piece::ToolStart {
                index: 1,
                id: "call_y",
                name: &namespaced,
            },
            Piece::ToolArgs {
                index: 1,
                args: "{\"target\":\"agent-1\"}",
            },
        ],
        "tool_calls",
        StreamEnd::Finish,
    ));
    let r = post(gw.addr, "/v1/responses", &[], &first.to_string()).await;
    assert_eq!(r.status, 200);
    let summary = tollgate_translate::responses::grammar::check(&r.body)
        .unwrap_or_else(|e| panic!("grammar: {e}\n{}", r.text()));
    let calls: Vec<_> = summary
        .items
        .iter()
        .filter(|i| !i.name.is_empty())
        .map(|i| (i.name.clone(), i.namespace.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("exec_command".to_string(), None),
            (
                "close_agent".to_string(),
                Some("multi_agent_v1".to_string())
            )
        ],
        "the names the client sent come back"
    );

    // The follow-up: function_call + function_call_output become tool_calls + a tool message.
    let second = &fixture["requests"][1]["body"];
    up.push(chat_stream(
        &[Piece::Text("It says MAGIC-42.")],
        "stop",
        StreamEnd::Finish,
    ));
    let r = post(gw.addr, "/v1/responses", &[], &second.to_string()).await;
    assert_eq!(r.status, 200);
    let summary = tollgate_translate::responses::grammar::check(&r.body).expect("grammar");
    assert_eq!(summary.items[0].text, "It says MAGIC-42.");
    let sent = up.last_call().json();
    assert_no_422(&up);
    let messages = sent["messages"].as_array().expect("messages");
    let tool_call = messages
        .iter()
        .position(|m| m["tool_calls"][0]["id"] == "call_fake_1")
        .expect("the function_call as an assistant tool call");
    assert_eq!(messages[tool_call + 1]["role"], "tool");
    assert_eq!(messages[tool_call + 1]["tool_call_id"], "call_fake_1");
    for dropped in [
        "store",
        "include",
        "prompt_cache_key",
        "client_metadata",
        "reasoning",
        "parallel_tool_calls",
    ] {
        assert!(
            sent.get(dropped).is_none(),
            "{dropped} must not reach a strict NIM"
        );
    }
}

#[tokio::test]
async fn a_backend_with_native_responses_gets_the_request_untouched() {
    let up = tollgate_testkit::FakeUpstream::start().await;
    let done = serde_json::json!({
        "id": "resp_1", "object": "response", "created_at": 0, "status": "completed", "model": "gpt-x",
        "output": [], "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    });
    up.push(tollgate_testkit::Answer::json(200, &done.to_string()));
    let gw = start(&format!(
        "backends:\n  oai:\n    type: openai\n    api_url: {}\n    api_key: sk-oai-1\n    responses: native\nfailure_handling:\n  retries: 0\n",
        up.url()
    ))
    .await;
    // Fields a translation would drop (store, include, previous_response_id) go as they are.
    let body = r#"{"model":"oai:gpt-x", "input":"hi", "store":true, "include":["reasoning.encrypted_content"], "previous_response_id":"resp_0"}"#;
    let r = post(gw.addr, "/v1/responses", &[], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "resp_1", "the backend's own answer");
    let sent = up.last_call();
    assert_eq!(sent.path, "/v1/responses");
    let json = sent.json();
    assert_eq!(json["model"], "gpt-x");
    assert_eq!(json["store"], true);
    assert_eq!(json["previous_response_id"], "resp_0");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-oai-1"));
}

#[tokio::test]
async fn a_native_responses_stream_is_relayed_as_sent_and_its_usage_counted() {
    use tollgate_testkit::{Answer, FakeUpstream, Step, StreamEnd};
    let up = FakeUpstream::start().await;
    let events = [
        r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress"}}

"#,
        r#"event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":1,"delta":"hi"}

"#,
        r#"event: response.completed
data: {"type":"response.completed","sequence_number":2,"response":{"id":"resp_1","status":"completed","usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}}

"#,
    ];
    up.push(Answer::Sse {
        status: 200,
        steps: events.iter().map(|e| Step::Raw(e.to_string())).collect(),
        end: StreamEnd::Finish,
    });
    let gw = start(&format!(
        "backends:\n  oai:\n    type: openai\n    api_url: {}\n    responses: native\n",
        up.url()
    ))
    .await;
    let r = post(
        gw.addr,
        "/v1/responses",
        &[],
        r#"{"model":"oai:gpt-x","input":"hi","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), events.concat(), "byte for byte");
    assert!(up.last_call().json().get("stream_options").is_none());
    let metrics = tollgate_testkit::client::get(gw.addr, "/metrics", &[])
        .await
        .text();
    assert!(
        metrics.contains(r#"tollgate_tokens_total{door="responses",backend="oai",model="gpt-x",key="",kind="completion"} 4"#),
        "{metrics}"
    );
}
