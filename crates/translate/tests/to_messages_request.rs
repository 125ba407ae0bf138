//! chat.completions requests → Messages requests (`to_messages::from_chat`): each mapping,
//! each refusal, and — for every body translated here and for random valid chat requests —
//! acceptance by the strict fake Anthropic's schema check.

use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_testkit::anthropic::check_messages;
use tollgate_translate::to_messages::{from_chat, DEFAULT_MAX_TOKENS};

/// Translates `chat`, checks Anthropic would accept the result, returns it.
fn translate(chat: Value) -> Value {
    let body = JsonObject::parse(chat.to_string().as_bytes()).expect("json");
    let out = from_chat(&body).unwrap_or_else(|e| panic!("refused: {e:?}"));
    let bytes = out.to_bytes();
    if let Err(e) = check_messages(&bytes) {
        panic!(
            "Anthropic would refuse it: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    serde_json::from_slice(&bytes).expect("translated body is JSON")
}

/// The refusal of `chat`: its `param` and message.
fn refusal(chat: Value) -> (Option<String>, String) {
    let body = JsonObject::parse(chat.to_string().as_bytes()).expect("json");
    match from_chat(&body) {
        Ok(out) => panic!("accepted: {}", String::from_utf8_lossy(&out.to_bytes())),
        Err(e) => (e.param, e.message),
    }
}

fn chat(messages: Value) -> Value {
    json!({"model": "gpt-4o", "messages": messages})
}

#[test]
fn a_plain_request() {
    let body = JsonObject::parse(
        br#"{"model":"claude-x","messages":[{"role":"user","content":"h\u00e9llo \"you\""}]}"#,
    )
    .expect("json");
    let out = from_chat(&body).expect("translated");
    // The text travels as the client wrote it, escapes and all.
    assert_eq!(
        std::str::from_utf8(&out.to_bytes()).expect("utf8"),
        r#"{"model":"claude-x","messages":[{"role":"user","content":[{"type":"text","text":"h\u00e9llo \"you\""}]}],"max_tokens":4096}"#
    );
    assert_eq!(DEFAULT_MAX_TOKENS, 4096);
}

#[test]
fn system_and_developer_messages_become_one_system_string() {
    let out = translate(chat(json!([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}, {"type": "text", "text": "No emoji."}]},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Late rule."},
        {"role": "system", "content": "  "}
    ])));
    assert_eq!(
        out["system"],
        "Be brief.\n\nUse metric.\n\nNo emoji.\n\nLate rule."
    );
    assert_eq!(out["messages"].as_array().map(Vec::len), Some(1));
    let (param, _) = refusal(chat(json!([
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "user", "content": "hi"}
    ])));
    assert_eq!(param.as_deref(), Some("messages[0].content[0].type"));
}

#[test]
fn content_parts_text_and_images() {
    let out = translate(chat(json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
        {"type": "text", "text": ""}
    ]}])));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.jpg"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}
        ])
    );
    let pdf = translate(chat(json!([{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "text", "text": "Summarize."}
    ]}])));
    assert_eq!(
        pdf["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}})
    );
    for (part, param) in [
        (
            json!({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            "messages[0].content[0].type",
        ),
        (
            json!({"type": "file", "file": {"file_id": "file-1"}}),
            "messages[0].content[0].file.file_data",
        ),
        (json!({"type": "video"}), "messages[0].content[0].type"),
    ] {
        let (got, message) = refusal(chat(json!([{"role": "user", "content": [part]}])));
        assert_eq!(got.as_deref(), Some(param), "{message}");
    }
}

#[test]
fn assistant_tool_calls_become_tool_use_and_tool_messages_tool_results() {
    let out = translate(chat(json!([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"units\":{\"t\":\"C\"}}"}},
            {"id": "call_3", "type": "function", "function": {"name": "now", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "tool", "tool_call_id": "call_3", "content": ""},
        {"role": "user", "content": "Thanks — which is warmer?"}
    ])));
    let messages = out["messages"].as_array().expect("messages");
    assert_eq!(
        messages.len(),
        3,
        "the tool results and the user's words are one turn"
    );
    assert_eq!(
        messages[1]["content"],
        json!([
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome", "units": {"t": "C"}}},
            {"type": "tool_use", "id": "call_3", "name": "now", "input": {}}
        ])
    );
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"type": "tool_result", "tool_use_id": "call_3"},
            {"type": "text", "text": "Thanks — which is warmer?"}
        ]})
    );
}

