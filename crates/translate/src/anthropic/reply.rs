//! chat.completion → Messages `message`, and what a reply needs to know about its request.

use bytes::Bytes;
use serde_json::value::RawValue;
use tollgate_core::JsonObject;

use super::events::{BlockOut, Input, MessageOut, UsageOut};
use super::messages::Thinking;
use super::request::decode;
use super::text::{text_tokens, Str};
use super::tokens::estimate_input_tokens;
use crate::chat::Completion;
use crate::TranslateError;

/// What translating an answer needs from its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    /// The message id the client sees (`msg_…`), chosen by the server.
    pub id: String,
    /// The model name the client asked for, echoed back (not the backend's).
    pub model: String,
    /// The request's local input-token estimate: `message_start` must carry a count before
    /// the backend reports one, and Claude Code misbehaves on 0 (LiteLLM #24176). Made only
    /// when it is read: a whole answer that reports its usage never needs it.
    pub input_tokens: InputTokens,
    /// Whether the client asked to see thinking (`thinking` enabled or adaptive, not
    /// `display: omitted`). Reasoning text of a backend that thinks on its own is dropped
    /// otherwise: Anthropic never answers with thinking blocks unasked.
    pub thinking: bool,
    /// The request's `stop_sequences`: a stop string vLLM reports as matched counts only
    /// when it is one of these.
    pub stop_sequences: Vec<String>,
}

/// The reply context of a Messages request. `model` is the name the client asked for.
pub fn reply_context(body: &JsonObject, id: String, model: String) -> ReplyContext {
    let thinking = decode::<Thinking<'_>>(body, "thinking")
        .ok()
        .flatten()
        .is_some_and(|t| t.is_shown());
    let stop_sequences = decode::<Vec<Str<'_>>>(body, "stop_sequences")
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.0.into_owned())
        .collect();
    ReplyContext {
        id,
        model,
        input_tokens: InputTokens::of(body),
        thinking,
        stop_sequences,
    }
}

/// A request's input-token estimate, counted the first time it is read (the request's fields
/// are shared, not copied, until then).
#[derive(Clone)]
pub struct InputTokens {
    request: Option<JsonObject>,
    count: std::sync::OnceLock<u64>,
}

impl InputTokens {
    /// The estimate of `body` ([`estimate_input_tokens`]), made when first read.
    pub fn of(body: &JsonObject) -> Self {
        InputTokens {
            request: Some(body.clone()),
            count: std::sync::OnceLock::new(),
        }
    }

    /// A count already known.
    pub fn known(count: u64) -> Self {
        InputTokens {
            request: None,
            count: std::sync::OnceLock::from(count),
        }
    }

    pub fn get(&self) -> u64 {
        *self
            .count
            .get_or_init(|| self.request.as_ref().map_or(1, estimate_input_tokens))
    }
}

impl From<u64> for InputTokens {
    fn from(count: u64) -> Self {
        InputTokens::known(count)
    }
}

impl PartialEq for InputTokens {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for InputTokens {}

impl std::fmt::Debug for InputTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count.get() {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("(not counted yet)"),
        }
    }
}

