//! A checker of the Messages streaming grammar, written from Anthropic's streaming reference
//! and the official SDK's event models (`RawMessageStreamEvent`) and accumulator
//! (`lib/streaming/_messages.py`), for tests of anything that writes a Messages stream.
//!
//! A stream is: one `message_start` (before anything but `ping`), then content blocks — each
//! opened by `content_block_start` at the next index from 0, extended only by deltas of its own
//! type, closed by one `content_block_stop`, one open at a time — then one `message_delta`
//! with a `stop_reason` and `usage.output_tokens`, then `message_stop`, then nothing. `ping`
//! may come anywhere before the end. A failed stream ends with one `error` event and has no
//! `message_stop`. `[DONE]` is a chat.completions marker and never belongs.
//!
//! The SDK indexes `content` by the event's `index` (`content[event.index]`), so an index that
//! skips or repeats corrupts the accumulated message; that is why indices are checked so.

use serde_json::Value;

/// What a well-formed stream said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Event names in order, `ping` included.
    pub events: Vec<String>,
    pub message_id: String,
    pub model: String,
    /// Each block's type, by index.
    pub blocks: Vec<String>,
    /// All text blocks' text, concatenated.
    pub text: String,
    /// All thinking blocks' text, concatenated.
    pub thinking: String,
    pub tool_uses: Vec<ToolUse>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: StreamUsage,
    /// The `error` event of a failed stream.
    pub error: Option<StreamError>,
}

/// A tool_use block with its accumulated `input`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    pub id: String,
    pub name: String,
    /// The concatenated `partial_json` parsed (the start's `input` when no delta came).
    pub input: Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamUsage {
    /// `message_start.message.usage.input_tokens`.
    pub start_input_tokens: u64,
    /// `message_delta.usage.input_tokens`, when present.
    pub final_input_tokens: Option<u64>,
    /// `message_delta.usage.output_tokens`.
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub kind: String,
    pub message: String,
}

/// The stop reasons of the SDK's `StopReason`.
const STOP_REASONS: &[&str] = &[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
];

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeStart,
    Blocks,
    AfterDelta,
    Ended,
}

struct Open {
    index: usize,
    kind: String,
    json: String,
}

