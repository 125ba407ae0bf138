//! The chat → Responses stream translator, one test per failure mode that Responses-to-chat
//! gateways are known for (missing sequence numbers, deltas without an open item or part,
//! arguments only in `.done`, zero-argument calls without `.done`, renamed freeform and
//! namespaced tools, dropped reasoning, interleaved items, breaks dressed up as success), each
//! also checked by the protocol grammar.

mod responses_support;

use responses_support::{call, chunk, ctx, events, finish, first, run, types, usage, End};
use serde_json::{json, Value};
use tollgate_translate::responses::grammar;

fn tools() -> Value {
    json!([
        {"type":"function","name":"exec_command","parameters":{"type":"object","properties":{"cmd":{"type":"string"}}}},
        {"type":"function","name":"get_goal"},
        {"type":"custom","name":"apply_patch","format":{"type":"grammar","syntax":"lark","definition":"start: x"}},
        {"type":"namespace","name":"multi_agent_v1","description":"agents","tools":[{"type":"function","name":"spawn_agent"}]},
        {"type":"web_search"}
    ])
}

fn body() -> Value {
    json!({"model":"client-model","input":"hi","tools":tools(),"tool_choice":"auto","stream":true})
}

#[test]
fn a_text_stream_has_every_event_in_order_with_sequence_numbers() {
    let out = run(
        ctx(&body()),
        &[
            chunk(json!({"role":"assistant","content":""})),
            chunk(json!({"content":"Hel"})),
            chunk(json!({"content":"lo"})),
            finish("stop"),
            usage(10, 2),
        ],
        End::Done,
    );
    assert_eq!(
        types(&out),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in events(&out).iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{name}");
        assert_eq!(data["type"], *name, "event: line matches type");
    }
    let added = first(&out, "response.output_item.added");
    assert_eq!(added["item"]["content"], json!([]));
    assert_eq!(added["item"]["status"], "in_progress");
    let delta = first(&out, "response.output_text.delta");
    assert_eq!(delta["logprobs"], json!([]));
    assert_eq!(delta["item_id"], added["item"]["id"]);
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.status, "completed");
    assert_eq!(summary.items.len(), 1);
    assert_eq!(summary.items[0].text, "Hello");
    assert_eq!(
        summary.usage,
        Some(grammar::SummaryUsage {
            input_tokens: 10,
            output_tokens: 2,
            total_tokens: 12
        })
    );
    let completed = first(&out, "response.completed");
    assert_eq!(
        completed["response"]["usage"],
        json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},
               "output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12})
    );
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        "Hello"
    );
}

#[test]
fn the_response_object_echoes_the_request() {
    let mut request = body();
    request["instructions"] = json!("be brief");
    request["temperature"] = json!(0.3);
    request["top_p"] = json!(0.8);
    request["parallel_tool_calls"] = json!(true);
    request["max_output_tokens"] = json!(99);
    request["reasoning"] = json!({"summary":"auto"});
    let out = run(ctx(&request), &[chunk(json!({"content":"x"}))], End::Done);
    for kind in [
        "response.created",
        "response.in_progress",
        "response.completed",
    ] {
        let r = &first(&out, kind)["response"];
        assert_eq!(r["id"], "resp_test", "{kind}");
        assert_eq!(r["object"], "response");
        assert_eq!(r["created_at"], 1_700_000_000);
        assert_eq!(r["model"], "client-model", "the name the client asked for");
        assert_eq!(
            r["tools"],
            tools(),
            "tools echoed as sent, built-ins included"
        );
        assert_eq!(r["tool_choice"], "auto");
        assert_eq!(r["parallel_tool_calls"], true);
        assert_eq!(r["temperature"], 0.3);
        assert_eq!(r["top_p"], 0.8);
        assert_eq!(r["instructions"], "be brief");
        assert_eq!(r["max_output_tokens"], 99);
        assert_eq!(r["reasoning"], json!({"summary":"auto"}));
        assert_eq!(r["text"], json!({"format":{"type":"text"}}));
        assert_eq!(r["previous_response_id"], Value::Null);
    }
    assert_eq!(
        first(&out, "response.created")["response"]["status"],
        "in_progress"
    );
}

