//! A Responses request → a chat.completions body that a strict upstream (hosted NIM's schema,
//! which answers 422 to any field it does not know) accepts. Fields with a chat equivalent are
//! mapped; the rest are dropped, and stateful features a chat backend cannot provide
//! (`previous_response_id`, `conversation`, `background`, stored `prompt`s) are refused with a
//! 400 rather than silently ignored. `docs/translation-responses.md` has the full table.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tollgate_core::JsonObject;

use super::tools::{self, ClientTool, Kind, Planned, ToolMap};
use super::ReasoningParam;
use crate::{ChatTarget, Reasoning, TranslateError};

/// Translates a Responses request body into a chat.completions body for `target`.
///
/// `model` is copied as the client sent it; the server replaces it with the backend's model
/// after routing, as for any request.
pub fn to_chat(body: &JsonObject, target: &ChatTarget) -> Result<JsonObject, TranslateError> {
    refuse_stateful(body)?;
    let defs = tools::read(body)?;
    let planned = tools::plan(&defs)?;
    let map = ToolMap::new(&planned);

    let mut chat = JsonObject::default();
    copy(body, &mut chat, "model", "model")?;

    let messages = messages(body, &map)?;
    if messages.is_empty() {
        return Err(TranslateError::new(
            "input",
            "input is required: send the conversation as `input` (a string or a list of items)",
        ));
    }
    chat.insert("messages", &messages);

    let (tools, choice) = tools_and_choice(body, &planned, &map)?;
    if !tools.is_empty() {
        chat.insert("tools", &tools);
        if let Some(choice) = choice {
            chat.insert("tool_choice", &choice);
        }
    }
    // `parallel_tool_calls` is validated but never sent: strict schemas (NIM) forbid it, and
    // `false` is enforced on the way back instead (see `ReplyContext::single_call`).
    if let Some(v) = raw(body, "parallel_tool_calls") {
        if v != "true" && v != "false" {
            return Err(TranslateError::new(
                "parallel_tool_calls",
                "parallel_tool_calls must be a boolean",
            ));
        }
    }

    // `max_output_tokens` is chat's `max_tokens` (what every chat server knows; the NIM
    // connector would rename `max_completion_tokens` to it anyway).
    if let Some(v) = raw(body, "max_output_tokens") {
        if serde_json::from_str::<u64>(v).is_err() {
            return Err(TranslateError::new(
                "max_output_tokens",
                "max_output_tokens must be a positive integer",
            ));
        }
        copy(body, &mut chat, "max_output_tokens", "max_tokens")?;
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = raw(body, key) {
            if serde_json::from_str::<f64>(v).is_err() {
                return Err(TranslateError::new(key, format!("{key} must be a number")));
            }
            copy(body, &mut chat, key, key)?;
        }
    }
    if let Some(format) = response_format(body)? {
        chat.insert("response_format", &format);
    }
    reasoning(body, target, &mut chat)?;
    if let Some(v) = raw(body, "user") {
        if !v.starts_with('"') {
            return Err(TranslateError::new("user", "user must be a string"));
        }
        copy(body, &mut chat, "user", "user")?;
    }
    if let Some(v) = raw(body, "stream") {
        if v != "true" && v != "false" {
            return Err(TranslateError::new("stream", "stream must be a boolean"));
        }
        copy(body, &mut chat, "stream", "stream")?;
    }
    Ok(chat)
}

/// The raw JSON of `key`, `null` read as absent.
fn raw<'a>(body: &'a JsonObject, key: &str) -> Option<&'a str> {
    body.get(key).filter(|v| *v != "null")
}

/// Copies `from`'s raw value to `to`.
fn copy(
    body: &JsonObject,
    chat: &mut JsonObject,
    from: &str,
    to: &str,
) -> Result<(), TranslateError> {
    if let Some(value) = body
        .decode::<&RawValue>(from)
        .map_err(|e| TranslateError::new(from, e))?
    {
        chat.insert(to, value);
    }
    Ok(())
}

