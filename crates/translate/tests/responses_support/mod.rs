//! Helpers shared by the Responses translator's integration tests: request contexts, chat
//! chunks as an upstream writes them, and a driver that runs a stream through
//! `ChatToResponses` the way the server's relay does.
#![allow(dead_code)]

use bytes::BytesMut;
use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_translate::responses::{reply_context, ChatToResponses, ReplyContext};
use tollgate_translate::{Failure, StreamTranslator};

/// The reply context of `body`, with a fixed id and creation time.
pub fn ctx(body: &Value) -> ReplyContext {
    let obj = JsonObject::parse(body.to_string().as_bytes()).expect("json body");
    let mut ctx = reply_context(&obj, "resp_test".into(), "client-model".into()).expect("context");
    ctx.created_at = 1_700_000_000;
    ctx
}

/// One `chat.completion.chunk` carrying `delta` for choice 0.
pub fn chunk(delta: Value) -> String {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"backend/model",
           "choices":[{"index":0,"delta":delta,"finish_reason":null}]})
    .to_string()
}

/// The chunk with a `finish_reason` and an empty delta.
pub fn finish(reason: &str) -> String {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"backend/model",
           "choices":[{"index":0,"delta":{},"finish_reason":reason}]})
    .to_string()
}

/// OpenAI's extra usage-only chunk.
pub fn usage(prompt: u64, completion: u64) -> String {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"backend/model",
           "choices":[],"usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt + completion}})
    .to_string()
}

/// A tool-call fragment.
pub fn call(index: u32, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) -> String {
    let mut function = serde_json::Map::new();
    if let Some(name) = name {
        function.insert("name".into(), json!(name));
    }
    if let Some(arguments) = arguments {
        function.insert("arguments".into(), json!(arguments));
    }
    let mut call = json!({"index": index, "type": "function", "function": function});
    if let Some(id) = id {
        call["id"] = json!(id);
    }
    chunk(json!({"tool_calls":[call]}))
}

/// How the upstream stream ends, as the relay reports it.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// `data: [DONE]`, then the relay's `finish()`.
    Done,
    /// End of body without `[DONE]`: only `finish()`.
    Finish,
    /// A break after the 200: `fail()` with this status.
    Fail(u16),
}

/// Runs `events` (chunk data, `[DONE]` written by `end`) through a translator.
pub fn run(ctx: ReplyContext, events: &[String], end: End) -> Vec<u8> {
    let mut t = ChatToResponses::new(ctx);
    let mut out = BytesMut::new();
    for e in events {
        t.event(e.as_bytes(), &mut out);
    }
    match end {
        End::Done => {
            t.event(b"[DONE]", &mut out);
            t.finish(&mut out);
        }
        End::Finish => t.finish(&mut out),
        End::Fail(status) => t.fail(
            &Failure {
                status,
                code: "upstream_error",
                message: "the upstream stream broke",
            },
            &mut out,
        ),
    }
    out.to_vec()
}

/// The stream's events as (event: name, data).
pub fn events(stream: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(stream).expect("utf8");
    text.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let name = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .expect("event line")
                .to_owned();
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .expect("data line");
            (name, serde_json::from_str(data).expect("json data"))
        })
        .collect()
}

/// The event types, in order.
pub fn types(stream: &[u8]) -> Vec<String> {
    events(stream).into_iter().map(|(name, _)| name).collect()
}

/// The first event of `kind`.
pub fn first(stream: &[u8], kind: &str) -> Value {
    events(stream)
        .into_iter()
        .find(|(name, _)| name == kind)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {kind} event"))
}
