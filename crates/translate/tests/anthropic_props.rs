//! Properties: any Messages request from a small grammar of valid requests translates to a
//! chat body the strict fake NIM accepts, shaped as chat templates need; any chat stream
//! (text, reasoning and tool-call fragments cut and interleaved at random, any finish, usage
//! or not) becomes a grammatical Messages stream holding the same text and tool inputs.

use std::collections::BTreeMap;

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_testkit::nim::{forbidden_fields, schema_error};
use tollgate_testkit::Answer;
use tollgate_translate::anthropic::grammar::check;
use tollgate_translate::anthropic::{to_chat, ChatToMessages, ReplyContext};
use tollgate_translate::{ChatTarget, StreamTranslator};

/// Text with the characters that stress escaping: quotes, backslashes, newlines, non-ASCII.
fn words() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,:\"\\\\\n{}\\[\\]éß日本🙂]{1,16}"
}

fn maybe_words() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), words()]
}

/// A tool's arguments: an object of strings (empty ones too), numbers, flags, lists.
fn arguments() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        maybe_words().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..3).prop_map(|v| json!(v)),
        words().prop_map(|w| json!({"inner": w})),
    ];
    proptest::collection::btree_map("[a-z_]{1,8}", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone)]
struct Exchange {
    system_note: Option<String>,
    user_text: Vec<String>,
    user_image: bool,
    thinking: bool,
    assistant_text: Option<String>,
    calls: Vec<(usize, Value)>,
    shuffle: bool,
    errors: Vec<bool>,
}

