//! A strict fake Anthropic Messages API: `401 authentication_error` unless `x-api-key` holds a
//! key (`sk-ant-…`), `400` unless `anthropic-version` is sent, and the checks
//! `api.anthropic.com` makes before a model sees the request — required `model`, `messages`
//! and `max_tokens`; unknown fields refused ("…: Extra inputs are not permitted"); roles that
//! alternate; non-blank text; every `tool_result` answering a `tool_use` of the turn just
//! before, first in its turn. Requests that pass are answered by the fake's script, like any
//! [`FakeUpstream`]; the builders here write Anthropic's answers, event streams and errors.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::{Answer, FakeUpstream, Gate, Options, Recorded, Step, StreamEnd};

/// The prefix of every Anthropic API key.
pub const KEY_PREFIX: &str = "sk-ant-";

/// The `anthropic-version` every client sends today.
pub const VERSION: &str = "2023-06-01";

/// Top-level fields of `POST /v1/messages` (the SDK's `MessageCreateParams`, beta fields
/// included: clients send them with their `anthropic-beta` header).
pub const MESSAGE_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "cache_control",
    "container",
    "context_management",
    "diagnostics",
    "fallback_credit_token",
    "fallbacks",
    "inference_geo",
    "mcp_servers",
    "metadata",
    "output_config",
    "output_format",
    "service_tier",
    "speed",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];

/// Top-level fields of `POST /v1/messages/count_tokens`.
pub const COUNT_TOKENS_FIELDS: &[&str] = &[
    "model",
    "messages",
    "cache_control",
    "context_management",
    "mcp_servers",
    "output_config",
    "output_format",
    "speed",
    "system",
    "thinking",
    "tool_choice",
    "tools",
];

/// Options for a strict Anthropic listing `models` on `GET /v1/models`.
pub fn options(models: &[&str]) -> Options {
    Options {
        http1_only: false,
        models: models.iter().map(|m| m.to_string()).collect(),
        gate: Some(gate()),
    }
}

/// Starts a strict Anthropic listing `models`, answering a short message once its script is
/// used up. Its [`FakeUpstream::url`] ends in `/v1`; the root without it works as well.
pub async fn start(models: &[&str]) -> FakeUpstream {
    let fake = FakeUpstream::start_with(options(models)).await;
    fake.set_default(message("Hello from the fake Anthropic."));
    fake
}

/// The checks Anthropic makes before a model sees the request.
pub fn gate() -> Gate {
    Arc::new(|req: &Recorded| {
        match req.header("x-api-key") {
            None => {
                return Some(error(
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                ))
            }
            Some(key) if !authorized(Some(key)) => {
                return Some(error(401, "authentication_error", "invalid x-api-key"))
            }
            Some(_) => {}
        }
        if req.header("anthropic-version").is_none() {
            return Some(error(
                400,
                "invalid_request_error",
                "anthropic-version: header is required",
            ));
        }
        let checked = if req.path.ends_with("/messages/count_tokens") {
            check_count_tokens(&req.body)
        } else if req.path.ends_with("/messages") {
            check_messages(&req.body)
        } else {
            return Some(error(
                404,
                "not_found_error",
                &format!("Not found: {}", req.path),
            ));
        };
        checked
            .err()
            .map(|message| error(400, "invalid_request_error", &message))
    })
}

/// Whether `value` is an Anthropic key: `sk-ant-` and more, no white space.
pub fn authorized(value: Option<&str>) -> bool {
    value
        .and_then(|key| key.strip_prefix(KEY_PREFIX))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
}

/// Checks a `POST /v1/messages` body the way Anthropic does; the error says what is wrong in
/// Anthropic's words.
pub fn check_messages(body: &[u8]) -> Result<(), String> {
    check(body, MESSAGE_FIELDS, true)
}

/// Checks a `POST /v1/messages/count_tokens` body.
pub fn check_count_tokens(body: &[u8]) -> Result<(), String> {
    check(body, COUNT_TOKENS_FIELDS, false)
}