#[test]
fn tool_results_come_first_even_when_a_user_message_came_before_them() {
    let out = translate(chat(json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "functions.lookup:0", "type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}]},
        {"role": "user", "content": "(while you wait)"},
        {"role": "tool", "tool_call_id": "functions.lookup:0", "content": "found"}
    ])));
    let turn = &out["messages"][2]["content"];
    assert_eq!(turn[0]["type"], "tool_result");
    // Ids outside Anthropic's alphabet are rewritten the same way on both sides.
    assert_eq!(turn[0]["tool_use_id"], "functions_lookup_0");
    assert_eq!(out["messages"][1]["content"][0]["id"], "functions_lookup_0");
    assert_eq!(
        out["messages"][1]["content"][0]["input"],
        json!({"q": "x"}),
        "an arguments object (not a string) is read too"
    );
    assert_eq!(turn[1]["text"], "(while you wait)");
}

#[test]
fn tool_call_arguments_must_be_a_json_object() {
    for (arguments, ok) in [
        (json!("{\"a\":1}"), true),
        (json!(""), true),
        (json!("  "), true),
        (json!(null), true),
        (json!("null"), true),
        (json!("{\"a\":"), false),
        (json!("[1,2]"), false),
        (json!("42"), false),
        (json!("not json"), false),
    ] {
        let messages = json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"}
        ]);
        if ok {
            let out = translate(chat(messages));
            assert!(out["messages"][1]["content"][0]["input"].is_object());
        } else {
            let (param, message) = refusal(chat(messages));
            assert_eq!(
                param.as_deref(),
                Some("messages[1].tool_calls[0].function.arguments"),
                "{arguments}: {message}"
            );
        }
    }
    let (param, _) = refusal(chat(json!([
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    ])));
    assert_eq!(param.as_deref(), Some("messages[1].tool_calls[0].id"));
    let (param, _) = refusal(chat(json!([
        {"role": "tool", "content": "r"}
    ])));
    assert_eq!(param.as_deref(), Some("messages[0].tool_call_id"));
}

#[test]
fn same_role_turns_merge_and_the_first_turn_is_the_users() {
    let out = translate(chat(json!([
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}, {"type": "refusal", "refusal": "no"}]}
    ])));
    let roles: Vec<&str> = out["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(
        out["messages"][0]["content"][0]["text"], ".",
        "a neutral opening turn"
    );
    assert_eq!(
        out["messages"][2]["content"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        out["messages"][3]["content"],
        json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, {"type": "text", "text": "no"}])
    );
}

#[test]
fn a_final_assistant_prefill_loses_its_trailing_white_space() {
    let out = translate(chat(json!([
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is \n"}
    ])));
    assert_eq!(out["messages"][1]["content"][0]["text"], "The colour is");
    let out = translate(chat(json!([
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "   "}
    ])));
    assert_eq!(out["messages"].as_array().map(Vec::len), Some(1));
    let (param, _) = refusal(chat(json!([{"role": "user", "content": " "}])));
    assert_eq!(param.as_deref(), Some("messages"));
}

#[test]
fn tools_and_tool_choice() {
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
        {"type": "function", "function": {"name": "now"}},
        {"type": "function", "function": {"name": "echo", "parameters": {"properties": {"x": {"type": "string"}}}}}
    ]);
    let mut body = chat(json!([{"role": "user", "content": "hi"}]));
    body["tools"] = tools.clone();
    let out = translate(body.clone());
    assert_eq!(
        out["tools"],
        json!([
            {"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            {"name": "echo", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}
        ])
    );
    assert!(out.get("tool_choice").is_none());

    for (choice, parallel, expected) in [
        (json!("auto"), None, json!({"type": "auto"})),
        (json!("none"), None, json!({"type": "none"})),
        (json!("required"), None, json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "now"}}),
            None,
            json!({"type": "tool", "name": "now"}),
        ),
        (
            json!("auto"),
            Some(false),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (
            json!("required"),
            Some(false),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
        (json!("none"), Some(false), json!({"type": "none"})),
        (
            json!(null),
            Some(false),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (json!("auto"), Some(true), json!({"type": "auto"})),
    ] {
        let mut b = body.clone();
        b["tool_choice"] = choice.clone();
        if let Some(p) = parallel {
            b["parallel_tool_calls"] = json!(p);
        }
        assert_eq!(
            translate(b)["tool_choice"],
            expected,
            "{choice} {parallel:?}"
        );
    }

    // No tools: no tool_choice (Anthropic refuses one alone).
    let mut b = chat(json!([{"role": "user", "content": "hi"}]));
    b["tool_choice"] = json!("none");
    b["parallel_tool_calls"] = json!(false);
    let out = translate(b);
    assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());

    let mut b = body.clone();
    b["tools"] = json!([{"type": "custom", "custom": {"name": "apply_patch"}}]);
    assert_eq!(refusal(b).0.as_deref(), Some("tools[0].type"));
    let mut b = body.clone();
    b["tool_choice"] =
        json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}});
    assert_eq!(refusal(b).0.as_deref(), Some("tool_choice.type"));
    let mut b = body;
    b["tool_choice"] = json!("sometimes");
    assert_eq!(refusal(b).0.as_deref(), Some("tool_choice"));
}

