//! What the Messages door writes: the `message` object and the stream's events, as serde
//! structs borrowing their text, so writing an event is one serialization with no tree.
//!
//! Fields follow the official SDK's models (`anthropic-sdk-python` `types/`): a `Message`
//! always has `id`, `type`, `role`, `model`, `content`, `stop_reason`, `stop_sequence` and
//! `usage` with `input_tokens` and `output_tokens`; a thinking block always has a `signature`
//! string; a `message_delta` always has `usage.output_tokens`.

use bytes::BufMut;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;

/// A `message` object: the whole answer, or the empty shell `message_start` carries.
#[derive(Debug, Serialize)]
pub(crate) struct MessageOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<BlockOut<'a>>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<&'a str>,
    pub usage: UsageOut,
}

impl<'a> MessageOut<'a> {
    pub fn new(id: &'a str, model: &'a str, usage: UsageOut) -> Self {
        MessageOut {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage,
        }
    }
}

impl MessageOut<'_> {
    /// The message as JSON, written by hand: the same bytes as serializing it with serde
    /// (fields in their order, strings escaped as serde_json escapes them), without serde's
    /// machinery for the tagged blocks. A whole answer's body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.content_len());
        self.write_json(&mut out);
        out
    }

    fn write_json<B: BufMut>(&self, out: &mut B) {
        out.put_slice(b"{\"id\":");
        json_str(out, self.id);
        out.put_slice(b",\"type\":");
        json_str(out, self.kind);
        out.put_slice(b",\"role\":");
        json_str(out, self.role);
        out.put_slice(b",\"model\":");
        json_str(out, self.model);
        out.put_slice(b",\"content\":[");
        for (n, block) in self.content.iter().enumerate() {
            if n > 0 {
                out.put_u8(b',');
            }
            block.write_json(out);
        }
        out.put_slice(b"],\"stop_reason\":");
        json_opt_str(out, self.stop_reason);
        out.put_slice(b",\"stop_sequence\":");
        json_opt_str(out, self.stop_sequence);
        out.put_slice(b",\"usage\":{\"input_tokens\":");
        json_u64(out, self.usage.input_tokens);
        out.put_slice(b",\"cache_creation_input_tokens\":");
        json_u64(out, self.usage.cache_creation_input_tokens);
        out.put_slice(b",\"cache_read_input_tokens\":");
        json_u64(out, self.usage.cache_read_input_tokens);
        out.put_slice(b",\"output_tokens\":");
        json_u64(out, self.usage.output_tokens);
        out.put_slice(b"}}");
    }

    fn content_len(&self) -> usize {
        self.content
            .iter()
            .map(|block| match block {
                BlockOut::Text { text } => text.len(),
                BlockOut::Thinking { thinking, .. } => thinking.len(),
                BlockOut::ToolUse { input, .. } => match input {
                    Input::Empty => 2,
                    Input::Object(raw) => raw.get().len(),
                },
            } + 64)
            .sum()
    }
}

impl BlockOut<'_> {
    fn write_json<B: BufMut>(&self, out: &mut B) {
        match self {
            BlockOut::Text { text } => {
                out.put_slice(b"{\"type\":\"text\",\"text\":");
                json_str(out, text);
            }
            BlockOut::Thinking {
                thinking,
                signature,
            } => {
                out.put_slice(b"{\"type\":\"thinking\",\"thinking\":");
                json_str(out, thinking);
                out.put_slice(b",\"signature\":");
                json_str(out, signature);
            }
            BlockOut::ToolUse { id, name, input } => {
                out.put_slice(b"{\"type\":\"tool_use\",\"id\":");
                json_str(out, id);
                out.put_slice(b",\"name\":");
                json_str(out, name);
                out.put_slice(b",\"input\":");
                match input {
                    Input::Empty => out.put_slice(b"{}"),
                    Input::Object(raw) => out.put_slice(raw.get().as_bytes()),
                }
            }
        }
        out.put_u8(b'}');
    }
}

/// A JSON string as serde_json writes it: copied between quotes when nothing in it needs an
/// escape, else serde_json's own escaping.
fn json_str<B: BufMut>(out: &mut B, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing into memory cannot fail.
        let _ = serde_json::to_writer(out.writer(), s);
        return;
    }
    out.put_u8(b'"');
    out.put_slice(s.as_bytes());
    out.put_u8(b'"');
}

