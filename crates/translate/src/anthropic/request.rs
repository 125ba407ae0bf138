//! Messages request → chat.completions body.
//!
//! The chat body is built from an allow-list, never by copying the client's body and
//! deleting what is known to be foreign: NIM's schema answers 422 to any field it does not
//! know, and Claude Code adds new fields (`context_management`, `output_config`, …) with its
//! releases. Only `model`, `max_tokens`, `temperature`, `top_p`, `stream` (and `top_k` where
//! the backend takes it) keep their raw bytes; everything else is rewritten.
//!
//! Message shapes follow what vLLM/NIM chat templates accept: the first turn after the system
//! prompt is a user turn, tool results come right after the assistant turn that called them
//! (in the order of its calls), consecutive turns of one role are merged, and turns left with
//! nothing to say are dropped.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use tollgate_core::JsonObject;

use super::messages::{
    texts, Block, Content, MessageParam, Metadata, OutputConfig, Source, Thinking, ToolChoice,
    ToolParam,
};
use super::text::{Joined, JsonText, RawMap, Str, Text};
use crate::{ChatTarget, Reasoning, TranslateError};

/// Fields whose raw value means the same in both protocols.
const KEPT: &[&str] = &["model", "max_tokens", "temperature", "top_p", "stream"];

/// Schema members a chat backend must not see: `$schema` makes some OpenAI-compatible
/// servers' guided-decoding compilers refuse the tool.
const SCHEMA_DROPPED: &[&str] = &["$schema"];

/// The user turn put before a conversation that would otherwise open with the assistant (a
/// tool-result continuation with no system prompt, or a history cut by compaction). Chat
/// templates and OpenAI-compatible servers refuse `[assistant, tool]` (LiteLLM #42473).
pub(crate) const OPENING_USER_TURN: &str = "(earlier conversation omitted)";

/// Text blocks of one turn are joined with a blank line, as separate paragraphs.
const JOIN: &str = "\n\n";

fn joined<'x, 'c>(pieces: &'x [Text<'c>]) -> Joined<'x, 'c> {
    Joined {
        pieces,
        separator: JOIN,
    }
}

/// Translates a Messages request body into a chat.completions body for `target`.
pub fn to_chat(body: &JsonObject, target: &ChatTarget) -> Result<JsonObject, TranslateError> {
    let messages: Vec<MessageParam<'_>> = decode(body, "messages")?
        .ok_or_else(|| TranslateError::new("messages", "messages: field required"))?;
    if messages.is_empty() {
        return Err(TranslateError::new(
            "messages",
            "messages: at least one message is required",
        ));
    }
    let system: Option<Content<'_>> = decode(body, "system")?;
    let tools: Vec<ToolParam<'_>> = decode(body, "tools")?.unwrap_or_default();
    let tool_choice: Option<ToolChoice<'_>> = decode(body, "tool_choice")?;
    let stop: Vec<Str<'_>> = decode(body, "stop_sequences")?.unwrap_or_default();
    let metadata: Metadata<'_> = decode(body, "metadata")?.unwrap_or_default();
    let thinking: Option<Thinking<'_>> = decode(body, "thinking")?;
    let output: OutputConfig<'_> = decode(body, "output_config")?.unwrap_or_default();

    let mut turns = Turns::default();
    if let Some(system) = &system {
        turns.system(texts(system).collect());
    }
    for (i, message) in messages.iter().enumerate() {
        turns.message(i, message)?;
    }
    let turns = turns.finish();

    let mut chat = body.clone();
    chat.retain(|k| KEPT.contains(&k) || (k == "top_k" && target.top_k));
    chat.insert("messages", &turns);

    let offered: Vec<&ToolParam<'_>> = tools.iter().filter(|t| t.is_client_tool()).collect();
    if !offered.is_empty() {
        chat.insert(
            "tools",
            &offered.iter().map(|t| Function(t)).collect::<Vec<_>>(),
        );
    }
    if let Some(choice) = &tool_choice {
        tool_choice_fields(choice, &offered, &mut chat)?;
    }
    let stop: Vec<&str> = stop.iter().map(Str::as_str).collect();
    if !stop.is_empty() {
        chat.insert("stop", &stop);
    }
    if let Some(user) = metadata.user_id.as_deref().filter(|u| !u.is_empty()) {
        chat.insert("user", user);
    }
    if let Some(format) = &output.format {
        if format.kind.as_str() == "json_schema" {
            if let Some(schema) = format.schema {
                chat.insert("response_format", &JsonSchemaFormat(schema));
            }
        }
    }
    reasoning_fields(
        thinking.as_ref(),
        output.effort.as_deref(),
        target,
        &mut chat,
    );
    Ok(chat)
}