/// Features that need state a chat backend does not keep.
fn refuse_stateful(body: &JsonObject) -> Result<(), TranslateError> {
    const STATEFUL: &[(&str, &str)] = &[
        (
            "previous_response_id",
            "previous_response_id is not supported for this model: its backend speaks \
             chat.completions and keeps no stored responses. Send the whole conversation in \
             `input` (with `store: false`).",
        ),
        (
            "conversation",
            "conversation is not supported for this model: its backend keeps no stored \
             conversations. Send the whole conversation in `input`.",
        ),
        (
            "prompt",
            "prompt (a stored prompt template) is not supported for this model: its backend \
             keeps no stored prompts. Send the instructions and input instead.",
        ),
    ];
    for (key, message) in STATEFUL {
        if raw(body, key).is_some() {
            return Err(TranslateError::new(*key, *message));
        }
    }
    if raw(body, "background") == Some("true") {
        return Err(TranslateError::new(
            "background",
            "background responses are not supported for this model: its backend keeps no \
             stored responses to poll.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Messages

/// One chat message as sent upstream.
#[derive(Serialize)]
struct Message {
    role: &'static str,
    content: Content,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<Call>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Serialize)]
struct ImageUrl {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Serialize)]
struct Call {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CallFunction,
}

#[derive(Serialize)]
struct CallFunction {
    name: String,
    arguments: String,
}

/// One `input` item, read leniently: which fields matter depends on `type`.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(default)]
    input: Option<String>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
}

/// One content part of a message or a tool output.
#[derive(Deserialize)]
struct InPart {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// Content reduced to what chat carries.
enum Piece {
    Text(String),
    Image(ImageUrl),
}

/// Item types whose content cannot be replayed to a chat backend and is dropped: reasoning
/// (no chat field takes earlier reasoning back; open-weight chat templates drop earlier turns'
/// reasoning themselves, and `encrypted_content` is OpenAI's alone), Codex's compaction
/// summaries (encrypted), and calls of built-in tools, which this backend never had.
const DROPPED_ITEMS: &[&str] = &[
    "reasoning",
    "compaction",
    "compaction_summary",
    "web_search_call",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "tool_search_call",
    "tool_search_output",
];

/// `instructions` and `input` as chat messages.
fn messages(body: &JsonObject, map: &ToolMap) -> Result<Vec<Message>, TranslateError> {
    let mut out = Messages::default();
    match raw(body, "instructions") {
        None => {}
        Some(v) if v.starts_with('"') => {
            let text =
                json_string(v).map_err(|e| TranslateError::new("instructions", e.to_string()))?;
            out.push_system(text);
        }
        Some(_) => {
            return Err(TranslateError::new(
                "instructions",
                "instructions must be a string",
            ))
        }
    }
    match raw(body, "input") {
        None => {}
        Some(v) if v.starts_with('"') => {
            let text = json_string(v).map_err(|e| TranslateError::new("input", e.to_string()))?;
            out.messages.push(Message::text("user", text));
        }
        Some(v) => {
            let items: Vec<Item<'_>> = serde_json::from_str(v).map_err(|e| {
                TranslateError::new(
                    "input",
                    format!("input must be a string or a list of items: {e}"),
                )
            })?;
            for (i, item) in items.iter().enumerate() {
                out.item(item, i, map)?;
            }
        }
    }
    out.flush_images();
    Ok(out.messages)
}

/// A JSON string value of the body as text. Without a backslash it has no escapes, so its
/// text is what lies between the quotes (the body's values are checked JSON).
fn json_string(v: &str) -> Result<String, serde_json::Error> {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inside) if !inside.contains('\\') => Ok(inside.to_owned()),
        _ => serde_json::from_str(v),
    }
}

