//! A whole Messages answer (`"type": "message"`) → a `chat.completion`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::wire::{finish_reason, Message, Usage};
use super::ChatReplyContext;
use crate::TranslateError;

/// Translates a Messages answer into the chat.completions answer the client asked for.
/// Text blocks are joined into `content`, thinking into `reasoning_content`, `tool_use`
/// blocks become `tool_calls` (their input as a JSON string, as OpenAI sends arguments).
pub fn to_chat_response(messages: &[u8], ctx: &ChatReplyContext) -> Result<Bytes, TranslateError> {
    let message: Message<'_> = serde_json::from_slice(messages).map_err(|e| TranslateError {
        message: format!("the backend's answer is not a Messages answer: {e}"),
        param: None,
    })?;
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match &*block.kind {
            "text" => content.push_str(block.text.as_deref().unwrap_or_default()),
            "thinking" => reasoning.push_str(block.thinking.as_deref().unwrap_or_default()),
            "tool_use" => tool_calls.push(ToolCallOut {
                id: block.id.as_deref().unwrap_or_default(),
                kind: "function",
                function: FunctionOut {
                    name: block.name.as_deref().unwrap_or_default(),
                    arguments: arguments_text(block.input),
                },
            }),
            // `redacted_thinking` is opaque; server tool blocks (web search …) have no chat
            // counterpart.
            _ => {}
        }
    }
    let answer = Completion {
        id: &ctx.id,
        object: "chat.completion",
        created: ctx.created,
        model: &ctx.model,
        choices: [ChoiceOut {
            index: 0,
            message: MessageOut {
                role: "assistant",
                // OpenAI sends `null` content beside tool calls and no text.
                content: if content.is_empty() && !tool_calls.is_empty() {
                    None
                } else {
                    Some(&content)
                },
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning.as_str()),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls.as_slice()),
            },
            logprobs: None,
            finish_reason: finish_reason(message.stop_reason.as_deref()),
        }],
        usage: message.usage.map(|u| UsageOut::from_anthropic(&u)),
    };
    serde_json::to_vec(&answer)
        .map(Bytes::from)
        .map_err(|e| TranslateError {
            message: format!("writing the answer failed: {e}"),
            param: None,
        })
}

/// A tool's input as the `arguments` string: its JSON text, `{}` when there is none.
pub(crate) fn arguments_text(input: Option<&RawValue>) -> &str {
    match input.map(RawValue::get) {
        None | Some("null") => "{}",
        Some(text) => text,
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCallOut<'a>]>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// OpenAI's usage object. Anthropic's `input_tokens` leaves out cached tokens; OpenAI's
/// `prompt_tokens` counts them, with the cache hits also told in `cached_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct UsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Cached>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Cached {
    pub cached_tokens: u64,
}

impl UsageOut {
    pub fn new(prompt_tokens: u64, completion_tokens: u64, cached_tokens: Option<u64>) -> Self {
        UsageOut {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: cached_tokens.map(|cached_tokens| Cached { cached_tokens }),
        }
    }

    pub fn from_anthropic(u: &Usage) -> Self {
        UsageOut::new(
            u.prompt_tokens().unwrap_or(0),
            u.output_tokens.unwrap_or(0),
            u.cache_read_input_tokens,
        )
    }
}
