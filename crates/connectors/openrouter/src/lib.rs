//! tollgate-openrouter: the OpenRouter connector (type `openrouter`). It is the
//! OpenAI-compatible connector plus OpenRouter's differences, stated as [`Hooks`]: its
//! `: OPENROUTER PROCESSING` comments are dropped, and discovery needs a key.
//!
//! The rest needs no hook: the attribution headers `HTTP-Referer` and `X-Title` come from the
//! backend's `headers` (sent on every request by the shared path), and OpenRouter's
//! mid-stream `{"error":…}` frames are handled by the shared event stream — forwarded, then
//! the stream ends with no `[DONE]`; before any data they become a real error status.

use std::sync::Arc;

use serde::Deserialize;
use tollgate_core::{BuildContext, Connector, Problem, Registry, SseEvent};
use tollgate_openai::{
    CommonOptions, Hooks, OpenAiCompatible, Protocol, Settings, DEFAULT_MODELS_REFRESH,
};

/// The `openrouter` type's fixed settings.
pub const OPENROUTER: Settings = Settings {
    kind: "openrouter",
    default_url: "https://openrouter.ai/api/v1",
    key_var: "OPENROUTER_API_KEY",
    protocol: Protocol::Auto,
    // OpenRouter's `/models` is public and long: answering it proves neither the key nor
    // the model, so a check is off unless asked for.
    health_check: false,
};

/// The `openrouter` backend's own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OpenRouterOptions {
    /// Seconds a discovered model list is reused.
    models_refresh: u64,
}

impl Default for OpenRouterOptions {
    fn default() -> Self {
        OpenRouterOptions {
            models_refresh: DEFAULT_MODELS_REFRESH,
        }
    }
}

/// OpenRouter's differences from plain OpenAI.
#[derive(Debug, Default)]
pub struct OpenRouter;

impl Hooks for OpenRouter {
    /// OpenRouter has its own usage accounting switch; its streams are left as clients ask.
    fn ask_stream_usage(&self) -> bool {
        false
    }

    /// Catalogue only with a key: the list is public, but without a key none of it answers.
    fn may_discover(&self, has_key: bool) -> bool {
        has_key
    }

    /// Drops events that carry no data: OpenRouter's `: OPENROUTER PROCESSING` comments,
    /// sent while it waits for a provider. Forwarding them would be harmless to SSE clients,
    /// but the gateway takes the first event of a stream as the upstream's commitment: a
    /// comment would commit the 200 before OpenRouter has picked a provider, and a provider
    /// failure that follows (as an error frame) could no longer fall back or keep its status.
    /// The relay's own keepalives cover the silence instead, in the configured format.
    fn on_event(&self, event: SseEvent) -> Option<SseEvent> {
        event.payload().is_some().then_some(event)
    }
}

/// Builds an `openrouter` backend.
pub fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let options = ctx
        .options::<OpenRouterOptions>(OPENROUTER.kind)
        .map_err(|p| vec![p])?;
    let common = CommonOptions {
        models_refresh: options.models_refresh,
        ..CommonOptions::default()
    };
    let connector = OpenAiCompatible::build(ctx, &OPENROUTER, common, Arc::new(OpenRouter))?;
    Ok(Arc::new(connector))
}

/// Registers the `openrouter` type.
pub fn register(registry: &mut Registry) {
    registry.register(OPENROUTER.kind, build);
    registry.describe(
        OPENROUTER.kind,
        tollgate_core::TypeInfo {
            default_url: OPENROUTER.default_url,
            key_var: Some(OPENROUTER.key_var),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tollgate_core::config::BackendConfig;
    use tollgate_core::Env;

    fn event(raw: &'static str) -> SseEvent {
        SseEvent::from_raw(Bytes::from_static(raw.as_bytes()))
    }

    #[test]
    fn processing_comments_are_dropped_data_kept() {
        let hooks = OpenRouter;
        assert!(hooks
            .on_event(event(": OPENROUTER PROCESSING\n\n"))
            .is_none());
        assert!(hooks
            .on_event(event(": OPENROUTER PROCESSING\r\n\r\n"))
            .is_none());
        let data = event("data: {\"choices\":[]}\n\n");
        assert_eq!(hooks.on_event(data.clone()), Some(data));
        let done = event("data: [DONE]\n\n");
        assert_eq!(hooks.on_event(done.clone()), Some(done));
    }

    #[test]
    fn discovery_needs_a_key() {
        assert!(OpenRouter.may_discover(true));
        assert!(!OpenRouter.may_discover(false));
    }

    #[test]
    fn options_are_checked() {
        let env = Env::from_map(Default::default());
        let build_yaml = |yaml: &str| {
            let config: BackendConfig = serde_yaml::from_str(yaml).expect("yaml");
            build(&BuildContext {
                name: "or",
                config: &config,
                env: &env,
            })
            .map(|_| ())
        };
        assert!(build_yaml(
            "models_refresh: 30\nheaders: { HTTP-Referer: \"https://x.org\", X-Title: app }\n"
        )
        .is_ok());
        let problems = build_yaml("referer: x\n").expect_err("unknown key");
        assert!(problems[0].message.contains("referer"), "{problems:?}");
    }
}