#[test]
fn sampling_limits_stops_user_and_stream() {
    let mut b = chat(json!([{"role": "user", "content": "hi"}]));
    b["max_tokens"] = json!(100);
    b["temperature"] = json!(1.7);
    b["top_p"] = json!(0.9);
    b["stop"] = json!("\n\n");
    b["user"] = json!("user-123");
    b["stream"] = json!(true);
    let out = translate(b.clone());
    assert_eq!(out["max_tokens"], 100);
    assert_eq!(out["temperature"], 1.0, "clamped to Anthropic's range");
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["stop_sequences"], json!(["\n\n"]));
    assert_eq!(out["metadata"], json!({"user_id": "user-123"}));
    assert_eq!(out["stream"], true);

    b["max_completion_tokens"] = json!(300);
    b["stop"] = json!(["END", "", "STOP"]);
    b["stream"] = json!(false);
    b["temperature"] = json!(-1);
    let out = translate(b);
    assert_eq!(out["max_tokens"], 300, "max_completion_tokens first");
    assert_eq!(out["stop_sequences"], json!(["END", "STOP"]));
    assert!(out.get("stream").is_none());
    assert_eq!(out["temperature"], 0.0);

    let mut b = chat(json!([{"role": "user", "content": "hi"}]));
    b["safety_identifier"] = json!("sid-9");
    b["temperature"] = json!("hot");
    assert_eq!(refusal(b.clone()).0.as_deref(), Some("temperature"));
    b["temperature"] = json!(null);
    assert_eq!(translate(b)["metadata"]["user_id"], "sid-9");
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget() {
    let base = chat(json!([{"role": "user", "content": "think"}]));
    for (effort, budget) in [
        ("minimal", 1024),
        ("low", 4096),
        ("medium", 8192),
        ("high", 16384),
        ("xhigh", 24576),
        ("max", 32768),
    ] {
        let mut b = base.clone();
        b["reasoning_effort"] = json!(effort);
        b["temperature"] = json!(0.2);
        let out = translate(b);
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": budget}),
            "{effort}"
        );
        assert_eq!(out["max_tokens"], budget + DEFAULT_MAX_TOKENS, "{effort}");
        assert!(
            out.get("temperature").is_none(),
            "thinking takes the default temperature"
        );
    }
    let mut b = base.clone();
    b["reasoning_effort"] = json!("none");
    assert!(translate(b).get("thinking").is_none());

    // The client's max_tokens holds thinking and answer: the budget leaves room for the answer.
    let mut b = base.clone();
    b["reasoning_effort"] = json!("high");
    b["max_completion_tokens"] = json!(5000);
    let out = translate(b.clone());
    assert_eq!(out["max_tokens"], 5000);
    assert_eq!(out["thinking"]["budget_tokens"], 5000 - 1024);
    b["max_completion_tokens"] = json!(2000);
    let out = translate(b);
    assert_eq!(out["max_tokens"], 2000);
    assert!(
        out.get("thinking").is_none(),
        "no room for the minimum budget"
    );

    // Forced tool use and a pending tool turn rule thinking out.
    let mut b = base.clone();
    b["reasoning_effort"] = json!("low");
    b["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    b["tool_choice"] = json!("required");
    assert!(translate(b.clone()).get("thinking").is_none());
    b["tool_choice"] = json!("auto");
    assert!(translate(b.clone()).get("thinking").is_some());
    b["messages"] = json!([
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}
    ]);
    assert!(translate(b).get("thinking").is_none());

    let mut b = base;
    b["reasoning_effort"] = json!("extreme");
    assert_eq!(refusal(b).0.as_deref(), Some("reasoning_effort"));
}

