//! The chat `messages` → Messages `system` and turns: roles mapped and merged so they
//! alternate, content parts → content blocks, tool calls → `tool_use`, tool messages →
//! `tool_result`, and the rules Anthropic enforces on a conversation (no blank text, the
//! user's turn first, tool results first in their turn, no trailing white space in a prefill).
//!
//! Text travels as the client's raw JSON strings wherever it is not changed, so a long prompt
//! is scanned, not unescaped and escaped again.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::ser::{Serialize, Serializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_core::JsonObject;

use super::wire::Text;
use crate::TranslateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    User,
    Assistant,
}

/// One Messages turn: chat messages of the same role in a row are merged into one, as
/// Anthropic requires the roles to alternate.
pub(super) struct Turn<'a> {
    pub role: Role,
    blocks: Vec<Block<'a>>,
}

impl Turn<'_> {
    pub fn uses_tools(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
    }
}

impl Serialize for Turn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Turn", 2)?;
        st.serialize_field(
            "role",
            match self.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
        )?;
        st.serialize_field("content", &self.blocks)?;
        st.end()
    }
}

/// A content block of the Messages request.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: Str<'a>,
    },
    Image {
        source: Source<'a>,
    },
    Document {
        source: Source<'a>,
    },
    ToolUse {
        id: String,
        name: Str<'a>,
        input: Json<'a>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolContent<'a>>,
    },
}

#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source<'a> {
    Base64 {
        media_type: &'static str,
        data: Cow<'a, str>,
    },
    Url {
        url: Cow<'a, str>,
    },
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum ToolContent<'a> {
    Text(Str<'a>),
    Blocks(Vec<Block<'a>>),
}

/// A JSON string: the client's own text (raw, escapes and all) or one written here.
enum Str<'a> {
    Raw(&'a RawValue),
    Owned(String),
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Str::Raw(raw) => raw.serialize(s),
            Str::Owned(text) => s.serialize_str(text),
        }
    }
}

/// A JSON value: the client's raw text, or text written here.
pub(super) enum Json<'a> {
    Raw(&'a RawValue),
    Owned(Box<RawValue>),
    Text(Cow<'static, str>),
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Raw(raw) => raw.serialize(s),
            Json::Owned(raw) => raw.serialize(s),
            Json::Text(text) => match RawValue::from_string(text.to_string()) {
                Ok(raw) => raw.serialize(s),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
        }
    }
}

/// What a chat message says, loosely read: the shapes that vary are kept raw and checked
/// where the error can name the field.
#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Text<'a>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    tool_call_id: Option<Text<'a>>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    function: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// One content part of a chat message.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image_url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    file: Option<FilePart<'a>>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(borrow)]
    url: Text<'a>,
}

#[derive(Deserialize)]
struct FilePart<'a> {
    #[serde(borrow, default)]
    file_data: Option<Text<'a>>,
}

pub(super) struct Conversation<'a> {
    pub system: Vec<Cow<'a, str>>,
    pub turns: Vec<Turn<'a>>,
}

pub(super) fn conversation(body: &JsonObject) -> Result<Conversation<'_>, TranslateError> {
    let raw = body
        .get("messages")
        .ok_or_else(|| TranslateError::new("messages", "`messages` is required"))?;
    let messages: Vec<&RawValue> = serde_json::from_str(raw).map_err(|e| {
        TranslateError::new("messages", format!("`messages` must be an array: {e}"))
    })?;
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::new();
    for (i, raw) in messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let m: ChatMessage<'_> = serde_json::from_str(raw.get()).map_err(|e| {
            TranslateError::new(at.clone(), format!("`{at}` is not a chat message: {e}"))
        })?;
        let role = m.role.as_deref().unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(system_texts(m.content, &at)?);
                continue;
            }
            "user" => (Role::User, user_blocks(m.content, &at)?),
            "assistant" => {
                if m.function_call.is_some() {
                    return Err(TranslateError::new(
                        format!("{at}.function_call"),
                        "`function_call` (the legacy function-calling API) is not supported by this backend; use `tool_calls`",
                    ));
                }
                (Role::Assistant, assistant_blocks(&m, &at)?)
            }
            "tool" => (Role::User, vec![tool_result(&m, &at)?]),
            "function" => {
                return Err(TranslateError::new(
                    format!("{at}.role"),
                    "`function` messages (the legacy function-calling API) are not supported by this backend; use `tool` messages",
                ))
            }
            other => {
                return Err(TranslateError::new(
                    format!("{at}.role"),
                    format!("`{at}.role` `{other}` is not one of system, developer, user, assistant, tool"),
                ))
            }
        };
        if blocks.is_empty() {
            // Anthropic refuses empty turns; an empty message says nothing anyway.
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    for turn in &mut turns {
        if turn.role == Role::User {
            // In a user turn, tool results must come before any other content (a client may
            // put a user message between an assistant's tool calls and their results).
            turn.blocks
                .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
        }
    }
    if turns.first().is_some_and(|t| t.role == Role::Assistant) {
        // Anthropic's first turn must be the user's; a chat may open with the assistant's
        // greeting.
        turns.insert(
            0,
            Turn {
                role: Role::User,
                blocks: vec![Block::Text {
                    text: Str::Owned(".".to_owned()),
                }],
            },
        );
    }
    trim_final_assistant(&mut turns)?;
    if turns.is_empty() {
        return Err(TranslateError::new(
            "messages",
            "`messages` must hold at least one user or assistant message with content",
        ));
    }
    Ok(Conversation { system, turns })
}

