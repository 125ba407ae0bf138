//! `Env`: where connector key fallbacks and `key_env` names are looked up — the process
//! environment, or a fixed map so tests never touch process-global state.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `None` reads the process environment.
    fixed: Option<Arc<HashMap<String, String>>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Env { fixed: None }
    }

    /// A fixed set of variables (the process environment is not read).
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Env {
            fixed: Some(Arc::new(vars)),
        }
    }

    /// A variable's value; empty values count as unset.
    pub fn var(&self, name: &str) -> Option<String> {
        let value = match &self.fixed {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        value.filter(|v| !v.trim().is_empty())
    }
}