/// `key` of `body` decoded as `T`, with the field named in the error.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    body: &'a JsonObject,
    key: &str,
) -> Result<Option<T>, TranslateError> {
    if body.raw(key) == Some(b"null") {
        return Ok(None);
    }
    body.decode(key)
        .map_err(|e| TranslateError::new(key, format!("{key}: {e}")))
}

/// `tool_choice` and `disable_parallel_tool_use`.
fn tool_choice_fields(
    choice: &ToolChoice<'_>,
    offered: &[&ToolParam<'_>],
    chat: &mut JsonObject,
) -> Result<(), TranslateError> {
    let kind = choice.kind.as_str();
    if offered.is_empty() {
        // `auto`/`none` without tools mean "answer in text", which is what happens anyway; a
        // chat upstream refuses a `tool_choice` with no `tools`.
        return match kind {
            "auto" | "none" => Ok(()),
            _ => Err(TranslateError::new(
                "tool_choice",
                format!(
                    "tool_choice `{kind}` needs a tool this backend can run, and `tools` has none"
                ),
            )),
        };
    }
    match kind {
        "auto" => chat.insert_raw_text("tool_choice", r#""auto""#),
        "any" => chat.insert_raw_text("tool_choice", r#""required""#),
        // Kept as `none` with the tools still listed: the model sees them but calls none,
        // as on Anthropic (LiteLLM #24443 answered 500 here).
        "none" => chat.insert_raw_text("tool_choice", r#""none""#),
        "tool" => {
            let name = choice.name.as_deref().ok_or_else(|| {
                TranslateError::new("tool_choice.name", "tool_choice.name: field required")
            })?;
            if !offered.iter().any(|t| t.name.as_str() == name) {
                return Err(TranslateError::new(
                    "tool_choice.name",
                    format!(
                        "tool_choice.name: `{name}` is not among the tools this backend can run"
                    ),
                ));
            }
            chat.insert("tool_choice", &NamedChoice(name));
        }
        other => {
            return Err(TranslateError::new(
                "tool_choice.type",
                format!("tool_choice.type: unknown value `{other}`"),
            ))
        }
    }
    if kind != "none" && choice.disable_parallel_tool_use == Some(true) {
        // OpenAI, vLLM and OpenRouter honour it; the nvidia connector drops it for NIM,
        // whose schema forbids it.
        chat.insert_raw_text("parallel_tool_calls", "false");
    }
    Ok(())
}

/// Maps `thinking` and `output_config.effort` onto the backend's reasoning control.
fn reasoning_fields(
    thinking: Option<&Thinking<'_>>,
    effort: Option<&str>,
    target: &ChatTarget,
    chat: &mut JsonObject,
) {
    match &target.reasoning {
        Reasoning::Drop => {}
        Reasoning::Effort => {
            let level = match (thinking, effort) {
                // Effort backends cannot switch reasoning off; `low` is the least they do.
                (Some(t), _) if t.kind.as_str() == "disabled" => Some("low"),
                (_, Some(e)) => Some(effort_level(e)),
                (Some(t), None) if t.kind.as_str() == "enabled" => {
                    Some(budget_level(t.budget_tokens.unwrap_or(0)))
                }
                (Some(t), None) if t.kind.as_str() == "adaptive" => Some("medium"),
                _ => None,
            };
            if let Some(level) = level {
                chat.insert("reasoning_effort", level);
            }
        }
        Reasoning::TemplateFlag(name) => {
            // No `thinking` field: the model's own default stands.
            if let Some(t) = thinking {
                let kwargs: BTreeMap<&str, bool> = [(name.as_str(), t.is_on())].into();
                chat.insert("chat_template_kwargs", &kwargs);
            }
        }
    }
}

/// Anthropic's effort levels (`low`, `medium`, `high`, `xhigh`, `max`) on OpenAI's three.
fn effort_level(effort: &str) -> &'static str {
    match effort {
        "low" => "low",
        "high" | "xhigh" | "max" => "high",
        _ => "medium",
    }
}

/// A thinking budget as an effort level. Claude Code's own presets were 4 000 ("think"),
/// about 10 000 ("think hard") and 31 999 ("ultrathink") tokens.
fn budget_level(budget: u64) -> &'static str {
    match budget {
        0..=4096 => "low",
        4097..=16384 => "medium",
        _ => "high",
    }
}

/// One chat message being built. Text is kept as pieces so that turns can merge, and is
/// joined only when serialized.
enum Turn<'c> {
    System(Vec<Text<'c>>),
    User(Vec<Piece<'c>>),
    Assistant {
        text: Vec<Text<'c>>,
        calls: Vec<Call<'c>>,
    },
    Tool {
        id: &'c str,
        text: Vec<Text<'c>>,
    },
}

/// Part of a user turn.
enum Piece<'c> {
    Text(Text<'c>),
    /// An image URL (`https://…` or a `data:` URL).
    Image(Cow<'c, str>),
}

/// A tool call of an assistant turn.
struct Call<'c> {
    id: &'c str,
    name: &'c str,
    /// The `input` object as JSON text: OpenAI's `arguments` is a string holding it.
    arguments: &'c str,
}

/// A `tool_result` block waiting for its place.
struct ToolResult<'c> {
    id: &'c str,
    text: Vec<Text<'c>>,
}

/// The chat messages of a request, built turn by turn.
#[derive(Default)]
struct Turns<'c> {
    turns: Vec<Turn<'c>>,
    /// The call ids of the last assistant turn that have not had their results yet.
    pending: Vec<&'c str>,
    /// System turns that came between a call and its result: placed after the results, since
    /// a chat upstream requires the tool messages right after the calls.
    deferred: Vec<Vec<Text<'c>>>,
}

impl<'c> Turns<'c> {
    fn system(&mut self, text: Vec<Text<'c>>) {
        let text: Vec<_> = text.into_iter().filter(|t| !t.is_empty()).collect();
        if text.is_empty() {
            return;
        }
        if !self.pending.is_empty() {
            self.deferred.push(text);
            return;
        }
        match self.turns.last_mut() {
            Some(Turn::System(prev)) => prev.extend(text),
            _ => self.turns.push(Turn::System(text)),
        }
    }

    fn user(&mut self, pieces: Vec<Piece<'c>>) {
        if pieces.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some(Turn::User(prev)) => prev.extend(pieces),
            _ => self.turns.push(Turn::User(pieces)),
        }
    }

    /// Ends the wait for results of the last assistant turn's calls.
    fn settle(&mut self) {
        self.pending.clear();
        for text in std::mem::take(&mut self.deferred) {
            self.system(text);
        }
    }

    fn message(&mut self, i: usize, message: &'c MessageParam<'_>) -> Result<(), TranslateError> {
        match message.role.as_str() {
            // Claude Code sends environment notes as `role: "system"` entries; they stay where
            // they are in the conversation (turning them into user turns changes who speaks).
            "system" => {
                self.system(texts(&message.content).collect());
                Ok(())
            }
            "user" => self.user_message(i, &message.content),
            "assistant" => self.assistant_message(i, &message.content),
            other => Err(TranslateError::new(
                format!("messages[{i}].role"),
                format!("messages[{i}].role: unknown role `{other}`"),
            )),
        }
    }

    fn user_message(&mut self, i: usize, content: &'c Content<'_>) -> Result<(), TranslateError> {
        // The user's own blocks, in order, split where a mid-conversation system block sits.
        let mut segments: Vec<Segment<'c>> = vec![Segment::User(Vec::new())];
        let mut results: Vec<ToolResult<'c>> = Vec::new();
        // Images returned by tools: tool messages carry text only, so they go first in the
        // user turn that follows the results.
        let mut tool_images: Vec<Piece<'c>> = Vec::new();
        match content {
            Content::Text(t) => push_text(&mut segments, t),
            Content::Blocks(blocks) => {
                for (j, block) in blocks.iter().enumerate() {
                    let at = || format!("messages[{i}].content[{j}]");
                    match block.kind.as_str() {
                        "tool_result" => {
                            let id = block
                                .tool_use_id
                                .as_deref()
                                .ok_or_else(|| missing(&format!("{}.tool_use_id", at())))?;
                            let mut text = Vec::new();
                            if block.is_error == Some(true) {
                                // chat.completions has no error flag on tool messages; the
                                // model still has to know the call failed.
                                text.push(Text::plain_str("[tool error]"));
                            }
                            if let Some(content) = &block.content {
                                tool_result_content(content, &at(), &mut text, &mut tool_images)?;
                            }
                            results.push(ToolResult { id, text });
                        }
                        "mid_conv_system" => {
                            let text: Vec<_> = block.content.iter().flat_map(texts).collect();
                            segments.push(Segment::System(text));
                            segments.push(Segment::User(Vec::new()));
                        }
                        _ => {
                            if let Some(Segment::User(pieces)) = segments.last_mut() {
                                user_block(block, &at(), pieces)?;
                            }
                        }
                    }
                }
            }
        }

        // Results answering the last assistant turn's calls become tool messages, in the
        // order of the calls; a result for no pending call (a history cut before its call)
        // would be refused as a tool message, so it is told as user text instead.
        let (mut answers, orphans): (Vec<_>, Vec<_>) = results
            .into_iter()
            .partition(|r| self.pending.contains(&r.id));
        answers.sort_by_key(|r| self.pending.iter().position(|id| *id == r.id));
        for answer in answers {
            self.turns.push(Turn::Tool {
                id: answer.id,
                text: answer.text,
            });
        }
        self.settle();
        let mut lead = tool_images;
        for orphan in orphans {
            let result = Joined {
                pieces: &orphan.text,
                separator: JOIN,
            };
            lead.push(Piece::Text(Text::Plain(Cow::Owned(format!(
                "Result of tool call {}:\n{}",
                orphan.id,
                result.plain()
            )))));
        }
        if let Some(Segment::User(first)) = segments.first_mut() {
            lead.append(first);
            *first = lead;
        }
        for segment in segments {
            match segment {
                Segment::User(pieces) => self.user(pieces),
                Segment::System(text) => self.system(text),
            }
        }
        Ok(())
    }

    fn assistant_message(
        &mut self,
        i: usize,
        content: &'c Content<'_>,
    ) -> Result<(), TranslateError> {
        self.settle();
        let mut text = Vec::new();
        let mut calls = Vec::new();
        match content {
            Content::Text(t) if !t.is_empty() => text.push(Text::plain_str(t.as_str())),
            Content::Text(_) => {}
            Content::Blocks(blocks) => {
                for (j, block) in blocks.iter().enumerate() {
                    let at = || format!("messages[{i}].content[{j}]");
                    match block.kind.as_str() {
                        "text" => {
                            if let Some(t) = block.text.filter(|t| !t.is_empty()) {
                                text.push(Text::Json(t));
                            }
                        }
                        "tool_use" => calls.push(Call {
                            id: block
                                .id
                                .as_deref()
                                .ok_or_else(|| missing(&format!("{}.id", at())))?,
                            name: block
                                .name
                                .as_deref()
                                .ok_or_else(|| missing(&format!("{}.name", at())))?,
                            arguments: block.input.map_or("{}", RawValue::get),
                        }),
                        kind if is_history_only(kind) => {}
                        other => return Err(unsupported(&at(), other, "assistant")),
                    }
                }
            }
        }
        if text.is_empty() && calls.is_empty() {
            // An assistant turn of thinking alone: an empty assistant message breaks
            // templates and says nothing.
            return Ok(());
        }
        self.pending = calls.iter().map(|c| c.id).collect();
        match self.turns.last_mut() {
            Some(Turn::Assistant {
                text: prev_text,
                calls: prev_calls,
            }) if prev_calls.is_empty() => {
                prev_text.extend(text);
                *prev_calls = calls;
            }
            _ => self.turns.push(Turn::Assistant { text, calls }),
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Turn<'c>> {
        self.settle();
        let first = self
            .turns
            .iter()
            .position(|t| !matches!(t, Turn::System(_)));
        let opening = Turn::User(vec![Piece::Text(Text::plain_str(OPENING_USER_TURN))]);
        match first {
            Some(at) if !matches!(self.turns[at], Turn::User(_)) => {
                self.turns.insert(at, opening);
            }
            Some(_) => {}
            None => self.turns.push(opening),
        }
        self.turns
    }
}

/// A stretch of one user message: its own blocks, or a mid-conversation system block.
enum Segment<'c> {
    User(Vec<Piece<'c>>),
    System(Vec<Text<'c>>),
}

fn push_text<'c>(segments: &mut [Segment<'c>], text: &'c Str<'_>) {
    if let (Some(Segment::User(pieces)), false) = (segments.last_mut(), text.is_empty()) {
        pieces.push(Piece::Text(Text::plain_str(text.as_str())));
    }
}