fn json_opt_str<B: BufMut>(out: &mut B, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.put_slice(b"null"),
    }
}

fn json_u64<B: BufMut>(out: &mut B, n: u64) {
    out.put_slice(tollgate_core::Decimal::new(n).as_bytes());
}

/// A message's `usage`. The cache counts are written as 0, as Anthropic does for a request
/// without prompt caching (Claude Code adds them up for its cost display).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct UsageOut {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

impl UsageOut {
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        UsageOut {
            input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens,
        }
    }
}

/// A content block, whole (an answer) or as it opens (`content_block_start`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    Thinking {
        thinking: &'a str,
        /// Anthropic's proof that it wrote the thinking; a chat backend has none, and the SDK
        /// requires the field, so it is empty.
        signature: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Input<'a>,
    },
}

/// A tool call's `input`: `{}` when a block opens (the arguments follow as deltas), the
/// arguments object in a whole answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    Empty,
    Object(&'a RawValue),
}

impl Serialize for Input<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Input::Empty => serializer.serialize_map(Some(0))?.end(),
            Input::Object(raw) => raw.serialize(serializer),
        }
    }
}

/// One stream event. The SSE event name is the `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event<'a> {
    MessageStart {
        message: MessageOut<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: BlockOut<'a>,
    },
    /// Written by [`write_delta`]; the serde form is the tests' reference.
    #[cfg(test)]
    ContentBlockDelta {
        index: u32,
        delta: DeltaOut<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaOut<'a>,
        usage: DeltaUsageOut,
    },
    MessageStop,
    Error {
        error: ErrorOut<'a>,
    },
}

impl Event<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            #[cfg(test)]
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Error { .. } => "error",
        }
    }

    /// Appends the event as `event: NAME\ndata: JSON\n\n`: written by hand but for errors
    /// (the same bytes as serializing it, checked by the tests), since a stream writes five or
    /// six of these besides its deltas.
    pub fn write(&self, out: &mut bytes::BytesMut) {
        match self {
            Event::MessageStart { message } => {
                out.put_slice(
                    b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":",
                );
                message.write_json(out);
                out.put_slice(b"}\n\n");
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => {
                out.put_slice(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
                );
                json_u64(out, u64::from(*index));
                out.put_slice(b",\"content_block\":");
                content_block.write_json(out);
                out.put_slice(b"}\n\n");
            }
            Event::ContentBlockStop { index } => {
                out.put_slice(
                    b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
                );
                json_u64(out, u64::from(*index));
                out.put_slice(b"}\n\n");
            }
            Event::MessageDelta { delta, usage } => {
                out.put_slice(
                    b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":",
                );
                json_str(out, delta.stop_reason);
                out.put_slice(b",\"stop_sequence\":");
                json_opt_str(out, delta.stop_sequence);
                out.put_slice(b"},\"usage\":{");
                if let Some(input) = usage.input_tokens {
                    out.put_slice(b"\"input_tokens\":");
                    json_u64(out, input);
                    out.put_u8(b',');
                }
                out.put_slice(b"\"output_tokens\":");
                json_u64(out, usage.output_tokens);
                out.put_slice(b"}}\n\n");
            }
            Event::MessageStop => {
                out.put_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            }
            _ => crate::sse::write_named(out, self.name(), self),
        }
    }
}

/// A `content_block_delta`'s `delta`; its `type` is the variant's name plus `_delta`.
#[cfg(test)]
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub(crate) enum DeltaOut<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

/// A delta's text: as a chat chunk's JSON had it (escaped, without its quotes), or plain.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frag<'x> {
    Escaped(&'x str),
    Plain(&'x str),
}

impl Frag<'_> {
    pub fn is_empty(&self) -> bool {
        match self {
            Frag::Escaped(s) | Frag::Plain(s) => s.is_empty(),
        }
    }

    /// The text, escaped, appended to `out`.
    pub fn push_escaped(&self, out: &mut String) {
        match self {
            Frag::Escaped(s) => out.push_str(s),
            Frag::Plain(s) => super::text::push_escaped(out, s),
        }
    }
}

/// The kinds of `content_block_delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeltaKind {
    Text,
    Thinking,
    InputJson,
}