/// A whole chat.completion as a Messages `message`.
pub fn from_chat_response(chat: &[u8], ctx: &ReplyContext) -> Result<Bytes, TranslateError> {
    let completion = Completion::read(chat).ok_or_else(|| TranslateError {
        message: "the backend's answer is not a chat.completion object".to_owned(),
        param: None,
    })?;
    let choice = completion.choices.first().ok_or_else(|| TranslateError {
        message: "the backend answered with no choices".to_owned(),
        param: None,
    })?;
    let message = &choice.message;
    let mut content = Vec::new();
    let mut output_estimate = 0;
    if ctx.thinking {
        if let Some(thinking) = message.reasoning_text() {
            output_estimate += text_tokens(thinking);
            content.push(BlockOut::Thinking {
                thinking,
                signature: "",
            });
        }
    }
    for text in [message.content.as_deref(), message.refusal.as_deref()]
        .into_iter()
        .flatten()
        .filter(|t| !t.is_empty())
    {
        output_estimate += text_tokens(text);
        content.push(BlockOut::Text { text });
    }
    let ids: Vec<String> = message
        .tool_calls
        .iter()
        .enumerate()
        .map(
            |(n, call)| match call.id.as_deref().filter(|id| !id.is_empty()) {
                Some(id) => id.to_owned(),
                None => tool_use_id(&ctx.id, n),
            },
        )
        .collect();
    let inputs: Vec<Option<&RawValue>> = message
        .tool_calls
        .iter()
        .map(|call| {
            let args = call.function.arguments.as_ref().map_or("", |a| a.as_str());
            output_estimate += text_tokens(args);
            object(args)
        })
        .collect();
    for ((call, id), input) in message.tool_calls.iter().zip(&ids).zip(&inputs) {
        content.push(BlockOut::ToolUse {
            id,
            name: &call.function.name,
            // Arguments that are not a JSON object (a model's malformed call) cannot be an
            // `input`; `{}` lets the client's schema check tell the model what was missing.
            input: input.map_or(Input::Empty, Input::Object),
        });
    }
    let matched = matched_stop(chat, ctx);
    let (stop_reason, stop_sequence) = stop_reason(
        choice.finish_reason.as_deref(),
        !message.tool_calls.is_empty(),
        matched.as_deref(),
    );
    let usage = match completion.usage {
        Some(u) => UsageOut::new(
            if u.prompt_tokens > 0 {
                u.prompt_tokens
            } else {
                ctx.input_tokens.get()
            },
            u.completion_tokens,
        ),
        None => UsageOut::new(ctx.input_tokens.get(), output_estimate.max(1)),
    };
    let mut out = MessageOut::new(&ctx.id, &ctx.model, usage);
    out.content = content;
    out.stop_reason = Some(stop_reason);
    out.stop_sequence = stop_sequence;
    Ok(Bytes::from(out.to_json()))
}

/// A `tool_use` id for a call the backend sent without one, unique within the message.
pub(crate) fn tool_use_id(message_id: &str, n: usize) -> String {
    let base = message_id.strip_prefix("msg_").unwrap_or(message_id);
    format!("toolu_{base}_{n}")
}

/// `args` as a JSON object's raw text; `None` when it is not one. Empty arguments (a call
/// that takes none) are not an object either: the caller writes `{}`.
pub(crate) fn object(args: &str) -> Option<&RawValue> {
    let raw: &RawValue = serde_json::from_str(args).ok()?;
    raw.get().starts_with('{').then_some(raw)
}

/// The Messages `stop_reason` (and `stop_sequence`) for a chat `finish_reason`.
///
/// `stop` with tool calls is `tool_use` (NIM's Llama models finish a tool call with `stop`);
/// `stop` because a stop string matched is `stop_sequence`, when the backend says which.
pub(crate) fn stop_reason<'m>(
    finish: Option<&str>,
    has_tool_calls: bool,
    matched: Option<&'m str>,
) -> (&'static str, Option<&'m str>) {
    match finish {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        Some("content_filter") => ("refusal", None),
        _ if matched.is_some() => ("stop_sequence", matched),
        _ if has_tool_calls => ("tool_use", None),
        _ => ("end_turn", None),
    }
}