/// Blocks of past turns that a chat backend has no use for: thinking (its signature means
/// something to Anthropic only) and the calls and results of Anthropic's server tools, which
/// the backend could not have run.
fn is_history_only(kind: &str) -> bool {
    matches!(
        kind,
        "thinking"
            | "redacted_thinking"
            | "server_tool_use"
            | "web_search_tool_result"
            | "web_fetch_tool_result"
            | "code_execution_tool_result"
            | "bash_code_execution_tool_result"
            | "text_editor_code_execution_tool_result"
            | "tool_search_tool_result"
            | "mcp_tool_use"
            | "mcp_tool_result"
            | "container_upload"
    )
}

/// Adds one block of a user turn (anything but `tool_result`).
fn user_block<'c>(
    block: &'c Block<'_>,
    at: &str,
    pieces: &mut Vec<Piece<'c>>,
) -> Result<(), TranslateError> {
    match block.kind.as_str() {
        "text" => {
            if let Some(t) = block.text.filter(|t| !t.is_empty()) {
                pieces.push(Piece::Text(Text::Json(t)));
            }
        }
        "image" => pieces.push(Piece::Image(image_url(block.source.as_ref(), at)?)),
        "document" => document(block, at, pieces)?,
        "search_result" => search_result(block, pieces),
        "tool_use" => {
            return Err(TranslateError::new(
                format!("{at}.type"),
                format!("{at}.type: tool_use blocks belong in assistant messages"),
            ))
        }
        kind if is_history_only(kind) => {}
        other => return Err(unsupported(at, other, "user")),
    }
    Ok(())
}