/// Appends a `content_block_delta` event, written by hand: it is the event of nearly every
/// chunk, and an escaped fragment is copied in as it is. Same bytes as serializing
/// [`Event::ContentBlockDelta`].
pub(crate) fn write_delta(out: &mut bytes::BytesMut, index: u32, kind: DeltaKind, text: Frag<'_>) {
    let (tag, field): (&[u8], &[u8]) = match kind {
        DeltaKind::Text => (b"text_delta", b"text"),
        DeltaKind::Thinking => (b"thinking_delta", b"thinking"),
        DeltaKind::InputJson => (b"input_json_delta", b"partial_json"),
    };
    out.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    out.extend_from_slice(tollgate_core::Decimal::new(u64::from(index)).as_bytes());
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(tag);
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field);
    out.extend_from_slice(b"\":");
    match text {
        Frag::Escaped(s) => {
            out.extend_from_slice(b"\"");
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\"");
        }
        Frag::Plain(s) => {
            use bytes::BufMut;
            // Writing a string into memory cannot fail.
            let _ = serde_json::to_writer(out.writer(), s);
        }
    }
    out.extend_from_slice(b"}}\n\n");
}

#[derive(Debug, Serialize)]
pub(crate) struct MessageDeltaOut<'a> {
    pub stop_reason: &'static str,
    pub stop_sequence: Option<&'a str>,
}

/// `message_delta.usage`: cumulative. `input_tokens` is written only when the backend
/// reported its count, and then replaces the estimate `message_start` carried (the SDKs copy
/// a non-null `input_tokens` from here into the final message).
#[derive(Debug, Serialize)]
pub(crate) struct DeltaUsageOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    pub output_tokens: u64,
}

/// The `error` object of an error body or event.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub message: &'a str,
}