/// A final assistant turn is a prefill, which Anthropic refuses when it ends in white space.
fn trim_final_assistant(turns: &mut Vec<Turn<'_>>) -> Result<(), TranslateError> {
    let Some(last) = turns.last_mut().filter(|t| t.role == Role::Assistant) else {
        return Ok(());
    };
    if let Some(Block::Text { text }) = last.blocks.last_mut() {
        let full = match text {
            Str::Raw(raw) => unescape(raw, "messages")?.into_owned(),
            Str::Owned(s) => std::mem::take(s),
        };
        let trimmed = full.trim_end();
        if trimmed.is_empty() {
            last.blocks.pop();
        } else {
            *text = Str::Owned(trimmed.to_owned());
        }
    }
    if last.blocks.is_empty() {
        turns.pop();
    }
    Ok(())
}

/// The text of a JSON string.
pub(super) fn unescape<'a>(raw: &'a RawValue, at: &str) -> Result<Cow<'a, str>, TranslateError> {
    serde_json::from_str::<Text<'a>>(raw.get())
        .map(|t| t.0)
        .map_err(|_| TranslateError::new(at, format!("`{at}` must be a string")))
}

/// A text block for a raw JSON string, or `None` when it is blank (Anthropic refuses text
/// blocks without a non-white-space character).
fn text_block<'a>(raw: &'a RawValue, at: &str) -> Result<Option<Block<'a>>, TranslateError> {
    if unescape(raw, at)?.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(Block::Text {
        text: Str::Raw(raw),
    }))
}

/// The parts of an array `content`, or `None` for a string or `null`.
fn parts<'a>(content: &'a RawValue, at: &str) -> Result<Vec<Part<'a>>, TranslateError> {
    serde_json::from_str(content.get()).map_err(|e| {
        TranslateError::new(
            format!("{at}.content"),
            format!("`{at}.content` must be a string or an array of content parts: {e}"),
        )
    })
}

fn part_kind<'p>(part: &'p Part<'_>, at: &str) -> Result<&'p str, TranslateError> {
    part.kind.as_deref().ok_or_else(|| {
        TranslateError::new(format!("{at}.type"), format!("`{at}.type` is required"))
    })
}

fn system_texts<'a>(
    content: Option<&'a RawValue>,
    at: &str,
) -> Result<Vec<Cow<'a, str>>, TranslateError> {
    let Some(content) = content.filter(|c| c.get() != "null") else {
        return Ok(Vec::new());
    };
    if content.get().starts_with('"') {
        let text = unescape(content, &format!("{at}.content"))?;
        return Ok(if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![text]
        });
    }
    let mut texts = Vec::new();
    for (j, part) in parts(content, at)?.into_iter().enumerate() {
        let pat = format!("{at}.content[{j}]");
        match part_kind(&part, &pat)? {
            "text" => {
                let raw = part.text.ok_or_else(|| {
                    TranslateError::new(format!("{pat}.text"), format!("`{pat}.text` is required"))
                })?;
                let text = unescape(raw, &format!("{pat}.text"))?;
                if !text.trim().is_empty() {
                    texts.push(text);
                }
            }
            other => {
                return Err(TranslateError::new(
                    format!("{pat}.type"),
                    format!("a system message may hold only text parts, not `{other}`"),
                ))
            }
        }
    }
    Ok(texts)
}

fn user_blocks<'a>(
    content: Option<&'a RawValue>,
    at: &str,
) -> Result<Vec<Block<'a>>, TranslateError> {
    let Some(content) = content.filter(|c| c.get() != "null") else {
        return Ok(Vec::new());
    };
    if content.get().starts_with('"') {
        return Ok(text_block(content, &format!("{at}.content"))?
            .into_iter()
            .collect());
    }
    let mut blocks = Vec::new();
    for (j, part) in parts(content, at)?.into_iter().enumerate() {
        let pat = format!("{at}.content[{j}]");
        if let Some(block) = user_part(part, &pat)? {
            blocks.push(block);
        }
    }
    Ok(blocks)
}