impl Message {
    fn text(role: &'static str, text: String) -> Message {
        Message {
            role,
            content: Content::Text(text),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// The chat conversation being built.
#[derive(Default)]
struct Messages {
    messages: Vec<Message>,
    /// Which assistant message (by position) carries each call id, so its output lands right
    /// after it.
    calls: HashMap<String, usize>,
    /// Images from tool outputs: chat's `tool` messages carry text only, so they follow the
    /// tool messages in a user message.
    images: Vec<Part>,
}

impl Messages {
    /// A system message; consecutive ones merge (instructions plus Codex's developer
    /// messages), since Llama- and Mistral-family chat templates refuse a second system
    /// message.
    fn push_system(&mut self, text: String) {
        if let Some(Message {
            role: "system",
            content: Content::Text(previous),
            ..
        }) = self.messages.last_mut()
        {
            previous.push_str("\n\n");
            previous.push_str(&text);
            return;
        }
        self.messages.push(Message::text("system", text));
    }

    fn item(&mut self, item: &Item<'_>, i: usize, map: &ToolMap) -> Result<(), TranslateError> {
        let path = format!("input[{i}]");
        let kind = match item.kind.as_deref() {
            Some(kind) => kind,
            // Easy input messages (`{"role":"user","content":"hi"}`) have no type.
            None if item.role.is_some() => "message",
            None => {
                return Err(TranslateError::new(
                    format!("{path}.type"),
                    "an input item needs a type",
                ))
            }
        };
        let is_output = matches!(kind, "function_call_output" | "custom_tool_call_output");
        if !is_output {
            self.flush_images();
        }
        match kind {
            "message" => self.message(item, &path),
            "function_call" => {
                let arguments = match item.arguments.map(RawValue::get) {
                    None | Some("null") => String::new(),
                    Some(v) if v.starts_with('"') => serde_json::from_str(v).map_err(|e| {
                        TranslateError::new(format!("{path}.arguments"), e.to_string())
                    })?,
                    // Lenient: some clients send the arguments object itself.
                    Some(v) => v.to_owned(),
                };
                self.call(item, &path, map, arguments)
            }
            "custom_tool_call" => {
                let input = item.input.clone().unwrap_or_default();
                let arguments =
                    serde_json::to_string(&CustomArguments { input: &input }).unwrap_or_default();
                self.call(item, &path, map, arguments)
            }
            "function_call_output" | "custom_tool_call_output" => self.output(item, &path),
            "item_reference" => Err(TranslateError::new(
                format!("{path}.type"),
                "item_reference is not supported for this model: its backend keeps no stored \
                 items. Send the item itself.",
            )),
            other if DROPPED_ITEMS.contains(&other) => Ok(()),
            other => Err(TranslateError::new(
                format!("{path}.type"),
                format!("input items of type `{other}` are not supported for this model"),
            )),
        }
    }

    fn message(&mut self, item: &Item<'_>, path: &str) -> Result<(), TranslateError> {
        let role = match item.role.as_deref() {
            Some("user") => "user",
            Some("assistant") => "assistant",
            // Chat has no developer role on most servers; it is the system prompt.
            Some("system") | Some("developer") => "system",
            other => {
                return Err(TranslateError::new(
                    format!("{path}.role"),
                    format!("unknown message role {other:?}"),
                ))
            }
        };
        let pieces = pieces(item.content, &format!("{path}.content"))?;
        if role == "user" && pieces.iter().any(|p| matches!(p, Piece::Image(_))) {
            let parts = pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Text(text) => Part::Text { text },
                    Piece::Image(image_url) => Part::ImageUrl { image_url },
                })
                .collect();
            self.messages.push(Message {
                role,
                content: Content::Parts(parts),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
            return Ok(());
        }
        let text = text_only(pieces, role, &format!("{path}.content"))?;
        if role == "system" {
            self.push_system(text);
        } else {
            self.messages.push(Message::text(role, text));
        }
        Ok(())
    }

    /// A call joins the assistant message just before it (the same turn's text, or the
    /// previous call: consecutive calls are one chat message), else starts one.
    fn call(
        &mut self,
        item: &Item<'_>,
        path: &str,
        map: &ToolMap,
        arguments: String,
    ) -> Result<(), TranslateError> {
        let call_id = item
            .call_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                TranslateError::new(format!("{path}.call_id"), "a call needs a call_id")
            })?;
        let name = item
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| TranslateError::new(format!("{path}.name"), "a call needs a name"))?;
        let call = Call {
            id: call_id.clone(),
            kind: "function",
            function: CallFunction {
                name: map.history_name(item.namespace.as_deref(), name),
                // Chat templates parse the arguments as JSON: an empty string would fail.
                arguments: if arguments.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    arguments
                },
            },
        };
        let at = match self.messages.last_mut() {
            Some(last) if last.role == "assistant" => {
                last.tool_calls.push(call);
                self.messages.len() - 1
            }
            _ => {
                self.messages.push(Message {
                    role: "assistant",
                    // "" rather than null: chat templates that test `content is string`
                    // would otherwise iterate over None.
                    content: Content::Text(String::new()),
                    tool_calls: vec![call],
                    tool_call_id: None,
                });
                self.messages.len() - 1
            }
        };
        self.calls.insert(call_id, at);
        Ok(())
    }

    /// A tool output becomes a `tool` message right after its call's assistant message (after
    /// the outputs already there). An output whose call is not in the conversation (Codex
    /// keeps outputs whose calls were compacted away) becomes a user message: chat servers
    /// refuse a `tool` message without its call.
    fn output(&mut self, item: &Item<'_>, path: &str) -> Result<(), TranslateError> {
        let call_id = item
            .call_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                TranslateError::new(format!("{path}.call_id"), "an output needs a call_id")
            })?;
        let pieces = output_pieces(item.output, &format!("{path}.output"))?;
        let mut texts = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => texts.push(t),
                Piece::Image(image_url) => {
                    if self.images.is_empty() {
                        self.images.push(Part::Text {
                            text: format!("Images returned by tool call {call_id}:"),
                        });
                    }
                    self.images.push(Part::ImageUrl { image_url });
                }
            }
        }
        let text = texts.join("\n");
        let Some(&at) = self.calls.get(&call_id) else {
            self.messages.push(Message::text(
                "user",
                format!("Output of tool call {call_id}:\n{text}"),
            ));
            return Ok(());
        };
        let mut position = at + 1;
        while self
            .messages
            .get(position)
            .is_some_and(|m| m.role == "tool")
        {
            position += 1;
        }
        self.messages.insert(
            position,
            Message {
                role: "tool",
                content: Content::Text(text),
                tool_calls: Vec::new(),
                tool_call_id: Some(call_id),
            },
        );
        // Messages after the insertion point moved one place on.
        for index in self.calls.values_mut() {
            if *index >= position {
                *index += 1;
            }
        }
        Ok(())
    }

    fn flush_images(&mut self) {
        if !self.images.is_empty() {
            let parts = std::mem::take(&mut self.images);
            self.messages.push(Message {
                role: "user",
                content: Content::Parts(parts),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
    }
}

#[derive(Serialize)]
struct CustomArguments<'a> {
    input: &'a str,
}

/// A message's content: a string, or a list of parts.
fn pieces(content: Option<&RawValue>, path: &str) -> Result<Vec<Piece>, TranslateError> {
    let Some(content) = content.map(RawValue::get).filter(|c| *c != "null") else {
        return Ok(Vec::new());
    };
    if content.starts_with('"') {
        let text: String =
            serde_json::from_str(content).map_err(|e| TranslateError::new(path, e.to_string()))?;
        return Ok(vec![Piece::Text(text)]);
    }
    let parts: Vec<InPart> = serde_json::from_str(content).map_err(|e| {
        TranslateError::new(
            path,
            format!("content must be a string or a list of parts: {e}"),
        )
    })?;
    parts
        .into_iter()
        .enumerate()
        .map(|(j, part)| piece(part, &format!("{path}[{j}]")))
        .collect()
}

fn piece(part: InPart, path: &str) -> Result<Piece, TranslateError> {
    match part.kind.as_deref() {
        Some("input_text") | Some("output_text") | Some("text") => {
            Ok(Piece::Text(part.text.unwrap_or_default()))
        }
        // A refusal the model gave earlier is what it said: the text carries it on.
        Some("refusal") => Ok(Piece::Text(part.refusal.or(part.text).unwrap_or_default())),
        Some("input_image") => match (part.image_url, part.file_id) {
            (Some(url), _) => Ok(Piece::Image(ImageUrl {
                url,
                detail: part.detail,
            })),
            (None, Some(_)) => Err(TranslateError::new(
                format!("{path}.file_id"),
                "images by file_id are not supported for this model: its backend has no file \
                 storage. Send the image as image_url (a URL or a data: URL).",
            )),
            (None, None) => Err(TranslateError::new(
                format!("{path}.image_url"),
                "an input_image needs an image_url",
            )),
        },
        other => Err(TranslateError::new(
            format!("{path}.type"),
            format!("content parts of type {other:?} are not supported for this model"),
        )),
    }
}

/// Text-only content as one string: parts joined by newlines, as vLLM joins text parts for
/// templates that expect a string.
fn text_only(pieces: Vec<Piece>, role: &str, path: &str) -> Result<String, TranslateError> {
    let mut texts = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => texts.push(t),
            Piece::Image(_) => {
                return Err(TranslateError::new(
                    path,
                    format!("images are only supported in user messages, not in {role} messages"),
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// A tool output: a string, a list of parts, or (older Codex) `{"content": "…"}`.
fn output_pieces(output: Option<&RawValue>, path: &str) -> Result<Vec<Piece>, TranslateError> {
    let Some(text) = output.map(RawValue::get).filter(|o| *o != "null") else {
        return Ok(Vec::new());
    };
    if text.starts_with('{') {
        #[derive(Deserialize)]
        struct Wrapped {
            #[serde(default)]
            content: Option<String>,
        }
        let wrapped: Wrapped =
            serde_json::from_str(text).map_err(|e| TranslateError::new(path, e.to_string()))?;
        return Ok(wrapped.content.map(Piece::Text).into_iter().collect());
    }
    pieces(output, path)
}

// ---------------------------------------------------------------------------------------
// Tools

#[derive(Serialize)]
struct ChatTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ChatFunction<'a>,
}

#[derive(Serialize)]
struct ChatFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    parameters: Parameters<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Parameters<'a> {
    Raw(&'a RawValue),
    Object(ObjectSchema),
}

/// A JSON schema for an object: empty for parameterless functions (servers that render
/// tools into a prompt require `parameters`), one string `input` for a freeform tool.
#[derive(Serialize)]
struct ObjectSchema {
    #[serde(rename = "type")]
    kind: &'static str,
    properties: Properties,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    required: Vec<&'static str>,
    #[serde(
        rename = "additionalProperties",
        skip_serializing_if = "Option::is_none"
    )]
    additional_properties: Option<bool>,
}

#[derive(Serialize)]
struct Properties {
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<StringSchema>,
}

#[derive(Serialize)]
struct StringSchema {
    #[serde(rename = "type")]
    kind: &'static str,
    description: &'static str,
}

/// The chat `tool_choice`.
#[derive(Serialize)]
#[serde(untagged)]
enum ChatChoice {
    Mode(String),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: ChoiceName,
    },
}

#[derive(Serialize)]
struct ChoiceName {
    name: String,
}

/// `tool_choice` as the request gives it (object form).
#[derive(Deserialize)]
struct ToolChoice {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    tools: Vec<ToolChoice>,
}

fn tools_and_choice<'p>(
    body: &JsonObject,
    planned: &'p [Planned<'p, 'p>],
    map: &ToolMap,
) -> Result<(Vec<ChatTool<'p>>, Option<ChatChoice>), TranslateError> {
    let given = raw(body, "tool_choice");
    let object: Option<ToolChoice> = match given {
        Some(v) if v.starts_with('{') => Some(
            serde_json::from_str(v)
                .map_err(|e| TranslateError::new("tool_choice", e.to_string()))?,
        ),
        _ => None,
    };
    let chat_choice = match (given, &object) {
        (None, _) => None,
        (Some(_), Some(c)) => Some(object_choice(c, map)?),
        (Some(v), None) => {
            let mode: String = serde_json::from_str(v)
                .map_err(|e| TranslateError::new("tool_choice", e.to_string()))?;
            if !matches!(mode.as_str(), "auto" | "none" | "required") {
                return Err(TranslateError::new(
                    "tool_choice",
                    format!("unknown tool_choice {mode:?}: use auto, none or required"),
                ));
            }
            Some(ChatChoice::Mode(mode))
        }
    };
    // Chat's own `allowed_tools` is OpenAI-only; the same effect everywhere is to send only
    // the allowed tools.
    let allowed = object
        .as_ref()
        .filter(|c| c.kind.as_deref() == Some("allowed_tools"))
        .map(|c| &c.tools);
    let tools = planned
        .iter()
        .filter(|p| {
            allowed.is_none_or(|allowed| {
                allowed.iter().any(|a| {
                    a.name.as_deref() == Some(p.tool.name.as_str())
                        && (a.namespace.is_none() || a.namespace == p.tool.namespace)
                })
            })
        })
        .map(chat_tool)
        .collect();
    Ok((tools, chat_choice))
}

