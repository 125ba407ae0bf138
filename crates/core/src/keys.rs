//! Every configuration key path tollgate knows, so a merged configuration can be checked
//! for unknown keys — all of them at once, each with its path and a "did you mean".
//!
//! serde's `deny_unknown_fields` stops at the first unknown key and cannot see through the
//! free-form maps (`backends`, `routes`); this walk can.

use serde_json::Value;

use crate::config::Problem;

/// The shape of a part of the configuration.
enum Shape {
    /// A value of any kind (scalars, and sections whose content is checked elsewhere).
    Any,
    /// An object with these fields only.
    Fields(&'static [(&'static str, Shape)]),
    /// An object whose keys are free names (backend instances, routes), each of `Shape`.
    Named(&'static Shape),
    /// A list of `Shape`.
    List(&'static Shape),
    /// A backend: these common fields, and the connector's own options (checked by the
    /// connector when it is built).
    Backend(&'static [(&'static str, Shape)]),
}

const SERVER: &[(&str, Shape)] = &[
    ("host", Shape::Any),
    ("port", Shape::Any),
    ("max_body_bytes", Shape::Any),
    ("request_timeout", Shape::Any),
    ("shutdown_grace", Shape::Any),
    ("header_read_timeout", Shape::Any),
    ("body_read_timeout", Shape::Any),
    ("body_gap_timeout", Shape::Any),
    ("idle_timeout", Shape::Any),
    ("http2_keepalive_interval", Shape::Any),
    ("http2_keepalive_timeout", Shape::Any),
    ("max_connections", Shape::Any),
    ("backlog", Shape::Any),
];

const KEY: &[(&str, Shape)] = &[
    ("name", Shape::Any),
    ("key", Shape::Any),
    ("key_env", Shape::Any),
    ("key_sha256", Shape::Any),
    ("allowed_models", Shape::Any),
    ("denied_models", Shape::Any),
    ("limits", Shape::Fields(LIMITS)),
    ("admin", Shape::Any),
];

const LIMITS: &[(&str, Shape)] = &[
    ("rpm", Shape::Any),
    ("tpm", Shape::Any),
    ("tokens_per_day", Shape::Any),
    ("max_tokens_per_request", Shape::Any),
];

const STATE: &[(&str, Shape)] = &[
    ("store", Shape::Any),
    ("path", Shape::Any),
    ("url", Shape::Any),
    ("on_error", Shape::Any),
];

const AUTH: &[(&str, Shape)] = &[("keys", Shape::List(&Shape::Fields(KEY)))];

const BACKOFF: &[(&str, Shape)] = &[("initial_ms", Shape::Any), ("max_ms", Shape::Any)];

const BREAKER: &[(&str, Shape)] = &[("failures", Shape::Any), ("cooldown", Shape::Any)];

const FAILURE_HANDLING: &[(&str, Shape)] = &[
    ("keepalive_interval", Shape::Any),
    ("keepalive_format", Shape::Any),
    ("retries", Shape::Any),
    ("backoff", Shape::Fields(BACKOFF)),
    ("max_silent_wait", Shape::Any),
    ("circuit_breaker", Shape::Fields(BREAKER)),
];

const BACKEND: &[(&str, Shape)] = &[
    ("type", Shape::Any),
    ("api_url", Shape::Any),
    ("api_key", Shape::Any),
    ("timeout", Shape::Any),
    ("connect_timeout", Shape::Any),
    ("models", Shape::Any),
    ("allowed_models", Shape::Any),
    ("denied_models", Shape::Any),
    ("headers", Shape::Any),
    ("default_headers", Shape::Any),
    ("auth_header", Shape::Any),
    ("health_check", Shape::Any),
    ("limits", Shape::Fields(LIMITS)),
    ("output_budget", Shape::Fields(OUTPUT_BUDGET)),
    ("reasoning", Shape::Any),
];

const OUTPUT_BUDGET: &[(&str, Shape)] = &[
    ("default_max_tokens", Shape::Any),
    ("hard_max_tokens", Shape::Any),
];

const ANTHROPIC: &[(&str, Shape)] = &[("models", Shape::Any)];

const DASHBOARD: &[(&str, Shape)] = &[("enabled", Shape::Any), ("key_env", Shape::Any)];

const LOGGING: &[(&str, Shape)] = &[("format", Shape::Any), ("level", Shape::Any)];

