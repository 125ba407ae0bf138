//! Property tests: randomized upstream chat streams (reasoning, text, refusals, tool calls cut
//! into random fragments and interleaved, finish reasons, usage or not, `[DONE]` or not, a
//! break after the 200) always translate to a stream the grammar accepts, and the text,
//! reasoning, tool names and arguments reconstruct exactly from the Responses events.

mod responses_support;

use std::collections::VecDeque;

use proptest::prelude::*;
use responses_support::{chunk, ctx, finish, run, usage, End};
use serde_json::json;
use tollgate_translate::responses::grammar;

/// (chat name, kind, client name, namespace)
const TOOLS: &[(&str, &str, &str, Option<&str>)] = &[
    ("exec_command", "function_call", "exec_command", None),
    ("get_goal", "function_call", "get_goal", None),
    ("apply_patch", "custom_tool_call", "apply_patch", None),
    (
        "multi_agent_v1__spawn_agent",
        "function_call",
        "spawn_agent",
        Some("multi_agent_v1"),
    ),
    ("invented", "function_call", "invented", None),
];

fn body(parallel: bool) -> serde_json::Value {
    json!({"model":"m","input":"x","parallel_tool_calls":parallel,"reasoning":{"summary":"auto"},"tools":[
        {"type":"function","name":"exec_command"},
        {"type":"function","name":"get_goal"},
        {"type":"custom","name":"apply_patch"},
        {"type":"namespace","name":"multi_agent_v1","tools":[{"type":"function","name":"spawn_agent"}]},
        {"type":"web_search"}]})
}

#[derive(Debug, Clone)]
struct CallSpec {
    tool: usize,
    /// The string argument (function: `{"v": …}`, freeform: `{"input": …}`); empty makes a
    /// zero-argument function call.
    payload: String,
    /// Where the arguments text is cut into fragments (byte offsets, snapped to characters).
    cuts: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Segment {
    Reasoning(Vec<String>),
    Text(Vec<String>),
    Refusal(Vec<String>),
    /// Calls, and the order their fragments are sent in (each pick chooses the next call).
    Calls(Vec<CallSpec>, Vec<usize>),
    /// A chunk that carries nothing (`content: ""`, a role), as servers send.
    Empty,
}

fn piece() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 \\n\"\\\\é😀{}]{1,8}"
}

fn segment() -> impl Strategy<Value = Segment> {
    let call = (
        0..TOOLS.len(),
        "[a-zA-Z0-9 \\n\"\\\\é😀{}:]{0,30}",
        prop::collection::vec(0usize..64, 0..5),
    )
        .prop_map(|(tool, payload, cuts)| CallSpec {
            tool,
            payload,
            cuts,
        });
    prop_oneof![
        prop::collection::vec(piece(), 1..4).prop_map(Segment::Reasoning),
        prop::collection::vec(piece(), 1..5).prop_map(Segment::Text),
        prop::collection::vec(piece(), 1..3).prop_map(Segment::Refusal),
        (
            prop::collection::vec(call, 1..4),
            prop::collection::vec(0usize..8, 0..12)
        )
            .prop_map(|(calls, picks)| Segment::Calls(calls, picks)),
        Just(Segment::Empty),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Done,
    Finish,
    Fail,
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        4 => Just(Ending::Done),
        2 => Just(Ending::Finish),
        1 => Just(Ending::Fail),
    ]
}

/// What the client should get back from one call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    call_id: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    arguments: String,
}

fn arguments_of(spec: &CallSpec) -> (String, String) {
    let (_, kind, _, _) = TOOLS[spec.tool];
    if kind == "custom_tool_call" {
        let text = serde_json::to_string(&json!({"input": spec.payload})).expect("json");
        (text, spec.payload.clone())
    } else if spec.payload.is_empty() {
        (String::new(), "{}".to_owned())
    } else {
        let text = serde_json::to_string(&json!({"v": spec.payload})).expect("json");
        (text.clone(), text)
    }
}

/// `text` cut at `cuts`, each cut moved back to a character boundary.
fn fragments(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut c = c.min(text.len());
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(text[start..p].to_owned());
        start = p;
    }
    out
}

struct Script {
    events: Vec<String>,
    reasoning: String,
    text: String,
    refusal: String,
    calls: Vec<Expected>,
}

