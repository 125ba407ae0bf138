//! The OpenAI Responses door over a chat.completions backend: a Responses request becomes a
//! chat.completions body ([`to_chat`]), and the backend's answer — whole
//! ([`from_chat_response`]) or streamed ([`ChatToResponses`]) — becomes a Responses object or
//! event stream, with the tool names, namespaces and request parameters the client sent.
//!
//! The server calls [`reply_context`] once per request (after routing, with the response id it
//! chose and the model name the client asked for) and hands the context to whichever reply
//! translator the request needs. [`grammar::check`] validates an event stream against the
//! protocol, for tests here and in the server.
//!
//! `docs/translation-responses.md` lists every field mapping and why.

mod reply;
mod request;
mod stream;
mod tools;
mod wire;

pub mod grammar;

pub use reply::from_chat_response;
pub use request::to_chat;
pub use stream::ChatToResponses;

use serde::Deserialize;
use tollgate_core::JsonObject;

use crate::TranslateError;
use tools::ToolMap;

/// What a reply translator needs to know about the request: the response's identity, the
/// request parameters a `response` object echoes, and the client's tools by their chat names.
#[derive(Clone)]
pub struct ReplyContext {
    /// The response id (`resp_…`), unique per request; item ids are derived from it.
    pub id: String,
    /// The model name the client asked for, echoed in every `response` object (the SDK and
    /// Codex compare it with what they sent, not with the backend's name).
    pub model: String,
    /// Unix seconds of the response's creation; [`reply_context`] sets the current time.
    pub created_at: u64,
    /// The client's tools by chat name, to map calls back.
    tools: ToolMap,
    /// The request parameters the `response` object echoes ([`ECHOED`], in that order), as
    /// the JSON members `"key":value` joined by commas, written once per request: each
    /// `response` object of a stream (created, in_progress, completed) copies the same bytes.
    echo: String,
    /// Reasoning goes out as a summary (`reasoning.summary` was asked for) instead of
    /// `reasoning_text` content.
    summary: bool,
    /// `parallel_tool_calls: false`: at most one tool call is passed on.
    single_call: bool,
}

impl std::fmt::Debug for ReplyContext {
    // The echoed parameters hold the instructions (a prompt): name them only, as
    // `JsonObject`'s own debug output does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyContext")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("created_at", &self.created_at)
            .field("tools", &self.tools)
            .field("echo", &ECHOED.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .field("summary", &self.summary)
            .field("single_call", &self.single_call)
            .finish()
    }
}

/// The reply context of a Responses request. `id` is the response id the server chose
/// (`resp_…`); `model` the name the client asked for, echoed back.
///
/// Fails like [`to_chat`] on a malformed `tools` array, so calling either first is enough.
pub fn reply_context(
    body: &JsonObject,
    id: String,
    model: String,
) -> Result<ReplyContext, TranslateError> {
    let defs = tools::read(body)?;
    let tools = ToolMap::new(&tools::plan(&defs)?);
    let reasoning: Option<ReasoningParam> = body
        .decode::<Option<ReasoningParam>>("reasoning")
        .map_err(|e| TranslateError::new("reasoning", format!("invalid reasoning: {e}")))?
        .flatten();
    let summary = reasoning.is_some_and(|r| r.summary.is_some() || r.generate_summary.is_some());
    let single_call = body.get("parallel_tool_calls") == Some("false");
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(ReplyContext {
        id,
        model,
        created_at,
        tools,
        echo: echo(body),
        summary,
        single_call,
    })
}

/// `reasoning` as the request gives it.
#[derive(Deserialize)]
struct ReasoningParam {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    /// The older name of `summary`.
    #[serde(default)]
    generate_summary: Option<String>,
}

