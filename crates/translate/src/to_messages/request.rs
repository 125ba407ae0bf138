//! A chat.completions request → an Anthropic Messages request.
//!
//! Anthropic validates strictly: an unknown top-level field, an empty text block, two turns
//! of the same role in a row, a `tool_result` not answering the `tool_use` just before it, or
//! a missing `max_tokens` is a 400. So the Messages body is built field by field from what
//! this module understands; nothing of the chat body is forwarded blindly. What cannot be
//! said in Messages (`n > 1`, `logprobs`, audio, legacy `functions`) is refused with a 400
//! naming the field, rather than answered differently from what the client asked.
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

/// `max_tokens` when the chat request has none: Anthropic requires it, OpenAI does not.
/// 4096 is the largest output every Claude model accepts (Claude 3 Haiku's maximum).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// `reasoning_effort` → Anthropic's `thinking.budget_tokens`. `none` asks for no thinking.
pub const THINKING_BUDGETS: &[(&str, u64)] = &[
    ("minimal", 1024),
    ("low", 4096),
    ("medium", 8192),
    ("high", 16384),
    ("xhigh", 24576),
    ("max", 32768),
];

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Output tokens kept for the answer itself when a client's `max_tokens` must also hold the
/// thinking (Anthropic counts thinking inside `max_tokens`, as OpenAI counts reasoning inside
/// `max_completion_tokens`).
pub const ANSWER_RESERVE: u64 = 1024;

/// Translates a chat.completions request body into a Messages request body.
pub fn from_chat(body: &JsonObject) -> Result<JsonObject, TranslateError> {
    refuse_unsayable(body)?;
    let model = match body.decode::<String>("model") {
        Ok(Some(m)) => m,
        _ => return Err(TranslateError::new("model", "`model` must be a string")),
    };
    let Conversation { system, turns } = conversation(body)?;
    let tools = tools(body)?;
    let choice = if tools.is_empty() {
        // OpenAI accepts a `tool_choice` with no tools; Anthropic does not.
        None
    } else {
        tool_choice(body)?
    };

    let asked = decode_opt::<u64>(body, "max_completion_tokens")?
        .or(decode_opt::<u64>(body, "max_tokens")?);
    let mut budget = thinking_budget(body)?;
    // Anthropic refuses thinking with forced tool use, and with an assistant turn that called
    // tools unless that turn starts with a signed thinking block — which a chat history
    // cannot carry back. Tool use is what the client asked for; thinking is a quality knob.
    if choice.as_ref().is_some_and(|c| c.forces_tool_use())
        || turns
            .iter()
            .rev()
            .find(|t| t.role == Role::Assistant)
            .is_some_and(Turn::uses_tools)
    {
        budget = None;
    }
    let (max_tokens, budget) = match (asked, budget) {
        (None, None) => (DEFAULT_MAX_TOKENS, None),
        (None, Some(b)) => (b + DEFAULT_MAX_TOKENS, Some(b)),
        (Some(n), None) => (n, None),
        (Some(n), Some(b)) => {
            let room = n.saturating_sub(ANSWER_RESERVE);
            if room >= MIN_THINKING_BUDGET {
                (n, Some(b.min(room)))
            } else {
                (n, None)
            }
        }
    };

    let mut out = JsonObject::default();
    out.insert("model", &model);
    if !system.is_empty() {
        out.insert("system", &system.join("\n\n"));
    }
    out.insert("messages", &turns);
    out.insert("max_tokens", &max_tokens);
    if let Some(stop) = stop_sequences(body)? {
        out.insert("stop_sequences", &stop);
    }
    // Anthropic samples with temperature 0..1 (OpenAI 0..2), and with thinking on it accepts
    // only the default temperature and a top_p of at least 0.95.
    if let Some(t) = decode_opt::<f64>(body, "temperature")? {
        if budget.is_none() {
            out.insert("temperature", &t.clamp(0.0, 1.0));
        }
    }
    if let Some(p) = decode_opt::<f64>(body, "top_p")? {
        let p = p.clamp(0.0, 1.0);
        if budget.is_none() || p >= 0.95 {
            out.insert("top_p", &p);
        }
    }
    if !tools.is_empty() {
        out.insert("tools", &tools);
    }
    if let Some(choice) = &choice {
        out.insert("tool_choice", choice);
    }
    let user = match decode_opt::<String>(body, "user")? {
        Some(u) => Some(u),
        None => decode_opt::<String>(body, "safety_identifier")?,
    };
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        out.insert("metadata", &Metadata { user_id: &user });
    }
    if let Some(budget) = budget {
        out.insert(
            "thinking",
            &Thinking {
                kind: "enabled",
                budget_tokens: budget,
            },
        );
    }
    if decode_opt::<bool>(body, "stream")? == Some(true) {
        out.insert_raw_text("stream", "true");
    }
    Ok(out)
}

