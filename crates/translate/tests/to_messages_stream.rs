//! Messages event streams → chat chunk streams (`to_messages::MessagesToChat`): what each
//! event becomes, a grammar check of every stream emitted here (the rules the OpenAI SDKs'
//! accumulators rely on), and a property test over random streams with random fragmenting.

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_testkit::anthropic as fake;
use tollgate_translate::to_messages::{ChatReplyContext, MessagesToChat};
use tollgate_translate::{Failure, StreamTranslator};

fn ctx(include_usage: bool) -> ChatReplyContext {
    ChatReplyContext {
        id: "chatcmpl-abc".into(),
        model: "alias-model".into(),
        include_usage,
        created: 1_700_000_000,
    }
}

/// The data of each SSE event in `events` (as the relay hands them to a translator).
fn data_of(event: &str) -> &str {
    event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_default()
}

/// Runs `events` (whole SSE events) through a translator; `finish` when complete.
fn run(events: &[String], include_usage: bool, finish: bool) -> String {
    let mut t = MessagesToChat::new(ctx(include_usage));
    let mut out = BytesMut::new();
    for e in events {
        t.event(data_of(e).as_bytes(), &mut out);
    }
    if finish {
        t.finish(&mut out);
    }
    String::from_utf8(out.to_vec()).expect("utf8")
}

/// What a chat stream says once accumulated, as an SDK would.
#[derive(Debug, Default, PartialEq)]
struct Accumulated {
    content: String,
    reasoning: String,
    /// (id, name, arguments) by index.
    tools: Vec<(String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    done: bool,
    error: Option<Value>,
}

/// Checks the chat stream grammar and accumulates the stream:
/// every event is `data: …`; chunks carry the context's id, created and model; the first
/// chunk names the role and no other does; a tool call's first fragment has its id, type and
/// name, later ones only arguments; tool indexes count up from 0 as calls open; exactly one
/// finish_reason, and no content after it; the usage chunk (when asked) right after it;
/// `[DONE]` last, or an error frame last and no `[DONE]`.
fn check(out: &str, include_usage: bool) -> Result<Accumulated, String> {
    let mut acc = Accumulated::default();
    let events: Vec<&str> = out.split_terminator("\n\n").collect();
    if !out.ends_with("\n\n") {
        return Err("the output does not end with a whole event".into());
    }
    let mut first = true;
    let mut finished_at = None;
    for (n, event) in events.iter().enumerate() {
        let data = event
            .strip_prefix("data: ")
            .ok_or(format!("event {n} is not a data event: {event}"))?;
        if acc.done || acc.error.is_some() {
            return Err(format!("event {n} comes after the end: {event}"));
        }
        if data == "[DONE]" {
            acc.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("event {n}: {e}"))?;
        if let Some(error) = v.get("error") {
            acc.error = Some(error.clone());
            continue;
        }
        if v["id"] != "chatcmpl-abc" || v["created"] != 1_700_000_000 || v["model"] != "alias-model"
        {
            return Err(format!("event {n} has another id/created/model: {data}"));
        }
        if v["object"] != "chat.completion.chunk" {
            return Err(format!("event {n} is no chunk: {data}"));
        }
        let choices = v["choices"]
            .as_array()
            .ok_or(format!("event {n}: no choices"))?;
        if choices.is_empty() {
            if !include_usage {
                return Err("a usage chunk nobody asked for".into());
            }
            if finished_at != Some(n - 1) || acc.usage.is_some() {
                return Err(format!(
                    "the usage chunk is not right after the finish chunk (event {n})"
                ));
            }
            acc.usage = Some(v["usage"].clone());
            continue;
        }
        if choices.len() != 1 || choices[0]["index"] != 0 {
            return Err(format!("event {n}: one choice, index 0: {data}"));
        }
        let choice = &choices[0];
        let delta = &choice["delta"];
        if first {
            if delta["role"] != "assistant" {
                return Err(format!("the first chunk names no role: {data}"));
            }
            first = false;
        } else if delta.get("role").is_some() {
            return Err(format!("event {n}: role again: {data}"));
        }
        if finished_at.is_some() {
            return Err(format!("event {n}: content after the finish chunk: {data}"));
        }
        if let Some(text) = delta["content"].as_str() {
            acc.content.push_str(text);
        }
        if let Some(text) = delta["reasoning_content"].as_str() {
            acc.reasoning.push_str(text);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"]
                .as_u64()
                .ok_or("a tool fragment without index")? as usize;
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            if index == acc.tools.len() {
                let id = call["id"]
                    .as_str()
                    .ok_or(format!("tool {index} opens without id"))?;
                let name = call["function"]["name"]
                    .as_str()
                    .ok_or(format!("tool {index} opens without name"))?;
                if call["type"] != "function" {
                    return Err(format!("tool {index} opens without type"));
                }
                acc.tools
                    .push((id.to_owned(), name.to_owned(), arguments.to_owned()));
            } else if index < acc.tools.len() {
                if call.get("id").is_some() || call["function"].get("name").is_some() {
                    return Err(format!("tool {index}: id or name again"));
                }
                acc.tools[index].2.push_str(arguments);
            } else {
                return Err(format!("tool index {index} skips {}", acc.tools.len()));
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            acc.finish_reason = Some(reason.to_owned());
            finished_at = Some(n);
        } else if !choice["finish_reason"].is_null() {
            return Err(format!("event {n}: odd finish_reason: {data}"));
        }
    }
    if acc.error.is_none() {
        if acc.finish_reason.is_none() {
            return Err("no finish_reason".into());
        }
        if include_usage && acc.usage.is_none() {
            return Err("no usage chunk".into());
        }
    }
    if first && acc.error.is_none() {
        return Err("no chunk at all".into());
    }
    Ok(acc)
}

fn grammatical(out: &str, include_usage: bool) -> Accumulated {
    check(out, include_usage).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

#[test]
fn a_text_stream() {
    let out = run(
        &fake::text_events(&["Hel", "lo", " wörld \"!\""]),
        true,
        true,
    );
    let acc = grammatical(&out, true);
    assert_eq!(acc.content, "Hello wörld \"!\"");
    assert_eq!(acc.finish_reason.as_deref(), Some("stop"));
    assert!(acc.done);
    assert_eq!(
        acc.usage,
        Some(
            json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 0}})
        )
    );
    // The first chunk is OpenAI's: the role with empty content.
    let first: Value = serde_json::from_str(
        out.lines()
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .expect("first"),
    )
    .expect("json");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(first["choices"][0]["finish_reason"].is_null());
}

