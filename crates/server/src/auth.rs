//! Client keys: who may call the gateway and which models each key may use.
//!
//! Keys are held as SHA-256 digests, so a configured `key_sha256` and a plain `key` are the
//! same thing at run time, and lookup is one hash-map probe of a fixed-size digest.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use tollgate_core::config::KeyConfig;
use tollgate_core::pattern::ModelPolicy;
use tollgate_core::secret::clean_key;
use tollgate_core::{Env, GatewayError, Problem, Target};

/// An authenticated caller.
#[derive(Debug)]
pub struct ClientKey {
    /// The configured name, used in logs and metrics in place of the key.
    pub name: String,
    policy: ModelPolicy,
}

impl ClientKey {
    /// Keeps the targets this key may use; 403 when none is left.
    pub fn filter(
        &self,
        targets: Vec<Target>,
        requested: &str,
    ) -> Result<Vec<Target>, GatewayError> {
        if self.policy.is_open() {
            return Ok(targets);
        }
        let allowed: Vec<Target> = targets
            .into_iter()
            .filter(|t| self.policy.permits(&t.backend, &t.model))
            .collect();
        if allowed.is_empty() {
            return Err(GatewayError::PermissionDenied(format!(
                "key `{}` may not use model `{requested}`",
                self.name
            )));
        }
        Ok(allowed)
    }

    /// Whether this key may use `backend:model` (for listings).
    pub fn permits(&self, backend: &str, model: &str) -> bool {
        self.policy.permits(backend, model)
    }

    /// Whether this key denies any model: pass-through cannot tell which model a request
    /// uses, so such a key may not use it.
    pub fn denies_any(&self) -> bool {
        self.policy.denies_any()
    }
}

/// The configured client keys. Empty means the gateway is open.
#[derive(Debug, Default)]
pub struct Keys {
    by_digest: HashMap<[u8; 32], Arc<ClientKey>>,
}

