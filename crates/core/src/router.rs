//! The router: from the model a client asked for to ordered `(backend, model)` targets,
//! by the rules of SPEC §4.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::GatewayError;
use crate::pattern::ModelPolicy;

/// One place a request can go: a backend instance and the model as that backend names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: Arc<str>,
    pub model: String,
}

impl Target {
    /// `backend:model`, the id clients see in `/v1/models`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.backend, self.model)
    }
}

/// Routing rules built once per configuration.
#[derive(Debug, Clone, Default)]
pub struct Router {
    force_model: Option<String>,
    /// Route name → targets, parsed when the router is built.
    routes: HashMap<String, Vec<Target>>,
    /// Configured backends and their model lists.
    backends: HashMap<Arc<str>, ModelPolicy>,
    default_backend: Option<Arc<str>>,
}

impl Router {
    /// Builds the rules of `config`. Route targets that resolve nowhere are dropped here;
    /// `Config::validate` reports them before a configuration is accepted.
    pub fn new(config: &Config) -> Router {
        let backends: HashMap<Arc<str>, ModelPolicy> = config
            .backends
            .iter()
            .map(|(name, b)| {
                (
                    Arc::from(name.as_str()),
                    ModelPolicy::new(&b.allowed_models, &b.denied_models),
                )
            })
            .collect();
        let default_backend = config
            .default_backend
            .as_deref()
            .and_then(|d| backends.get_key_value(d).map(|(k, _)| k.clone()));
        let mut router = Router {
            force_model: config.force_model.clone().filter(|m| !m.is_empty()),
            routes: HashMap::new(),
            backends,
            default_backend,
        };
        router.routes = config
            .routes
            .iter()
            .map(|(name, targets)| {
                let parsed = targets
                    .iter()
                    .filter_map(|t| router.direct(t).ok())
                    .collect();
                (name.clone(), parsed)
            })
            .collect();
        router
    }

    /// Resolves a requested model to its targets, first primary, the rest fallbacks.
    pub fn resolve(&self, requested: &str) -> Result<Vec<Target>, GatewayError> {
        // Rule 1: force_model replaces the request's model, then routes as if asked for.
        let model = self.force_model.as_deref().unwrap_or(requested);
        // Rule 2: a route name expands to its targets; those a backend refuses are skipped.
        if let Some(targets) = self.routes.get(model) {
            let usable: Vec<Target> = targets
                .iter()
                .filter(|t| self.permits(t))
                .cloned()
                .collect();
            if usable.is_empty() {
                return Err(GatewayError::ModelNotFound(format!(
                    "route `{model}` has no target its backends allow"
                )));
            }
            return Ok(usable);
        }
        // Rules 3 and 4.
        let (target, policy) = self.direct_with_policy(model)?;
        // Rule 5: the backend's own model lists (the policy found with the prefix, when the
        // model named its backend: one lookup, not two).
        let permitted = match policy {
            Some(policy) => policy.permits(&target.backend, &target.model),
            None => self.permits(&target),
        };
        if !permitted {
            return Err(GatewayError::ModelNotFound(format!(
                "model `{}` is not available on backend `{}`",
                target.model, target.backend
            )));
        }
        Ok(vec![target])
    }

    /// Rules 3 and 4 for one model name: `backend:model` when the prefix is a configured
    /// backend, otherwise the default backend with the name unchanged.
    fn direct(&self, model: &str) -> Result<Target, GatewayError> {
        self.direct_with_policy(model).map(|(target, _)| target)
    }

    /// [`Router::direct`], with the backend's policy when the prefix found it.
    fn direct_with_policy(
        &self,
        model: &str,
    ) -> Result<(Target, Option<&ModelPolicy>), GatewayError> {
        if let Some((prefix, rest)) = model.split_once(':') {
            if let Some((name, policy)) = self.backends.get_key_value(prefix) {
                if rest.is_empty() {
                    return Err(GatewayError::ModelNotFound(format!(
                        "model `{model}` names backend `{prefix}` but no model after the `:`"
                    )));
                }
                let target = Target {
                    backend: name.clone(),
                    model: rest.to_owned(),
                };
                return Ok((target, Some(policy)));
            }
        }
        match &self.default_backend {
            Some(backend) => Ok((
                Target {
                    backend: backend.clone(),
                    model: model.to_owned(),
                },
                None,
            )),
            None => Err(GatewayError::ModelNotFound(format!(
                "model `{model}` does not start with a configured backend (`backend:model`) and no default_backend is set; {}",
                self.describe_backends()
            ))),
        }
    }

    fn permits(&self, target: &Target) -> bool {
        self.backends
            .get(&target.backend)
            .is_some_and(|p| p.permits(&target.backend, &target.model))
    }

    /// Whether a backend's model lists allow `model` (for catalogue listings).
    pub fn backend_permits(&self, backend: &str, model: &str) -> bool {
        self.backends
            .get(backend)
            .is_some_and(|p| p.permits(backend, model))
    }

