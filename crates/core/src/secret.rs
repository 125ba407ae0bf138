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
