//! tollgate-openai: the OpenAI-compatible connector (type `openai`) and the shared path the
//! NIM and OpenRouter connectors build on through [`Hooks`].

mod client;
mod connector;
mod discovery;
mod errors;
mod events;
mod h1;
mod upstream;
mod wire;

use std::sync::Arc;

use tollgate_core::{BuildContext, Connector, Problem, Registry};

pub use client::{build_client, HttpClient, OutBody, Protocol, SendError};
pub use connector::{
    passed_headers, retry_after, CommonOptions, Hooks, NoHooks, OpenAiCompatible, Settings,
    DEFAULT_MODELS_REFRESH, MAX_RESPONSE_BYTES,
};
pub use discovery::{Catalogue, Health};
pub use errors::upstream_error;
pub use events::event_stream;
pub use h1::UpBody;
pub use upstream::Upstream;

/// The `openai` type's fixed settings.
pub const OPENAI: Settings = Settings {
    kind: "openai",
    default_url: "https://api.openai.com/v1",
    key_var: "OPENAI_API_KEY",
    protocol: Protocol::Auto,
    // Off unless asked for: api.openai.com's list is long, and many OpenAI-compatible
    // servers have no `/models` at all.
    health_check: false,
};

/// The `openai` type's own keys: only the ones every OpenAI-compatible type shares.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OpenAiOptions {
    models_refresh: u64,
    /// Speak HTTP/2 only: h2c with prior knowledge on `http://` (servers and sidecars that
    /// speak it), h2 over TLS. One connection then carries every request to the backend.
    http2_only: bool,
    /// `translate` (default): Responses requests are translated to chat.completions;
    /// `native`: the backend speaks the Responses API itself (api.openai.com, Azure), so they
    /// go to `{api_url}/responses` untouched.
    responses: ResponsesMode,
}

#[derive(serde::Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ResponsesMode {
    #[default]
    Translate,
    Native,
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        OpenAiOptions {
            models_refresh: DEFAULT_MODELS_REFRESH,
            http2_only: false,
            responses: ResponsesMode::Translate,
        }
    }
}

/// Builds an `openai` backend.
pub fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let options = ctx
        .options::<OpenAiOptions>(OPENAI.kind)
        .map_err(|p| vec![p])?;
    let common = CommonOptions {
        models_refresh: options.models_refresh,
        native_responses: options.responses == ResponsesMode::Native,
    };
    let settings = if options.http2_only {
        Settings {
            protocol: Protocol::Http2Only,
            ..OPENAI
        }
    } else {
        OPENAI
    };
    let connector = OpenAiCompatible::build(ctx, &settings, common, Arc::new(NoHooks))?;
    Ok(Arc::new(connector))
}

/// Registers the `openai` type.
pub fn register(registry: &mut Registry) {
    registry.register(OPENAI.kind, build);
    registry.describe(
        OPENAI.kind,
        tollgate_core::TypeInfo {
            default_url: OPENAI.default_url,
            key_var: Some(OPENAI.key_var),
        },
    );
}