#[test]
fn function_arguments_stream_as_deltas_and_done() {
    let out = run(
        ctx(&body()),
        &[
            call(0, Some("call_1"), Some("exec_command"), Some("")),
            call(0, None, None, Some("{\"cmd\":")),
            call(0, None, None, Some("\"ls\"}")),
            finish("tool_calls"),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    let item = &summary.items[0];
    assert_eq!(item.kind, "function_call");
    assert_eq!(item.name, "exec_command");
    assert_eq!(item.call_id, "call_1");
    assert_eq!(item.arguments, r#"{"cmd":"ls"}"#);
    let deltas: Vec<String> = events(&out)
        .into_iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, v)| v["delta"].as_str().expect("delta").to_owned())
        .collect();
    assert_eq!(
        deltas,
        ["{\"cmd\":", "\"ls\"}"],
        "streamed live, not only in .done"
    );
    let done = first(&out, "response.function_call_arguments.done");
    assert_eq!(done["arguments"], r#"{"cmd":"ls"}"#);
    assert_eq!(done["name"], "exec_command");
}

#[test]
fn arguments_in_one_piece_or_none_still_get_a_delta_and_done() {
    let out = run(
        ctx(&body()),
        &[call(
            0,
            Some("c1"),
            Some("exec_command"),
            Some("{\"cmd\":\"pwd\"}"),
        )],
        End::Done,
    );
    assert_eq!(
        types(&out)[2..6],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done"
        ]
    );
    assert_eq!(
        grammar::check(&out).expect("grammar").items[0].arguments,
        r#"{"cmd":"pwd"}"#
    );

    // A zero-argument call: some servers send "" or no arguments at all.
    for arguments in [Some(""), None] {
        let out = run(
            ctx(&body()),
            &[
                call(0, Some("c2"), Some("get_goal"), arguments),
                finish("tool_calls"),
            ],
            End::Done,
        );
        let done = first(&out, "response.function_call_arguments.done");
        assert_eq!(done["arguments"], "{}", "{arguments:?}");
        let summary = grammar::check(&out).expect("grammar");
        assert_eq!(summary.items[0].arguments, "{}");
        assert_eq!(
            first(&out, "response.output_item.done")["item"]["arguments"],
            "{}"
        );
    }
}

#[test]
fn a_freeform_call_comes_back_as_a_custom_tool_call_with_its_input() {
    let patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch";
    let arguments = serde_json::to_string(&json!({"input": patch})).expect("json");
    let (a, b) = arguments.split_at(10);
    let out = run(
        ctx(&body()),
        &[
            call(0, Some("call_p"), Some("apply_patch"), Some(a)),
            call(0, None, None, Some(b)),
            finish("tool_calls"),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    let item = &summary.items[0];
    assert_eq!(item.kind, "custom_tool_call");
    assert_eq!(item.name, "apply_patch", "the name the client declared");
    assert_eq!(item.call_id, "call_p");
    assert_eq!(item.arguments, patch);
    assert_eq!(
        first(&out, "response.custom_tool_call_input.done")["input"],
        patch
    );
    let done = first(&out, "response.output_item.done");
    assert_eq!(done["item"]["type"], "custom_tool_call");
    assert_eq!(done["item"]["input"], patch);
    assert!(!types(&out).contains(&"response.function_call_arguments.delta".to_owned()));
}

#[test]
fn a_namespaced_call_comes_back_with_its_name_and_namespace() {
    let out = run(
        ctx(&body()),
        &[
            call(
                0,
                Some("c"),
                Some("multi_agent_v1__spawn_agent"),
                Some("{}"),
            ),
            finish("tool_calls"),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.items[0].name, "spawn_agent");
    assert_eq!(
        summary.items[0].namespace.as_deref(),
        Some("multi_agent_v1")
    );
    let added = first(&out, "response.output_item.added");
    assert_eq!(added["item"]["namespace"], "multi_agent_v1");
    assert_eq!(
        first(&out, "response.function_call_arguments.done")["name"],
        "spawn_agent"
    );
}

#[test]
fn reasoning_becomes_a_summary_when_one_was_asked_for() {
    let mut request = body();
    request["reasoning"] = json!({"summary":"auto"});
    let out = run(
        ctx(&request),
        &[
            chunk(json!({"reasoning_content":"Let me "})),
            chunk(json!({"reasoning_content":"think."})),
            chunk(json!({"content":"Answer"})),
        ],
        End::Done,
    );
    assert_eq!(
        types(&out)[2..10],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
        ]
    );
    let added = first(&out, "response.output_item.added");
    assert_eq!(added["item"]["type"], "reasoning");
    assert_eq!(added["item"]["summary"], json!([]));
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.items[0].kind, "reasoning");
    assert_eq!(summary.items[0].text, "Let me think.");
    assert_eq!(summary.items[1].text, "Answer");
    assert_eq!(
        first(&out, "response.reasoning_summary_text.delta")["summary_index"],
        0
    );
}

#[test]
fn reasoning_without_a_summary_request_is_reasoning_text() {
    // `reasoning` is OpenRouter's and newer vLLM's field name.
    let out = run(
        ctx(&body()),
        &[
            chunk(json!({"reasoning":"hmm"})),
            chunk(json!({"content":"ok"})),
        ],
        End::Done,
    );
    assert_eq!(
        types(&out)[2..8],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
    );
    let done = first(&out, "response.output_item.done");
    assert_eq!(
        done["item"]["content"],
        json!([{"type":"reasoning_text","text":"hmm"}])
    );
    assert_eq!(done["item"]["summary"], json!([]));
    assert_eq!(grammar::check(&out).expect("grammar").items[0].text, "hmm");
}

#[test]
fn interleaved_parallel_calls_never_interleave_items() {
    let out = run(
        ctx(&body()),
        &[
            chunk(json!({"content":"Running both."})),
            call(0, Some("a"), Some("exec_command"), Some("{\"cmd\":")),
            call(
                1,
                Some("b"),
                Some("multi_agent_v1__spawn_agent"),
                Some("{\"x\""),
            ),
            call(0, None, None, Some("\"ls\"}")),
            call(1, None, None, Some(":1}")),
            call(2, Some("c"), Some("apply_patch"), Some("{\"input\":\"p\"}")),
            finish("tool_calls"),
            usage(5, 5),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar: one item open at a time");
    let got: Vec<(&str, &str, &str)> = summary
        .items
        .iter()
        .map(|i| (i.kind.as_str(), i.name.as_str(), i.arguments.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("message", "", ""),
            ("function_call", "exec_command", "{\"cmd\":\"ls\"}"),
            ("function_call", "spawn_agent", "{\"x\":1}"),
            ("custom_tool_call", "apply_patch", "p"),
        ]
    );
    assert_eq!(summary.items[0].text, "Running both.");
}

#[test]
fn text_after_a_call_is_sent_after_the_calls() {
    let out = run(
        ctx(&body()),
        &[
            call(0, Some("a"), Some("exec_command"), Some("{}")),
            chunk(json!({"content":"and then"})),
            chunk(json!({"reasoning_content":"why"})),
            finish("tool_calls"),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    let kinds: Vec<&str> = summary.items.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(kinds, ["function_call", "message", "reasoning"]);
    assert_eq!(summary.items[1].text, "and then");
    assert_eq!(summary.items[2].text, "why");
}

#[test]
fn a_call_without_index_takes_its_position() {
    let data = json!({"choices":[{"index":0,"delta":{"tool_calls":[
        {"id":"x","function":{"name":"exec_command","arguments":"{}"}},
        {"id":"y","function":{"name":"get_goal","arguments":"{}"}}]},"finish_reason":"tool_calls"}]});
    let out = run(ctx(&body()), &[data.to_string()], End::Done);
    let summary = grammar::check(&out).expect("grammar");
    let names: Vec<&str> = summary.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["exec_command", "get_goal"]);
}

#[test]
fn parallel_tool_calls_false_passes_one_call() {
    let mut request = body();
    request["parallel_tool_calls"] = json!(false);
    let out = run(
        ctx(&request),
        &[
            call(0, Some("a"), Some("exec_command"), Some("{}")),
            call(1, Some("b"), Some("get_goal"), Some("{}")),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.items.len(), 1);
    assert_eq!(summary.items[0].name, "exec_command");
}

#[test]
fn an_unknown_tool_name_is_passed_on_as_a_function() {
    let out = run(
        ctx(&body()),
        &[call(0, None, Some("made_up"), Some("{}"))],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.items[0].name, "made_up");
    assert_eq!(
        summary.items[0].call_id, "call_test_0",
        "an id is made when none came"
    );
}

#[test]
fn length_ends_incomplete_with_max_output_tokens() {
    let out = run(
        ctx(&body()),
        &[chunk(json!({"content":"cut he"})), finish("length")],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.status, "incomplete");
    assert_eq!(
        summary.incomplete_reason.as_deref(),
        Some("max_output_tokens")
    );
    assert_eq!(summary.items[0].status, "incomplete");
    let last = types(&out).pop().expect("events");
    assert_eq!(last, "response.incomplete");
    let r = &first(&out, "response.incomplete")["response"];
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason":"max_output_tokens"})
    );
}

#[test]
fn content_filter_ends_incomplete_too() {
    let out = run(
        ctx(&body()),
        &[chunk(json!({"content":"x"})), finish("content_filter")],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.incomplete_reason.as_deref(), Some("content_filter"));
}

#[test]
fn a_break_after_200_is_an_error_event_then_response_failed() {
    let out = run(
        ctx(&body()),
        &[
            chunk(json!({"content":"part"})),
            call(0, Some("a"), Some("exec_command"), Some("{\"cmd\":")),
        ],
        End::Fail(502),
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.status, "failed");
    assert_eq!(summary.error.as_deref(), Some("the upstream stream broke"));
    let all = events(&out);
    let (last_name, last) = all.last().expect("events");
    assert_eq!(last_name, "response.failed");
    let (error_name, error) = &all[all.len() - 2];
    assert_eq!(error_name, "error");
    // Flat, as the SDK's ResponseErrorEvent; nested, so the SDK raises APIError.
    assert_eq!(error["message"], "the upstream stream broke");
    assert_eq!(error["code"], "upstream_error");
    assert_eq!(error["param"], Value::Null);
    assert_eq!(error["error"]["message"], "the upstream stream broke");
    assert_eq!(error["error"]["type"], "server_error");
    // Sequence numbers keep going through the failure.
    for (i, (_, data)) in all.iter().enumerate() {
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    // The half-streamed call is never handed over as done: a client would run it.
    let done: Vec<Value> = all
        .iter()
        .filter(|(n, _)| n == "response.output_item.done")
        .map(|(_, v)| v["item"]["type"].clone())
        .collect();
    assert_eq!(done, [json!("message")]);
    assert_eq!(last["response"]["output"][1]["status"], "incomplete");
    assert!(!types(&out).contains(&"response.completed".to_owned()));
}

#[test]
fn a_rate_limited_break_says_so() {
    let out = run(ctx(&body()), &[], End::Fail(429));
    assert_eq!(
        types(&out),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    assert_eq!(
        first(&out, "response.failed")["response"]["error"]["code"],
        "rate_limit_exceeded"
    );
    grammar::check(&out).expect("grammar");
}

#[test]
fn an_end_without_done_or_usage_still_completes() {
    let out = run(
        ctx(&body()),
        &[chunk(json!({"content":"x"})), finish("stop")],
        End::Finish,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.status, "completed");
    assert_eq!(summary.usage, None);
    assert_eq!(
        first(&out, "response.completed")["response"]["usage"],
        Value::Null
    );
}

#[test]
fn nothing_follows_the_terminal_event() {
    use bytes::BytesMut;
    use tollgate_translate::responses::ChatToResponses;
    use tollgate_translate::{Failure, StreamTranslator};
    let mut t = ChatToResponses::new(ctx(&body()));
    let mut out = BytesMut::new();
    t.event(chunk(json!({"content":"x"})).as_bytes(), &mut out);
    t.event(b"[DONE]", &mut out);
    let len = out.len();
    t.finish(&mut out);
    t.event(chunk(json!({"content":"late"})).as_bytes(), &mut out);
    t.fail(
        &Failure {
            status: 502,
            code: "upstream_error",
            message: "late",
        },
        &mut out,
    );
    assert_eq!(out.len(), len);
    grammar::check(&out).expect("grammar");
}

#[test]
fn noise_and_error_frames_are_not_translated() {
    let out = run(
        ctx(&body()),
        &[
            "not json".to_owned(),
            r#"{"error":{"message":"overloaded"}}"#.to_owned(),
            chunk(json!({"content":"x"})),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.items.len(), 1);
}

#[test]
fn a_refusal_is_a_refusal_part() {
    let out = run(
        ctx(&body()),
        &[
            chunk(json!({"refusal":"I can't"})),
            chunk(json!({"refusal":" help."})),
        ],
        End::Done,
    );
    assert!(types(&out).contains(&"response.refusal.delta".to_owned()));
    let part = first(&out, "response.content_part.added");
    assert_eq!(part["part"], json!({"type":"refusal","refusal":""}));
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.items[0].refusal, "I can't help.");
    assert_eq!(summary.items[0].text, "");
}

#[test]
fn an_empty_answer_completes_with_no_output() {
    let out = run(ctx(&body()), &[finish("stop")], End::Done);
    assert_eq!(
        types(&out),
        [
            "response.created",
            "response.in_progress",
            "response.completed"
        ]
    );
    grammar::check(&out).expect("grammar");
}
