//! The connector registry: type name → factory. Connectors are registered explicitly by the
//! binary (or a test), never by import side effects.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{BackendConfig, Problem};
use crate::connector::Connector;
use crate::env::Env;

/// What a factory gets to build one backend instance.
pub struct BuildContext<'a> {
    /// The instance name (`nvidia`, `local-nim` …).
    pub name: &'a str,
    pub config: &'a BackendConfig,
    pub env: &'a Env,
}

impl BuildContext<'_> {
    /// A problem at `backends.<name>.<key>`.
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        let path = if key.is_empty() {
            format!("backends.{}", self.name)
        } else {
            format!("backends.{}.{key}", self.name)
        };
        Problem::new(path, message)
    }

    /// Decodes the connector's own keys (those `BackendConfig` does not name) into `T`,
    /// which should deny unknown fields so a typo is reported, not ignored.
    pub fn options<T: DeserializeOwned>(&self, kind: &str) -> Result<T, Problem> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .config
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| self.problem("", format!("{e} (for a `{kind}` backend)")))
    }
}

/// Builds one connector from its configuration.
pub type Factory =
    Arc<dyn Fn(&BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> + Send + Sync>;

/// What a connector type uses when its configuration says nothing, for `tollgate config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    /// `api_url` when unset.
    pub default_url: &'static str,
    /// The variable the key falls back to, when the type takes a key.
    pub key_var: Option<&'static str>,
}

/// Connector factories by type name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Factory>,
    info: BTreeMap<&'static str, TypeInfo>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `kind`, replacing an earlier one.
    pub fn register<F>(&mut self, kind: &'static str, factory: F)
    where
        F: Fn(&BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>>
            + Send
            + Sync
            + 'static,
    {
        self.factories.insert(kind, Arc::new(factory));
    }

    /// Records what type `kind` defaults to (shown for backends the configuration does not spell out).
    pub fn describe(&mut self, kind: &'static str, info: TypeInfo) {
        self.info.insert(kind, info);
    }

    /// What type `kind` defaults to, when it said.
    pub fn info(&self, kind: &str) -> Option<TypeInfo> {
        self.info.get(kind).copied()
    }

    /// The registered type names, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Builds backend `name`.
    pub fn build(
        &self,
        name: &str,
        config: &BackendConfig,
        env: &Env,
    ) -> Result<Arc<dyn Connector>, Vec<Problem>> {
        let kinds = self.kinds();
        let ctx = BuildContext { name, config, env };
        let Some(kind) = config.kind(name, &kinds) else {
            return Err(vec![
                ctx.problem("type", "missing, and the name is no connector type")
            ]);
        };
        match self.factories.get(kind) {
            Some(factory) => factory(&ctx),
            None => Err(vec![ctx.problem(
                "type",
                format!(
                    "unknown connector type `{kind}` (one of: {})",
                    kinds.join(", ")
                ),
            )]),
        }
    }
}
