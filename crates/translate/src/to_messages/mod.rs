//! Chat Completions → Anthropic Messages, for a backend that speaks only Messages (the
//! `anthropic` connector): a chat.completions request becomes a Messages request
//! ([`from_chat`]); the Messages answer, its event stream and its errors become
//! chat.completions ones ([`to_chat_response`], [`MessagesToChat`], [`openai_error`]).
//!
//! The mapping, field by field, is in `docs/connectors/anthropic.md`.

mod error;
mod messages;
mod reply;
mod request;
mod stream;
mod tools;
mod wire;

pub use error::{event_error, openai_error, status_of};
pub use reply::to_chat_response;
pub use request::{
    from_chat, ANSWER_RESERVE, DEFAULT_MAX_TOKENS, MIN_THINKING_BUDGET, THINKING_BUDGETS,
};
pub use stream::MessagesToChat;

use serde::Deserialize;
use tollgate_core::JsonObject;

/// What a chat.completions answer needs that the Messages answer does not say: the client's
/// view of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReplyContext {
    /// The answer's `id`, the same on every chunk (`chatcmpl-…`).
    pub id: String,
    /// The model name the client asked for, echoed on the answer and every chunk.
    pub model: String,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The answer's `created` (Unix seconds), the same on every chunk.
    pub created: u64,
}

/// The context for answering the chat request `body`: `id` and `model` as the client should
/// see them, `created` now.
pub fn chat_reply_context(body: &JsonObject, id: String, model: String) -> ChatReplyContext {
    #[derive(Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: Option<bool>,
    }
    let include_usage = body
        .decode::<Option<StreamOptions>>("stream_options")
        .ok()
        .flatten()
        .flatten()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ChatReplyContext {
        id,
        model,
        include_usage,
        created,
    }
}