fn check(body: &[u8], fields: &[&str], needs_max_tokens: bool) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("There was an error parsing the body: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("Input should be a valid dictionary".into());
    };
    for key in obj.keys() {
        if !fields.contains(&key.as_str()) {
            return Err(format!("{key}: Extra inputs are not permitted"));
        }
    }
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        Some(_) => return Err("model: Input should be a valid string".into()),
        None => return Err("model: Field required".into()),
    }
    let max_tokens = match obj.get("max_tokens") {
        Some(v) => Some(
            v.as_u64()
                .ok_or("max_tokens: Input should be a valid integer")?,
        ),
        None if needs_max_tokens => return Err("max_tokens: Field required".into()),
        None => None,
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err("messages: Input should be a valid list".into()),
        None => return Err("messages: Field required".into()),
    };
    if let Some(system) = obj.get("system") {
        match system {
            Value::String(_) => {}
            Value::Array(blocks) => {
                for (i, b) in blocks.iter().enumerate() {
                    if b["type"] != "text" || !b["text"].is_string() {
                        return Err(format!("system.{i}: Input should be a text block"));
                    }
                }
            }
            _ => return Err("system: Input should be a valid string or list".into()),
        }
    }
    check_conversation(messages)?;
    let tool_names = check_tools(obj.get("tools"))?;
    let forced = check_tool_choice(obj.get("tool_choice"), &tool_names)?;
    for (field, low, high) in [("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)] {
        if let Some(v) = obj.get(field) {
            let x = v
                .as_f64()
                .ok_or(format!("{field}: Input should be a valid number"))?;
            if !(low..=high).contains(&x) {
                return Err(format!("{field}: range: {low}..{high}"));
            }
        }
    }
    if let Some(stop) = obj.get("stop_sequences") {
        let ok = stop
            .as_array()
            .is_some_and(|s| s.iter().all(Value::is_string));
        if !ok {
            return Err("stop_sequences: Input should be a valid list of strings".into());
        }
    }
    if let Some(meta) = obj.get("metadata") {
        let Some(meta) = meta.as_object() else {
            return Err("metadata: Input should be a valid dictionary".into());
        };
        for (key, value) in meta {
            if key != "user_id" {
                return Err(format!("metadata.{key}: Extra inputs are not permitted"));
            }
            if !(value.is_string() || value.is_null()) {
                return Err("metadata.user_id: Input should be a valid string".into());
            }
        }
    }
    if let Some(stream) = obj.get("stream") {
        if !stream.is_boolean() {
            return Err("stream: Input should be a valid boolean".into());
        }
    }
    if let Some(thinking) = obj.get("thinking") {
        match thinking["type"].as_str() {
            Some("enabled") => {
                let budget = thinking["budget_tokens"]
                    .as_u64()
                    .ok_or("thinking.enabled.budget_tokens: Field required")?;
                if budget < 1024 {
                    return Err(
                        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                            .into(),
                    );
                }
                if max_tokens.is_some_and(|m| budget >= m) {
                    return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
                }
            }
            Some("adaptive") | Some("disabled") => {}
            _ => return Err("thinking: Input tag does not match the expected tags".into()),
        }
        if thinking["type"] != "disabled" {
            if obj
                .get("temperature")
                .is_some_and(|t| t.as_f64() != Some(1.0))
            {
                return Err(
                    "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode"
                        .into(),
                );
            }
            if obj
                .get("top_p")
                .and_then(Value::as_f64)
                .is_some_and(|p| p < 0.95)
            {
                return Err("`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled".into());
            }
            if obj.contains_key("top_k") {
                return Err("`top_k` must be unset when thinking is enabled".into());
            }
            if forced {
                return Err("Thinking may not be enabled when tool_choice forces tool use.".into());
            }
        }
    }
    Ok(())
}