#[test]
fn no_usage_chunk_unless_asked() {
    let out = run(&fake::text_events(&["a"]), false, true);
    let acc = grammatical(&out, false);
    assert_eq!(acc.usage, None);
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn a_tool_call_in_fragments() {
    let out = run(
        &fake::tool_events(
            "Let me check.",
            "toolu_01",
            "get_weather",
            &["{\"ci", "ty\": \"Pa", "ris\"}"],
        ),
        false,
        true,
    );
    let acc = grammatical(&out, false);
    assert_eq!(acc.content, "Let me check.");
    assert_eq!(
        acc.tools,
        [(
            "toolu_01".to_owned(),
            "get_weather".to_owned(),
            "{\"city\": \"Paris\"}".to_owned()
        )]
    );
    assert_eq!(acc.finish_reason.as_deref(), Some("tool_calls"));
}

#[test]
fn parallel_calls_thinking_and_calls_without_arguments() {
    let e = |name: &str, v: Value| fake::event(name, &v);
    let events = vec![
        e(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "model": "c", "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        ),
        e(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        e(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Two cities"}}),
        ),
        e(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
        ),
        e(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        e(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}}),
        ),
        e(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        e(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"c\":\"A\"}"}}),
        ),
        e(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        e(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}}}),
        ),
        e("ping", json!({"type": "ping"})),
        e(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        e(
            "content_block_start",
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {"q": "x"}}}),
        ),
        e(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 3}),
        ),
        e(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 55}}),
        ),
        e("message_stop", json!({"type": "message_stop"})),
    ];
    let acc = grammatical(&run(&events, true, true), true);
    assert_eq!(acc.reasoning, "Two cities");
    assert_eq!(acc.content, "");
    assert_eq!(
        acc.tools,
        [
            (
                "toolu_a".to_owned(),
                "weather".to_owned(),
                "{\"c\":\"A\"}".to_owned()
            ),
            ("toolu_b".to_owned(), "now".to_owned(), "{}".to_owned()),
        ],
        "a call with no fragment still gets JSON arguments; server tools are not the client's"
    );
    assert_eq!(
        acc.usage,
        Some(
            json!({"prompt_tokens": 10, "completion_tokens": 55, "total_tokens": 65, "prompt_tokens_details": {"cached_tokens": 3}})
        )
    );
}

#[test]
fn stop_reasons_in_a_stream() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ] {
        let mut events = fake::text_events(&["x"]);
        let at = events.len() - 2;
        events[at] = fake::event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}}),
        );
        let acc = grammatical(&run(&events, false, true), false);
        assert_eq!(acc.finish_reason.as_deref(), Some(finish), "{stop}");
    }
}