/// Requests Messages has no way to express.
fn refuse_unsayable(body: &JsonObject) -> Result<(), TranslateError> {
    if decode_opt::<u64>(body, "n")?.is_some_and(|n| n > 1) {
        return Err(TranslateError::new(
            "n",
            "`n` > 1 is not supported by this backend (Anthropic Messages answers one choice)",
        ));
    }
    if decode_opt::<bool>(body, "logprobs")? == Some(true) {
        return Err(TranslateError::new(
            "logprobs",
            "`logprobs` is not supported by this backend (Anthropic Messages has no log probabilities)",
        ));
    }
    if decode_opt::<u64>(body, "top_logprobs")?.is_some_and(|n| n > 0) {
        return Err(TranslateError::new(
            "top_logprobs",
            "`top_logprobs` is not supported by this backend (Anthropic Messages has no log probabilities)",
        ));
    }
    if present(body, "audio")
        || decode_opt::<Vec<String>>(body, "modalities")?
            .is_some_and(|m| m.iter().any(|m| m == "audio"))
    {
        return Err(TranslateError::new(
            "audio",
            "audio output is not supported by this backend",
        ));
    }
    for legacy in ["functions", "function_call"] {
        if present(body, legacy) {
            return Err(TranslateError::new(
                legacy,
                format!("`{legacy}` (the legacy function-calling API) is not supported by this backend; use `tools`"),
            ));
        }
    }
    Ok(())
}

/// Whether `key` is present with a value other than `null`.
fn present(body: &JsonObject, key: &str) -> bool {
    body.raw(key).is_some_and(|raw| raw != b"null")
}

/// `key` decoded as `T`; `null` and absence read as `None`, another type is a 400.
fn decode_opt<'a, T: Deserialize<'a>>(
    body: &'a JsonObject,
    key: &str,
) -> Result<Option<T>, TranslateError> {
    body.decode::<Option<T>>(key)
        .map(Option::flatten)
        .map_err(|e| TranslateError::new(key, format!("`{key}` has the wrong type: {e}")))
}

fn thinking_budget(body: &JsonObject) -> Result<Option<u64>, TranslateError> {
    let Some(effort) = decode_opt::<String>(body, "reasoning_effort")? else {
        return Ok(None);
    };
    if effort == "none" {
        return Ok(None);
    }
    match THINKING_BUDGETS.iter().find(|(name, _)| *name == effort) {
        Some((_, budget)) => Ok(Some(*budget)),
        None => Err(TranslateError::new(
            "reasoning_effort",
            format!("`reasoning_effort` `{effort}` is not one of none, minimal, low, medium, high, xhigh, max"),
        )),
    }
}

fn stop_sequences(body: &JsonObject) -> Result<Option<Vec<String>>, TranslateError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }
    let stops = match decode_opt::<Stop>(body, "stop")? {
        None => return Ok(None),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    // An empty stop sequence would stop nothing; Anthropic refuses it.
    let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    Ok((!stops.is_empty()).then_some(stops))
}

#[derive(serde::Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(serde::Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

// ---------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

/// One Messages turn: chat messages of the same role in a row are merged into one, as
/// Anthropic requires the roles to alternate.
struct Turn<'a> {
    role: Role,
    blocks: Vec<Block<'a>>,
}

impl Turn<'_> {
    fn uses_tools(&self) -> bool {
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
enum Json<'a> {
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

struct Conversation<'a> {
    system: Vec<Cow<'a, str>>,
    turns: Vec<Turn<'a>>,
}

fn conversation(body: &JsonObject) -> Result<Conversation<'_>, TranslateError> {
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
fn unescape<'a>(raw: &'a RawValue, at: &str) -> Result<Cow<'a, str>, TranslateError> {
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

// ---------------------------------------------------------------------------------------
// Tools

#[derive(Deserialize)]
struct ChatTool<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    function: Option<FunctionDef<'a>>,
}

#[derive(Deserialize)]
struct FunctionDef<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    description: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

#[derive(serde::Serialize)]
struct Tool<'a> {
    name: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a RawValue>,
    input_schema: Json<'a>,
}