/// Checks a whole Messages SSE stream; the error names the first event that breaks the
/// grammar.
pub fn check(stream: &[u8]) -> Result<Summary, String> {
    let text = std::str::from_utf8(stream).map_err(|e| format!("stream is not UTF-8: {e}"))?;
    let text = text.replace("\r\n", "\n");
    let mut summary = Summary::default();
    let mut phase = Phase::BeforeStart;
    let mut open: Option<Open> = None;
    for (n, raw) in text.split("\n\n").enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let (name, data) = parse_event(raw).map_err(|e| format!("event {n}: {e}"))?;
        let Some(name) = name else {
            // Comment-only frames are legal SSE and invisible to clients.
            continue;
        };
        let at = |msg: String| format!("event {n} ({name}): {msg}");
        if phase == Phase::Ended {
            return Err(at("an event after the stream ended".into()));
        }
        if data.trim() == "[DONE]" {
            return Err(at("[DONE] is not part of the Messages stream".into()));
        }
        let v: Value =
            serde_json::from_str(&data).map_err(|e| at(format!("data is not JSON: {e}")))?;
        if v["type"] != Value::String(name.clone()) {
            return Err(at(format!(
                "data type {} differs from the event name",
                v["type"]
            )));
        }
        summary.events.push(name.clone());
        match name.as_str() {
            "ping" => {}
            "error" => {
                let kind = str_field(&v["error"], "type").map_err(at)?;
                let message = str_field(&v["error"], "message").map_err(at)?;
                summary.error = Some(StreamError { kind, message });
                phase = Phase::Ended;
            }
            "message_start" => {
                if phase != Phase::BeforeStart {
                    return Err(at("a second message_start".into()));
                }
                let m = &v["message"];
                summary.message_id = str_field(m, "id").map_err(at)?;
                summary.model = str_field(m, "model").map_err(at)?;
                if m["type"] != "message" || m["role"] != "assistant" {
                    return Err(at("message.type must be message and role assistant".into()));
                }
                if m["content"] != Value::Array(Vec::new()) {
                    return Err(at("message.content must start empty".into()));
                }
                if !m["stop_reason"].is_null() {
                    return Err(at("message.stop_reason must be null at the start".into()));
                }
                if !m.get("stop_sequence").is_some_and(Value::is_null) {
                    return Err(at("message.stop_sequence must be present and null".into()));
                }
                let input = m["usage"]["input_tokens"]
                    .as_u64()
                    .ok_or_else(|| at("usage.input_tokens must be an integer".into()))?;
                if input == 0 {
                    return Err(at(
                        "usage.input_tokens is 0 (Claude Code needs a count)".into()
                    ));
                }
                m["usage"]["output_tokens"]
                    .as_u64()
                    .ok_or_else(|| at("usage.output_tokens must be an integer".into()))?;
                summary.usage.start_input_tokens = input;
                phase = Phase::Blocks;
            }
            "content_block_start" => {
                if phase != Phase::Blocks {
                    return Err(at("a block outside the message's content phase".into()));
                }
                if let Some(o) = &open {
                    return Err(at(format!("block {} is still open", o.index)));
                }
                let index = index_of(&v).map_err(at)?;
                if index != summary.blocks.len() {
                    return Err(at(format!(
                        "index {index}, expected {}",
                        summary.blocks.len()
                    )));
                }
                let block = &v["content_block"];
                let kind = str_field(block, "type").map_err(at)?;
                match kind.as_str() {
                    "text" => {
                        if block["text"] != "" {
                            return Err(at("a text block starts with empty text".into()));
                        }
                    }
                    "thinking" => {
                        str_field(block, "thinking").map_err(at)?;
                        // The SDK's ThinkingBlock requires `signature`.
                        str_field(block, "signature").map_err(at)?;
                    }
                    "redacted_thinking" => {
                        str_field(block, "data").map_err(at)?;
                    }
                    "tool_use" | "server_tool_use" => {
                        let id = str_field(block, "id").map_err(at)?;
                        if id.is_empty() {
                            return Err(at("tool_use.id is empty".into()));
                        }
                        if summary.tool_uses.iter().any(|t| t.id == id) {
                            return Err(at(format!("tool_use id {id} used twice")));
                        }
                        let name = str_field(block, "name").map_err(at)?;
                        if !block["input"].is_object() {
                            return Err(at("tool_use.input must be an object".into()));
                        }
                        summary.tool_uses.push(ToolUse {
                            id,
                            name,
                            input: block["input"].clone(),
                        });
                    }
                    other => return Err(at(format!("unknown block type {other}"))),
                }
                summary.blocks.push(kind.clone());
                open = Some(Open {
                    index,
                    kind,
                    json: String::new(),
                });
            }
            "content_block_delta" => {
                let index = index_of(&v).map_err(at)?;
                let Some(o) = open.as_mut().filter(|o| o.index == index) else {
                    return Err(at(format!("delta for block {index}, which is not open")));
                };
                let delta = &v["delta"];
                let dtype = str_field(delta, "type").map_err(at)?;
                let fits = matches!(
                    (o.kind.as_str(), dtype.as_str()),
                    ("text", "text_delta" | "citations_delta")
                        | ("thinking", "thinking_delta" | "signature_delta")
                        | ("tool_use" | "server_tool_use", "input_json_delta")
                );
                if !fits {
                    return Err(at(format!("{dtype} in a {} block", o.kind)));
                }
                match dtype.as_str() {
                    "text_delta" => summary
                        .text
                        .push_str(&str_field(delta, "text").map_err(at)?),
                    "thinking_delta" => summary
                        .thinking
                        .push_str(&str_field(delta, "thinking").map_err(at)?),
                    "signature_delta" => {
                        str_field(delta, "signature").map_err(at)?;
                    }
                    "input_json_delta" => o
                        .json
                        .push_str(&str_field(delta, "partial_json").map_err(at)?),
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = index_of(&v).map_err(at)?;
                let Some(o) = open.take().filter(|o| o.index == index) else {
                    return Err(at(format!("stop for block {index}, which is not open")));
                };
                if matches!(o.kind.as_str(), "tool_use" | "server_tool_use") && !o.json.is_empty() {
                    let input: Value = serde_json::from_str(&o.json)
                        .map_err(|e| at(format!("tool input {:?} is not JSON: {e}", o.json)))?;
                    if !input.is_object() {
                        return Err(at(format!("tool input {:?} is not an object", o.json)));
                    }
                    if let Some(tool) = summary.tool_uses.last_mut() {
                        tool.input = input;
                    }
                }
            }
            "message_delta" => {
                if phase != Phase::Blocks {
                    return Err(at("message_delta out of place".into()));
                }
                if let Some(o) = &open {
                    return Err(at(format!("block {} is still open", o.index)));
                }
                let reason = str_field(&v["delta"], "stop_reason").map_err(at)?;
                if !STOP_REASONS.contains(&reason.as_str()) {
                    return Err(at(format!("unknown stop_reason {reason}")));
                }
                let sequence = &v["delta"]["stop_sequence"];
                match (reason.as_str(), sequence) {
                    ("stop_sequence", Value::String(s)) => summary.stop_sequence = Some(s.clone()),
                    ("stop_sequence", _) => {
                        return Err(at("stop_sequence must name the matched sequence".into()))
                    }
                    (_, Value::Null) => {}
                    _ => {
                        return Err(at(
                            "stop_sequence set without stop_reason stop_sequence".into()
                        ))
                    }
                }
                summary.stop_reason = Some(reason);
                summary.usage.output_tokens = v["usage"]["output_tokens"]
                    .as_u64()
                    .ok_or_else(|| at("usage.output_tokens must be an integer".into()))?;
                summary.usage.final_input_tokens = match &v["usage"]["input_tokens"] {
                    Value::Null => None,
                    t => Some(t.as_u64().ok_or_else(|| {
                        at("usage.input_tokens must be an integer or absent".into())
                    })?),
                };
                phase = Phase::AfterDelta;
            }
            "message_stop" => {
                if phase != Phase::AfterDelta {
                    return Err(at("message_stop without a message_delta before it".into()));
                }
                phase = Phase::Ended;
            }
            other => return Err(at(format!("unknown event {other}"))),
        }
    }
    if phase != Phase::Ended {
        return Err("the stream ended without message_stop or error".into());
    }
    Ok(summary)
}

