//! The grammar checker refuses each way a Responses stream can be wrong: a valid stream from
//! the translator is broken in one place at a time, and the checker must say where.

mod responses_support;

use responses_support::{call, chunk, ctx, events, finish, run, usage, End};
use serde_json::{json, Value};
use tollgate_translate::responses::grammar;

/// A valid stream with a reasoning item, a message and a function call.
fn valid() -> Vec<(String, Value)> {
    let body = json!({"model":"m","input":"x","reasoning":{"summary":"auto"},
        "tools":[{"type":"function","name":"f"}]});
    let out = run(
        ctx(&body),
        &[
            chunk(json!({"reasoning_content":"r"})),
            chunk(json!({"content":"a"})),
            chunk(json!({"content":"b"})),
            call(0, Some("c1"), Some("f"), Some("{\"k\":")),
            call(0, None, None, Some("1}")),
            finish("tool_calls"),
            usage(1, 2),
        ],
        End::Done,
    );
    let all = events(&out);
    grammar::check(&out).expect("the unbroken stream is valid");
    all
}

fn sse(events: &[(String, Value)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, data) in events {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    out.into_bytes()
}

/// Renumbers sequence numbers 0, 1, 2 … so a mutation is caught for what it is.
fn renumber(events: &mut [(String, Value)]) {
    for (i, (_, data)) in events.iter_mut().enumerate() {
        data["sequence_number"] = json!(i);
    }
}

fn position(events: &[(String, Value)], kind: &str) -> usize {
    events
        .iter()
        .position(|(n, _)| n == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn refused(events: &[(String, Value)], needle: &str) {
    let err = grammar::check(&sse(events)).expect_err("a broken stream is refused");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

#[test]
fn sequence_numbers_must_count_from_zero() {
    let mut e = valid();
    e[3].1
        .as_object_mut()
        .expect("object")
        .remove("sequence_number");
    refused(&e, "missing sequence_number");
    let mut e = valid();
    e[4].1["sequence_number"] = json!(99);
    refused(&e, "sequence_number is 99");
    let mut e = valid();
    for (_, d) in e.iter_mut() {
        let n = d["sequence_number"].as_u64().expect("n");
        d["sequence_number"] = json!(n + 1);
    }
    refused(&e, "sequence_number is 1, expected 0");
}

#[test]
fn event_lines_must_match_types() {
    let mut e = valid();
    e[2].0 = "response.output_item.done".into();
    refused(&e, "type is");
}

#[test]
fn the_lifecycle_starts_with_created_then_in_progress() {
    let mut e = valid();
    e.remove(1);
    renumber(&mut e);
    refused(&e, "phase");
    let mut e = valid();
    e.swap(0, 1);
    renumber(&mut e);
    refused(&e, "phase");
}

#[test]
fn a_delta_needs_its_item_and_part_opened_first() {
    // Codex: "OutputTextDelta without active item".
    let mut e = valid();
    let at = position(&e, "response.content_part.added");
    e.remove(at);
    renumber(&mut e);
    refused(&e, "no part is open");
    let mut e = valid();
    let added = e
        .iter()
        .position(|(n, d)| n == "response.output_item.added" && d["item"]["type"] == "message")
        .expect("message added");
    e.remove(added);
    renumber(&mut e);
    refused(&e, "no output item is open");
}

#[test]
fn items_never_interleave() {
    let mut e = valid();
    // Open the function call before the message is done.
    let call_added = e
        .iter()
        .position(|(n, d)| {
            n == "response.output_item.added" && d["item"]["type"] == "function_call"
        })
        .expect("call added");
    let moved = e.remove(call_added);
    let text_delta = position(&e, "response.output_text.delta");
    e.insert(text_delta, moved);
    renumber(&mut e);
    refused(&e, "while another is open");
}

#[test]
fn indexes_must_match_the_open_item() {
    let mut e = valid();
    let at = position(&e, "response.output_text.delta");
    e[at].1["output_index"] = json!(7);
    refused(&e, "output_index is 7");
    let mut e = valid();
    let at = position(&e, "response.output_text.delta");
    e[at].1["content_index"] = json!(1);
    refused(&e, "content_index is 1");
    let mut e = valid();
    let at = position(&e, "response.output_text.delta");
    e[at].1["item_id"] = json!("someone_else");
    refused(&e, "item_id");
}

#[test]
fn done_events_must_repeat_the_deltas() {
    let mut e = valid();
    let at = position(&e, "response.output_text.done");
    e[at].1["text"] = json!("ab!");
    refused(&e, "done text");
    let mut e = valid();
    let at = position(&e, "response.function_call_arguments.done");
    e[at].1["arguments"] = json!("{}");
    refused(&e, "arguments is");
    let mut e = valid();
    let at = position(&e, "response.reasoning_summary_text.done");
    e[at].1["text"] = json!("other");
    refused(&e, "done text");
}

#[test]
fn a_call_needs_its_arguments_done() {
    let mut e = valid();
    let at = position(&e, "response.function_call_arguments.done");
    e.remove(at);
    renumber(&mut e);
    refused(&e, "done without its arguments");
}

#[test]
fn output_item_done_must_hold_what_was_streamed() {
    let mut e = valid();
    let at = e
        .iter()
        .position(|(n, d)| n == "response.output_item.done" && d["item"]["type"] == "message")
        .expect("message done");
    e[at].1["item"]["content"][0]["text"] = json!("zz");
    refused(&e, "item.content");
}

#[test]
fn the_terminal_output_must_match_the_items() {
    let mut e = valid();
    let last = e.len() - 1;
    e[last].1["response"]["output"]
        .as_array_mut()
        .expect("output")
        .pop();
    refused(&e, "response.output length");
    let mut e = valid();
    let last = e.len() - 1;
    e[last].1["response"]["output"][1]["content"][0]["text"] = json!("changed");
    refused(&e, "output item");
}

#[test]
fn nothing_may_follow_the_terminal_event_and_it_must_come() {
    let mut e = valid();
    let extra = e[2].clone();
    e.push(extra);
    renumber(&mut e);
    refused(&e, "after the terminal event");
    let mut e = valid();
    e.pop();
    refused(&e, "without a terminal event");
}

#[test]
fn completion_requires_closed_items_and_a_well_formed_usage() {
    let mut e = valid();
    let last_done = e
        .iter()
        .rposition(|(n, _)| n == "response.output_item.done")
        .expect("done");
    e.remove(last_done);
    renumber(&mut e);
    refused(&e, "still open");
    let mut e = valid();
    let last = e.len() - 1;
    e[last].1["response"]["usage"]
        .as_object_mut()
        .expect("usage")
        .remove("output_tokens_details");
    refused(&e, "output_tokens_details");
}

#[test]
fn sse_framing_errors_are_refused() {
    let mut bytes = sse(&valid());
    bytes.truncate(bytes.len() - 1);
    assert!(grammar::check(&bytes)
        .expect_err("unterminated")
        .contains("ends inside an event"));
    assert!(grammar::check(b"data: {}\n\n")
        .expect_err("no event line")
        .contains("without an event"));
    // Keepalive comments are not events.
    let mut with_comments = b": keepalive\n\n".to_vec();
    with_comments.extend(sse(&valid()));
    with_comments.extend(b": keepalive\n\n");
    grammar::check(&with_comments).expect("comments are skipped");
}

#[test]
fn an_error_event_may_only_be_followed_by_response_failed() {
    let out = run(ctx(&json!({"model":"m","input":"x"})), &[], End::Fail(502));
    let mut e = events(&out);
    grammar::check(&out).expect("valid failure");
    let failed = e.pop().expect("failed");
    e.push((
        "response.completed".into(),
        json!({"type":"response.completed","sequence_number":failed.1["sequence_number"],"response":failed.1["response"]}),
    ));
    refused(&e, "only response.failed");
}
