//! tollgate-anthropic: the Anthropic connector (type `anthropic`), a backend that speaks the
//! Messages API natively. Requests on the Messages door pass through untouched (only `model`
//! is rewritten); chat.completions requests reach it translated by
//! `tollgate_translate::to_messages`. The HTTP side — pooled client, exchange, timeouts, body
//! limits, SSE splitting, key scrubbing — is the OpenAI-compatible connector's
//! ([`tollgate_openai::Upstream`]), so it is written once.

mod connector;
mod models;

use std::sync::Arc;

use tollgate_core::{BuildContext, Connector, Problem, Registry};

pub use connector::{Anthropic, AnthropicOptions, DEFAULT_AUTH_HEADER, DEFAULT_VERSION};

/// The type name.
pub const KIND: &str = "anthropic";

/// `api_url` when the config gives none (with or without `/v1`, both are accepted).
pub const DEFAULT_URL: &str = "https://api.anthropic.com";

/// The variable the key falls back to.
pub const KEY_VAR: &str = "ANTHROPIC_API_KEY";

/// Builds an `anthropic` backend.
pub fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let options = ctx.options::<AnthropicOptions>(KIND).map_err(|p| vec![p])?;
    Ok(Arc::new(Anthropic::build(ctx, &options)?))
}

/// Registers the `anthropic` type.
pub fn register(registry: &mut Registry) {
    registry.register(KIND, build);
    registry.describe(
        KIND,
        tollgate_core::TypeInfo {
            default_url: DEFAULT_URL,
            key_var: Some(KEY_VAR),
        },
    );
}