/// A `tool_result`'s content: text joined for the tool message, images set aside.
fn tool_result_content<'c>(
    content: &'c Content<'_>,
    at: &str,
    text: &mut Vec<Text<'c>>,
    images: &mut Vec<Piece<'c>>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        Content::Text(t) => {
            text.push(Text::plain_str(t.as_str()));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    for (k, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{k}]");
        match block.kind.as_str() {
            "image" => images.push(Piece::Image(image_url(block.source.as_ref(), &at)?)),
            // Tool search answers name the tools it loaded; the chat backend already has
            // every tool's schema in `tools`, so the name is what the model needs.
            "tool_reference" => {
                if let Some(name) = block.tool_name.as_deref() {
                    text.push(Text::Plain(Cow::Owned(format!("Tool loaded: {name}"))));
                }
            }
            _ => {
                let mut pieces = Vec::new();
                user_block(block, &at, &mut pieces)?;
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => text.push(t),
                        image @ Piece::Image(_) => images.push(image),
                    }
                }
            }
        }
    }
    Ok(())
}

/// A `document` block as text. PDFs cannot be read by a chat.completions backend, so they are
/// refused rather than silently dropped.
fn document<'c>(
    block: &'c Block<'_>,
    at: &str,
    pieces: &mut Vec<Piece<'c>>,
) -> Result<(), TranslateError> {
    let source = block
        .source
        .as_ref()
        .ok_or_else(|| missing(&format!("{at}.source")))?;
    if let Some(title) = block.title.as_deref().filter(|t| !t.is_empty()) {
        pieces.push(Piece::Text(Text::plain_str(title)));
    }
    match (source.kind.as_str(), source.data, &source.content) {
        ("text", Some(data), _) => pieces.push(Piece::Text(Text::Json(data))),
        ("content", _, Some(content)) => {
            pieces.extend(texts(content).filter(|t| !t.is_empty()).map(Piece::Text))
        }
        (kind, _, _) => {
            return Err(TranslateError::new(
                format!("{at}.source.type"),
                format!(
                    "{at}.source.type: `{kind}` documents cannot be sent to a chat.completions backend; send the text instead"
                ),
            ))
        }
    }
    Ok(())
}