#[test]
fn what_messages_cannot_say_is_refused() {
    let base = chat(json!([{"role": "user", "content": "hi"}]));
    for (field, value, param) in [
        ("n", json!(2), "n"),
        ("logprobs", json!(true), "logprobs"),
        ("top_logprobs", json!(3), "top_logprobs"),
        ("audio", json!({"voice": "alloy", "format": "mp3"}), "audio"),
        ("modalities", json!(["text", "audio"]), "audio"),
        ("functions", json!([{"name": "f"}]), "functions"),
        ("function_call", json!("auto"), "function_call"),
    ] {
        let mut b = base.clone();
        b[field] = value;
        let (got, message) = refusal(b);
        assert_eq!(got.as_deref(), Some(param), "{field}: {message}");
        assert!(message.contains("not supported"), "{message}");
    }
    // Their harmless values pass.
    let mut b = base.clone();
    b["n"] = json!(1);
    b["logprobs"] = json!(false);
    b["top_logprobs"] = json!(0);
    b["modalities"] = json!(["text"]);
    b["audio"] = json!(null);
    translate(b);

    let (param, _) = refusal(chat(
        json!([{"role": "function", "name": "f", "content": "x"}]),
    ));
    assert_eq!(param.as_deref(), Some("messages[0].role"));
    let (param, _) = refusal(chat(json!([{"role": "wizard", "content": "x"}])));
    assert_eq!(param.as_deref(), Some("messages[0].role"));
    let (param, _) = refusal(json!({"model": "m", "messages": "hi"}));
    assert_eq!(param.as_deref(), Some("messages"));
}

#[test]
fn everything_else_is_dropped() {
    let mut b = chat(json!([{"role": "user", "content": "hi", "name": "alice"}]));
    for (k, v) in [
        ("response_format", json!({"type": "json_object"})),
        ("seed", json!(7)),
        ("frequency_penalty", json!(0.5)),
        ("presence_penalty", json!(0.5)),
        ("logit_bias", json!({"50256": -100})),
        ("store", json!(true)),
        ("metadata", json!({"team": "a"})),
        ("service_tier", json!("auto")),
        ("stream_options", json!({"include_usage": true})),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("prompt_cache_key", json!("k")),
        ("verbosity", json!("low")),
        ("web_search_options", json!({})),
        ("x_brand_new", json!(1)),
    ] {
        b[k] = v;
    }
    let out = translate(b);
    let mut keys: Vec<&str> = out
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["max_tokens", "messages", "model"]);
}

// ---------------------------------------------------------------------------------------
// Random valid chat requests are accepted by the strict fake.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("  \n\t".to_owned()),
        "[a-zA-Z0-9 .,!?]{1,30}",
        "\\PC{0,20}",
        Just("quote \" backslash \\ newline \n tab \t é 日本".to_owned()),
    ]
}

/// A message's content: a string, `null`, or text parts (plus images where `images`).
fn content(images: bool) -> impl Strategy<Value = Value> {
    let part = if images {
        prop_oneof![
            text().prop_map(|t| json!({"type": "text", "text": t})),
            Just(json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})),
            Just(json!({"type": "image_url", "image_url": {"url": "https://example.org/a.webp"}})),
        ]
        .boxed()
    } else {
        text()
            .prop_map(|t| json!({"type": "text", "text": t}))
            .boxed()
    };
    prop_oneof![
        text().prop_map(Value::from),
        Just(Value::Null),
        prop::collection::vec(part, 0..3).prop_map(Value::from),
    ]
}

fn tool_id() -> impl Strategy<Value = String> {
    prop_oneof!["call_[a-zA-Z0-9]{4,12}", "functions\\.[a-z]{1,6}:[0-9]"]
}

fn arguments() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("")),
        Just(json!("{}")),
        prop::collection::btree_map(
            "[a-z]{1,5}",
            prop_oneof![
                any::<i32>().prop_map(Value::from),
                text().prop_map(Value::from),
                Just(json!({"nested": [1, "two", null]})),
            ],
            0..4
        )
        .prop_map(|m| Value::from(serde_json::to_string(&m).unwrap_or_default())),
    ]
}

