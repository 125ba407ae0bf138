//! chat.completions stream → Messages events: the grammar holds and the answer is whole, for
//! the stream shapes real servers send and the ones peers mistranslated.

use bytes::BytesMut;
use serde_json::{json, Value};
use tollgate_translate::anthropic::grammar::{check, Summary};
use tollgate_translate::anthropic::{ChatToMessages, ReplyContext};
use tollgate_translate::{Failure, StreamTranslator};

fn ctx() -> ReplyContext {
    ReplyContext {
        id: "msg_test".into(),
        model: "claude-sonnet-4-5".into(),
        input_tokens: 1234.into(),
        thinking: true,
        stop_sequences: vec!["END".into()],
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"backend/model",
        "choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
    .to_string()
}

fn text(t: &str) -> String {
    chunk(json!({"content": t}), None)
}

fn reasoning(t: &str) -> String {
    chunk(json!({"reasoning_content": t}), None)
}

fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut function = json!({"arguments": args});
    if let Some(name) = name {
        function["name"] = json!(name);
    }
    let mut c = json!({"index": index, "function": function});
    if let Some(id) = id {
        c["id"] = json!(id);
        c["type"] = json!("function");
    }
    c
}

fn calls(list: Vec<Value>) -> String {
    chunk(json!({"tool_calls": list}), None)
}

fn finish(reason: &str) -> String {
    chunk(json!({}), Some(reason))
}

fn usage(prompt: u64, completion: u64) -> String {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],
        "usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt+completion}})
    .to_string()
}

enum End {
    Finish,
    Fail(u16),
}