/// Roles, blocks and the tool_use → tool_result pairing. Mid-conversation `system` messages
/// (Claude Code sends them) take no part in the alternation.
fn check_conversation(messages: &[Value]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut previous: Option<(&str, Vec<String>)> = None;
    let mut first = true;
    for (i, m) in messages.iter().enumerate() {
        let Some(m) = m.as_object() else {
            return Err(format!("messages.{i}: Input should be a valid dictionary"));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant" | "system")) => r,
            Some(_) => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ))
            }
            None => return Err(format!("messages.{i}.role: Field required")),
        };
        for key in m.keys() {
            // A mid-conversation system message may carry a per-turn `output_config` (Claude
            // Code sends one with its `per-turn-control` beta).
            let per_turn = role == "system" && key == "output_config";
            if key != "role" && key != "content" && !per_turn {
                return Err(format!(
                    "messages.{i}.{key}: Extra inputs are not permitted"
                ));
            }
        }
        let blocks = content_blocks(m.get("content"), i)?;
        for (j, b) in blocks.iter().enumerate() {
            check_block(b, role, &format!("messages.{i}.content.{j}"))?;
        }
        if role == "system" {
            continue;
        }
        if first && role != "user" {
            return Err("messages: first message must use the \"user\" role".into());
        }
        first = false;
        let tool_uses: Vec<String> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .filter_map(|b| b["id"].as_str().map(str::to_owned))
            .collect();
        let results: Vec<(usize, &str)> = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b["type"] == "tool_result")
            .map(|(j, b)| (j, b["tool_use_id"].as_str().unwrap_or_default()))
            .collect();
        if let Some((last_role, pending)) = &previous {
            if *last_role == role {
                return Err(
                    "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"".to_owned()
                        + role
                        + "\" roles in a row",
                );
            }
            let missing: Vec<&str> = pending
                .iter()
                .filter(|id| !results.iter().any(|(_, r)| r == id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                ));
            }
            for (j, id) in &results {
                if !pending.iter().any(|p| p == id) {
                    return Err(format!(
                        "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    ));
                }
            }
        } else if let Some((j, id)) = results.first() {
            return Err(format!(
                "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            ));
        }
        if let Some(last_result) = results.last() {
            if blocks[..last_result.0]
                .iter()
                .any(|b| b["type"] != "tool_result")
            {
                return Err(format!(
                    "messages.{i}: `tool_result` blocks must come before any other content in the message"
                ));
            }
        }
        previous = Some((role, tool_uses));
    }
    if let Some((_, pending)) = previous.filter(|(_, p)| !p.is_empty()) {
        return Err(format!(
            "messages: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
            pending.join(", ")
        ));
    }
    Ok(())
}

/// A message's content as blocks (a string is one text block).
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    match content {
        Some(Value::String(s)) => {
            if s.is_empty() {
                return Err(format!(
                    "messages.{i}: all messages must have non-empty content"
                ));
            }
            Ok(vec![json!({"type": "text", "text": s})])
        }
        Some(Value::Array(blocks)) => {
            if blocks.is_empty() {
                return Err(format!(
                    "messages.{i}: all messages must have non-empty content"
                ));
            }
            Ok(blocks.clone())
        }
        Some(_) => Err(format!(
            "messages.{i}.content: Input should be a valid list"
        )),
        None => Err(format!("messages.{i}.content: Field required")),
    }
}