/// A `search_result` block: its title and text.
fn search_result<'c>(block: &'c Block<'_>, pieces: &mut Vec<Piece<'c>>) {
    if let Some(title) = block.title.as_deref() {
        pieces.push(Piece::Text(Text::plain_str(title)));
    }
    if let Some(content) = &block.content {
        pieces.extend(texts(content).filter(|t| !t.is_empty()).map(Piece::Text));
    }
}

/// An image source as the URL `image_url` takes: base64 data becomes a `data:` URL.
fn image_url<'c>(source: Option<&'c Source<'_>>, at: &str) -> Result<Cow<'c, str>, TranslateError> {
    let source = source.ok_or_else(|| missing(&format!("{at}.source")))?;
    match source.kind.as_str() {
        "base64" => {
            let media = source
                .media_type
                .as_deref()
                .ok_or_else(|| missing(&format!("{at}.source.media_type")))?;
            let data = source
                .data
                .ok_or_else(|| missing(&format!("{at}.source.data")))?
                .plain();
            Ok(Cow::Owned(format!("data:{media};base64,{data}")))
        }
        "url" => source
            .url
            .as_deref()
            .map(Cow::Borrowed)
            .ok_or_else(|| missing(&format!("{at}.source.url"))),
        other => Err(TranslateError::new(
            format!("{at}.source.type"),
            format!("{at}.source.type: `{other}` image sources cannot be sent to a chat.completions backend"),
        )),
    }
}