const TOOLS: [&str; 4] = ["Read", "Bash", "Grep", "Write"];

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        proptest::option::weighted(0.2, words()),
        proptest::collection::vec(words(), 0..3),
        proptest::bool::weighted(0.2),
        any::<bool>(),
        proptest::option::of(words()),
        proptest::collection::vec((0..TOOLS.len(), arguments()), 0..3),
        any::<bool>(),
        proptest::collection::vec(any::<bool>(), 3),
    )
        .prop_map(
            |(
                system_note,
                user_text,
                user_image,
                thinking,
                assistant_text,
                calls,
                shuffle,
                errors,
            )| {
                Exchange {
                    system_note,
                    user_text,
                    user_image,
                    thinking,
                    assistant_text,
                    calls,
                    shuffle,
                    errors,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct RequestSpec {
    system: u8,
    starts_with_assistant: bool,
    exchanges: Vec<Exchange>,
    tools: Vec<bool>,
    server_tool: bool,
    choice: u8,
    disable_parallel: bool,
    extras: Vec<u8>,
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    (
        0u8..3,
        proptest::bool::weighted(0.2),
        proptest::collection::vec(exchange(), 1..5),
        proptest::collection::vec(any::<bool>(), TOOLS.len()),
        any::<bool>(),
        0u8..6,
        proptest::bool::weighted(0.2),
        proptest::collection::vec(0u8..12, 0..6),
    )
        .prop_map(
            |(
                system,
                starts_with_assistant,
                exchanges,
                tools,
                server_tool,
                choice,
                disable_parallel,
                extras,
            )| {
                RequestSpec {
                    system,
                    starts_with_assistant,
                    exchanges,
                    tools,
                    server_tool,
                    choice,
                    disable_parallel,
                    extras,
                }
            },
        )
}

/// A valid Messages request from the spec, and the tool-call ids it holds.
fn build_request(spec: &RequestSpec) -> (Value, Vec<String>) {
    let mut messages = Vec::new();
    let mut ids = Vec::new();
    let mut pending: Vec<(String, bool)> = Vec::new();
    let cache = json!({"type": "ephemeral"});
    let tool_use = |n: usize, tool: usize, args: &Value| json!({"type":"tool_use","id":format!("toolu_{n}"),"name":TOOLS[tool],"input":args});
    if spec.starts_with_assistant {
        // A continuation: the history starts with the assistant's call (LiteLLM #42473).
        let id = format!("toolu_{}", ids.len());
        messages.push(json!({"role":"assistant","content":[tool_use(ids.len(), 0, &json!({"file_path":"/x"}))]}));
        pending.push((id.clone(), false));
        ids.push(id);
    }
    for ex in &spec.exchanges {
        if let Some(note) = &ex.system_note {
            if pending.is_empty() {
                messages.push(json!({"role":"system","content":note}));
            }
        }
        let mut content = Vec::new();
        let mut results: Vec<Value> = pending
            .drain(..)
            .enumerate()
            .map(|(k, (id, _))| {
                let mut r =
                    json!({"type":"tool_result","tool_use_id":id,"content":format!("result {id}")});
                if ex.errors[k % ex.errors.len()] {
                    r["is_error"] = json!(true);
                }
                if k == 0 {
                    r["cache_control"] = cache.clone();
                }
                r
            })
            .collect();
        if ex.shuffle {
            results.reverse();
        }
        content.extend(results);
        for t in &ex.user_text {
            content.push(json!({"type":"text","text":t}));
        }
        if ex.user_image {
            content.push(json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}));
        }
        if content.is_empty() {
            content.push(json!({"type":"text","text":"go on","cache_control":cache}));
        }
        messages.push(json!({"role":"user","content":content}));

        let mut content = Vec::new();
        if ex.thinking {
            content.push(json!({"type":"thinking","thinking":"considering","signature":"c2ln"}));
        }
        if let Some(t) = &ex.assistant_text {
            content.push(json!({"type":"text","text":t}));
        }
        for (tool, args) in &ex.calls {
            let id = format!("toolu_{}", ids.len());
            content.push(tool_use(ids.len(), *tool, args));
            pending.push((id.clone(), false));
            ids.push(id);
        }
        if content.iter().all(|b| b["type"] == "thinking") {
            content.push(json!({"type":"text","text":"ok"}));
        }
        messages.push(json!({"role":"assistant","content":content}));
    }
    let mut last = Vec::new();
    for (id, _) in pending.drain(..) {
        last.push(json!({"type":"tool_result","tool_use_id":id,"content":[{"type":"text","text":"done"}]}));
    }
    if last.is_empty() {
        last.push(json!({"type":"text","text":"thanks"}));
    }
    messages.push(json!({"role":"user","content":last}));

    let mut body = json!({"model":"claude-sonnet-4-5","max_tokens":1024,"messages":messages});
    match spec.system {
        1 => body["system"] = json!("You are terse."),
        2 => {
            body["system"] = json!([{"type":"text","text":"billing"},{"type":"text","text":"You are terse.","cache_control":cache}])
        }
        _ => {}
    }
    let mut tools: Vec<Value> = TOOLS
        .iter()
        .zip(&spec.tools)
        .enumerate()
        .map(|(n, (name, with_schema_url))| {
            let mut schema = json!({"type":"object","properties":{"file_path":{"type":"string"}}});
            if *with_schema_url {
                schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            }
            let mut tool =
                json!({"name":name,"description":format!("the {name} tool"),"input_schema":schema});
            if n == 0 {
                tool["cache_control"] = cache.clone();
                tool["defer_loading"] = json!(true);
            }
            tool
        })
        .collect();
    if spec.server_tool {
        tools.push(json!({"type":"web_search_20250305","name":"web_search","max_uses":3}));
    }
    body["tools"] = json!(tools);
    let mut choice = match spec.choice {
        1 => json!({"type":"auto"}),
        2 => json!({"type":"any"}),
        3 => json!({"type":"none"}),
        4 => json!({"type":"tool","name":"Grep"}),
        _ => Value::Null,
    };
    if spec.disable_parallel && choice.is_object() {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    if !choice.is_null() {
        body["tool_choice"] = choice;
    }
    for extra in &spec.extras {
        let (key, value) = match extra {
            0 => ("metadata", json!({"user_id":"user-1"})),
            1 => ("thinking", json!({"type":"enabled","budget_tokens":2048})),
            2 => (
                "thinking",
                json!({"type":"adaptive","display":"summarized"}),
            ),
            3 => ("thinking", json!({"type":"disabled"})),
            4 => ("output_config", json!({"effort":"high"})),
            5 => (
                "context_management",
                json!({"edits":[{"type":"clear_thinking_20251015","keep":"all"}]}),
            ),
            6 => ("top_k", json!(20)),
            7 => ("stop_sequences", json!(["END"])),
            8 => ("temperature", json!(0.5)),
            9 => ("stream", json!(true)),
            10 => ("service_tier", json!("auto")),
            _ => ("a_field_from_the_future", json!({"x": 1})),
        };
        body[key] = value;
    }
    (body, ids)
}

/// Checks the chat message shapes templates accept; `Err` names what is wrong.
fn shape_problems(chat: &Value) -> Result<(), String> {
    let messages = chat["messages"].as_array().ok_or("no messages")?;
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap_or("?"))
        .collect();
    let first = roles
        .iter()
        .position(|r| *r != "system")
        .ok_or("no turn after the system prompt")?;
    if roles[first] != "user" {
        return Err(format!("first turn is {}: {roles:?}", roles[first]));
    }
    let mut i = 0;
    while i < messages.len() {
        let m = &messages[i];
        match roles[i] {
            "system" | "user" => {
                let empty = m["content"].as_str().is_some_and(str::is_empty)
                    || m["content"].as_array().is_some_and(Vec::is_empty);
                if empty {
                    return Err(format!("empty {} message at {i}", roles[i]));
                }
                if roles[i] == "user" && i > 0 && roles[i - 1] == "user" {
                    return Err(format!("two user turns in a row at {i}"));
                }
            }
            "assistant" => {
                let calls = m["tool_calls"].as_array().cloned().unwrap_or_default();
                let has_text = m["content"].as_str().is_some_and(|t| !t.is_empty());
                if calls.is_empty() && !has_text {
                    return Err(format!("empty assistant message at {i}"));
                }
                if i > 0 && roles[i - 1] == "assistant" {
                    return Err(format!("two assistant turns in a row at {i}"));
                }
                for (k, call) in calls.iter().enumerate() {
                    let tool = messages.get(i + 1 + k).ok_or("calls without results")?;
                    if tool["role"] != "tool" || tool["tool_call_id"] != call["id"] {
                        return Err(format!(
                            "call {} is not answered right after it",
                            call["id"]
                        ));
                    }
                    let args = call["function"]["arguments"]
                        .as_str()
                        .ok_or("arguments not a string")?;
                    serde_json::from_str::<Value>(args)
                        .map_err(|e| format!("arguments not JSON: {e}"))?;
                }
                i += calls.len();
            }
            "tool" => return Err(format!("a tool message without its call at {i}")),
            other => return Err(format!("unknown role {other}")),
        }
        i += 1;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_requests_translate_to_bodies_strict_nim_accepts(spec in request_spec()) {
        let (body, ids) = build_request(&spec);
        let object = JsonObject::parse(body.to_string().as_bytes()).expect("object");
        let chat = to_chat(&object, &ChatTarget::default());
        let chat = chat.map_err(|e| TestCaseError::fail(format!("refused: {e:?}\n{body}")))?;
        let bytes = chat.to_bytes();
        if let Some(Answer::Json { body: refusal, .. }) = schema_error(&bytes) {
            // The one field NIM's schema refuses is parallel_tool_calls, which the nvidia
            // connector drops; it comes only from disable_parallel_tool_use.
            let forbidden = forbidden_fields(refusal.as_bytes());
            prop_assert!(spec.disable_parallel && forbidden == ["parallel_tool_calls"], "{forbidden:?}");
        }
        let chat: Value = serde_json::from_slice(&bytes).expect("json");
        shape_problems(&chat).map_err(|e| TestCaseError::fail(format!("{e}\n{chat}")))?;
        let text = chat.to_string();
        for gone in ["cache_control", "defer_loading", "$schema", "c2ln", "web_search", "clear_thinking", "a_field_from_the_future"] {
            prop_assert!(!text.contains(gone), "{gone} leaked: {text}");
        }
        // Every call and every result of the conversation made it across.
        let calls: Vec<&str> = chat["messages"].as_array().into_iter().flatten()
            .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
            .filter_map(|c| c["id"].as_str())
            .collect();
        prop_assert_eq!(calls, ids.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert!(chat.get("top_k").is_none());
    }
}

// ---------------------------------------------------------------- streams

#[derive(Debug, Clone)]
struct StreamSpec {
    reasoning: String,
    text: String,
    calls: Vec<(Value, bool, bool)>,
    cuts: Vec<Vec<usize>>,
    schedule: Vec<usize>,
    finish: Option<&'static str>,
    usage: u8,
    done: bool,
    thinking: bool,
}

fn stream_spec() -> impl Strategy<Value = StreamSpec> {
    (
        maybe_words(),
        maybe_words(),
        proptest::collection::vec(
            (arguments(), any::<bool>(), proptest::bool::weighted(0.2)),
            0..4,
        ),
        proptest::collection::vec(proptest::collection::vec(0usize..64, 0..6), 6),
        proptest::collection::vec(any::<usize>(), 64),
        prop_oneof![
            Just(None),
            Just(Some("stop")),
            Just(Some("tool_calls")),
            Just(Some("length"))
        ],
        0u8..3,
        any::<bool>(),
        proptest::bool::weighted(0.8),
    )
        .prop_map(
            |(reasoning, text, calls, cuts, schedule, finish, usage, done, thinking)| StreamSpec {
                reasoning,
                text,
                calls,
                cuts,
                schedule,
                finish,
                usage,
                done,
                thinking,
            },
        )
}

/// `s` cut into pieces at the given character positions (modulo its length).
fn split(s: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    at.push(0);
    at.push(chars.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| chars[w[0]..w[1]].iter().collect::<String>())
        .filter(|p| !p.is_empty())
        .collect()
}

fn delta_chunk(delta: Value) -> String {
    json!({"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":delta,"finish_reason":null}]})
        .to_string()
}

/// The chat stream's events for the spec: each part's fragments in order, the parts mixed.
fn build_stream(spec: &StreamSpec) -> Vec<String> {
    let mut parts: Vec<Vec<String>> = Vec::new();
    parts.push(
        split(&spec.reasoning, &spec.cuts[0])
            .into_iter()
            .map(|r| delta_chunk(json!({"reasoning_content": r})))
            .collect(),
    );
    parts.push(
        split(&spec.text, &spec.cuts[1])
            .into_iter()
            .map(|t| delta_chunk(json!({"content": t})))
            .collect(),
    );
    for (n, (args, pretty, at_end)) in spec.calls.iter().enumerate() {
        let text = if *pretty {
            serde_json::to_string_pretty(args)
        } else {
            serde_json::to_string(args)
        }
        .expect("json");
        let pieces = if *at_end {
            vec![text]
        } else {
            split(&text, &spec.cuts[2 + n % 4])
        };
        let mut events = vec![delta_chunk(
            json!({"tool_calls":[{"index":n,"id":format!("call_{n}"),"type":"function","function":{"name":TOOLS[n % TOOLS.len()],"arguments":""}}]}),
        )];
        events.extend(
            pieces.into_iter().map(|p| {
                delta_chunk(json!({"tool_calls":[{"index":n,"function":{"arguments":p}}]}))
            }),
        );
        parts.push(events);
    }
    let mut events = vec![delta_chunk(json!({"role":"assistant","content":""}))];
    let mut cursors = vec![0usize; parts.len()];
    let mut step = 0;
    loop {
        let live: Vec<usize> = (0..parts.len())
            .filter(|&p| cursors[p] < parts[p].len())
            .collect();
        if live.is_empty() {
            break;
        }
        let p = live[spec.schedule[step % spec.schedule.len()] % live.len()];
        events.push(parts[p][cursors[p]].clone());
        cursors[p] += 1;
        step += 1;
    }
    let usage = json!({"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":99,"completion_tokens":11,"total_tokens":110}}).to_string();
    if spec.usage == 1 {
        events.push(usage.clone());
    }
    if let Some(reason) = spec.finish {
        events.push(json!({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":reason}]}).to_string());
    }
    if spec.usage == 2 {
        events.push(usage);
    }
    if spec.done {
        events.push("[DONE]".to_owned());
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_chat_stream_becomes_a_grammatical_messages_stream(spec in stream_spec()) {
        let ctx = ReplyContext {
            id: "msg_p".into(),
            model: "claude-sonnet-4-5".into(),
            input_tokens: 50.into(),
            thinking: spec.thinking,
            stop_sequences: Vec::new(),
        };
        let mut translator = ChatToMessages::new(ctx);
        let mut out = BytesMut::new();
        for event in build_stream(&spec) {
            translator.event(event.as_bytes(), &mut out);
        }
        translator.finish(&mut out);
        let summary = check(&out).map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out))))?;

        prop_assert_eq!(&summary.text, &spec.text);
        let thinking = if spec.thinking { spec.reasoning.as_str() } else { "" };
        prop_assert_eq!(summary.thinking.as_str(), thinking);
        let got: BTreeMap<&str, (&str, &Value)> = summary
            .tool_uses
            .iter()
            .map(|t| (t.id.as_str(), (t.name.as_str(), &t.input)))
            .collect();
        let ids: Vec<String> = (0..spec.calls.len()).map(|n| format!("call_{n}")).collect();
        let want: BTreeMap<&str, (&str, &Value)> = spec
            .calls
            .iter()
            .enumerate()
            .map(|(n, (args, _, _))| (ids[n].as_str(), (TOOLS[n % TOOLS.len()], args)))
            .collect();
        prop_assert_eq!(got, want);
        let expected = match (spec.finish, spec.calls.is_empty()) {
            (Some("length"), _) => "max_tokens",
            (Some("tool_calls"), _) | (_, false) => "tool_use",
            _ => "end_turn",
        };
        prop_assert_eq!(summary.stop_reason.as_deref(), Some(expected));
        if spec.usage > 0 {
            prop_assert_eq!(summary.usage.final_input_tokens, Some(99));
            prop_assert_eq!(summary.usage.output_tokens, 11);
        } else {
            prop_assert_eq!(summary.usage.final_input_tokens, None);
            prop_assert!(summary.usage.output_tokens >= 1);
        }
        prop_assert_eq!(summary.usage.start_input_tokens, 50);
    }
}