fn is_tool_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_block(b: &Value, role: &str, at: &str) -> Result<(), String> {
    let allowed = |keys: &[&str]| -> Result<(), String> {
        for key in b.as_object().into_iter().flat_map(|o| o.keys()) {
            if key != "type" && key != "cache_control" && !keys.contains(&key.as_str()) {
                return Err(format!("{at}.{key}: Extra inputs are not permitted"));
            }
        }
        Ok(())
    };
    match b["type"].as_str() {
        Some("text") => {
            allowed(&["text", "citations"])?;
            let text = b["text"]
                .as_str()
                .ok_or(format!("{at}.text: Field required"))?;
            if text.trim().is_empty() {
                return Err(
                    "messages: text content blocks must contain non-whitespace text".into(),
                );
            }
        }
        Some("image") => {
            allowed(&["source"])?;
            if role == "assistant" {
                return Err(format!(
                    "{at}: image blocks are only allowed in user messages"
                ));
            }
            check_source(
                &b["source"],
                at,
                &["image/jpeg", "image/png", "image/gif", "image/webp"],
            )?;
        }
        Some("document") => {
            allowed(&["source", "title", "context", "citations"])?;
            check_source(&b["source"], at, &["application/pdf", "text/plain"])?;
        }
        Some("tool_use") => {
            allowed(&["id", "name", "input", "caller"])?;
            if role != "assistant" {
                return Err(format!(
                    "{at}: tool_use blocks are only allowed in assistant messages"
                ));
            }
            if !b["id"].as_str().is_some_and(is_tool_id) {
                return Err(format!(
                    "{at}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            if !b["name"].is_string() {
                return Err(format!("{at}.name: Field required"));
            }
            if !b["input"].is_object() {
                return Err(format!("{at}.input: Input should be a valid dictionary"));
            }
        }
        Some("tool_result") => {
            allowed(&["tool_use_id", "content", "is_error"])?;
            if role != "user" {
                return Err(format!(
                    "{at}: tool_result blocks are only allowed in user messages"
                ));
            }
            if !b["tool_use_id"].as_str().is_some_and(is_tool_id) {
                return Err(format!(
                    "{at}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            match b.get("content") {
                None | Some(Value::String(_)) => {}
                Some(Value::Array(inner)) => {
                    for (k, c) in inner.iter().enumerate() {
                        let cat = format!("{at}.content.{k}");
                        match c["type"].as_str() {
                            Some("text")
                            | Some("image")
                            | Some("document")
                            | Some("search_result") => check_block(c, "user", &cat)?,
                            _ => {
                                return Err(format!(
                                    "{cat}: Input tag does not match the expected tags"
                                ))
                            }
                        }
                    }
                }
                Some(_) => return Err(format!("{at}.content: Input should be a valid list")),
            }
        }
        Some("thinking") => {
            if role != "assistant" || !b["signature"].is_string() || !b["thinking"].is_string() {
                return Err(format!("{at}: invalid thinking block"));
            }
        }
        Some("redacted_thinking") => {
            if role != "assistant" || !b["data"].is_string() {
                return Err(format!("{at}: invalid redacted_thinking block"));
            }
        }
        // Server tools, search results, container uploads …: not checked further.
        Some(_) => {}
        None => return Err(format!("{at}.type: Field required")),
    }
    Ok(())
}

fn check_source(source: &Value, at: &str, media_types: &[&str]) -> Result<(), String> {
    match source["type"].as_str() {
        Some("base64") => {
            let media = source["media_type"].as_str().unwrap_or_default();
            if !media_types.contains(&media) {
                return Err(format!(
                    "{at}.source.base64.media_type: Input should be {}",
                    media_types.join(", ")
                ));
            }
            if !source["data"].is_string() {
                return Err(format!("{at}.source.base64.data: Field required"));
            }
        }
        Some("url") => {
            if !source["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http"))
            {
                return Err(format!("{at}.source.url.url: Input should be a valid URL"));
            }
        }
        Some("text") if media_types.contains(&"text/plain") => {}
        _ => {
            return Err(format!(
                "{at}.source: Input tag does not match the expected tags"
            ))
        }
    }
    Ok(())
}

/// Checks `tools`; the names of the custom tools.
fn check_tools(tools: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let tools = tools
        .as_array()
        .ok_or("tools: Input should be a valid list")?;
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let at = format!("tools.{i}");
        match t["type"].as_str() {
            None | Some("custom") => {}
            // Anthropic-defined tools (`bash_20250124`, `web_search_20250305` …).
            Some(_) => continue,
        }
        for key in t.as_object().into_iter().flat_map(|o| o.keys()) {
            let known = [
                "type",
                "name",
                "description",
                "input_schema",
                "cache_control",
                "strict",
                "input_examples",
                "defer_loading",
                "allowed_callers",
                "eager_input_streaming",
            ];
            if !known.contains(&key.as_str()) {
                return Err(format!("{at}.custom.{key}: Extra inputs are not permitted"));
            }
        }
        let name = t["name"].as_str().unwrap_or_default();
        let ok = (1..=128).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(format!(
                "{at}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            ));
        }
        if t["input_schema"]["type"] != "object" {
            return Err(format!(
                "{at}.custom.input_schema.type: Input should be 'object'"
            ));
        }
        if let Some(d) = t.get("description") {
            if !d.is_string() {
                return Err(format!(
                    "{at}.custom.description: Input should be a valid string"
                ));
            }
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Checks `tool_choice`; whether it forces tool use.
fn check_tool_choice(choice: Option<&Value>, tools: &[String]) -> Result<bool, String> {
    let Some(choice) = choice else {
        return Ok(false);
    };
    let kind = choice["type"].as_str().unwrap_or_default();
    let options: &[&str] = match kind {
        "auto" | "any" => &["disable_parallel_tool_use"],
        "tool" => &["name", "disable_parallel_tool_use"],
        "none" => &[],
        _ => return Err("tool_choice: Input tag does not match the expected tags".into()),
    };
    for key in choice.as_object().into_iter().flat_map(|o| o.keys()) {
        if key != "type" && !options.contains(&key.as_str()) {
            return Err(format!(
                "tool_choice.{kind}.{key}: Extra inputs are not permitted"
            ));
        }
    }
    if kind == "tool" {
        let name = choice["name"]
            .as_str()
            .ok_or("tool_choice.tool.name: Field required")?;
        if !tools.iter().any(|t| t == name) {
            return Err(format!("tool_choice: tool `{name}` is not in `tools`"));
        }
    }
    Ok(matches!(kind, "any" | "tool"))
}

// ---------------------------------------------------------------------------------------
// Answers

/// An Anthropic error answer: `{"type":"error","error":{"type","message"},"request_id"}`.
pub fn error(status: u16, kind: &str, message: &str) -> Answer {
    Answer::json(status, &error_body(kind, message)).with_header("request-id", "req_fake")
}

/// The body of an Anthropic error.
pub fn error_body(kind: &str, message: &str) -> String {
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_fake"
    })
    .to_string()
}

/// `529 overloaded_error`, as Anthropic answers when it is short of capacity.
pub fn overloaded() -> Answer {
    error(529, "overloaded_error", "Overloaded")
}

/// `429 rate_limit_error` with `retry-after: {seconds}`.
pub fn rate_limited(seconds: u64) -> Answer {
    error(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute.",
    )
    .with_header("retry-after", &seconds.to_string())
    .with_header("anthropic-ratelimit-requests-remaining", "0")
}

/// A whole `message` answer with `content` blocks and `stop_reason`.
pub fn message_body(content: Value, stop_reason: &str) -> String {
    json!({
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 7
        }
    })
    .to_string()
}

/// A 200 message whose content is `text`.
pub fn message(text: &str) -> Answer {
    Answer::json(
        200,
        &message_body(json!([{"type": "text", "text": text}]), "end_turn"),
    )
    .with_header("request-id", "req_fake")
}

/// One SSE event as Anthropic writes it: `event: {name}` then its data.
pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn message_start() -> String {
    event(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}
            }
        }),
    )
}