fn missing(param: &str) -> TranslateError {
    TranslateError::new(param, format!("{param}: field required"))
}

fn unsupported(at: &str, kind: &str, role: &str) -> TranslateError {
    TranslateError::new(
        format!("{at}.type"),
        format!("{at}.type: `{kind}` blocks in {role} messages are not supported by this backend"),
    )
}

impl Serialize for Turn<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        match self {
            Turn::System(text) => {
                m.serialize_entry("role", "system")?;
                m.serialize_entry("content", &joined(text))?;
            }
            Turn::User(pieces) => {
                m.serialize_entry("role", "user")?;
                if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
                    // Plain text as a string: older NIM templates read `content` as a string only.
                    let text: Vec<Text<'_>> = pieces
                        .iter()
                        .filter_map(|p| match p {
                            Piece::Text(t) => Some(t.clone()),
                            Piece::Image(_) => None,
                        })
                        .collect();
                    m.serialize_entry("content", &joined(&text))?;
                } else {
                    m.serialize_entry("content", pieces)?;
                }
            }
            Turn::Assistant { text, calls } => {
                m.serialize_entry("role", "assistant")?;
                if !text.is_empty() {
                    m.serialize_entry("content", &joined(text))?;
                }
                if !calls.is_empty() {
                    m.serialize_entry("tool_calls", calls)?;
                }
            }
            Turn::Tool { id, text } => {
                m.serialize_entry("role", "tool")?;
                m.serialize_entry("tool_call_id", id)?;
                m.serialize_entry("content", &joined(text))?;
            }
        }
        m.end()
    }
}