fn tools(body: &JsonObject) -> Result<Vec<Tool<'_>>, TranslateError> {
    let Some(raw) = body.get("tools").filter(|r| *r != "null") else {
        return Ok(Vec::new());
    };
    let list: Vec<ChatTool<'_>> = serde_json::from_str(raw).map_err(|e| {
        TranslateError::new("tools", format!("`tools` must be an array of tools: {e}"))
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        match tool.kind.as_deref() {
            Some("function") | None => {}
            Some(other) => {
                return Err(TranslateError::new(
                    format!("{at}.type"),
                    format!("tools of type `{other}` are not supported by this backend"),
                ))
            }
        }
        let f = tool.function.ok_or_else(|| {
            TranslateError::new(
                format!("{at}.function"),
                format!("`{at}.function` is required"),
            )
        })?;
        let name = f.name.filter(|n| n.get().starts_with('"')).ok_or_else(|| {
            TranslateError::new(
                format!("{at}.function.name"),
                format!("`{at}.function.name` must be a string"),
            )
        })?;
        out.push(Tool {
            name,
            description: f.description.filter(|d| d.get().starts_with('"')),
            input_schema: input_schema(f.parameters, &format!("{at}.function.parameters"))?,
        });
    }
    Ok(out)
}

/// A function's `parameters` as Anthropic's `input_schema`, which must be an object schema
/// with `"type": "object"` (OpenAI lets `parameters` be absent for a function without any).
fn input_schema<'a>(raw: Option<&'a RawValue>, at: &str) -> Result<Json<'a>, TranslateError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type", default)]
        kind: Option<IgnoredAny>,
    }
    let empty = Json::Text(Cow::Borrowed(r#"{"type":"object","properties":{}}"#));
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(empty);
    };
    if !raw.get().starts_with('{') {
        return Err(TranslateError::new(
            at,
            format!("`{at}` must be a JSON schema object"),
        ));
    }
    let probe: Probe = serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::new(at, format!("`{at}`: {e}")))?;
    if probe.kind.is_some() {
        return Ok(Json::Raw(raw));
    }
    let inner = raw.get()[1..].trim_start();
    if inner.starts_with('}') {
        return Ok(empty);
    }
    Ok(Json::Text(Cow::Owned(format!(
        r#"{{"type":"object",{inner}"#
    ))))
}

/// Anthropic's `tool_choice`.
#[derive(serde::Serialize)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

impl ToolChoice {
    fn forces_tool_use(&self) -> bool {
        matches!(self.kind, "any" | "tool")
    }
}

fn tool_choice(body: &JsonObject) -> Result<Option<ToolChoice>, TranslateError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Choice {
        Mode(String),
        Named {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            function: Option<Named>,
        },
    }
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let parallel = decode_opt::<bool>(body, "parallel_tool_calls")?;
    let disable_parallel = parallel == Some(false);
    let choice = match decode_opt::<Choice>(body, "tool_choice")? {
        None => {
            return Ok(disable_parallel.then_some(ToolChoice {
                kind: "auto",
                name: None,
                disable_parallel_tool_use: true,
            }))
        }
        Some(c) => c,
    };
    let (kind, name) = match choice {
        Choice::Mode(mode) => match mode.as_str() {
            "auto" => ("auto", None),
            "none" => ("none", None),
            "required" => ("any", None),
            other => {
                return Err(TranslateError::new(
                    "tool_choice",
                    format!("`tool_choice` `{other}` is not one of auto, none, required"),
                ))
            }
        },
        Choice::Named { kind, function } if kind == "function" => {
            let name = function.map(|f| f.name).ok_or_else(|| {
                TranslateError::new(
                    "tool_choice.function.name",
                    "`tool_choice.function.name` is required",
                )
            })?;
            ("tool", Some(name))
        }
        Choice::Named { kind, .. } => {
            return Err(TranslateError::new(
                "tool_choice.type",
                format!("`tool_choice` of type `{kind}` is not supported by this backend"),
            ))
        }
    };
    Ok(Some(ToolChoice {
        kind,
        name,
        // `none` takes no options.
        disable_parallel_tool_use: disable_parallel && kind != "none",
    }))
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

    #[test]
    fn budgets_are_at_least_anthropics_minimum() {
        assert!(THINKING_BUDGETS
            .iter()
            .all(|(_, b)| *b >= MIN_THINKING_BUDGET));
    }
}
