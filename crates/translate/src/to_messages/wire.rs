//! The Anthropic Messages wire types this direction reads: a whole `message`, the stream's
//! events and `usage`. One flat struct per shape, every field optional, so one serde pass reads
//! any event (internally tagged enums would buffer each event and lose the borrows), and
//! strings borrow from the upstream's bytes where they have no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A JSON string, borrowed from the input when it has no escapes (serde's own `Cow<str>`
/// always copies when it sits inside an `Option`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Anthropic's token counts. `input_tokens` excludes the cached parts, which are counted in
/// their own fields; in a stream, `message_start` carries the input counts and each
/// `message_delta` the cumulative output count (and, lately, the input counts again).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// The prompt as OpenAI counts it: every input token, cached or not.
    pub fn prompt_tokens(&self) -> Option<u64> {
        if self.input_tokens.is_none()
            && self.cache_creation_input_tokens.is_none()
            && self.cache_read_input_tokens.is_none()
        {
            return None;
        }
        Some(
            self.input_tokens.unwrap_or(0)
                + self.cache_creation_input_tokens.unwrap_or(0)
                + self.cache_read_input_tokens.unwrap_or(0),
        )
    }
}

/// One content block: of a whole message, or the opening of a streamed one
/// (`content_block_start`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Block<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Text<'a>,
    /// `text` blocks.
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
    /// `thinking` blocks.
    #[serde(borrow, default)]
    pub thinking: Option<Text<'a>>,
    /// `tool_use` blocks.
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    /// The tool's input object, as its JSON text (a stream opens it as `{}`).
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
}

/// A whole Messages answer (`"type": "message"`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Message<'a> {
    #[serde(borrow, default)]
    pub content: Vec<Block<'a>>,
    #[serde(borrow, default)]
    pub stop_reason: Option<Text<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// What a `content_block_delta` or `message_delta` changes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Delta<'a> {
    /// `text_delta`, `input_json_delta`, `thinking_delta`, `signature_delta`, `citations_delta`;
    /// absent on `message_delta`.
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub thinking: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub partial_json: Option<Text<'a>>,
    /// `message_delta`.
    #[serde(borrow, default)]
    pub stop_reason: Option<Text<'a>>,
}

/// The `message` of `message_start`: only its usage matters here (the id and model the
/// client sees are the gateway's).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StartMessage {
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// Anthropic's `{"type": …, "message": …}` error object.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorObject<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub message: Option<Text<'a>>,
}

/// Any stream event's data. `type` names the event (the SSE `event:` line repeats it).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Event<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Text<'a>,
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub message: Option<StartMessage>,
    #[serde(borrow, default)]
    pub content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(borrow, default)]
    pub error: Option<ErrorObject<'a>>,
}

/// A chat `finish_reason` for an Anthropic `stop_reason`.
pub(crate) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // `end_turn`, `stop_sequence`, `pause_turn` (a server tool paused the turn: the answer
        // so far is whole) and anything newer.
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_in_one_pass_borrowing_text() {
        let data = br#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"hi"}}"#;
        let e: Event<'_> = serde_json::from_slice(data).expect("event");
        assert_eq!(&*e.kind, "content_block_delta");
        assert_eq!(e.index, Some(2));
        let text = e.delta.and_then(|d| d.text).expect("text");
        assert!(matches!(text.0, Cow::Borrowed("hi")));

        let data = br#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get","input":{}}}"#;
        let e: Event<'_> = serde_json::from_slice(data).expect("event");
        let block = e.content_block.expect("block");
        assert_eq!(&*block.kind, "tool_use");
        assert_eq!(block.input.map(RawValue::get), Some("{}"));
    }

    #[test]
    fn prompt_tokens_include_the_cache() {
        let u: Usage = serde_json::from_str(
            r#"{"input_tokens":3,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":5}"#,
        )
        .expect("usage");
        assert_eq!(u.prompt_tokens(), Some(113));
        let u: Usage = serde_json::from_str(r#"{"output_tokens":5}"#).expect("usage");
        assert_eq!(u.prompt_tokens(), None);
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("stop_sequence")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(Some("tool_use")), "tool_calls");
        assert_eq!(finish_reason(Some("refusal")), "content_filter");
        assert_eq!(finish_reason(None), "stop");
    }
}