    /// The route names, sorted.
    pub fn route_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    fn describe_backends(&self) -> String {
        let mut names: Vec<&str> = self.backends.keys().map(|k| k.as_ref()).collect();
        if names.is_empty() {
            return "no backends are configured".into();
        }
        names.sort_unstable();
        format!("configured backends: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(yaml: &str) -> Router {
        let config: Config = serde_yaml::from_str(yaml).expect("valid yaml");
        Router::new(&config)
    }

    fn ids(r: &Router, model: &str) -> Vec<String> {
        r.resolve(model)
            .unwrap_or_else(|e| panic!("{model}: {e}"))
            .iter()
            .map(Target::id)
            .collect()
    }

    fn not_found(r: &Router, model: &str) -> String {
        match r.resolve(model) {
            Err(e @ GatewayError::ModelNotFound(_)) => {
                assert_eq!(e.status().as_u16(), 404);
                assert_eq!(e.code(), "model_not_found");
                e.to_string()
            }
            other => panic!("{model}: expected model_not_found, got {other:?}"),
        }
    }

    const BASE: &str = "backends:\n  openrouter: {}\n  nvidia: {}\n";

    #[test]
    fn prefix_selects_backend_splitting_on_first_colon_only() {
        let r = router(BASE);
        assert_eq!(
            ids(&r, "openrouter:openai/gpt-4o:free"),
            ["openrouter:openai/gpt-4o:free"]
        );
        let t = &r.resolve("openrouter:openai/gpt-4o:free").expect("routes")[0];
        assert_eq!(
            (&*t.backend, t.model.as_str()),
            ("openrouter", "openai/gpt-4o:free")
        );
        assert_eq!(
            ids(&r, "nvidia:meta/llama3-70b"),
            ["nvidia:meta/llama3-70b"]
        );
    }

    #[test]
    fn unknown_prefix_without_default_is_404_naming_backends() {
        let r = router(BASE);
        let msg = not_found(&r, "llama3:8b");
        assert!(
            msg.contains("nvidia") && msg.contains("openrouter"),
            "{msg}"
        );
        not_found(&r, "gpt-4o");
        not_found(&r, "ghost:model");
        let msg = not_found(&router("{}"), "x");
        assert!(msg.contains("no backends are configured"), "{msg}");
    }

    #[test]
    fn unknown_prefix_goes_whole_to_the_default_backend() {
        let r = router(&format!("{BASE}default_backend: nvidia\n"));
        assert_eq!(ids(&r, "llama3:8b"), ["nvidia:llama3:8b"]);
        assert_eq!(ids(&r, "openai/gpt-4o:free"), ["nvidia:openai/gpt-4o:free"]);
        assert_eq!(ids(&r, "meta/llama3-70b"), ["nvidia:meta/llama3-70b"]);
        // A known prefix still wins over the default.
        assert_eq!(ids(&r, "openrouter:x"), ["openrouter:x"]);
    }

    #[test]
    fn empty_model_after_prefix_is_refused() {
        not_found(&router(BASE), "nvidia:");
    }

    #[test]
    fn routes_expand_in_order() {
        let r = router(&format!(
            "{BASE}default_backend: nvidia\nroutes:\n  fast: [\"nvidia:a\", \"openrouter:b\", \"plain\"]\n"
        ));
        assert_eq!(
            ids(&r, "fast"),
            ["nvidia:a", "openrouter:b", "nvidia:plain"]
        );
        assert_eq!(r.route_names(), ["fast"]);
    }

    #[test]
    fn force_model_replaces_and_can_pick_backend_or_route() {
        let r = router(&format!("{BASE}force_model: nvidia:meta/llama3-70b\n"));
        assert_eq!(ids(&r, "gpt-4o"), ["nvidia:meta/llama3-70b"]);
        assert_eq!(ids(&r, "openrouter:x"), ["nvidia:meta/llama3-70b"]);
        let r = router(&format!(
            "{BASE}default_backend: nvidia\nforce_model: meta/llama3-70b\n"
        ));
        assert_eq!(ids(&r, "anything"), ["nvidia:meta/llama3-70b"]);
        let r = router(&format!(
            "{BASE}force_model: fast\nroutes:\n  fast: [\"openrouter:m\"]\n"
        ));
        assert_eq!(ids(&r, "whatever"), ["openrouter:m"]);
    }

    #[test]
    fn backend_model_lists_refuse_with_404() {
        let r = router(
            "backends:\n  nvidia: { allowed_models: [\"meta/*\"], denied_models: [\"meta/bad\"] }\n  o: { type: openai }\nroutes:\n  r: [\"nvidia:meta/bad\", \"o:x\"]\n  dead: [\"nvidia:meta/bad\"]\n",
        );
        assert_eq!(ids(&r, "nvidia:meta/good"), ["nvidia:meta/good"]);
        not_found(&r, "nvidia:meta/bad");
        not_found(&r, "nvidia:mistral/x");
        assert_eq!(ids(&r, "r"), ["o:x"], "refused route targets are skipped");
        not_found(&r, "dead");
        assert!(r.backend_permits("nvidia", "meta/x"));
        assert!(!r.backend_permits("nvidia", "meta/bad"));
    }
}