/// An SSE frame's `event:` name (`None` for a comment-only frame) and joined `data:` lines.
fn parse_event(raw: &str) -> Result<(Option<String>, String), String> {
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in raw.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => data.push(value),
            other => return Err(format!("unexpected field {other:?}")),
        }
    }
    match (name, data.is_empty()) {
        (None, true) => Ok((None, String::new())),
        (Some(_), true) => Err("an event without data".into()),
        (None, false) => Err(format!("data without an event name: {}", data.join("\n"))),
        (Some(name), false) => Ok((Some(name), data.join("\n"))),
    }
}

fn str_field(v: &Value, key: &str) -> Result<String, String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key} must be a string"))
}

fn index_of(v: &Value) -> Result<usize, String> {
    v["index"]
        .as_u64()
        .map(|i| i as usize)
        .ok_or_else(|| "index must be an integer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":0}}}\n\n";
    const END: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn ev(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn text_block(index: usize, text: &str) -> String {
        ev(
            "content_block_start",
            &format!(
                r#"{{"type":"content_block_start","index":{index},"content_block":{{"type":"text","text":""}}}}"#
            ),
        ) + &ev(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":"{text}"}}}}"#
            ),
        ) + &ev(
            "content_block_stop",
            &format!(r#"{{"type":"content_block_stop","index":{index}}}"#),
        )
    }

    #[test]
    fn accepts_a_plain_answer() {
        let s = format!(
            "{START}{}{}{END}",
            ev("ping", r#"{"type":"ping"}"#),
            text_block(0, "hi")
        );
        let summary = check(s.as_bytes()).expect("valid");
        assert_eq!(summary.text, "hi");
        assert_eq!(summary.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(summary.usage.start_input_tokens, 5);
        assert_eq!(summary.usage.output_tokens, 2);
    }

    #[test]
    fn refuses_broken_streams() {
        let tool = |json: &str| {
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
            ) + &ev(
                "content_block_delta",
                &format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"input_json_delta","partial_json":{}}}}}"#,
                    serde_json::to_string(json).unwrap_or_default()
                ),
            ) + &ev(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            )
        };
        let cases = [
            ("no start", format!("{}{END}", text_block(0, "x"))),
            ("index skips", format!("{START}{}{END}", text_block(1, "x"))),
            (
                "index repeats",
                format!("{START}{}{}{END}", text_block(0, "x"), text_block(0, "y")),
            ),
            ("no stop", START.to_owned()),
            ("done marker", format!("{START}{END}data: [DONE]\n\n")),
            (
                "after stop",
                format!("{START}{END}{}", ev("ping", r#"{"type":"ping"}"#)),
            ),
            ("bad tool json", format!("{START}{}{END}", tool("{\"a\":"))),
            (
                "double stop",
                format!(
                    "{START}{}{}{END}",
                    text_block(0, "x"),
                    ev(
                        "content_block_stop",
                        r#"{"type":"content_block_stop","index":0}"#
                    )
                ),
            ),
            (
                "wrong delta",
                format!(
                    "{START}{}{}{END}",
                    ev(
                        "content_block_start",
                        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
                    ),
                    ev(
                        "content_block_delta",
                        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#
                    )
                ),
            ),
            (
                "zero input tokens",
                format!(
                    "{}{END}",
                    START.replace("\"input_tokens\":5", "\"input_tokens\":0")
                ),
            ),
            (
                "error then stop",
                format!(
                    "{START}{}{END}",
                    ev(
                        "error",
                        r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#
                    )
                ),
            ),
        ];
        for (what, stream) in cases {
            assert!(check(stream.as_bytes()).is_err(), "{what} must be refused");
        }
        assert!(check(format!("{START}{}{END}", tool("{\"a\":1}")).as_bytes()).is_ok());
    }

    #[test]
    fn a_failed_stream_ends_with_error() {
        let s = format!(
            "{START}{}",
            ev(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            )
        );
        let summary = check(s.as_bytes()).expect("valid failure");
        assert_eq!(
            summary.error,
            Some(StreamError {
                kind: "overloaded_error".into(),
                message: "busy".into()
            })
        );
        assert!(summary.stop_reason.is_none());
    }
}