fn run_with(ctx: ReplyContext, events: &[String], end: End) -> (String, Summary) {
    let mut t = ChatToMessages::new(ctx);
    let mut out = BytesMut::new();
    for e in events {
        t.event(e.as_bytes(), &mut out);
    }
    match end {
        End::Finish => t.finish(&mut out),
        End::Fail(status) => t.fail(
            &Failure {
                status,
                code: "upstream_error",
                message: "the backend stopped answering",
            },
            &mut out,
        ),
    }
    let stream = String::from_utf8(out.to_vec()).expect("utf-8");
    let summary = check(stream.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{stream}"));
    (stream, summary)
}

fn run(events: &[String]) -> (String, Summary) {
    run_with(ctx(), events, End::Finish)
}

fn count(stream: &str, needle: &str) -> usize {
    stream.matches(needle).count()
}

#[test]
fn text_answer_with_the_usage_chunk_after_the_finish_chunk() {
    let (stream, s) = run(&[
        text("Hel"),
        text("lo"),
        finish("stop"),
        usage(321, 7),
        "[DONE]".to_owned(),
    ]);
    assert_eq!(s.text, "Hello");
    assert_eq!(s.blocks, ["text"]);
    assert_eq!(s.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(s.message_id, "msg_test");
    assert_eq!(
        s.model, "claude-sonnet-4-5",
        "the requested model, not the backend's"
    );
    assert_eq!(
        s.usage.start_input_tokens, 1234,
        "the estimate, before the backend counts"
    );
    assert_eq!(
        s.usage.final_input_tokens,
        Some(321),
        "the backend's count at the end"
    );
    assert_eq!(s.usage.output_tokens, 7);
    assert!(!stream.contains("[DONE]"));
    assert_eq!(s.events.last().map(String::as_str), Some("message_stop"));
}

#[test]
fn message_start_never_says_zero_input_tokens() {
    // LiteLLM #24176: `input_tokens: 0` in message_start broke Claude Code.
    let mut c = ctx();
    c.input_tokens = 0.into();
    let (_, s) = run_with(c, &[text("x"), finish("stop")], End::Finish);
    assert!(s.usage.start_input_tokens >= 1);
}

#[test]
fn the_first_text_after_thinking_is_kept() {
    // LiteLLM #30765 lost the first text_delta at the thinking → text switch.
    let (stream, s) = run(&[
        reasoning("Let me "),
        reasoning("think."),
        chunk(
            json!({"reasoning_content": null, "content": "FINAL: ABC"}),
            None,
        ),
        text(" DEF"),
        finish("stop"),
    ]);
    assert_eq!(s.blocks, ["thinking", "text"]);
    assert_eq!(s.thinking, "Let me think.");
    assert_eq!(s.text, "FINAL: ABC DEF");
    assert!(stream.contains(r#""content_block":{"type":"thinking","thinking":"","signature":""}"#));
}

#[test]
fn openrouter_reasoning_field_is_thinking_too() {
    let (_, s) = run(&[
        chunk(json!({"reasoning": "hmm"}), None),
        text("ok"),
        finish("stop"),
    ]);
    assert_eq!(s.thinking, "hmm");
    assert_eq!(s.text, "ok");
}

#[test]
fn thinking_is_dropped_when_the_client_did_not_ask() {
    let mut c = ctx();
    c.thinking = false;
    let (_, s) = run_with(
        c,
        &[reasoning("secret"), text("4"), finish("stop")],
        End::Finish,
    );
    assert_eq!(s.blocks, ["text"]);
    assert_eq!(s.thinking, "");
}

#[test]
fn tool_arguments_in_fragments() {
    // LiteLLM #25321: `input: {}` when the arguments came in fragments.
    let (stream, s) = run(&[
        text("Reading."),
        calls(vec![call(0, Some("call_1"), Some("Read"), "")]),
        calls(vec![call(0, None, None, "{\"file_")]),
        calls(vec![call(0, None, None, "path\": \"/x\", ")]),
        calls(vec![call(0, None, None, "\"pages\": \"\"}")]),
        finish("tool_calls"),
    ]);
    assert_eq!(s.blocks, ["text", "tool_use"]);
    assert_eq!(s.tool_uses.len(), 1);
    assert_eq!(s.tool_uses[0].id, "call_1");
    assert_eq!(s.tool_uses[0].name, "Read");
    assert_eq!(
        s.tool_uses[0].input,
        json!({"file_path": "/x", "pages": ""}),
        "empty strings kept"
    );
    assert_eq!(s.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(count(&stream, "event: content_block_stop"), 2);
}

#[test]
fn tool_arguments_only_at_the_end() {
    let (_, s) = run(&[
        calls(vec![call(0, Some("call_1"), Some("Bash"), "")]),
        chunk(
            json!({"tool_calls": [call(0, None, None, r#"{"command":"ls -la"}"#)]}),
            Some("tool_calls"),
        ),
    ]);
    assert_eq!(s.tool_uses[0].input, json!({"command": "ls -la"}));
}

#[test]
fn a_whole_call_in_one_chunk() {
    let (stream, s) = run(&[chunk(
        json!({"tool_calls": [call(0, Some("call_9"), Some("Read"), r#"{"file_path":"/a"}"#)]}),
        Some("tool_calls"),
    )]);
    assert_eq!(s.tool_uses[0].input, json!({"file_path": "/a"}));
    assert_eq!(count(&stream, "input_json_delta"), 1);
}

#[test]
fn arguments_as_an_object_are_json_text() {
    // Ollama-style servers send `arguments` as an object.
    let (_, s) = run(&[
        chunk(
            json!({"tool_calls": [{"index":0,"id":"c","function":{"name":"Read","arguments":{"file_path":"/o"}}}]}),
            None,
        ),
        finish("tool_calls"),
    ]);
    assert_eq!(s.tool_uses[0].input, json!({"file_path": "/o"}));
}

#[test]
fn a_call_without_arguments_still_gets_an_input_json_delta() {
    let (stream, s) = run(&[
        calls(vec![call(0, Some("call_1"), Some("ListAgents"), "")]),
        finish("tool_calls"),
    ]);
    assert_eq!(s.tool_uses[0].input, json!({}));
    assert!(stream.contains(r#""delta":{"type":"input_json_delta","partial_json":"{}"}"#));
}

#[test]
fn interleaved_parallel_calls_each_get_one_block() {
    // Fragments of two calls alternate; each block must open once, close once (#37273: a
    // second content_block_stop made Claude Code run the tool twice) and hold its own input.
    let (stream, s) = run(&[
        calls(vec![
            call(0, Some("a"), Some("Read"), "{\"file_path\":"),
            call(1, Some("b"), Some("Grep"), "{\"pattern\":"),
        ]),
        calls(vec![call(1, None, None, "\"fn main\"")]),
        calls(vec![call(0, None, None, "\"/a.rs\"")]),
        calls(vec![call(1, None, None, "}")]),
        calls(vec![call(0, None, None, "}")]),
        finish("tool_calls"),
        usage(10, 20),
    ]);
    assert_eq!(s.blocks, ["tool_use", "tool_use"]);
    assert_eq!(s.tool_uses[0].id, "a");
    assert_eq!(s.tool_uses[0].input, json!({"file_path": "/a.rs"}));
    assert_eq!(s.tool_uses[1].id, "b");
    assert_eq!(s.tool_uses[1].input, json!({"pattern": "fn main"}));
    assert_eq!(count(&stream, "event: content_block_start"), 2);
    assert_eq!(count(&stream, "event: content_block_stop"), 2);
}

#[test]
fn sequential_parallel_calls_stream_live() {
    // The usual server shape: call 0 whole, then call 1. Call 0's block closes as soon as
    // call 1 begins, so its arguments were not held back.
    let mut t = ChatToMessages::new(ctx());
    let mut out = BytesMut::new();
    t.event(
        calls(vec![call(
            0,
            Some("a"),
            Some("Read"),
            "{\"file_path\":\"/a\"}",
        )])
        .as_bytes(),
        &mut out,
    );
    let after_first = String::from_utf8(out.to_vec()).expect("utf-8");
    assert!(
        after_first.contains(r#""partial_json":"{\"file_path\":\"/a\"}""#),
        "{after_first}"
    );
    t.event(
        calls(vec![call(
            1,
            Some("b"),
            Some("Read"),
            "{\"file_path\":\"/b\"}",
        )])
        .as_bytes(),
        &mut out,
    );
    let after_second = String::from_utf8(out.to_vec()).expect("utf-8");
    assert_eq!(
        count(&after_second, "event: content_block_stop"),
        1,
        "call 0 closed"
    );
    t.event(finish("tool_calls").as_bytes(), &mut out);
    t.finish(&mut out);
    let s = check(&out).expect("valid");
    assert_eq!(s.tool_uses.len(), 2);
    assert_eq!(s.tool_uses[1].input, json!({"file_path": "/b"}));
}

#[test]
fn calls_without_index_or_with_a_reused_index_stay_apart() {
    // Some servers send each whole call at index 0 (or with no index), told apart by id.
    let (_, s) = run(&[
        chunk(
            json!({"tool_calls":[{"id":"x1","function":{"name":"Read","arguments":"{\"file_path\":\"/1\"}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls":[{"index":0,"id":"x2","function":{"name":"Read","arguments":"{\"file_path\":\"/2\"}"}}]}),
            None,
        ),
        finish("tool_calls"),
    ]);
    assert_eq!(s.tool_uses.len(), 2);
    assert_eq!(s.tool_uses[0].input, json!({"file_path": "/1"}));
    assert_eq!(s.tool_uses[1].input, json!({"file_path": "/2"}));
}

#[test]
fn calls_without_ids_get_unique_ones() {
    let (_, s) = run(&[
        calls(vec![
            call(0, None, Some("A"), "{}"),
            call(1, None, Some("B"), "{}"),
        ]),
        finish("tool_calls"),
    ]);
    assert_eq!(s.tool_uses.len(), 2);
    assert!(s.tool_uses[0].id.starts_with("toolu_"));
    assert_ne!(s.tool_uses[0].id, s.tool_uses[1].id);
}

#[test]
fn a_call_named_late_opens_when_its_name_arrives() {
    let (_, s) = run(&[
        calls(vec![
            json!({"index":0,"id":"c1","function":{"arguments":"{\"a\":"}}),
        ]),
        calls(vec![
            json!({"index":0,"function":{"name":"F","arguments":"1}"}}),
        ]),
        finish("tool_calls"),
    ]);
    assert_eq!(s.tool_uses[0].name, "F");
    assert_eq!(s.tool_uses[0].input, json!({"a": 1}));
}

#[test]
fn text_after_a_call_is_its_own_block() {
    let (_, s) = run(&[
        calls(vec![call(
            0,
            Some("c"),
            Some("Read"),
            "{\"file_path\":\"/x\"}",
        )]),
        text("Done."),
        finish("tool_calls"),
    ]);
    assert_eq!(s.blocks, ["tool_use", "text"]);
    assert_eq!(s.text, "Done.");
}

#[test]
fn text_during_an_unfinished_call_waits_for_it() {
    let (_, s) = run(&[
        calls(vec![call(0, Some("c"), Some("Read"), "{\"file_path\":")]),
        text("(reading)"),
        calls(vec![call(0, None, None, "\"/x\"}")]),
        finish("tool_calls"),
    ]);
    assert_eq!(s.blocks, ["tool_use", "text"]);
    assert_eq!(s.tool_uses[0].input, json!({"file_path": "/x"}));
    assert_eq!(s.text, "(reading)");
}

#[test]
fn stop_reasons() {
    let reason = |events: &[String]| run(events).1;
    assert_eq!(
        reason(&[text("x"), finish("length")])
            .stop_reason
            .as_deref(),
        Some("max_tokens")
    );
    assert_eq!(
        reason(&[text("x"), finish("content_filter")])
            .stop_reason
            .as_deref(),
        Some("refusal")
    );
    // vLLM names the matched stop string in a non-standard `stop_reason`.
    let vllm = json!({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_reason":"END"}]}).to_string();
    let s = reason(&[text("x"), vllm]);
    assert_eq!(s.stop_reason.as_deref(), Some("stop_sequence"));
    assert_eq!(s.stop_sequence.as_deref(), Some("END"));
    // NIM's Llama finishes a tool call with `stop`.
    let s = reason(&[
        calls(vec![call(0, Some("c"), Some("F"), "{}")]),
        finish("stop"),
    ]);
    assert_eq!(s.stop_reason.as_deref(), Some("tool_use"));
}

#[test]
fn a_stream_complete_without_finish_reason_or_usage() {
    // The relay may judge a stream complete with no finish_reason chunk and no usage.
    let (stream, s) = run(&[text("abcdefgh")]);
    assert_eq!(s.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        s.usage.final_input_tokens, None,
        "no count to replace the estimate with"
    );
    assert_eq!(
        s.usage.output_tokens, 2,
        "estimated from the 8 bytes written"
    );
    assert!(stream.contains(r#""usage":{"output_tokens":2}"#));
}

#[test]
fn an_empty_answer_is_still_a_message() {
    let (_, s) = run(&[finish("stop")]);
    assert!(s.blocks.is_empty());
    assert_eq!(s.events, ["message_start", "message_delta", "message_stop"]);
}

#[test]
fn a_broken_stream_ends_with_an_error_and_no_message_stop() {
    let (stream, s) = run_with(ctx(), &[text("partial")], End::Fail(502));
    assert_eq!(s.events.last().map(String::as_str), Some("error"));
    assert!(!stream.contains("message_stop"));
    assert!(!stream.contains("message_delta"));
    let e = s.error.expect("error event");
    assert_eq!(e.kind, "api_error");
    assert_eq!(e.message, "the backend stopped answering");
    for (status, kind) in [
        (504, "timeout_error"),
        (503, "overloaded_error"),
        (429, "rate_limit_error"),
    ] {
        let (_, s) = run_with(ctx(), &[text("x")], End::Fail(status));
        assert_eq!(s.error.map(|e| e.kind), Some(kind.to_owned()), "{status}");
    }
    // A failure before any upstream event is a lone error event.
    let (_, s) = run_with(ctx(), &[], End::Fail(504));
    assert_eq!(s.events, ["error"]);
}

#[test]
fn nothing_follows_the_end() {
    let mut t = ChatToMessages::new(ctx());
    let mut out = BytesMut::new();
    t.event(text("a").as_bytes(), &mut out);
    t.finish(&mut out);
    let len = out.len();
    t.event(text("b").as_bytes(), &mut out);
    t.finish(&mut out);
    t.fail(
        &Failure {
            status: 502,
            code: "upstream_error",
            message: "late",
        },
        &mut out,
    );
    assert_eq!(out.len(), len);
    assert!(check(&out).is_ok());
}

#[test]
fn odd_events_are_ignored() {
    let (_, s) = run(&[
        ": comment".to_owned(),
        "not json".to_owned(),
        json!({"choices": null}).to_string(),
        chunk(json!(null), None),
        text("ok"),
        "[DONE]".to_owned(),
    ]);
    assert_eq!(s.text, "ok");
}

#[test]
fn every_event_is_one_sse_frame() {
    let (stream, _) = run(&[text("line\nbreak \"quoted\""), finish("stop")]);
    for frame in stream.split_terminator("\n\n") {
        let lines: Vec<&str> = frame.lines().collect();
        assert_eq!(lines.len(), 2, "{frame}");
        assert!(lines[0].starts_with("event: ") && lines[1].starts_with("data: "));
    }
}
