//! A chat.completions request → an Anthropic Messages request.
//!
//! Anthropic validates strictly: an unknown top-level field, an empty text block, two turns
//! of the same role in a row, a `tool_result` not answering the `tool_use` just before it, or
//! a missing `max_tokens` is a 400. So the Messages body is built field by field from what
//! this module understands; nothing of the chat body is forwarded blindly. What cannot be
//! said in Messages (`n > 1`, `logprobs`, audio, legacy `functions`) is refused with a 400
//! naming the field, rather than answered differently from what the client asked.
//!
//! This file holds the top-level fields; the conversation is `messages.rs`, tools and
//! `tool_choice` are `tools.rs`.

use serde::Deserialize;
use tollgate_core::JsonObject;

use super::messages::{conversation, Conversation, Role, Turn};
use super::tools::{tool_choice, tools};
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
pub(super) fn decode_opt<'a, T: Deserialize<'a>>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_at_least_anthropics_minimum() {
        assert!(THINKING_BUDGETS
            .iter()
            .all(|(_, b)| *b >= MIN_THINKING_BUDGET));
    }
}