fn script(segments: &[Segment], parallel: bool) -> Script {
    let mut s = Script {
        events: Vec::new(),
        reasoning: String::new(),
        text: String::new(),
        refusal: String::new(),
        calls: Vec::new(),
    };
    let mut next_index = 0u32;
    let seen_call = &mut false;
    for segment in segments {
        match segment {
            Segment::Reasoning(pieces) => {
                for p in pieces {
                    s.events.push(chunk(json!({"reasoning_content": p})));
                    s.reasoning.push_str(p);
                }
            }
            Segment::Text(pieces) => {
                for p in pieces {
                    s.events.push(chunk(json!({"content": p})));
                    s.text.push_str(p);
                }
            }
            Segment::Refusal(pieces) => {
                for p in pieces {
                    s.events.push(chunk(json!({"refusal": p})));
                    s.refusal.push_str(p);
                }
            }
            Segment::Empty => s
                .events
                .push(chunk(json!({"role":"assistant","content":""}))),
            Segment::Calls(specs, picks) => {
                let mut queues = Vec::new();
                for spec in specs {
                    let index = next_index;
                    next_index += 1;
                    let (chat_name, kind, name, namespace) = TOOLS[spec.tool];
                    let (text, expected_arguments) = arguments_of(spec);
                    let call_id = format!("call_{index}");
                    let expected = Expected {
                        call_id: call_id.clone(),
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        namespace: namespace.map(str::to_owned),
                        arguments: expected_arguments,
                    };
                    let mut frags: VecDeque<serde_json::Value> = fragments(&text, &spec.cuts)
                        .into_iter()
                        .map(|f| json!({"index": index, "function": {"arguments": f}}))
                        .collect();
                    if let Some(first) = frags.front_mut() {
                        first["id"] = json!(call_id);
                        first["type"] = json!("function");
                        first["function"]["name"] = json!(chat_name);
                    }
                    queues.push((Some(expected), frags));
                }
                // Interleave: each pick sends the next fragment of one call still sending.
                let mut picks = picks.iter();
                loop {
                    let live: Vec<usize> = (0..queues.len())
                        .filter(|&i| !queues[i].1.is_empty())
                        .collect();
                    if live.is_empty() {
                        break;
                    }
                    let which = picks.next().map_or(live[0], |p| live[p % live.len()]);
                    let (expected, frags) = &mut queues[which];
                    // Calls come back in the order they first appear; under
                    // `parallel_tool_calls: false` only the first one does.
                    if let Some(expected) = expected.take() {
                        if parallel || !*seen_call {
                            s.calls.push(expected);
                        }
                        *seen_call = true;
                    }
                    if let Some(fragment) = frags.pop_front() {
                        s.events.push(chunk(json!({"tool_calls": [fragment]})));
                    }
                }
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_streams_follow_the_grammar_and_reconstruct(
        segments in prop::collection::vec(segment(), 0..6),
        finish_reason in prop::option::of(prop_oneof![Just("stop"), Just("tool_calls"), Just("length"), Just("content_filter")]),
        with_usage in any::<bool>(),
        end in ending(),
        parallel in prop::bool::weighted(0.85),
    ) {
        let mut s = script(&segments, parallel);
        if let Some(reason) = finish_reason {
            s.events.push(finish(reason));
        }
        if with_usage {
            s.events.push(usage(7, 9));
        }
        let end = match end {
            Ending::Done => End::Done,
            Ending::Finish => End::Finish,
            Ending::Fail => End::Fail(502),
        };
        let out = run(ctx(&body(parallel)), &s.events, end);
        let summary = match grammar::check(&out) {
            Ok(summary) => summary,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out)))),
        };
        if let End::Fail(_) = end {
            prop_assert_eq!(summary.status.as_str(), "failed");
            return Ok(());
        }
        let expected_status = match finish_reason {
            Some("length") | Some("content_filter") => "incomplete",
            _ => "completed",
        };
        prop_assert_eq!(summary.status.as_str(), expected_status);
        prop_assert_eq!(summary.usage.is_some(), with_usage);

        let mut reasoning = String::new();
        let mut text = String::new();
        let mut refusal = String::new();
        let mut calls = Vec::new();
        for item in &summary.items {
            match item.kind.as_str() {
                "reasoning" => reasoning.push_str(&item.text),
                "message" => {
                    text.push_str(&item.text);
                    refusal.push_str(&item.refusal);
                }
                _ => calls.push(Expected {
                    call_id: item.call_id.clone(),
                    kind: item.kind.clone(),
                    name: item.name.clone(),
                    namespace: item.namespace.clone(),
                    arguments: item.arguments.clone(),
                }),
            }
        }
        prop_assert_eq!(reasoning, s.reasoning);
        prop_assert_eq!(text, s.text);
        prop_assert_eq!(refusal, s.refusal);
        prop_assert_eq!(calls, s.calls);
    }
}