fn message_end(stop_reason: &str, output_tokens: usize) -> [String; 2] {
    [
        event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}
            }),
        ),
        event("message_stop", &json!({"type": "message_stop"})),
    ]
}

fn text_block(index: usize, pieces: &[&str]) -> Vec<String> {
    let mut events = vec![event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    )];
    if index == 0 {
        events.push(event("ping", &json!({"type": "ping"})));
    }
    for piece in pieces {
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

/// The events of a streamed text answer, in Anthropic's grammar: `message_start` (with
/// usage), `content_block_start`, `ping`, one `content_block_delta` per piece,
/// `content_block_stop`, `message_delta` (stop reason, usage), `message_stop`.
pub fn text_events(pieces: &[&str]) -> Vec<String> {
    let mut events = vec![message_start()];
    events.extend(text_block(0, pieces));
    events.extend(message_end("end_turn", pieces.len()));
    events
}

/// A whole streamed text answer.
pub fn text_stream(pieces: &[&str]) -> Answer {
    sse(text_events(pieces), StreamEnd::Finish)
}

/// The events of a streamed tool call: a text block saying `preface`, then a `tool_use`
/// block (`id`, `name`) whose input arrives as the `fragments` of `input_json_delta`, and
/// `stop_reason: tool_use`.
pub fn tool_events(preface: &str, id: &str, name: &str, fragments: &[&str]) -> Vec<String> {
    let mut events = vec![message_start()];
    events.extend(text_block(0, &[preface]));
    events.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    ));
    for fragment in fragments {
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 1}),
    ));
    events.extend(message_end("tool_use", 20));
    events
}

/// A whole streamed tool call.
pub fn tool_stream(preface: &str, id: &str, name: &str, fragments: &[&str]) -> Answer {
    sse(tool_events(preface, id, name, fragments), StreamEnd::Finish)
}

/// A stream that starts a text answer, sends `pieces`, then fails with `event: error` of
/// `kind` (Anthropic does this after its 200, e.g. `overloaded_error` mid-answer).
pub fn error_midway(pieces: &[&str], kind: &str, message: &str) -> Answer {
    let mut events = vec![message_start()];
    let mut block = text_block(0, pieces);
    block.pop();
    events.extend(block);
    events.push(event(
        "error",
        &serde_json::from_str::<Value>(&error_body(kind, message)).unwrap_or_default(),
    ));
    sse(events, StreamEnd::Finish)
}