impl Keys {
    /// Resolves every key's value (`key`, `key_env` via `env`, or `key_sha256`), plus the
    /// `PROXY_API_KEY` variable as a key named `env`.
    pub fn build(configs: &[KeyConfig], env: &Env) -> Result<Keys, Vec<Problem>> {
        let mut keys = Keys::default();
        let mut problems = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let digest = if let Some(key) = &c.key {
                Some(sha256(key.expose().as_bytes()))
            } else if let Some(var) = &c.key_env {
                match env.var(var) {
                    Some(v) => Some(sha256(clean_key(&v).as_bytes())),
                    None => {
                        problems.push(Problem::new(
                            format!("auth.keys[{i}].key_env"),
                            format!("environment variable `{var}` is not set"),
                        ));
                        None
                    }
                }
            } else {
                c.key_sha256.as_deref().and_then(parse_hex)
            };
            if let Some(digest) = digest {
                let key = ClientKey {
                    name: c.name.clone(),
                    policy: ModelPolicy::new(&c.allowed_models, &c.denied_models),
                };
                if keys.by_digest.insert(digest, Arc::new(key)).is_some() {
                    problems.push(Problem::new(
                        format!("auth.keys[{i}]"),
                        "the same key value is configured twice",
                    ));
                }
            }
        }
        if let Some(v) = env.var("PROXY_API_KEY") {
            let key = ClientKey {
                name: "env".into(),
                policy: ModelPolicy::default(),
            };
            keys.by_digest
                .entry(sha256(clean_key(&v).as_bytes()))
                .or_insert_with(|| Arc::new(key));
        }
        if problems.is_empty() {
            Ok(keys)
        } else {
            Err(problems)
        }
    }

    /// One key, open to every model: the session key of a local launcher (`tollgate code`),
    /// so that the gateway it starts on loopback serves that client only.
    pub fn single(name: &str, key: &str) -> Keys {
        let client = ClientKey {
            name: name.to_owned(),
            policy: ModelPolicy::default(),
        };
        let mut by_digest = HashMap::new();
        by_digest.insert(sha256(key.as_bytes()), Arc::new(client));
        Keys { by_digest }
    }

    /// Whether any key is configured (else every request is let in).
    pub fn enabled(&self) -> bool {
        !self.by_digest.is_empty()
    }

    /// Finds the caller's key from `Authorization: Bearer …` or `x-api-key`.
    /// `Ok(None)` when no keys are configured.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<ClientKey>>, GatewayError> {
        if !self.enabled() {
            return Ok(None);
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .or_else(|| headers.get("x-api-key"))
            .and_then(|v| v.to_str().ok())
            .map(clean_key)
            .filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return Err(GatewayError::InvalidApiKey(
                "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`".into(),
            ));
        };
        match self.by_digest.get(&sha256(presented.as_bytes())) {
            Some(key) => Ok(Some(key.clone())),
            None => Err(GatewayError::InvalidApiKey("invalid API key".into())),
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn configs(yaml: &str) -> Vec<KeyConfig> {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn all_three_key_sources_authenticate() {
        let hex: String = sha256(b"hashed-key")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let env = Env::from_map([("CI_KEY".to_string(), " Bearer env-key ".to_string())].into());
        let keys = Keys::build(
            &configs(&format!(
                "- {{ name: plain, key: plain-key }}\n- {{ name: fromenv, key_env: CI_KEY }}\n- {{ name: hashed, key_sha256: {hex} }}\n"
            )),
            &env,
        )
        .expect("builds");
        let name = |h: HeaderMap| {
            keys.authenticate(&h)
                .expect("ok")
                .expect("key")
                .name
                .clone()
        };
        assert_eq!(name(headers("authorization", "Bearer plain-key")), "plain");
        assert_eq!(name(headers("x-api-key", "env-key")), "fromenv");
        assert_eq!(
            name(headers("authorization", "Bearer hashed-key")),
            "hashed"
        );
        let e = keys
            .authenticate(&headers("authorization", "Bearer nope"))
            .expect_err("bad");
        assert_eq!(e.status().as_u16(), 401);
        assert!(
            !e.to_string().contains("nope"),
            "the presented key is not echoed"
        );
        assert!(keys.authenticate(&HeaderMap::new()).is_err());
    }

    #[test]
    fn open_gateway_and_proxy_api_key() {
        let keys = Keys::build(&[], &Env::from_map(Default::default())).expect("builds");
        assert!(keys
            .authenticate(&HeaderMap::new())
            .expect("open")
            .is_none());
        let env = Env::from_map([("PROXY_API_KEY".to_string(), "pk".to_string())].into());
        let keys = Keys::build(&[], &env).expect("builds");
        let key = keys
            .authenticate(&headers("authorization", "Bearer pk"))
            .expect("ok");
        assert_eq!(key.expect("key").name, "env");
    }

    #[test]
    fn unset_key_env_is_a_problem() {
        let e = Keys::build(
            &configs("- { name: a, key_env: NOPE }"),
            &Env::from_map(Default::default()),
        )
        .expect_err("problem");
        assert_eq!(e[0].path, "auth.keys[0].key_env");
    }

    #[test]
    fn model_patterns_refuse_with_403() {
        let keys = Keys::build(
            &configs("- { name: ci, key: k, allowed_models: [\"nvidia:*\"], denied_models: [\"nvidia:big\"] }"),
            &Env::from_map(Default::default()),
        )
        .expect("builds");
        let key = keys
            .authenticate(&headers("x-api-key", "k"))
            .expect("ok")
            .expect("key");
        let t = |b: &str, m: &str| Target {
            backend: b.into(),
            model: m.into(),
        };
        assert_eq!(
            key.filter(vec![t("nvidia", "small")], "x")
                .expect("allowed")
                .len(),
            1
        );
        let e = key
            .filter(vec![t("nvidia", "big")], "x")
            .expect_err("denied");
        assert_eq!(e.status().as_u16(), 403);
        let kept = key
            .filter(vec![t("openai", "g"), t("nvidia", "s")], "r")
            .expect("one left");
        assert_eq!(kept, vec![t("nvidia", "s")]);
    }
}
