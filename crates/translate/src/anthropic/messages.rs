//! The Anthropic Messages request as the translators read it: the parts of `messages`,
//! `system` and `tools` that mean something to a chat.completions backend, borrowed from the
//! client's bytes. Every other field of a block (`cache_control`, `citations`, `caller` …) is
//! skipped while reading, so it can never be forwarded.
//!
//! Blocks are read as one flat struct keyed by `type` rather than a tagged enum: serde's tagged
//! enums buffer each block into a tree first, which costs a copy of every base64 image.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::text::{JsonText, RawMap, Str, Text};

/// One entry of `messages`.
#[derive(Debug, Deserialize)]
pub(crate) struct MessageParam<'a> {
    #[serde(borrow)]
    pub role: Str<'a>,
    #[serde(borrow)]
    pub content: Content<'a>,
}

/// A `content` field: the string shorthand or a list of blocks.
#[derive(Debug)]
pub(crate) enum Content<'a> {
    Text(Str<'a>),
    Blocks(Vec<Block<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Str(v.into())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Str(v.to_owned().into())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(block) = seq.next_element()? {
                    blocks.push(block);
                }
                Ok(Content::Blocks(blocks))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A content block of any type; which fields are set depends on `kind`.
#[derive(Debug, Deserialize)]
pub(crate) struct Block<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    /// `text`, kept escaped: most of a request's bytes are text blocks.
    #[serde(borrow, default)]
    pub text: Option<JsonText<'a>>,
    /// `image`, `document`: where the bytes are. (A `search_result`'s `source` is its URL,
    /// a string, read as no source.)
    #[serde(borrow, default, deserialize_with = "object_source")]
    pub source: Option<Source<'a>>,
    /// `tool_use`.
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
    /// `tool_result`.
    #[serde(borrow, default)]
    pub tool_use_id: Option<Str<'a>>,
    #[serde(default)]
    pub is_error: Option<bool>,
    /// `tool_result`, `search_result`, `mid_conv_system`: nested blocks (or a string).
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
    /// `document`, `search_result`.
    #[serde(borrow, default)]
    pub title: Option<Str<'a>>,
    /// `tool_reference` (tool search results).
    #[serde(borrow, default)]
    pub tool_name: Option<Str<'a>>,
}

/// An image or document source.
#[derive(Debug, Deserialize)]
pub(crate) struct Source<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow, default)]
    pub media_type: Option<Str<'a>>,
    /// base64 bytes (`base64`) or the text itself (`text`).
    #[serde(borrow, default)]
    pub data: Option<JsonText<'a>>,
    #[serde(borrow, default)]
    pub url: Option<Str<'a>>,
    /// `content` documents: blocks or a string.
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
}

/// A block's `source` when it is an object; `None` for a string.
fn object_source<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Source<'a>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Source<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a source object or a string")
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Source::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(V)
}

/// One entry of `tools`.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolParam<'a> {
    /// Absent or `custom` for a client tool; a dated name (`web_search_20250305`,
    /// `bash_20250124` …) for the tools Anthropic defines and runs.
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub description: Option<JsonText<'a>>,
    #[serde(borrow, default)]
    pub input_schema: Option<RawMap<'a>>,
}

impl ToolParam<'_> {
    /// Whether a chat backend can be offered this tool: only client tools whose schema the
    /// request carries. Anthropic's own tools run on Anthropic's servers (web search, code
    /// execution) or have a schema only Anthropic knows (bash, text editor, memory).
    pub fn is_client_tool(&self) -> bool {
        self.kind.as_deref().is_none_or(|k| k == "custom")
    }
}

/// `tool_choice`.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolChoice<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

/// `thinking`: `{type: enabled, budget_tokens}`, `{type: adaptive}` or `{type: disabled}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Thinking<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(default)]
    pub budget_tokens: Option<u64>,
    /// `summarized` (default) or `omitted`.
    #[serde(borrow, default)]
    pub display: Option<Str<'a>>,
}

impl Thinking<'_> {
    /// Whether the client asked for thinking to happen.
    pub fn is_on(&self) -> bool {
        matches!(self.kind.as_str(), "enabled" | "adaptive")
    }

    /// Whether the client wants to see the thinking text (`display: omitted` hides it).
    pub fn is_shown(&self) -> bool {
        self.is_on() && self.display.as_deref() != Some("omitted")
    }
}

/// `output_config`: the effort level Claude Code sends, and structured output.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct OutputConfig<'a> {
    #[serde(borrow, default)]
    pub effort: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub format: Option<OutputFormat<'a>>,
}

/// `output_config.format`: `{type: json_schema, schema}`.
#[derive(Debug, Deserialize)]
pub(crate) struct OutputFormat<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow, default)]
    pub schema: Option<&'a RawValue>,
}

/// `metadata`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Metadata<'a> {
    #[serde(borrow, default)]
    pub user_id: Option<Str<'a>>,
}

/// The text of a `system` field or of a block list that may only hold text (system
/// messages): text blocks in order. Other block types carry nothing a system prompt can use.
pub(crate) fn texts<'c, 'a>(content: &'c Content<'a>) -> impl Iterator<Item = Text<'c>> + 'c {
    let (one, many) = match content {
        Content::Text(t) => (Some(Text::plain_str(t.as_str())), None),
        Content::Blocks(blocks) => (None, Some(blocks.iter())),
    };
    one.into_iter().chain(
        many.into_iter()
            .flatten()
            .filter(|b| b.kind.as_str() == "text")
            .filter_map(|b| b.text.map(Text::Json)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_and_block_content() {
        let m: MessageParam<'_> =
            serde_json::from_str(r#"{"role":"user","content":"hi"}"#).expect("message");
        assert!(matches!(m.content, Content::Text(ref t) if t.as_str() == "hi"));
        let m: MessageParam<'_> = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},
                {"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"r"}],"is_error":true}]}"#,
        )
        .expect("message");
        let Content::Blocks(blocks) = &m.content else {
            panic!("blocks expected")
        };
        assert_eq!(blocks[0].kind.as_str(), "text");
        assert_eq!(blocks[1].tool_use_id.as_deref(), Some("t1"));
        assert_eq!(blocks[1].is_error, Some(true));
        assert!(matches!(blocks[1].content, Some(Content::Blocks(ref b)) if b.len() == 1));
        assert!(
            serde_json::from_str::<MessageParam<'_>>(r#"{"role":"user","content":5}"#).is_err()
        );
    }

    #[test]
    fn system_texts_skip_other_blocks() {
        let c: Content<'_> = serde_json::from_str(
            r#"[{"type":"text","text":"a"},{"type":"image","source":{"type":"url","url":"u"}},{"type":"text","text":"b"}]"#,
        )
        .expect("content");
        let texts: Vec<String> = texts(&c).map(|t| t.plain().into_owned()).collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[test]
    fn server_tools_are_not_client_tools() {
        let t: ToolParam<'_> =
            serde_json::from_str(r#"{"type":"web_search_20250305","name":"web_search"}"#)
                .expect("tool");
        assert!(!t.is_client_tool());
        let t: ToolParam<'_> =
            serde_json::from_str(r#"{"name":"Read","input_schema":{"type":"object"}}"#)
                .expect("tool");
        assert!(t.is_client_tool());
    }
}