#[test]
fn a_broken_stream_ends_with_an_error_and_no_done() {
    let events = fake::text_events(&["partial", "more"]);
    let mut t = MessagesToChat::new(ctx(true));
    let mut out = BytesMut::new();
    for e in &events[..4] {
        t.event(data_of(e).as_bytes(), &mut out);
    }
    t.fail(
        &Failure {
            status: 503,
            code: "upstream_error",
            message: "Overloaded",
        },
        &mut out,
    );
    // Anything after the failure is ignored: the stream is over.
    t.finish(&mut out);
    t.event(data_of(&events[4]).as_bytes(), &mut out);
    let text = String::from_utf8(out.to_vec()).expect("utf8");
    let acc = grammatical(&text, true);
    assert!(!acc.done, "{text}");
    assert_eq!(acc.content, "partial");
    let error = acc.error.expect("an error frame");
    assert_eq!(error["message"], "Overloaded");
    assert_eq!(error["code"], "upstream_error");
    assert!(error.get("type").is_some());
}

#[test]
fn an_error_event_fed_in_is_the_streams_end() {
    let mut events = fake::text_events(&["a"]);
    events.truncate(4);
    events.push(fake::event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let out = run(&events, false, true);
    let acc = grammatical(&out, false);
    assert!(!acc.done);
    assert_eq!(acc.error.expect("error")["type"], "overloaded_error");
}

#[test]
fn finish_without_message_stop_still_ends_once() {
    let mut events = fake::text_events(&["a"]);
    events.pop();
    let acc = grammatical(&run(&events, true, true), true);
    assert_eq!(acc.finish_reason.as_deref(), Some("stop"));
    assert!(acc.done);
    // And an empty stream that is declared complete is still a whole chat stream.
    let acc = grammatical(&run(&[], false, true), false);
    assert!(acc.done);
}

#[test]
fn the_checker_catches_what_it_checks() {
    let good = run(&fake::tool_events("x", "t1", "f", &["{}"]), true, true);
    assert!(check(&good, true).is_ok());
    assert!(check(&good, false).is_err(), "usage nobody asked for");
    assert!(
        check(&format!("{good}data: [DONE]\n\n"), true).is_err(),
        "after DONE"
    );
    let no_role = good.replacen("\"role\":\"assistant\",", "", 1);
    assert!(check(&no_role, true).is_err());
    let second_finish = good.replacen("\"finish_reason\":null", "\"finish_reason\":\"stop\"", 1);
    assert!(check(&second_finish, true).is_err());
    let nameless = good.replacen("\"name\":\"f\",", "", 1);
    assert!(check(&nameless, true).is_err());
    let skipped = good.replace("\"index\":0,\"id\"", "\"index\":1,\"id\"");
    assert!(check(&skipped, true).is_err());
    let other_model = good.replacen("alias-model", "upstream-model", 1);
    assert!(check(&other_model, true).is_err());
}

// ---------------------------------------------------------------------------------------
// Random streams: the text and tool arguments survive any fragmenting.

#[derive(Debug, Clone)]
enum Gen {
    Text(String),
    Thinking(String),
    Tool {
        id: String,
        name: String,
        input: Value,
    },
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn block() -> impl Strategy<Value = Gen> {
    prop_oneof![
        "\\PC{0,60}".prop_map(Gen::Text),
        "\\PC{0,40}".prop_map(Gen::Thinking),
        (
            "toolu_[a-zA-Z0-9]{6}",
            "[a-z_]{1,12}",
            prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..5),
        )
            .prop_map(|(id, name, m)| Gen::Tool {
                id,
                name,
                input: Value::Object(m.into_iter().collect()),
            }),
    ]
}

/// Splits `text` at the given (fractional) cut points, on char boundaries.
fn fragments(text: &str, cuts: &[f64]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| (c * chars.len() as f64) as usize)
        .collect();
    points.push(chars.len());
    points.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(chars[at..p.max(at)].iter().collect());
        at = p.max(at);
    }
    out
}