/// One user content part; also the parts of a tool result.
fn user_part<'a>(part: Part<'a>, at: &str) -> Result<Option<Block<'a>>, TranslateError> {
    match part_kind(&part, at)? {
        "text" => {
            let raw = part.text.ok_or_else(|| {
                TranslateError::new(format!("{at}.text"), format!("`{at}.text` is required"))
            })?;
            text_block(raw, &format!("{at}.text"))
        }
        "image_url" => {
            let field = format!("{at}.image_url");
            let raw = part.image_url.ok_or_else(|| {
                TranslateError::new(field.clone(), format!("`{field}` is required"))
            })?;
            // `{"url": …}` per OpenAI; some clients send the URL as a bare string.
            let url = if raw.get().starts_with('"') {
                serde_json::from_str::<Text<'a>>(raw.get()).ok()
            } else {
                serde_json::from_str::<ImageUrl<'a>>(raw.get())
                    .ok()
                    .map(|i| i.url)
            };
            let url = url.ok_or_else(|| {
                TranslateError::new(
                    format!("{field}.url"),
                    format!("`{field}.url` must be a string"),
                )
            })?;
            Ok(Some(Block::Image {
                source: image_source(url, &format!("{field}.url"))?,
            }))
        }
        "file" => {
            let field = format!("{at}.file.file_data");
            let data = part.file.and_then(|f| f.file_data).ok_or_else(|| {
                TranslateError::new(
                    field.clone(),
                    "only files given inline as `file_data` (a PDF data URL) are supported by this backend",
                )
            })?;
            let (media_type, data) = data_url(data, &field)?;
            if media_type != "application/pdf" {
                return Err(TranslateError::new(
                    field,
                    format!(
                        "files of type `{media_type}` are not supported by this backend (PDF only)"
                    ),
                ));
            }
            Ok(Some(Block::Document {
                source: Source::Base64 {
                    media_type: "application/pdf",
                    data,
                },
            }))
        }
        "input_audio" => Err(TranslateError::new(
            format!("{at}.type"),
            "audio input is not supported by this backend",
        )),
        other => Err(TranslateError::new(
            format!("{at}.type"),
            format!("content parts of type `{other}` are not supported by this backend"),
        )),
    }
}

/// An image URL as Anthropic takes it: a data URL becomes a base64 source, an http(s) URL a
/// url source.
fn image_source<'a>(url: Text<'a>, at: &str) -> Result<Source<'a>, TranslateError> {
    if url.starts_with("data:") {
        let (media_type, data) = data_url(url, at)?;
        // `image/jpg` is not a registered type but browsers and SDKs write it.
        let media_type = match media_type.as_str() {
            "image/jpeg" | "image/jpg" => "image/jpeg",
            "image/png" => "image/png",
            "image/gif" => "image/gif",
            "image/webp" => "image/webp",
            other => {
                return Err(TranslateError::new(
                    at,
                    format!("images of type `{other}` are not supported by this backend (jpeg, png, gif, webp)"),
                ))
            }
        };
        return Ok(Source::Base64 { media_type, data });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Source::Url { url: url.0 });
    }
    Err(TranslateError::new(
        at,
        format!("`{at}` must be an http(s) URL or a base64 data URL"),
    ))
}

