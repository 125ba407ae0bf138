//! The chat.completions wire types the translators read: a whole answer and a stream chunk.
//!
//! Strings borrow from the upstream's bytes where they have no escapes, so reading a chunk
//! costs one scan. Fields servers disagree on are read leniently: `reasoning_content` (vLLM,
//! NIM, DeepSeek) and `reasoning` (OpenRouter, newer vLLM) are both reasoning text; a tool
//! call's `arguments` may arrive as a JSON string (OpenAI) or as an object (Ollama and some
//! OpenAI-compatible servers); a tool-call delta without `index` takes its position.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_core::Usage;

/// One `chat.completion.chunk` event.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub delta: Delta<'a>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// What one chunk adds to the message.
#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub role: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCallDelta<'a>>,
}

impl<'a> Delta<'a> {
    /// The reasoning text of this delta, whichever field the server uses.
    pub fn reasoning_text(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// A fragment of one tool call. The first fragment of a call usually carries `id` and
/// `function.name`; later ones only `function.arguments` text to append.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta<'a> {
    /// Which call of the message this fragment belongs to; `None` when the server left it out.
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub arguments: Option<Arguments<'a>>,
}

/// A whole `chat.completion` answer.
#[derive(Debug, Default, Deserialize)]
pub struct Completion<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub message: Message<'a>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCall<'a>>,
}

impl<'a> Message<'a> {
    /// The reasoning text of the message, whichever field the server uses.
    pub fn reasoning_text(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionCall<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub arguments: Option<Arguments<'a>>,
}

/// Tool-call arguments as JSON text: a JSON string is unescaped (OpenAI sends the arguments
/// object as a string), any other JSON value is kept as its raw text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Arguments<'a>(pub Cow<'a, str>);

impl<'a> Arguments<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Arguments<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            let s: Cow<'de, str> = Text::deserialize_from(text).map_err(de::Error::custom)?;
            Ok(Arguments(s))
        } else if text == "null" {
            Ok(Arguments(Cow::Borrowed("")))
        } else {
            Ok(Arguments(Cow::Borrowed(text)))
        }
    }
}

/// A JSON string, borrowed when it has no escapes.
struct Text;

impl Text {
    fn deserialize_from(json: &str) -> Result<Cow<'_, str>, serde_json::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        de::Deserializer::deserialize_str(&mut de, V)
    }
}

/// An optional JSON string, borrowed from the input when it has no escapes (serde's own
/// `Option<Cow<str>>` always copies).
fn opt_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    deserializer.deserialize_option(V)
}

/// `null` reads as the type's default (servers send `"choices": null`, `"delta": null` …).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl<'a> Chunk<'a> {
    /// Reads one chunk's data; `None` when it is not a JSON object of this shape.
    pub fn read(data: &'a [u8]) -> Option<Chunk<'a>> {
        // Validated as UTF-8 once, then read as text: `from_slice` validates every string it
        // meets again. Invalid UTF-8 fails either way.
        serde_json::from_str(std::str::from_utf8(data).ok()?).ok()
    }
}

impl<'a> Completion<'a> {
    /// Reads a whole answer; `None` when it is not a JSON object of this shape.
    pub fn read(body: &'a [u8]) -> Option<Completion<'a>> {
        // As `Chunk::read`: UTF-8 validated once.
        serde_json::from_str(std::str::from_utf8(body).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_content_chunk_borrowing_its_text() {
        let data = br#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let c = Chunk::read(data).expect("chunk");
        assert_eq!(c.id.as_deref(), Some("c1"));
        let d = &c.choices[0].delta;
        assert!(matches!(d.content, Some(Cow::Borrowed("hi"))));
        assert!(c.choices[0].finish_reason.is_none());
    }

    #[test]
    fn reads_tool_call_fragments_and_lenient_fields() {
        let data = br#"{"choices":[{"delta":{"reasoning":"think","tool_calls":[{"id":"call_1","function":{"name":"f","arguments":"{\"a\":"}},{"index":1,"function":{"arguments":{"b":2}}}]},"finish_reason":null}],"usage":null}"#;
        let c = Chunk::read(data).expect("chunk");
        let d = &c.choices[0].delta;
        assert_eq!(d.reasoning_text(), Some("think"));
        assert_eq!(d.tool_calls[0].index, None);
        assert_eq!(
            d.tool_calls[0]
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .map(Arguments::as_str),
            Some("{\"a\":")
        );
        assert_eq!(
            d.tool_calls[1]
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .map(Arguments::as_str),
            Some(r#"{"b":2}"#)
        );
        assert!(Chunk::read(br#"{"choices":null,"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#)
            .expect("usage chunk")
            .usage
            .is_some());
    }

    #[test]
    fn reads_a_whole_answer() {
        let body = br#"{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let c = Completion::read(body).expect("answer");
        let m = &c.choices[0].message;
        assert!(m.content.is_none());
        assert_eq!(m.tool_calls[0].function.name, "get");
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.usage.map(|u| u.total_tokens), Some(3));
    }
}