impl Serialize for Piece<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(2))?;
        match self {
            Piece::Text(text) => {
                m.serialize_entry("type", "text")?;
                m.serialize_entry("text", &joined(std::slice::from_ref(text)))?;
            }
            Piece::Image(url) => {
                m.serialize_entry("type", "image_url")?;
                m.serialize_entry("image_url", &Url { url })?;
            }
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Url<'x> {
    url: &'x str,
}

impl Serialize for Call<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Call", 3)?;
        s.serialize_field("id", self.id)?;
        s.serialize_field("type", "function")?;
        s.serialize_field(
            "function",
            &FunctionCall {
                name: self.name,
                arguments: self.arguments,
            },
        )?;
        s.end()
    }
}

#[derive(Serialize)]
struct FunctionCall<'x> {
    name: &'x str,
    arguments: &'x str,
}

/// A client tool as a chat function.
struct Function<'x, 'a>(&'x ToolParam<'a>);

impl Serialize for Function<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Def<'x, 'a> {
            name: &'x str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<JsonText<'a>>,
            parameters: Parameters<'x, 'a>,
        }
        let tool = self.0;
        let mut s = serializer.serialize_struct("Function", 2)?;
        s.serialize_field("type", "function")?;
        s.serialize_field(
            "function",
            &Def {
                name: tool.name.as_str(),
                description: tool.description,
                parameters: Parameters(tool.input_schema.as_ref()),
            },
        )?;
        s.end()
    }
}

/// A tool's `input_schema` without the members chat backends refuse; a tool without one takes
/// no arguments.
struct Parameters<'x, 'a>(Option<&'x RawMap<'a>>);

impl Serialize for Parameters<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(schema) => schema.without(SCHEMA_DROPPED).serialize(serializer),
            None => {
                let mut m = serializer.serialize_map(Some(2))?;
                m.serialize_entry("type", "object")?;
                m.serialize_entry("properties", &BTreeMap::<(), ()>::new())?;
                m.end()
            }
        }
    }
}

/// `{"type":"function","function":{"name":…}}`.
struct NamedChoice<'x>(&'x str);

impl Serialize for NamedChoice<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Name<'x> {
            name: &'x str,
        }
        let mut s = serializer.serialize_struct("NamedChoice", 2)?;
        s.serialize_field("type", "function")?;
        s.serialize_field("function", &Name { name: self.0 })?;
        s.end()
    }
}

/// `output_config.format` as OpenAI structured output.
struct JsonSchemaFormat<'x>(&'x RawValue);

impl Serialize for JsonSchemaFormat<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Schema<'x> {
            name: &'static str,
            schema: &'x RawValue,
        }
        let mut s = serializer.serialize_struct("ResponseFormat", 2)?;
        s.serialize_field("type", "json_schema")?;
        s.serialize_field(
            "json_schema",
            &Schema {
                name: "output",
                schema: self.0,
            },
        )?;
        s.end()
    }
}