/// `data:<media type>;base64,<data>` → the media type (lower case) and the data.
fn data_url<'a>(url: Text<'a>, at: &str) -> Result<(String, Cow<'a, str>), TranslateError> {
    let bad = || {
        TranslateError::new(
            at,
            format!("`{at}` must be a base64 data URL (`data:<type>;base64,<data>`)"),
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(bad)?;
    let comma = rest.find(',').ok_or_else(bad)?;
    let header = &rest[..comma];
    let media_type = header
        .strip_suffix(";base64")
        .ok_or_else(bad)?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let start = "data:".len() + comma + 1;
    let data = match url.0 {
        Cow::Borrowed(s) => Cow::Borrowed(&s[start..]),
        Cow::Owned(s) => Cow::Owned(s[start..].to_owned()),
    };
    Ok((media_type, data))
}

fn assistant_blocks<'a>(m: &ChatMessage<'a>, at: &str) -> Result<Vec<Block<'a>>, TranslateError> {
    let mut blocks = Vec::new();
    if let Some(content) = m.content.filter(|c| c.get() != "null") {
        if content.get().starts_with('"') {
            blocks.extend(text_block(content, &format!("{at}.content"))?);
        } else {
            for (j, part) in parts(content, at)?.into_iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                let raw = match part_kind(&part, &pat)? {
                    "text" => part.text,
                    // A refusal the assistant gave stays what it said.
                    "refusal" => part.refusal,
                    other => {
                        return Err(TranslateError::new(
                            format!("{pat}.type"),
                            format!("an assistant message may hold only text and refusal parts, not `{other}`"),
                        ))
                    }
                };
                let raw = raw.ok_or_else(|| {
                    TranslateError::new(pat.clone(), format!("`{pat}` has no text"))
                })?;
                blocks.extend(text_block(raw, &pat)?);
            }
        }
    }
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let cat = format!("{at}.tool_calls[{j}]");
        if let Some(kind) = call.kind.as_deref().filter(|k| *k != "function") {
            return Err(TranslateError::new(
                format!("{cat}.type"),
                format!("tool calls of type `{kind}` are not supported by this backend"),
            ));
        }
        let id = call
            .id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                TranslateError::new(format!("{cat}.id"), format!("`{cat}.id` is required"))
            })?;
        let function = call.function.as_ref().ok_or_else(|| {
            TranslateError::new(
                format!("{cat}.function"),
                format!("`{cat}.function` is required"),
            )
        })?;
        let name = function
            .name
            .filter(|n| n.get().starts_with('"'))
            .ok_or_else(|| {
                TranslateError::new(
                    format!("{cat}.function.name"),
                    format!("`{cat}.function.name` must be a string"),
                )
            })?;
        blocks.push(Block::ToolUse {
            id: tool_id(id),
            name: Str::Raw(name),
            input: arguments(function.arguments, &format!("{cat}.function.arguments"))?,
        });
    }
    Ok(blocks)
}

/// Tool-call arguments (a JSON string holding a JSON object, per OpenAI) → the `input`
/// object. Also read: an object given directly (Ollama and some servers), and an empty string
/// or `null` for a call without arguments.
fn arguments<'a>(raw: Option<&'a RawValue>, at: &str) -> Result<Json<'a>, TranslateError> {
    let empty = Json::Text(Cow::Borrowed("{}"));
    let Some(raw) = raw else {
        return Ok(empty);
    };
    let text = raw.get();
    if text == "null" {
        return Ok(empty);
    }
    if text.starts_with('{') {
        return Ok(Json::Raw(raw));
    }
    let inner = unescape(raw, at)?;
    if inner.trim().is_empty() {
        return Ok(empty);
    }
    let parsed: Box<RawValue> = serde_json::from_str(&inner)
        .map_err(|e| TranslateError::new(at, format!("`{at}` is not valid JSON: {e}")))?;
    match parsed.get().trim_start().as_bytes().first() {
        Some(b'{') => Ok(Json::Owned(parsed)),
        Some(b'n') => Ok(empty),
        _ => Err(TranslateError::new(
            at,
            format!("`{at}` must be a JSON object"),
        )),
    }
}

/// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`; ids from other servers (`functions.get:0`)
/// have other characters. The same rewrite applies to a `tool_use` and its `tool_result`, so
/// the pair still matches.
fn tool_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn tool_result<'a>(m: &ChatMessage<'a>, at: &str) -> Result<Block<'a>, TranslateError> {
    let id = m
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            TranslateError::new(
                format!("{at}.tool_call_id"),
                format!("`{at}.tool_call_id` is required in a tool message"),
            )
        })?;
    let content = match m.content.filter(|c| c.get() != "null") {
        None => None,
        Some(c) if c.get().starts_with('"') => {
            // An empty result is sent without content (an empty text is refused).
            if unescape(c, &format!("{at}.content"))?.trim().is_empty() {
                None
            } else {
                Some(ToolContent::Text(Str::Raw(c)))
            }
        }
        Some(c) => {
            let mut blocks = Vec::new();
            for (j, part) in parts(c, at)?.into_iter().enumerate() {
                blocks.extend(user_part(part, &format!("{at}.content[{j}]"))?);
            }
            (!blocks.is_empty()).then_some(ToolContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult {
        tool_use_id: tool_id(id),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_serialize_verbatim_inside_tagged_blocks() {
        let raw: &RawValue = serde_json::from_str(r#""h\u00e9 \"x\"""#).expect("raw");
        let block = Block::Text {
            text: Str::Raw(raw),
        };
        assert_eq!(
            serde_json::to_string(&block).expect("json"),
            r#"{"type":"text","text":"h\u00e9 \"x\""}"#
        );
    }

    #[test]
    fn tool_ids_keep_to_anthropics_alphabet() {
        assert_eq!(tool_id("call_abc-123"), "call_abc-123");
        assert_eq!(tool_id("functions.get:0"), "functions_get_0");
    }
}