/// A whole error body: `{"type":"error","error":{…}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorOut<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(
        texts: &'a [String],
        raw: &'a RawValue,
        stop: Option<&'a str>,
    ) -> MessageOut<'a> {
        let mut m = MessageOut::new(&texts[0], &texts[1], UsageOut::new(12, u64::MAX));
        m.content = vec![
            BlockOut::Thinking {
                thinking: &texts[2],
                signature: "",
            },
            BlockOut::Text { text: &texts[3] },
            BlockOut::ToolUse {
                id: &texts[4],
                name: &texts[5],
                input: Input::Object(raw),
            },
            BlockOut::ToolUse {
                id: "toolu_2",
                name: "none",
                input: Input::Empty,
            },
        ];
        m.stop_reason = Some("tool_use");
        m.stop_sequence = stop;
        m
    }

    #[test]
    fn the_hand_written_message_is_the_serialized_one() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"path": "a\"b", "n": [1, 2.5e3]}"#).expect("raw");
        let texts: Vec<String> = [
            "msg_1",
            "claude-x",
            "quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f} é 日 🦀 </script>",
            "plain",
            "toolu_\u{1f}",
            "",
        ]
        .map(String::from)
        .to_vec();
        for stop in [None, Some("END"), Some("\"\n")] {
            let m = message(&texts, &raw, stop);
            assert_eq!(
                String::from_utf8(m.to_json()).expect("utf-8"),
                serde_json::to_string(&m).expect("serde")
            );
        }
        let mut empty = MessageOut::new("", "", UsageOut::new(0, 0));
        assert_eq!(empty.to_json(), serde_json::to_vec(&empty).expect("serde"));
        empty.stop_reason = Some("end_turn");
        assert_eq!(empty.to_json(), serde_json::to_vec(&empty).expect("serde"));
    }

    #[test]
    fn hand_written_events_are_the_serialized_ones() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{"a":"\"x"}"#).expect("raw");
        let texts: Vec<String> = [
            "msg_1",
            "claude",
            "think \"q\"\n",
            "text",
            "toolu_1",
            "Bash",
        ]
        .map(String::from)
        .to_vec();
        let events = [
            Event::MessageStart {
                message: message(&texts, &raw, None),
            },
            Event::MessageStart {
                message: MessageOut::new("msg_2", "m", UsageOut::new(5, 0)),
            },
            Event::ContentBlockStart {
                index: 0,
                content_block: BlockOut::Text { text: "" },
            },
            Event::ContentBlockStart {
                index: 4_000_000_000,
                content_block: BlockOut::ToolUse {
                    id: "toolu_\"",
                    name: "n",
                    input: Input::Empty,
                },
            },
            Event::ContentBlockStart {
                index: 12,
                content_block: BlockOut::Thinking {
                    thinking: "",
                    signature: "",
                },
            },
            Event::ContentBlockStop { index: 7 },
            Event::MessageDelta {
                delta: MessageDeltaOut {
                    stop_reason: "stop_sequence",
                    stop_sequence: Some("\u{1}END\\"),
                },
                usage: DeltaUsageOut {
                    input_tokens: Some(1234),
                    output_tokens: 0,
                },
            },
            Event::MessageDelta {
                delta: MessageDeltaOut {
                    stop_reason: "end_turn",
                    stop_sequence: None,
                },
                usage: DeltaUsageOut {
                    input_tokens: None,
                    output_tokens: u64::MAX,
                },
            },
            Event::MessageStop,
            Event::Error {
                error: ErrorOut {
                    kind: "overloaded_error",
                    message: "busy \"now\"",
                },
            },
        ];
        for event in &events {
            let mut by_hand = bytes::BytesMut::new();
            event.write(&mut by_hand);
            let mut by_serde = bytes::BytesMut::new();
            crate::sse::write_named(&mut by_serde, event.name(), event);
            assert_eq!(
                String::from_utf8_lossy(&by_hand),
                String::from_utf8_lossy(&by_serde)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_written_as_serde_writes_it(
            texts in proptest::collection::vec(proptest::string::string_regex("(.|\n|\\\\|\"){0,40}").expect("regex"), 6),
        ) {
            let raw: Box<RawValue> = serde_json::from_str("{}").expect("raw");
            let m = message(&texts, &raw, texts.get(3).map(String::as_str));
            proptest::prop_assert_eq!(m.to_json(), serde_json::to_vec(&m).expect("serde"));
        }
    }

    #[test]
    fn hand_written_deltas_match_the_serialized_event() {
        for (kind, text) in [
            (DeltaKind::Text, "plain"),
            (
                DeltaKind::Thinking,
                "quote \" backslash \\ newline \n tab \t é 日",
            ),
            (DeltaKind::InputJson, "{\"a\":"),
        ] {
            for index in [0, 7, 10, 4_294_967_295] {
                let delta = match kind {
                    DeltaKind::Text => DeltaOut::Text { text },
                    DeltaKind::Thinking => DeltaOut::Thinking { thinking: text },
                    DeltaKind::InputJson => DeltaOut::InputJson { partial_json: text },
                };
                let mut serde = bytes::BytesMut::new();
                Event::ContentBlockDelta { index, delta }.write(&mut serde);
                let mut plain = bytes::BytesMut::new();
                write_delta(&mut plain, index, kind, Frag::Plain(text));
                assert_eq!(plain, serde);
                let mut escaped_text = String::new();
                Frag::Plain(text).push_escaped(&mut escaped_text);
                let mut escaped = bytes::BytesMut::new();
                write_delta(&mut escaped, index, kind, Frag::Escaped(&escaped_text));
                assert_eq!(escaped, serde);
            }
        }
    }

    #[test]
    fn events_serialize_in_the_sdk_shapes() {
        let start = Event::ContentBlockStart {
            index: 1,
            content_block: BlockOut::ToolUse {
                id: "toolu_1",
                name: "Read",
                input: Input::Empty,
            },
        };
        assert_eq!(
            serde_json::to_string(&start).expect("json"),
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"Read","input":{}}}"#
        );
        let delta = Event::ContentBlockDelta {
            index: 0,
            delta: DeltaOut::InputJson {
                partial_json: r#"{"a":"#,
            },
        };
        assert_eq!(
            serde_json::to_string(&delta).expect("json"),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#
        );
        let stop = Event::MessageStop;
        assert_eq!(
            serde_json::to_string(&stop).expect("json"),
            r#"{"type":"message_stop"}"#
        );
        let md = Event::MessageDelta {
            delta: MessageDeltaOut {
                stop_reason: "end_turn",
                stop_sequence: None,
            },
            usage: DeltaUsageOut {
                input_tokens: None,
                output_tokens: 3,
            },
        };
        assert_eq!(
            serde_json::to_string(&md).expect("json"),
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}"#
        );
    }
}
