//! Model patterns: `*` matches any run of characters (including `/` and `:`), everything
//! else matches itself. Used by backend and client-key model lists.

/// An allow/deny pair of pattern lists. An empty allow list allows everything; a deny match
/// wins over an allow match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    allowed: Vec<String>,
    denied: Vec<String>,
}

impl ModelPolicy {
    pub fn new(allowed: &[String], denied: &[String]) -> Self {
        ModelPolicy {
            allowed: allowed.to_vec(),
            denied: denied.to_vec(),
        }
    }

    /// Whether `backend:model` may be used. A pattern matches the full id or the bare model,
    /// so `meta/*` and `nvidia:meta/*` both work.
    pub fn permits(&self, backend: &str, model: &str) -> bool {
        if self.is_open() {
            return true;
        }
        let full = format!("{backend}:{model}");
        let hit = |pattern: &String| glob(pattern, model) || glob(pattern, &full);
        if self.denied.iter().any(hit) {
            return false;
        }
        self.allowed.is_empty() || self.allowed.iter().any(hit)
    }

    /// Whether any deny pattern is set.
    pub fn denies_any(&self) -> bool {
        !self.denied.is_empty()
    }

    pub fn is_open(&self) -> bool {
        self.allowed.is_empty() && self.denied.is_empty()
    }
}

/// Matches `text` against `pattern` where `*` is any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob("*", ""));
        assert!(glob("*", "a/b:c"));
        assert!(glob("meta/*", "meta/llama3-70b"));
        assert!(!glob("meta/*", "mistral/x"));
        assert!(glob("*llama*", "meta/llama3"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn policy_matches_full_or_bare_ids() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let p = ModelPolicy::new(&s(&["nvidia:*"]), &[]);
        assert!(p.permits("nvidia", "meta/llama3-70b"));
        assert!(!p.permits("openai", "gpt-4o"));
        let p = ModelPolicy::new(&s(&["meta/*"]), &s(&["meta/llama3-405b"]));
        assert!(p.permits("nvidia", "meta/llama3-70b"));
        assert!(!p.permits("nvidia", "meta/llama3-405b"), "deny wins");
        assert!(!p.permits("nvidia", "mistral/x"));
        let p = ModelPolicy::new(&s(&["*:gpt-4o"]), &[]);
        assert!(p.permits("openai", "gpt-4o"));
        assert!(ModelPolicy::default().permits("x", "y"));
    }
}
