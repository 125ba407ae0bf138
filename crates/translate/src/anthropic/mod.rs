//! The Anthropic Messages door's translators, for backends that speak chat.completions:
//!
//! - [`to_chat`]: a Messages request body → a chat.completions body a strict upstream (NIM)
//!   accepts; [`estimate_input_tokens`] for `count_tokens` and `message_start`.
//! - [`from_chat_response`]: a whole chat.completion → a Messages `message`.
//! - [`ChatToMessages`]: a chat.completions stream → the Messages event stream.
//! - [`error_body`], [`error_from_openai`], [`PING`]: Anthropic-shaped errors and keepalives.
//! - [`clamp_max_tokens`]: the output budget of a Messages body sent natively.
//! - [`grammar`]: a checker of the Messages stream grammar, for tests.
//!
//! docs/translation-anthropic.md describes every mapping and why.

mod budget;
mod errors;
mod events;
pub mod grammar;
mod messages;
mod reply;
mod request;
pub(crate) mod scan;
mod stream;
mod text;
mod tokens;

pub use budget::clamp_max_tokens;
pub use errors::{error_body, error_from_openai, PING};
pub use reply::{from_chat_response, reply_context, InputTokens, ReplyContext};
pub use request::to_chat;
pub use stream::ChatToMessages;
pub use tokens::estimate_input_tokens;