/// One exchange of a conversation: a user message, an assistant answer, or an assistant's tool
/// calls followed by a result for each (in any order, maybe with a user message between).
fn exchange() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        content(true).prop_map(|c| vec![json!({"role": "user", "content": c})]),
        content(false).prop_map(|c| vec![json!({"role": "assistant", "content": c})]),
        (
            content(false),
            prop::collection::vec((tool_id(), "[a-z_]{1,10}", arguments(), content(false)), 1..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(said, calls, reverse, interject)| {
                // Ids must be unique within a turn.
                let calls: Vec<_> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, name, args, result))| (format!("{id}{i}"), name, args, result))
                    .collect();
                let mut out = vec![json!({
                    "role": "assistant",
                    "content": said,
                    "tool_calls": calls.iter().map(|(id, name, args, _)| json!({
                        "id": id, "type": "function", "function": {"name": name, "arguments": args}
                    })).collect::<Vec<_>>()
                })];
                if interject {
                    out.push(json!({"role": "user", "content": "meanwhile"}));
                }
                let mut results: Vec<Value> = calls
                    .iter()
                    .map(|(id, _, _, result)| json!({"role": "tool", "tool_call_id": id, "content": result}))
                    .collect();
                if reverse {
                    results.reverse();
                }
                out.extend(results);
                out
            }),
        text().prop_map(|t| vec![json!({"role": "system", "content": t})]),
    ]
}

fn chat_request() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(exchange(), 1..6),
        "[a-zA-Z0-9][a-zA-Z0-9 ]{0,10}",
        prop::option::of(0.0f64..2.0),
        prop::option::of(0.0f64..1.0),
        prop::option::of(1u64..20_000),
        prop::option::of(prop_oneof![Just("none"), Just("minimal"), Just("low"), Just("high")]),
        prop::collection::vec("[a-z_]{1,8}", 0..3),
        prop::option::of(prop_oneof![Just("auto"), Just("none"), Just("required"), Just("named")]),
        prop::option::of(any::<bool>()),
        (any::<bool>(), prop::option::of(prop_oneof![Just(json!("STOP")), Just(json!(["a", ""]))])),
    )
        .prop_map(
            |(exchanges, last_user, temperature, top_p, max_tokens, effort, tools, choice, parallel, (stream, stop))| {
                let mut messages: Vec<Value> = exchanges.into_iter().flatten().collect();
                messages.push(json!({"role": "user", "content": last_user}));
                let mut body = json!({"model": "gpt-4o", "messages": messages});
                if let Some(t) = temperature {
                    body["temperature"] = json!(t);
                }
                if let Some(p) = top_p {
                    body["top_p"] = json!(p);
                }
                if let Some(n) = max_tokens {
                    body["max_tokens"] = json!(n);
                }
                if let Some(e) = effort {
                    body["reasoning_effort"] = json!(e);
                }
                let mut names: Vec<String> = tools;
                names.dedup();
                if !names.is_empty() {
                    body["tools"] = Value::from(
                        names
                            .iter()
                            .map(|n| json!({"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}))
                            .collect::<Vec<_>>(),
                    );
                }
                match choice {
                    Some("named") if !names.is_empty() => {
                        body["tool_choice"] = json!({"type": "function", "function": {"name": names[0]}})
                    }
                    Some("named") | None => {}
                    Some(mode) => body["tool_choice"] = json!(mode),
                }
                if let Some(p) = parallel {
                    body["parallel_tool_calls"] = json!(p);
                }
                body["stream"] = json!(stream);
                if let Some(s) = stop {
                    body["stop"] = s;
                }
                body
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_chat_requests_translate_to_bodies_anthropic_accepts(body in chat_request()) {
        let tool_calls: usize = body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["tool_calls"].as_array())
            .map(Vec::len)
            .sum();
        let out = translate(body);
        // Every call reached the upstream, each with its result.
        let blocks: Vec<&Value> = out["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .collect();
        prop_assert_eq!(blocks.iter().filter(|b| b["type"] == "tool_use").count(), tool_calls);
        prop_assert_eq!(blocks.iter().filter(|b| b["type"] == "tool_result").count(), tool_calls);
    }
}
