//! `Secret`: a key that never prints. Debug, Display and serialization all show `***`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An API key or other credential. Only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key as given, cleaned of the mistakes of copy and paste: surrounding white
    /// space and a leading `Bearer ` (any case).
    pub fn new(raw: &str) -> Self {
        Secret(clean_key(raw).to_owned())
    }

    /// The key itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`, for every URL in `text` (a
/// Redis URL in a problem, `state.url` printed by `tollgate config`).
pub fn hide_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '`' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@{host}")),
                None => out.push_str(&format!("***@{host}")),
            },
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Strips white space and a `Bearer ` prefix from a key.
pub fn clean_key(raw: &str) -> &str {
    let key = raw.trim();
    match key.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => key[7..].trim(),
        _ => key,
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(Secret::new(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            hide_url_passwords("state.url: must be a redis:// URL, got `http://u:pw@h:6379/0`"),
            "state.url: must be a redis:// URL, got `http://u:***@h:6379/0`"
        );
        assert_eq!(
            hide_url_passwords("redis://:secret@host and https://plain/x"),
            "redis://:***@host and https://plain/x"
        );
        assert_eq!(hide_url_passwords("no url"), "no url");
    }

    #[test]
    fn cleans_copy_paste_mistakes() {
        assert_eq!(Secret::new(" Bearer nvapi-x ").expose(), "nvapi-x");
        assert_eq!(Secret::new("bearer   k\n").expose(), "k");
        assert_eq!(Secret::new("\tk1 ").expose(), "k1");
        assert_eq!(Secret::new("Bearerish").expose(), "Bearerish");
    }

    #[test]
    fn never_prints() {
        let s = Secret::new("sk-secret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).expect("serializes"), "\"***\"");
    }
}