/// A 200 stream whose first event is `event: error`.
pub fn early_error(kind: &str, message: &str) -> Answer {
    let data: Value = serde_json::from_str(&error_body(kind, message)).unwrap_or_default();
    sse(vec![event("error", &data)], StreamEnd::Finish)
}

/// A `text/event-stream` answer of whole `events`.
pub fn sse(events: Vec<String>, end: StreamEnd) -> Answer {
    Answer::Sse {
        status: 200,
        steps: events.into_iter().map(Step::Raw).collect(),
        end,
    }
}

/// One page of `GET /v1/models`: `data[]` of model objects, `has_more`, `first_id`, `last_id`.
pub fn models_page(ids: &[&str], has_more: bool) -> String {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
        })
        .collect();
    json!({
        "data": data,
        "has_more": has_more,
        "first_id": ids.first(),
        "last_id": ids.last(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: Value) -> Result<(), String> {
        check_messages(body.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn keys_must_be_sk_ant() {
        assert!(authorized(Some("sk-ant-abc")));
        for bad in [
            None,
            Some("sk-abc"),
            Some("sk-ant-"),
            Some("sk-ant-a b"),
            Some("Bearer sk-ant-a"),
        ] {
            assert!(!authorized(bad), "{bad:?}");
        }
    }

    #[test]
    fn required_and_extra_fields() {
        assert_eq!(ok(base()), Ok(()));
        let mut v = base();
        v["stream_options"] = json!({});
        assert_eq!(
            ok(v),
            Err("stream_options: Extra inputs are not permitted".into())
        );
        let mut v = base();
        v.as_object_mut().map(|o| o.remove("max_tokens"));
        assert_eq!(ok(v.clone()), Err("max_tokens: Field required".into()));
        assert_eq!(check_count_tokens(v.to_string().as_bytes()), Ok(()));
        assert_eq!(
            check_count_tokens(base().to_string().as_bytes()),
            Err("max_tokens: Extra inputs are not permitted".into())
        );
    }

    #[test]
    fn roles_alternate_and_tool_results_follow_their_calls() {
        let mut v = base();
        v["messages"] = json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
        assert!(ok(v).is_err_and(|e| e.contains("alternate")));
        let mut v = base();
        v["messages"] = json!([{"role": "assistant", "content": "a"}]);
        assert!(ok(v).is_err_and(|e| e.contains("first message")));
        let call = json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]});
        let mut v = base();
        v["messages"] = json!([{"role": "user", "content": "a"}, call, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}, {"type": "text", "text": "more"}]}]);
        assert_eq!(ok(v), Ok(()));
        let mut v = base();
        v["messages"] = json!([{"role": "user", "content": "a"}, call, {"role": "user", "content": "no result"}]);
        assert!(ok(v).is_err_and(|e| e.contains("without `tool_result`")));
        let mut v = base();
        v["messages"] = json!([{"role": "user", "content": "a"}, call, {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "tool_result", "tool_use_id": "t1"}]}]);
        assert!(ok(v).is_err_and(|e| e.contains("before any other content")));
        let mut v = base();
        v["messages"] =
            json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9"}]}]);
        assert!(ok(v).is_err_and(|e| e.contains("unexpected `tool_use_id`")));
        let mut v = base();
        v["messages"] = json!([{"role": "user", "content": " \n"}]);
        assert!(ok(v).is_err_and(|e| e.contains("non-whitespace")));
    }

    #[test]
    fn thinking_rules() {
        let mut v = base();
        v["max_tokens"] = json!(5000);
        v["thinking"] = json!({"type": "enabled", "budget_tokens": 4096});
        assert_eq!(ok(v.clone()), Ok(()));
        v["temperature"] = json!(0.5);
        assert!(ok(v.clone()).is_err());
        v.as_object_mut().map(|o| o.remove("temperature"));
        v["thinking"]["budget_tokens"] = json!(5000);
        assert!(ok(v).is_err());
    }

    #[test]
    fn streams_follow_the_grammar() {
        let events = text_events(&["a", "b"]);
        let names: Vec<&str> = events
            .iter()
            .map(|e| {
                e.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("event: ")
            })
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let page: Value = serde_json::from_str(&models_page(&["a", "b"], true)).expect("json");
        assert_eq!(page["last_id"], "b");
        assert_eq!(page["has_more"], true);
    }
}