const ROOT: &[(&str, Shape)] = &[
    ("server", Shape::Fields(SERVER)),
    ("default_backend", Shape::Any),
    ("force_model", Shape::Any),
    ("auth", Shape::Fields(AUTH)),
    ("failure_handling", Shape::Fields(FAILURE_HANDLING)),
    ("anthropic", Shape::Fields(ANTHROPIC)),
    ("output_budget", Shape::Fields(OUTPUT_BUDGET)),
    ("backends", Shape::Named(&Shape::Backend(BACKEND))),
    ("routes", Shape::Named(&Shape::Any)),
    ("limits", Shape::Fields(LIMITS)),
    ("state", Shape::Fields(STATE)),
    ("dashboard", Shape::Fields(DASHBOARD)),
    ("metrics", Shape::Fields(&[("enabled", Shape::Any)])),
    ("logging", Shape::Fields(LOGGING)),
];

/// Every unknown key in `root` (a whole configuration as JSON), with its dotted path.
pub fn unknown_keys(root: &Value) -> Vec<Problem> {
    let mut copy = root.clone();
    strip_unknown(&mut copy)
}

/// Removes every unknown key from `root` and reports each, so the rest can still be parsed
/// and checked (one pass shows every problem).
pub fn strip_unknown(root: &mut Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    walk(root, &Shape::Fields(ROOT), "", &mut problems);
    problems
}

fn walk(value: &mut Value, shape: &Shape, path: &str, out: &mut Vec<Problem>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (shape, value) {
        (Shape::Fields(fields), Value::Object(map)) => {
            map.retain(
                |key, child| match fields.iter().find(|(name, _)| name == key) {
                    Some((_, child_shape)) => {
                        walk(child, child_shape, &join(key), out);
                        true
                    }
                    None => {
                        out.push(unknown(&join(key), key, fields.iter().map(|(n, _)| *n)));
                        false
                    }
                },
            );
        }
        (Shape::Named(inner), Value::Object(map)) => {
            for (key, child) in map.iter_mut() {
                walk(child, inner, &join(key), out);
            }
        }
        (Shape::List(inner), Value::Array(items)) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, inner, &format!("{path}[{i}]"), out);
            }
        }
        (Shape::Backend(fields), Value::Object(map)) => {
            map.retain(|key, child| {
                if let Some((_, child_shape)) = fields.iter().find(|(name, _)| name == key) {
                    walk(child, child_shape, &join(key), out);
                    true
                } else if let Some(near) = nearest(key, fields.iter().map(|(n, _)| *n)) {
                    // A near miss of a common key is a typo, not a connector option.
                    out.push(Problem::new(
                        join(key),
                        format!("unknown key `{key}` (did you mean `{near}`?)"),
                    ));
                    false
                } else {
                    true
                }
            });
        }
        // Wrong kinds (a list where an object belongs …) are reported by typed parsing.
        _ => {}
    }
}

fn unknown<'a>(path: &str, key: &str, known: impl Iterator<Item = &'a str> + Clone) -> Problem {
    match nearest(key, known) {
        Some(near) => Problem::new(
            path,
            format!("unknown key `{key}` (did you mean `{near}`?)"),
        ),
        None => Problem::new(path, format!("unknown key `{key}`")),
    }
}

/// The known key closest to `key`, when it is close enough to be a typo.
fn nearest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (key.len() / 3).clamp(1, 3);
    known
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance over bytes (keys are ASCII) where swapping two neighbours counts as one
/// edit (optimal string alignment), so `prot` is one step from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_every_unknown_key_with_a_suggestion() {
        let config = json!({
            "sever": {},
            "server": {"prot": 1, "port": 2},
            "auth": {"keys": [{"name": "a", "kye": "x"}]},
            "backends": {"nvidia": {"timeout": 1, "timout": 2, "drop_fields": []}},
            "routes": {"anything": ["x"]},
            "failure_handling": {"keepalive_intervall": 3},
            "dashboard": {"enabled": true, "key_env": "K", "keyenv": "K"},
        });
        let problems = unknown_keys(&config);
        let got: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect();
        let expect = [
            ("sever", "did you mean `server`?"),
            ("server.prot", "did you mean `port`?"),
            ("auth.keys[0].kye", "did you mean `key`?"),
            ("backends.nvidia.timout", "did you mean `timeout`?"),
            (
                "failure_handling.keepalive_intervall",
                "did you mean `keepalive_interval`?",
            ),
            ("dashboard.keyenv", "did you mean `key_env`?"),
        ];
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for (path, hint) in expect {
            assert!(
                got.iter().any(|(p, m)| p == path && m.contains(hint)),
                "missing {path} / {hint} in {got:?}"
            );
        }
    }

    #[test]
    fn far_off_keys_get_no_suggestion() {
        let problems = unknown_keys(&json!({"completely_different": 1}));
        assert_eq!(problems[0].message, "unknown key `completely_different`");
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("prot", "port"), 1);
    }
}
