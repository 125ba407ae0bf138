//! tollgate-nvidia: the NVIDIA NIM connector (type `nvidia`), hosted
//! (`integrate.api.nvidia.com`) or self-hosted. It is the OpenAI-compatible connector plus
//! NIM's differences, stated as [`Hooks`]: the request body NIM's strict schema accepts,
//! HTTP/1.1 only, discovery only with a key, and a first-use health check by default.

use std::sync::Arc;

use serde::Deserialize;
use tollgate_core::{BuildContext, Connector, Endpoint, JsonObject, Problem, Registry};
use tollgate_openai::{
    CommonOptions, Hooks, OpenAiCompatible, Protocol, Settings, DEFAULT_MODELS_REFRESH,
};

/// The `nvidia` type's fixed settings.
pub const NVIDIA: Settings = Settings {
    kind: "nvidia",
    default_url: "https://integrate.api.nvidia.com/v1",
    key_var: "NVIDIA_API_KEY",
    // Long NIM streams over HTTP/2 are dropped mid-answer; HTTP/1.1 keeps them whole.
    protocol: Protocol::Http1Only,
    health_check: true,
};

/// Fields dropped from every outbound body unless the backend sets `drop_fields`.
///
/// Hosted NIM validates bodies against a per-model schema that forbids extra fields: one
/// unknown key and the whole request fails with `422 extra_forbidden`. These are fields that
/// OpenAI SDKs and agent frameworks send on their own and that mean nothing to a NIM, so
/// dropping them loses nothing:
///
/// - `parallel_tool_calls`: sent by the OpenAI Agents SDK and LangChain with every tool
///   list; NIMs call tools as their model's parser does and reject the flag.
/// - `service_tier`, `store`, `metadata`: OpenAI platform billing tiers and stored
///   completions.
/// - `prediction`: OpenAI Predicted Outputs.
/// - `modalities`, `audio`: OpenAI audio output.
/// - `web_search_options`: OpenAI's built-in web search.
/// - `verbosity`, `prompt_cache_key`, `safety_identifier`: newer OpenAI-only parameters
///   (GPT-5 verbosity, prompt caching, abuse tracking).
///
/// `reasoning_effort` is deliberately kept: some NIM models (gpt-oss) use it, and dropping it
/// would silently change their answers. Add it to `drop_fields` for models that refuse it.
///
/// `stream_options` and `max_completion_tokens` are not in this list: they are rewritten
/// always (see [`Nim::prepare_body`]), whatever `drop_fields` says.
pub const DEFAULT_DROP_FIELDS: &[&str] = &[
    "parallel_tool_calls",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "modalities",
    "audio",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

/// Fields the gateway itself relies on; dropping them would break every request.
const KEPT_FIELDS: &[&str] = &["model", "messages", "stream"];

/// The `nvidia` backend's own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NimOptions {
    /// Top-level body fields removed before sending; replaces [`DEFAULT_DROP_FIELDS`].
    drop_fields: Vec<String>,
    /// Seconds a discovered model list is reused.
    models_refresh: u64,
}

impl Default for NimOptions {
    fn default() -> Self {
        NimOptions {
            drop_fields: DEFAULT_DROP_FIELDS.iter().map(|f| f.to_string()).collect(),
            models_refresh: DEFAULT_MODELS_REFRESH,
        }
    }
}

/// NIM's differences from plain OpenAI.
#[derive(Debug)]
pub struct Nim {
    /// Top-level fields removed from every body.
    drop_fields: Vec<String>,
}

impl Nim {
    /// Hooks dropping `drop_fields` on top of the fixed rewrites.
    pub fn new(drop_fields: Vec<String>) -> Self {
        Nim { drop_fields }
    }
}

impl Hooks for Nim {
    /// NIM's schema forbids `stream_options`: its streams carry usage only if it sends it.
    fn ask_stream_usage(&self) -> bool {
        false
    }

    fn prepare_body(&self, _endpoint: Endpoint, body: &mut JsonObject) {
        // NIM predates `max_completion_tokens` and forbids it; `max_tokens` means the same
        // there. A `max_tokens` the client gave wins (`rename` never overwrites).
        body.rename("max_completion_tokens", "max_tokens");
        // Hosted NIM answers 422 to `stream_options` (some models hang instead), so usage
        // chunks come only when the upstream sends them on its own.
        body.remove("stream_options");
        if !self.drop_fields.is_empty() {
            body.retain(|field| !self.drop_fields.iter().any(|d| d == field));
        }
    }

    /// NIM's catalogue is asked for only with a key: without one the hosted API cannot be
    /// used, and listing its models would only advertise failures.
    fn may_discover(&self, has_key: bool) -> bool {
        has_key
    }
}

