//! Whole Messages answers → `chat.completion` (`to_messages::to_chat_response`), the reply
//! context, and Anthropic errors → OpenAI-shaped ones.

use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_translate::to_messages::{
    chat_reply_context, event_error, openai_error, to_chat_response, ChatReplyContext,
};

fn ctx() -> ChatReplyContext {
    ChatReplyContext {
        id: "chatcmpl-req1".into(),
        model: "my-alias".into(),
        include_usage: false,
        created: 1_700_000_123,
    }
}

fn answer(message: Value) -> Value {
    let bytes = to_chat_response(message.to_string().as_bytes(), &ctx()).expect("translated");
    serde_json::from_slice(&bytes).expect("json")
}

fn message(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 42}
    })
}

#[test]
fn text_thinking_and_tool_calls() {
    let out = answer(message(
        json!([
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "the weather."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
            {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}}
        ]),
        "tool_use",
    ));
    assert_eq!(out["id"], "chatcmpl-req1");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["created"], 1_700_000_123);
    assert_eq!(out["model"], "my-alias", "the requested name is echoed");
    let choice = &out["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "tool_calls");
    let m = &choice["message"];
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], "Checking the weather.");
    assert_eq!(m["reasoning_content"], "Let me think.");
    let calls = m["tool_calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_01");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        calls[0]["function"]["arguments"]
            .as_str()
            .expect("a string"),
    )
    .expect("arguments are JSON text");
    assert_eq!(args, json!({"city": "Paris", "days": [1, 2]}));
    assert_eq!(calls[1]["function"]["arguments"], "{}");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 115, "completion_tokens": 42, "total_tokens": 157, "prompt_tokens_details": {"cached_tokens": 100}})
    );
}

#[test]
fn a_tool_call_alone_has_null_content_and_plain_text_has_no_extras() {
    let out = answer(message(
        json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
        "tool_use",
    ));
    assert!(out["choices"][0]["message"]["content"].is_null());
    let out = answer(json!({
        "id": "m", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1}
    }));
    let m = &out["choices"][0]["message"];
    assert_eq!(m["content"], "hi");
    assert!(m.get("tool_calls").is_none() && m.get("reasoning_content").is_none());
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
    );
    let out = answer(json!({"type": "message", "content": [], "stop_reason": "end_turn"}));
    assert_eq!(out["choices"][0]["message"]["content"], "");
}

#[test]
fn stop_reasons_become_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        let out = answer(message(json!([{"type": "text", "text": "x"}]), stop));
        assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[test]
fn an_unreadable_answer_is_an_error() {
    assert!(to_chat_response(b"<html>", &ctx()).is_err());
    assert!(to_chat_response(br#"{"content": "text?"}"#, &ctx()).is_err());
}

#[test]
fn the_reply_context_reads_include_usage() {
    let body = JsonObject::parse(
        br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .expect("json");
    let c = chat_reply_context(&body, "chatcmpl-1".into(), "alias".into());
    assert!(c.include_usage);
    assert_eq!((c.id.as_str(), c.model.as_str()), ("chatcmpl-1", "alias"));
    assert!(c.created > 1_600_000_000, "now");
    for other in [
        &br#"{"model":"m","messages":[]}"#[..],
        br#"{"model":"m","messages":[],"stream_options":null}"#,
        br#"{"model":"m","messages":[],"stream_options":{"include_usage":false}}"#,
        br#"{"model":"m","messages":[],"stream_options":"junk"}"#,
    ] {
        let body = JsonObject::parse(other).expect("json");
        assert!(!chat_reply_context(&body, String::new(), String::new()).include_usage);
    }
}

#[test]
fn anthropic_errors_become_openai_shaped() {
    let (status, body) = openai_error(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_x"}"#,
    );
    assert_eq!(status, 503);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v,
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": "upstream_error"}})
    );
    let (status, body) =
        event_error(br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#);
    assert_eq!(status, 429);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
}