/// Input items a request may carry, valid or not.
fn input_item() -> impl Strategy<Value = serde_json::Value> {
    let call_id = prop_oneof![Just("c1"), Just("c2"), Just("c3")];
    let name = prop_oneof![
        Just((None, "exec_command")),
        Just((None, "apply_patch")),
        Just((Some("multi_agent_v1"), "spawn_agent")),
        Just((None, "gone_tool")),
    ];
    prop_oneof![
        piece().prop_map(|t| json!({"role":"user","content":t})),
        piece().prop_map(|t| json!({"type":"message","role":"developer","content":[{"type":"input_text","text":t}]})),
        piece().prop_map(|t| json!({"type":"message","role":"user","content":[{"type":"input_text","text":t},{"type":"input_image","image_url":"data:image/png;base64,AA"}]})),
        piece().prop_map(|t| json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":t}]})),
        (call_id.clone(), name).prop_map(|(c, (ns, n))| json!({"type":"function_call","call_id":c,"name":n,"namespace":ns,"arguments":"{}"})),
        (call_id.clone(), piece()).prop_map(|(c, t)| json!({"type":"function_call_output","call_id":c,"output":t})),
        (call_id.clone(), piece()).prop_map(|(c, t)| json!({"type":"custom_tool_call","call_id":c,"name":"apply_patch","input":t})),
        (call_id, piece()).prop_map(|(c, t)| json!({"type":"custom_tool_call_output","call_id":c,"output":[{"type":"input_text","text":t},{"type":"input_image","image_url":"u"}]})),
        Just(json!({"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"x"})),
        Just(json!({"type":"web_search_call","id":"ws","status":"completed"})),
        Just(json!({"type":"compaction","encrypted_content":"x"})),
        Just(json!({"type":"unknown_item"})),
    ]
}

/// Top-level fields a client may send besides `model` and `input`, valid or not.
fn extra_field() -> impl Strategy<Value = (&'static str, serde_json::Value)> {
    prop_oneof![
        Just(("store", json!(false))),
        Just(("include", json!(["reasoning.encrypted_content"]))),
        Just(("prompt_cache_key", json!("k"))),
        Just(("metadata", json!({"a":"b"}))),
        Just(("client_metadata", json!({"a":"b"}))),
        Just(("truncation", json!("auto"))),
        Just(("service_tier", json!("auto"))),
        Just(("parallel_tool_calls", json!(true))),
        Just(("max_output_tokens", json!(100))),
        Just(("temperature", json!(0.5))),
        Just(("top_p", json!(1))),
        Just((
            "text",
            json!({"format":{"type":"json_object"},"verbosity":"low"})
        )),
        Just(("reasoning", json!({"effort":"high","summary":"auto"}))),
        Just(("user", json!("u"))),
        Just(("stream", json!(true))),
        Just(("stream_options", json!({"include_obfuscation":false}))),
        Just(("top_logprobs", json!(3))),
        Just(("safety_identifier", json!("s"))),
        Just(("instructions", json!("be brief"))),
        Just(("tool_choice", json!("required"))),
        Just((
            "tool_choice",
            json!({"type":"function","name":"spawn_agent"})
        )),
        Just(("some_future_field", json!({"x":1}))),
        Just(("reasoning", json!(null))),
        Just(("text", json!(null))),
        Just(("tool_choice", json!(null))),
        Just(("instructions", json!(null))),
        Just(("parallel_tool_calls", json!(null))),
        Just(("previous_response_id", json!(null))),
        Just(("temperature", json!("hot"))),
    ]
}

/// Each `tool` message answers a call of the assistant message before its run of tool
/// messages, as every chat server requires.
fn tool_messages_follow_their_calls(messages: &[serde_json::Value]) -> Result<(), String> {
    for (i, m) in messages.iter().enumerate() {
        if m["role"] != "tool" {
            continue;
        }
        let mut j = i;
        while j > 0 && messages[j - 1]["role"] == "tool" {
            j -= 1;
        }
        let owner = j
            .checked_sub(1)
            .map(|k| &messages[k])
            .ok_or("a tool message opens the conversation")?;
        let answered = owner["role"] == "assistant"
            && owner["tool_calls"]
                .as_array()
                .is_some_and(|calls| calls.iter().any(|c| c["id"] == m["tool_call_id"]));
        if !answered {
            return Err(format!(
                "tool message {i} does not follow its call: {messages:?}"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn every_accepted_request_fits_the_strict_nim_schema_and_has_a_context(
        items in prop::collection::vec(input_item(), 0..8),
        extras in prop::collection::vec(extra_field(), 0..8),
    ) {
        let mut body = body(true);
        body["input"] = serde_json::Value::Array(items);
        for (key, value) in extras {
            body[key] = value;
        }
        let obj = tollgate_core::JsonObject::parse(body.to_string().as_bytes()).expect("json");
        let Ok(chat) = tollgate_translate::responses::to_chat(&obj, &tollgate_translate::ChatTarget::default()) else {
            return Ok(());
        };
        // What `to_chat` accepts, `reply_context` accepts too: the server calls both.
        let context = tollgate_translate::responses::reply_context(&obj, "resp_1".into(), "m".into());
        prop_assert!(context.is_ok(), "{:?}", context.err());
        let bytes = chat.to_bytes();
        prop_assert!(tollgate_testkit::nim::schema_error(&bytes).is_none(), "{}", String::from_utf8_lossy(&bytes));
        let chat: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let messages = chat["messages"].as_array().expect("messages");
        prop_assert!(!messages.is_empty());
        if let Err(e) = tool_messages_follow_their_calls(messages) {
            return Err(TestCaseError::fail(e));
        }
    }
}