/// An object `tool_choice`: one named tool, or a subset of the tools.
fn object_choice(c: &ToolChoice, map: &ToolMap) -> Result<ChatChoice, TranslateError> {
    match c.kind.as_deref() {
        Some("function") | Some("custom") => {
            let name = c.name.as_deref().unwrap_or_default();
            let tool = find(map, c.namespace.as_deref(), name).ok_or_else(|| {
                TranslateError::new(
                    "tool_choice.name",
                    format!("tool_choice names {name:?}, which is not among the tools"),
                )
            })?;
            Ok(ChatChoice::Function {
                kind: "function",
                function: ChoiceName {
                    name: tool.chat_name.clone(),
                },
            })
        }
        Some("allowed_tools") => {
            let mode = c.mode.clone().unwrap_or_else(|| "auto".to_owned());
            if !matches!(mode.as_str(), "auto" | "required") {
                return Err(TranslateError::new(
                    "tool_choice.mode",
                    "allowed_tools mode must be auto or required",
                ));
            }
            Ok(ChatChoice::Mode(mode))
        }
        other => Err(TranslateError::new(
            "tool_choice.type",
            format!(
                "tool_choice {other:?} names a built-in tool, which this model's backend \
                 cannot run"
            ),
        )),
    }
}

/// A tool by its declared name: in `namespace` when given, else a top-level one, else the
/// only namespaced one of that name.
fn find<'m>(map: &'m ToolMap, namespace: Option<&str>, name: &str) -> Option<&'m ClientTool> {
    map.by_client(namespace, name).or_else(|| {
        namespace
            .is_none()
            .then(|| map.by_name_anywhere(name))
            .flatten()
    })
}