/// The stop string vLLM reports as matched, from the non-standard `choices[].stop_reason`
/// (a string when a stop string matched, a token id or null otherwise), when it is one of
/// the request's stop sequences. chat.rs does not read that field, so it is found by scanning
/// the bytes: a key can only appear unescaped as a key, never inside a JSON string.
pub(crate) fn matched_stop(data: &[u8], ctx: &ReplyContext) -> Option<String> {
    if ctx.stop_sequences.is_empty() {
        return None;
    }
    // Built once: building a searcher costs more than searching a chunk.
    static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"stop_reason\""));
    for at in tollgate_core::places(&KEY, data) {
        let rest = data[at + KEY.needle().len()..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Str<'_>>();
        if let Some(Ok(value)) = values.next() {
            if ctx
                .stop_sequences
                .iter()
                .any(|s| s.as_str() == value.as_str())
            {
                return Some(value.0.into_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ReplyContext {
        ReplyContext {
            id: "msg_1".into(),
            model: "claude-x".into(),
            input_tokens: 42.into(),
            thinking: true,
            stop_sequences: vec!["END".into()],
        }
    }

    fn answer(chat: &str, ctx: &ReplyContext) -> serde_json::Value {
        let bytes = from_chat_response(chat.as_bytes(), ctx).expect("translates");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn text_answer_with_usage() {
        let v = answer(
            r#"{"id":"c","model":"meta/llama","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
            &ctx(),
        );
        assert_eq!(v["id"], "msg_1");
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["model"], "claude-x", "the requested model is echoed");
        assert_eq!(
            v["content"],
            serde_json::json!([{"type":"text","text":"hello"}])
        );
        assert_eq!(v["stop_reason"], "end_turn");
        assert!(v["stop_sequence"].is_null());
        assert_eq!(v["usage"]["input_tokens"], 7);
        assert_eq!(v["usage"]["output_tokens"], 2);
    }

    #[test]
    fn tool_calls_thinking_and_missing_usage() {
        let v = answer(
            r#"{"choices":[{"message":{"content":null,"reasoning_content":"let me see","tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"Read","arguments":"{\"file_path\":\"/x\",\"pages\":\"\"}"}},
                {"type":"function","function":{"name":"Ls","arguments":""}}]},"finish_reason":"tool_calls"}]}"#,
            &ctx(),
        );
        assert_eq!(
            v["content"][0],
            serde_json::json!({"type":"thinking","thinking":"let me see","signature":""})
        );
        assert_eq!(
            v["content"][1],
            serde_json::json!({"type":"tool_use","id":"call_a","name":"Read","input":{"file_path":"/x","pages":""}}),
            "empty-string arguments are kept as sent"
        );
        assert_eq!(v["content"][2]["id"], "toolu_1_1");
        assert_eq!(v["content"][2]["input"], serde_json::json!({}));
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["usage"]["input_tokens"], 42, "the estimate stands in");
        assert!(v["usage"]["output_tokens"].as_u64() > Some(0));
    }

    #[test]
    fn thinking_unasked_is_dropped() {
        let mut c = ctx();
        c.thinking = false;
        let v = answer(
            r#"{"choices":[{"message":{"content":"4","reasoning":"2+2"},"finish_reason":"stop"}]}"#,
            &c,
        );
        assert_eq!(
            v["content"],
            serde_json::json!([{"type":"text","text":"4"}])
        );
    }

    #[test]
    fn finish_reasons() {
        let run = |finish: &str, extra: &str| {
            answer(
                &format!(
                    r#"{{"choices":[{{"message":{{"content":"x"}},"finish_reason":"{finish}"{extra}}}]}}"#
                ),
                &ctx(),
            )
        };
        assert_eq!(run("length", "")["stop_reason"], "max_tokens");
        assert_eq!(run("content_filter", "")["stop_reason"], "refusal");
        let v = run("stop", r#","stop_reason":"END""#);
        assert_eq!(v["stop_reason"], "stop_sequence");
        assert_eq!(v["stop_sequence"], "END");
        assert_eq!(
            run("stop", r#","stop_reason":128001"#)["stop_reason"],
            "end_turn",
            "a stop token id is a natural end"
        );
        assert_eq!(
            run("stop", r#","stop_reason":"eos""#)["stop_reason"],
            "end_turn",
            "only the request's own stop strings count"
        );
    }

    #[test]
    fn refuses_what_is_not_an_answer() {
        assert!(from_chat_response(b"nope", &ctx()).is_err());
        assert!(from_chat_response(br#"{"choices":[]}"#, &ctx()).is_err());
    }

    #[test]
    fn context_reads_the_request() {
        let body = JsonObject::parse(
            br#"{"model":"claude-x","max_tokens":5,"thinking":{"type":"adaptive"},"stop_sequences":["a","b"],"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .expect("object");
        let c = reply_context(&body, "msg_9".into(), "claude-x".into());
        assert!(c.thinking);
        assert_eq!(c.stop_sequences, ["a", "b"]);
        assert!(c.input_tokens.get() > 0);
        let body = JsonObject::parse(
            br#"{"thinking":{"type":"enabled","budget_tokens":2000,"display":"omitted"},"messages":[]}"#,
        )
        .expect("object");
        assert!(!reply_context(&body, "m".into(), "x".into()).thinking);
    }
}
