//! tollgate-openai: the OpenAI-compatible connector (type `openai`) and the shared path the
//! NIM and OpenRouter connectors build on through [`Hooks`].

mod client;
mod connector;
mod errors;
mod events;

use std::sync::Arc;

use tollgate_core::{BuildContext, Connector, Problem, Registry};

pub use client::{build_client, HttpClient, Protocol};
pub use connector::{Hooks, NoHooks, OpenAiCompatible, Settings};
pub use errors::upstream_error;

/// The `openai` type's fixed settings.
pub const OPENAI: Settings = Settings {
    kind: "openai",
    default_url: "https://api.openai.com/v1",
    key_var: "OPENAI_API_KEY",
    protocol: Protocol::Auto,
};

/// The `openai` type has no options of its own.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOptions {}

/// Builds an `openai` backend.
pub fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    ctx.options::<NoOptions>(OPENAI.kind).map_err(|p| vec![p])?;
    let connector = OpenAiCompatible::build(ctx, &OPENAI, Arc::new(NoHooks))?;
    Ok(Arc::new(connector))
}

/// Registers the `openai` type.
pub fn register(registry: &mut Registry) {
    registry.register(OPENAI.kind, build);
}