fn chat_tool<'p>(p: &'p Planned<'p, 'p>) -> ChatTool<'p> {
    let def = p.def;
    let mut description = tools::text(def.description).filter(|d| !d.is_empty());
    if let Some(ns) = tools::text(p.namespace_description).filter(|d| !d.is_empty()) {
        let namespace = p.tool.namespace.as_deref().unwrap_or_default();
        let line = format!("(Part of the {namespace} tools: {ns})");
        description = Some(match description {
            Some(d) => format!("{d}\n\n{line}"),
            None => line,
        });
    }
    let parameters = match p.tool.kind {
        Kind::Custom => {
            let mut text = description.unwrap_or_default();
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(
                "Call this tool with one argument, `input`: a string holding the tool's raw \
                 input.",
            );
            if let Some(format) = def
                .format
                .as_ref()
                .filter(|f| f.kind.as_deref() == Some("grammar"))
            {
                let syntax = format.syntax.as_deref().unwrap_or("lark");
                text.push_str(&format!(
                    " The input must follow this {syntax} grammar:\n{}",
                    format.definition.as_deref().unwrap_or_default()
                ));
            }
            description = Some(text);
            Parameters::Object(ObjectSchema {
                kind: "object",
                properties: Properties {
                    input: Some(StringSchema {
                        kind: "string",
                        description: "The tool's raw input.",
                    }),
                },
                required: vec!["input"],
                additional_properties: Some(false),
            })
        }
        Kind::Function => match def.parameters.filter(|p| p.get() != "null") {
            Some(raw) => Parameters::Raw(raw),
            None => Parameters::Object(ObjectSchema {
                kind: "object",
                properties: Properties { input: None },
                required: Vec::new(),
                additional_properties: None,
            }),
        },
    };
    ChatTool {
        kind: "function",
        function: ChatFunction {
            name: &p.tool.chat_name,
            description,
            parameters,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Output format and reasoning

#[derive(Deserialize)]
struct TextParam<'a> {
    #[serde(borrow, default)]
    format: Option<FormatParam<'a>>,
}

#[derive(Deserialize)]
struct FormatParam<'a> {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseFormat<'a> {
    JsonObject,
    JsonSchema { json_schema: JsonSchema<'a> },
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// `text.format` as chat's `response_format`; `text.verbosity` has no chat equivalent.
fn response_format(body: &JsonObject) -> Result<Option<ResponseFormat<'_>>, TranslateError> {
    let Some(text) = body
        .decode::<Option<TextParam<'_>>>("text")
        .map_err(|e| TranslateError::new("text", format!("invalid text: {e}")))?
        .flatten()
    else {
        return Ok(None);
    };
    let Some(format) = text.format else {
        return Ok(None);
    };
    match format.kind.as_deref() {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => Ok(Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchema {
                name: format.name.unwrap_or_else(|| "response".to_owned()),
                description: format.description,
                schema: format.schema,
                strict: format.strict,
            },
        })),
        Some(other) => Err(TranslateError::new(
            "text.format.type",
            format!("unknown text format {other:?}"),
        )),
    }
}