/// Builds an `nvidia` backend.
pub fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let options = ctx
        .options::<NimOptions>(NVIDIA.kind)
        .map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    for (i, field) in options.drop_fields.iter().enumerate() {
        if field.trim().is_empty() {
            problems.push(ctx.problem(&format!("drop_fields[{i}]"), "must not be empty"));
        } else if KEPT_FIELDS.contains(&field.as_str()) {
            problems.push(ctx.problem(
                &format!("drop_fields[{i}]"),
                format!("`{field}` cannot be dropped: every request needs it"),
            ));
        }
    }
    let common = CommonOptions {
        models_refresh: options.models_refresh,
        ..CommonOptions::default()
    };
    let hooks = Arc::new(Nim::new(options.drop_fields));
    let connector = OpenAiCompatible::build(ctx, &NVIDIA, common, hooks);
    match connector {
        Ok(c) if problems.is_empty() => Ok(Arc::new(c)),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Registers the `nvidia` type.
pub fn register(registry: &mut Registry) {
    registry.register(NVIDIA.kind, build);
    registry.describe(
        NVIDIA.kind,
        tollgate_core::TypeInfo {
            default_url: NVIDIA.default_url,
            key_var: Some(NVIDIA.key_var),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::config::BackendConfig;
    use tollgate_core::Env;

    fn prepared(hooks: &Nim, body: &str) -> String {
        let mut obj = JsonObject::parse(body.as_bytes()).expect("json");
        hooks.prepare_body(Endpoint::ChatCompletions, &mut obj);
        String::from_utf8(obj.to_bytes().to_vec()).expect("utf8")
    }

    fn default_hooks() -> Nim {
        Nim::new(NimOptions::default().drop_fields)
    }

    #[test]
    fn max_completion_tokens_becomes_max_tokens_and_stream_options_go() {
        let out = prepared(
            &default_hooks(),
            r#"{"model":"m","messages":[],"max_completion_tokens":64,"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            out,
            r#"{"model":"m","messages":[],"max_tokens":64,"stream":true}"#
        );
    }

    #[test]
    fn a_given_max_tokens_is_never_overwritten() {
        let out = prepared(
            &default_hooks(),
            r#"{"model":"m","max_tokens":10,"max_completion_tokens":99}"#,
        );
        assert_eq!(out, r#"{"model":"m","max_tokens":10}"#);
    }

    #[test]
    fn default_drop_list_removes_openai_only_fields_and_keeps_the_rest() {
        let out = prepared(
            &default_hooks(),
            r#"{"model":"m","parallel_tool_calls":false,"store":true,"metadata":{"a":"b"},"service_tier":"auto","temperature":0.5,"tools":[],"reasoning_effort":"low","x_new":1}"#,
        );
        assert_eq!(
            out,
            r#"{"model":"m","temperature":0.5,"tools":[],"reasoning_effort":"low","x_new":1}"#
        );
    }

    #[test]
    fn an_empty_drop_list_keeps_only_the_fixed_rewrites() {
        let out = prepared(
            &Nim::new(Vec::new()),
            r#"{"model":"m","store":true,"max_completion_tokens":5,"stream_options":{}}"#,
        );
        assert_eq!(out, r#"{"model":"m","store":true,"max_tokens":5}"#);
    }

    #[test]
    fn discovery_needs_a_key() {
        assert!(default_hooks().may_discover(true));
        assert!(!default_hooks().may_discover(false));
    }

    #[test]
    fn nim_is_http1_only_with_a_health_check() {
        assert_eq!(NVIDIA.protocol, Protocol::Http1Only);
        const { assert!(NVIDIA.health_check) };
        assert_eq!(NVIDIA.default_url, "https://integrate.api.nvidia.com/v1");
        assert_eq!(NVIDIA.key_var, "NVIDIA_API_KEY");
    }

    fn build_yaml(yaml: &str) -> Result<Arc<dyn Connector>, Vec<Problem>> {
        let config: BackendConfig = serde_yaml::from_str(yaml).expect("yaml");
        let env = Env::from_map(Default::default());
        build(&BuildContext {
            name: "nim",
            config: &config,
            env: &env,
        })
    }

    #[test]
    fn options_are_checked() {
        assert!(build_yaml("drop_fields: [store]\nmodels_refresh: 60\n").is_ok());
        assert!(build_yaml("drop_fields: []\n").is_ok());
        let problems = build_yaml("drop_field: [store]\n")
            .err()
            .expect("typo refused");
        assert!(problems[0].message.contains("drop_field"), "{:?}", problems);
        let problems = build_yaml("drop_fields: [messages, \"\"]\nmodels_refresh: 0\n")
            .err()
            .expect("refused");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "backends.nim.drop_fields[0]",
                "backends.nim.drop_fields[1]",
                "backends.nim.models_refresh"
            ]
        );
    }
}