/// The echoed parameters and the default each has when the client sent none (or `null`):
/// the default the Responses API reports. The SDK's `Response` model requires `tools`,
/// `tool_choice` and `parallel_tool_calls`; the others are optional there but read by agent
/// frameworks. `temperature`/`top_p` stay `null` when unset: the backend's own defaults apply,
/// and claiming OpenAI's would be wrong.
const ECHOED: &[(&str, &str)] = &[
    ("instructions", "null"),
    ("max_output_tokens", "null"),
    ("metadata", "{}"),
    ("parallel_tool_calls", "true"),
    ("previous_response_id", "null"),
    ("reasoning", "null"),
    ("temperature", "null"),
    ("text", r#"{"format":{"type":"text"}}"#),
    ("tool_choice", r#""auto""#),
    ("tools", "[]"),
    ("top_p", "null"),
    ("truncation", r#""disabled""#),
    ("user", "null"),
];

/// The echoed parameters as JSON members (see [`ReplyContext::echo`]): the client's value
/// where it sent one, else the default. Values are copied as the client wrote them: the body's
/// values are JSON text, checked when it was parsed.
fn echo(body: &JsonObject) -> String {
    let mut out = String::with_capacity(256);
    for (i, &(key, default)) in ECHOED.iter().enumerate() {
        let given = body.get(key).filter(|v| *v != "null");
        // `previous_response_id` is refused by `to_chat`; never echo one.
        let text = if key == "previous_response_id" {
            default
        } else {
            given.unwrap_or(default)
        };
        if i > 0 {
            out.push(',');
        }
        // The keys are constants without characters JSON escapes.
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(text);
    }
    out
}

impl ReplyContext {
    /// An item id derived from the response id: `msg_<id>_<index>`. Built with pushes: the
    /// `fmt` machinery costs more than the rest of an item.
    fn item_id(&self, prefix: &str, index: usize) -> String {
        let base = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        let mut id = String::with_capacity(prefix.len() + base.len() + 8);
        id.push_str(prefix);
        id.push('_');
        id.push_str(base);
        id.push('_');
        id.push_str(tollgate_core::Decimal::new(index as u64).as_str());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> JsonObject {
        JsonObject::parse(json.as_bytes()).expect("json")
    }

    #[test]
    fn context_echoes_given_parameters_and_defaults() {
        let ctx = reply_context(
            &body(
                r#"{"model":"m","input":"hi","temperature":0.5,"tools":[{"type":"web_search"}],"previous_response_id":null,"metadata":null}"#,
            ),
            "resp_1".into(),
            "m".into(),
        )
        .expect("context");
        let members = JsonObject::parse(format!("{{{}}}", ctx.echo).as_bytes()).expect("json");
        let echoed: Vec<(&str, &str)> = members
            .keys()
            .map(|k| (k, members.get(k).expect("member")))
            .collect();
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            ECHOED.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            "every parameter, in order"
        );
        assert!(echoed.contains(&("temperature", "0.5")));
        assert!(echoed.contains(&("tools", r#"[{"type":"web_search"}]"#)));
        assert!(
            echoed.contains(&("metadata", "{}")),
            "null metadata echoes as {{}}"
        );
        assert!(echoed.contains(&("tool_choice", r#""auto""#)));
        assert!(echoed.contains(&("top_p", "null")));
        assert!(!ctx.summary);
        assert!(!ctx.single_call);
        assert_eq!(ctx.item_id("msg", 3), "msg_1_3");
        for index in [0, 9, 10, 12_345, usize::MAX] {
            assert_eq!(ctx.item_id("fc", index), format!("fc_1_{index}"));
        }
    }

    #[test]
    fn debug_output_names_echoed_fields_without_their_values() {
        let ctx = reply_context(
            &body(r#"{"input":"x","instructions":"the secret prompt"}"#),
            "r".into(),
            "m".into(),
        )
        .expect("context");
        let debug = format!("{ctx:?}");
        assert!(debug.contains("instructions"), "{debug}");
        assert!(!debug.contains("secret prompt"), "{debug}");
    }

    #[test]
    fn context_reads_summary_and_parallel_calls() {
        let ctx = reply_context(
            &body(r#"{"input":"x","reasoning":{"summary":"auto"},"parallel_tool_calls":false}"#),
            "r".into(),
            "m".into(),
        )
        .expect("context");
        assert!(ctx.summary);
        assert!(ctx.single_call);
        assert!(reply_context(&body(r#"{"reasoning":5}"#), "r".into(), "m".into()).is_err());
        let unset = reply_context(
            &body(r#"{"input":"x","reasoning":null,"parallel_tool_calls":null,"tools":null}"#),
            "r".into(),
            "m".into(),
        )
        .expect("null reads as absent");
        assert!(!unset.summary);
        assert!(!unset.single_call);
    }
}