/// `reasoning.effort` as the backend is configured to hear it; `reasoning.summary` only
/// decides how reasoning comes back (see `ReplyContext`).
fn reasoning(
    body: &JsonObject,
    target: &ChatTarget,
    chat: &mut JsonObject,
) -> Result<(), TranslateError> {
    let param: Option<ReasoningParam> = body
        .decode::<Option<ReasoningParam>>("reasoning")
        .map_err(|e| TranslateError::new("reasoning", format!("invalid reasoning: {e}")))?
        .flatten();
    let Some(effort) = param.and_then(|p| p.effort) else {
        return Ok(());
    };
    match &target.reasoning {
        Reasoning::Drop => {}
        Reasoning::Effort => chat.insert("reasoning_effort", &effort),
        Reasoning::TemplateFlag(name) => {
            // `none` is the only effort that means "do not think"; `minimal` still thinks.
            let on = effort != "none";
            let mut flags = serde_json::Map::new();
            flags.insert(name.clone(), serde_json::Value::Bool(on));
            chat.insert("chat_template_kwargs", &flags);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    proptest::proptest! {
        #[test]
        fn json_strings_read_as_serde_reads_them(text in "\\PC*|[\\x00-\\x7f]*") {
            let v = serde_json::to_string(&text).expect("json");
            proptest::prop_assert_eq!(json_string(&v).expect("string"), text);
            // A server may escape what serde does not.
            let escaped = v.replace('/', "\\/");
            proptest::prop_assert_eq!(
                json_string(&escaped).expect("string"),
                serde_json::from_str::<String>(&escaped).expect("string")
            );
        }
    }

    fn translate(body: Value) -> Result<Value, TranslateError> {
        translate_for(body, &ChatTarget::default())
    }

    fn translate_for(body: Value, target: &ChatTarget) -> Result<Value, TranslateError> {
        let obj = JsonObject::parse(body.to_string().as_bytes()).expect("json");
        let chat = to_chat(&obj, target)?;
        let bytes = chat.to_bytes();
        assert!(
            tollgate_testkit::nim::schema_error(&bytes).is_none(),
            "strict NIM refuses {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(serde_json::from_slice(&bytes).expect("chat json"))
    }

    fn param(body: Value) -> Option<String> {
        let obj = JsonObject::parse(body.to_string().as_bytes()).expect("json");
        to_chat(&obj, &ChatTarget::default())
            .expect_err("refused")
            .param
    }

    #[test]
    fn string_input_and_instructions() {
        let chat = translate(json!({"model":"m","instructions":"be brief","input":"hi"}))
            .expect("translates");
        assert_eq!(
            chat,
            json!({"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]})
        );
    }

    #[test]
    fn roles_parts_and_system_merging() {
        let chat = translate(json!({"model":"m","instructions":"I","input":[
            {"type":"message","role":"developer","content":[{"type":"input_text","text":"D1"}]},
            {"role":"system","content":"S2"},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"https://x/y.png","detail":"low"}]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"A"},{"type":"refusal","refusal":"R"}]},
            {"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
            {"role":"developer","content":"late"}
        ]}))
        .expect("translates");
        assert_eq!(
            chat["messages"],
            json!([
                {"role":"system","content":"I\n\nD1\n\nS2"},
                {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]},
                {"role":"assistant","content":"A\nR"},
                {"role":"user","content":"a\nb"},
                {"role":"system","content":"late"}
            ])
        );
    }

    #[test]
    fn calls_merge_and_outputs_follow_their_call() {
        let chat = translate(json!({"model":"m","input":[
            {"role":"user","content":"go"},
            {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"think"}],"encrypted_content":"xx"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"calling"}]},
            {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"a\":1}"},
            {"type":"function_call","call_id":"c2","name":"g","arguments":""},
            {"type":"function_call_output","call_id":"c2","output":"two"},
            {"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"one"}]},
            {"type":"custom_tool_call","call_id":"c3","name":"apply_patch","input":"*** Begin Patch"},
            {"type":"custom_tool_call_output","call_id":"c3","output":"done"}
        ]}))
        .expect("translates");
        assert_eq!(
            chat["messages"],
            json!([
                {"role":"user","content":"go"},
                {"role":"assistant","content":"calling","tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                    {"id":"c2","type":"function","function":{"name":"g","arguments":"{}"}}]},
                {"role":"tool","content":"two","tool_call_id":"c2"},
                {"role":"tool","content":"one","tool_call_id":"c1"},
                {"role":"assistant","content":"","tool_calls":[
                    {"id":"c3","type":"function","function":{"name":"apply_patch","arguments":"{\"input\":\"*** Begin Patch\"}"}}]},
                {"role":"tool","content":"done","tool_call_id":"c3"}
            ])
        );
    }

    #[test]
    fn a_late_output_is_placed_after_its_call_and_an_orphan_becomes_user_text() {
        let chat = translate(json!({"model":"m","input":[
            {"type":"function_call_output","call_id":"gone","output":"old"},
            {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
            {"role":"user","content":"meanwhile"},
            {"type":"function_call_output","call_id":"c1","output":"late"}
        ]}))
        .expect("translates");
        assert_eq!(
            chat["messages"],
            json!([
                {"role":"user","content":"Output of tool call gone:\nold"},
                {"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","content":"late","tool_call_id":"c1"},
                {"role":"user","content":"meanwhile"}
            ])
        );
    }

    #[test]
    fn tool_output_images_follow_in_a_user_message() {
        let chat = translate(json!({"model":"m","input":[
            {"type":"function_call","call_id":"c1","name":"view_image","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"here"},{"type":"input_image","image_url":"data:image/png;base64,AA"}]},
            {"role":"user","content":"what is it?"}
        ]}))
        .expect("translates");
        assert_eq!(
            chat["messages"][1],
            json!({"role":"tool","content":"here","tool_call_id":"c1"})
        );
        assert_eq!(
            chat["messages"][2],
            json!({"role":"user","content":[{"type":"text","text":"Images returned by tool call c1:"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]})
        );
        assert_eq!(chat["messages"][3]["content"], "what is it?");
    }

    #[test]
    fn namespaced_history_calls_use_the_flattened_name() {
        let chat = translate(json!({"model":"m",
            "tools":[{"type":"namespace","name":"ns","description":"d","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{}}}]}],
            "input":[{"type":"function_call","call_id":"c","name":"f","namespace":"ns","arguments":"{}"},
                     {"type":"function_call_output","call_id":"c","output":"ok"}]}))
        .expect("translates");
        assert_eq!(
            chat["messages"][0]["tool_calls"][0]["function"]["name"],
            "ns__f"
        );
        assert_eq!(chat["tools"][0]["function"]["name"], "ns__f");
    }

    #[test]
    fn tools_map_to_functions_and_built_ins_are_dropped() {
        let chat = translate(json!({"model":"m","input":"x","tool_choice":"required","tools":[
            {"type":"function","name":"f","description":"F","strict":true,"parameters":{"type":"object","properties":{"a":{"type":"string"}}}},
            {"type":"function","name":"none_params"},
            {"type":"custom","name":"apply_patch","description":"Patch files.","format":{"type":"grammar","syntax":"lark","definition":"start: x"}},
            {"type":"web_search"},{"type":"code_interpreter","container":{"type":"auto"}}
        ]}))
        .expect("translates");
        let tools = chat["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 3);
        assert_eq!(
            tools[0],
            json!({"type":"function","function":{"name":"f","description":"F","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}})
        );
        assert_eq!(
            tools[1]["function"]["parameters"],
            json!({"type":"object","properties":{}})
        );
        let patch = &tools[2]["function"];
        assert_eq!(patch["name"], "apply_patch");
        assert_eq!(
            patch["parameters"],
            json!({"type":"object","properties":{"input":{"type":"string","description":"The tool's raw input."}},"required":["input"],"additionalProperties":false})
        );
        let description = patch["description"].as_str().expect("description");
        assert!(description.starts_with("Patch files."), "{description}");
        assert!(
            description.contains("lark grammar:\nstart: x"),
            "{description}"
        );
        assert_eq!(chat["tool_choice"], "required");
    }

    #[test]
    fn only_built_in_tools_means_no_tools_and_no_choice() {
        let chat = translate(
            json!({"model":"m","input":"x","tool_choice":"auto","tools":[{"type":"web_search"}]}),
        )
        .expect("translates");
        assert!(chat.get("tools").is_none());
        assert!(chat.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_forms() {
        let tools = json!([{"type":"function","name":"f"},{"type":"custom","name":"p"},
            {"type":"namespace","name":"ns","tools":[{"type":"function","name":"g"}]}]);
        let chat = translate(json!({"model":"m","input":"x","tools":tools,"tool_choice":{"type":"function","name":"g"}})).expect("translates");
        assert_eq!(
            chat["tool_choice"],
            json!({"type":"function","function":{"name":"ns__g"}})
        );
        let chat = translate(json!({"model":"m","input":"x","tools":tools,"tool_choice":{"type":"custom","name":"p"}})).expect("translates");
        assert_eq!(
            chat["tool_choice"],
            json!({"type":"function","function":{"name":"p"}})
        );
        let chat = translate(json!({"model":"m","input":"x","tools":tools,"tool_choice":"none"}))
            .expect("translates");
        assert_eq!(chat["tool_choice"], "none");
        let chat = translate(json!({"model":"m","input":"x","tools":tools,
            "tool_choice":{"type":"allowed_tools","mode":"required","tools":[{"type":"function","name":"f"},{"type":"function","name":"g","namespace":"ns"}]}})).expect("translates");
        let names: Vec<&str> = chat["tools"]
            .as_array()
            .expect("translates")
            .iter()
            .map(|t| t["function"]["name"].as_str().expect("translates"))
            .collect();
        assert_eq!(names, ["f", "ns__g"]);
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(
            param(json!({"model":"m","input":"x","tools":tools,"tool_choice":{"type":"function","name":"zz"}})).as_deref(),
            Some("tool_choice.name")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","tools":tools,"tool_choice":{"type":"web_search_preview"}})).as_deref(),
            Some("tool_choice.type")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","tool_choice":"sometimes"})).as_deref(),
            Some("tool_choice")
        );
    }

    #[test]
    fn parameters_map_and_openai_only_fields_never_reach_the_upstream() {
        let chat = translate(json!({"model":"m","input":"x","stream":true,
            "max_output_tokens":100,"temperature":0.2,"top_p":0.9,"user":"u1",
            "store":false,"include":["reasoning.encrypted_content"],"prompt_cache_key":"k",
            "client_metadata":{"a":"b"},"metadata":{"a":"b"},"truncation":"auto",
            "service_tier":"auto","safety_identifier":"s","top_logprobs":2,"max_tool_calls":3,
            "parallel_tool_calls":true,"stream_options":{"include_obfuscation":false},
            "text":{"verbosity":"low"},"reasoning":{"effort":"high","summary":"auto"},
            "some_future_field":{"x":1}}))
        .expect("translates");
        assert_eq!(
            chat,
            json!({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":100,
                   "temperature":0.2,"top_p":0.9,"user":"u1","stream":true})
        );
    }

    #[test]
    fn text_format_becomes_response_format() {
        let chat = translate(json!({"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}}})).expect("translates");
        assert_eq!(
            chat["response_format"],
            json!({"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"},"strict":true}})
        );
        let chat =
            translate(json!({"model":"m","input":"x","text":{"format":{"type":"json_object"}}}))
                .expect("translates");
        assert_eq!(chat["response_format"], json!({"type":"json_object"}));
        let chat = translate(json!({"model":"m","input":"x","text":{"format":{"type":"text"}}}))
            .expect("translates");
        assert!(chat.get("response_format").is_none());
    }

    #[test]
    fn reasoning_effort_follows_the_target() {
        let body = json!({"model":"m","input":"x","reasoning":{"effort":"low"}});
        let chat = translate(body.clone()).expect("translates");
        assert!(chat.get("reasoning_effort").is_none());
        let obj = JsonObject::parse(body.to_string().as_bytes()).expect("translates");
        let effort = to_chat(
            &obj,
            &ChatTarget {
                reasoning: Reasoning::Effort,
                top_k: false,
            },
        )
        .expect("translates");
        assert_eq!(effort.get("reasoning_effort"), Some(r#""low""#));
        let flag = to_chat(
            &obj,
            &ChatTarget {
                reasoning: Reasoning::TemplateFlag("enable_thinking".into()),
                top_k: false,
            },
        )
        .expect("translates");
        assert_eq!(
            flag.get("chat_template_kwargs"),
            Some(r#"{"enable_thinking":true}"#)
        );
        let off = JsonObject::parse(br#"{"model":"m","input":"x","reasoning":{"effort":"none"}}"#)
            .expect("translates");
        let flag = to_chat(
            &off,
            &ChatTarget {
                reasoning: Reasoning::TemplateFlag("thinking".into()),
                top_k: false,
            },
        )
        .expect("translates");
        assert_eq!(
            flag.get("chat_template_kwargs"),
            Some(r#"{"thinking":false}"#)
        );
        let summary_only =
            JsonObject::parse(br#"{"model":"m","input":"x","reasoning":{"summary":"auto"}}"#)
                .expect("translates");
        let chat = to_chat(
            &summary_only,
            &ChatTarget {
                reasoning: Reasoning::Effort,
                top_k: false,
            },
        )
        .expect("translates");
        assert!(!chat.contains("reasoning_effort"));
    }

    #[test]
    fn stateful_features_are_refused_with_their_param() {
        for (key, value) in [
            ("previous_response_id", json!("resp_1")),
            ("conversation", json!("conv_1")),
            ("prompt", json!({"id":"pmpt_1"})),
            ("background", json!(true)),
        ] {
            let mut body = json!({"model":"m","input":"x"});
            body[key] = value;
            assert_eq!(param(body).as_deref(), Some(key));
        }
        // `null` means absent.
        assert!(translate(
            json!({"model":"m","input":"x","previous_response_id":null,"background":false})
        )
        .is_ok());
        let obj = JsonObject::parse(br#"{"input":"x","previous_response_id":"resp_9"}"#)
            .expect("translates");
        let err = to_chat(&obj, &ChatTarget::default()).expect_err("refused");
        assert!(
            err.message.contains("keeps no stored responses"),
            "{}",
            err.message
        );
    }

    #[test]
    fn malformed_input_is_refused_with_its_path() {
        assert_eq!(param(json!({"model":"m"})).as_deref(), Some("input"));
        assert_eq!(
            param(json!({"model":"m","input":[]})).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(json!({"model":"m","input":5})).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(json!({"model":"m","input":[{"role":"robot","content":"x"}]})).as_deref(),
            Some("input[0].role")
        );
        assert_eq!(
            param(json!({"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]})).as_deref(),
            Some("input[0].content[0].type")
        );
        assert_eq!(
            param(json!({"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]})).as_deref(),
            Some("input[0].content[0].file_id")
        );
        assert_eq!(
            param(json!({"model":"m","input":[{"role":"system","content":[{"type":"input_image","image_url":"u"}]}]})).as_deref(),
            Some("input[0].content")
        );
        assert_eq!(
            param(
                json!({"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]})
            )
            .as_deref(),
            Some("input[0].call_id")
        );
        assert_eq!(
            param(json!({"model":"m","input":[{"type":"item_reference","id":"msg_1"}]})).as_deref(),
            Some("input[0].type")
        );
        assert_eq!(
            param(json!({"model":"m","input":[{"type":"telepathy"}]})).as_deref(),
            Some("input[0].type")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","temperature":"hot"})).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","max_output_tokens":-1})).as_deref(),
            Some("max_output_tokens")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","parallel_tool_calls":"yes"})).as_deref(),
            Some("parallel_tool_calls")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","text":{"format":{"type":"xml"}}})).as_deref(),
            Some("text.format.type")
        );
        assert_eq!(
            param(json!({"model":"m","input":"x","instructions":["a"]})).as_deref(),
            Some("instructions")
        );
    }

    #[test]
    fn built_in_history_items_are_dropped() {
        let chat = translate(json!({"model":"m","input":[
            {"role":"user","content":"q"},
            {"type":"web_search_call","id":"ws_1","status":"completed","action":{"type":"search","query":"x"}},
            {"type":"compaction","encrypted_content":"zz"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"a"}]}
        ]}))
        .expect("translates");
        assert_eq!(
            chat["messages"],
            json!([{"role":"user","content":"q"},{"role":"assistant","content":"a"}])
        );
    }
}