fn stream_of(blocks: &[Gen], cuts: &[Vec<f64>], pings: &[bool]) -> Vec<String> {
    let e = |name: &str, v: Value| fake::event(name, &v);
    let mut events = vec![e(
        "message_start",
        json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    )];
    let mut any_tool = false;
    for (i, b) in blocks.iter().enumerate() {
        let cut = &cuts[i % cuts.len().max(1)];
        // The block's opening, its text in pieces, and the delta type and field carrying them.
        let (start, pieces, (kind, field)) = match b {
            Gen::Text(t) => (
                json!({"type": "text", "text": ""}),
                fragments(t, cut),
                ("text_delta", "text"),
            ),
            Gen::Thinking(t) => (
                json!({"type": "thinking", "thinking": ""}),
                fragments(t, cut),
                ("thinking_delta", "thinking"),
            ),
            Gen::Tool { id, name, input } => {
                any_tool = true;
                (
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    fragments(&input.to_string(), cut),
                    ("input_json_delta", "partial_json"),
                )
            }
        };
        events.push(e(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        for (k, p) in pieces.iter().enumerate() {
            if pings.get(k).copied().unwrap_or(false) {
                events.push(e("ping", json!({"type": "ping"})));
            }
            events.push(e(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": {"type": kind, field: p}}),
            ));
        }
        if matches!(b, Gen::Thinking(_)) {
            events.push(e("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": "sig"}})));
        }
        events.push(e(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    let stop = if any_tool { "tool_use" } else { "end_turn" };
    events.push(e("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}})));
    events.push(e("message_stop", json!({"type": "message_stop"})));
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_reconstruct_their_text_and_tool_arguments(
        blocks in prop::collection::vec(block(), 0..6),
        cuts in prop::collection::vec(prop::collection::vec(0.0f64..1.0, 0..6), 1..4),
        pings in prop::collection::vec(any::<bool>(), 0..6),
        include_usage in any::<bool>(),
    ) {
        let events = stream_of(&blocks, &cuts, &pings);
        let out = run(&events, include_usage, true);
        let acc = check(&out, include_usage).map_err(|e| TestCaseError::fail(format!("{e}\n{out}")))?;
        let text: String = blocks.iter().filter_map(|b| match b { Gen::Text(t) => Some(t.as_str()), _ => None }).collect();
        let thinking: String = blocks.iter().filter_map(|b| match b { Gen::Thinking(t) => Some(t.as_str()), _ => None }).collect();
        prop_assert_eq!(&acc.content, &text);
        prop_assert_eq!(&acc.reasoning, &thinking);
        let tools: Vec<(String, String, Value)> = blocks.iter().filter_map(|b| match b {
            Gen::Tool { id, name, input } => Some((id.clone(), name.clone(), input.clone())),
            _ => None,
        }).collect();
        prop_assert_eq!(acc.tools.len(), tools.len());
        for ((id, name, args), (want_id, want_name, want_input)) in acc.tools.iter().zip(&tools) {
            prop_assert_eq!(id, want_id);
            prop_assert_eq!(name, want_name);
            let got: Value = serde_json::from_str(args).map_err(|e| TestCaseError::fail(format!("{e}: {args}")))?;
            prop_assert_eq!(&got, want_input);
        }
        let want_finish = if tools.is_empty() { "stop" } else { "tool_calls" };
        prop_assert_eq!(acc.finish_reason.as_deref(), Some(want_finish));
        prop_assert!(acc.done);
    }
}

/// The translator's cost per upstream event and a large request's translation, measured in a
/// release build: `cargo test --release -p tollgate-translate --test to_messages_stream --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn measure() {
    use std::time::Instant;
    let delta = fake::event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello, this is a token or two "}}),
    );
    let data = data_of(&delta).as_bytes().to_vec();
    let start = fake::text_events(&[]);
    let mut t = MessagesToChat::new(ctx(false));
    let mut out = BytesMut::with_capacity(1 << 20);
    for e in &start[..2] {
        t.event(data_of(e).as_bytes(), &mut out);
    }
    let n = 200_000;
    let began = Instant::now();
    for _ in 0..n {
        t.event(&data, &mut out);
        if out.len() > 1 << 20 {
            out.clear();
        }
    }
    let per_event = began.elapsed().as_nanos() / n as u128;
    println!("text delta event → chat chunk: {per_event} ns per event");

    let turn = json!([
        {"role": "user", "content": "x".repeat(2000)},
        {"role": "assistant", "content": "y".repeat(500), "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"path\":\"src/main.rs\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "z".repeat(2000)}
    ]);
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for _ in 0..25 {
        messages.extend(turn.as_array().into_iter().flatten().cloned());
    }
    messages.push(json!({"role": "user", "content": "and now?"}));
    let body = json!({"model": "m", "messages": messages, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}], "stream": true});
    let text = body.to_string();
    let parsed = tollgate_core::JsonObject::parse(text.as_bytes()).expect("json");
    let rounds = 2_000;
    let began = Instant::now();
    for _ in 0..rounds {
        let out = tollgate_translate::to_messages::from_chat(&parsed).expect("translated");
        std::hint::black_box(out.to_bytes());
    }
    let per = began.elapsed().as_micros() / rounds as u128;
    println!(
        "from_chat of a {} KB, 77-message chat body: {per} µs",
        text.len() / 1024
    );
}
