//! `JsonObject`: a request body kept as its top-level fields with each value's raw JSON text.
//!
//! The gateway reads a handful of fields (`model`, `stream`, `max_tokens` …) and rewrites a few
//! (connector quirks); everything else — messages, tools, parameters OpenAI adds next month —
//! must reach the upstream byte for byte. Holding raw values means a body is scanned once,
//! never rebuilt as a tree, and re-written by concatenation.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level fields of a JSON object, in the order the client sent them. Each key (its
/// UTF-8 text, unescaped) and each value (its raw JSON text) is a slice of the original body —
/// or of bytes tollgate wrote — so parsing copies nothing and cloning copies no text.
#[derive(Default, Clone)]
pub struct JsonObject {
    fields: Vec<(Bytes, Bytes)>,
}

/// A key as text. Keys are UTF-8: they come from parsed JSON or from `&str`.
fn key_str(key: &Bytes) -> &str {
    std::str::from_utf8(key).unwrap_or_default()
}

impl fmt::Debug for JsonObject {
    // Bodies hold prompts: debug output names the fields only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.fields.iter().map(|(k, _)| key_str(k)))
            .finish()
    }
}

/// Why a body is not a JSON object.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
}

/// Borrowed top-level fields, as serde_json reads them from the body.
struct Fields<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key.0, value));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A key borrowed from the body when it has no escapes.
struct CowStr<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = CowStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_owned())))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

impl JsonObject {
    /// Parses a body that must be one JSON object. Values stay slices of `bytes`. Later
    /// duplicates of a key win, as in serde_json's own maps.
    pub fn parse(bytes: &[u8]) -> Result<Self, JsonError> {
        Self::parse_bytes(&Bytes::copy_from_slice(bytes))
    }

    /// Like [`JsonObject::parse`], keeping `bytes` as the storage of every value.
    pub fn parse_bytes(bytes: &Bytes) -> Result<Self, JsonError> {
        let trimmed = bytes.trim_ascii_start();
        if !trimmed.starts_with(b"{") {
            // Distinguish "valid JSON, wrong kind" from "not JSON at all".
            return match serde_json::from_slice::<de::IgnoredAny>(bytes) {
                Ok(_) => Err(JsonError::NotAnObject),
                Err(e) => Err(JsonError::Syntax(e.to_string())),
            };
        }
        let fields: Fields<'_> =
            serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))?;
        let base = bytes.as_ptr() as usize;
        let mut object = JsonObject {
            fields: Vec::with_capacity(fields.0.len()),
        };
        // Borrowed text lies inside `bytes`: its offset locates the same text in the shared
        // buffer, so a slice of it replaces a copy.
        let slice_of = |text: &str| {
            let start = text.as_ptr() as usize - base;
            bytes.slice(start..start + text.len())
        };
        for (key, raw) in fields.0 {
            let key = match key {
                std::borrow::Cow::Borrowed(k) => slice_of(k),
                // A key with escapes was unescaped into a new string.
                std::borrow::Cow::Owned(k) => Bytes::from(k),
            };
            object.set_key(key, slice_of(raw.get()));
        }
        Ok(object)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|(k, _)| k.as_ref() == key.as_bytes())
    }

    fn set_key(&mut self, key: Bytes, value: Bytes) {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.fields.push((key, value)),
        }
    }

    fn set(&mut self, key: &str, value: Bytes) {
        match self.position(key) {
            Some(at) => self.fields[at].1 = value,
            None => self
                .fields
                .push((Bytes::copy_from_slice(key.as_bytes()), value)),
        }
    }

    /// The raw JSON bytes of `key` (no UTF-8 check: for looking at its first byte).
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        Some(&self.fields[self.position(key)?].1)
    }

    /// The raw JSON text of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let (_, raw) = &self.fields[self.position(key)?];
        // Values are JSON text checked by serde_json or written by `insert`: UTF-8.
        std::str::from_utf8(raw).ok()
    }

    /// Whether `key` is present (even as `null`).
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// `key` decoded as `T`; `None` when absent, `Err` when present with another type.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Result<Option<T>, String> {
        match self.position(key) {
            None => Ok(None),
            Some(at) => serde_json::from_slice(&self.fields[at].1)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }

    /// Sets `key` to JSON text the caller vouches for (a constant).
    pub fn insert_raw_text(&mut self, key: &str, json: &'static str) {
        self.set(key, Bytes::from_static(json.as_bytes()));
    }

    /// Sets `key` to `value` serialized as JSON.
    pub fn insert<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        // Serializing plain data (strings, numbers, serde_json values) cannot fail.
        if let Ok(json) = serde_json::to_vec(value) {
            self.set(key, Bytes::from(json));
        }
    }

    /// Removes `key`, returning its raw JSON text.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let at = self.position(key)?;
        Some(self.fields.remove(at).1)
    }

    /// Renames `from` to `to` unless `to` is already present; then `from` is dropped.
    pub fn rename(&mut self, from: &str, to: &str) {
        if self.contains(to) {
            self.remove(from);
        } else if let Some(at) = self.position(from) {
            self.fields[at].0 = Bytes::copy_from_slice(to.as_bytes());
        }
    }

    /// Keeps only the fields for which `keep` answers true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.fields.retain(|(k, _)| keep(key_str(k)));
    }

    /// The field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| key_str(k))
    }

    /// Writes the object back as compact JSON.
    pub fn to_bytes(&self) -> Bytes {
        let len: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = BytesMut::with_capacity(len + 2);
        out.extend_from_slice(b"{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            write_key(&mut out, key_str(key));
            out.extend_from_slice(b":");
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"}");
        out.freeze()
    }
}

/// Writes `key` as a JSON string; plain keys (the usual case) are copied as they are.
fn write_key(out: &mut BytesMut, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(b"\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\"");
    } else if let Ok(quoted) = serde_json::to_vec(key) {
        out.extend_from_slice(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_byte_for_byte() {
        let body = br#"{"model":"m","temperature":1.0,"messages":[{"role":"user","content":"h\u00e9"}],"x_new":{"a":[1,2e3]}}"#;
        let obj = JsonObject::parse(body).expect("parses");
        assert_eq!(&obj.to_bytes()[..], &body[..]);
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            ["model", "temperature", "messages", "x_new"]
        );
    }

    #[test]
    fn whitespace_between_fields_is_dropped_values_kept() {
        let obj = JsonObject::parse(b" {\n \"a\" : [1, 2] ,\"b\":\"x y\"}").expect("parses");
        assert_eq!(&obj.to_bytes()[..], br#"{"a":[1, 2],"b":"x y"}"#);
    }

    #[test]
    fn errors_distinguish_syntax_from_kind() {
        assert!(matches!(JsonObject::parse(b"{"), Err(JsonError::Syntax(_))));
        assert!(matches!(
            JsonObject::parse(b"nope"),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            JsonObject::parse(b"[1]"),
            Err(JsonError::NotAnObject)
        ));
        assert!(matches!(
            JsonObject::parse(b"\"s\""),
            Err(JsonError::NotAnObject)
        ));
        assert!(matches!(
            JsonObject::parse(b"{} x"),
            Err(JsonError::Syntax(_))
        ));
    }

    #[test]
    fn values_share_the_body_and_keys_are_escaped() {
        let body = Bytes::from_static(br#"{"a\"b":[1],"c":"x"}"#);
        let obj = JsonObject::parse_bytes(&body).expect("parses");
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["a\"b", "c"]);
        assert_eq!(&obj.to_bytes()[..], &body[..]);
        let copy = obj.clone();
        assert_eq!(copy.get("c"), Some("\"x\""));
    }

    #[test]
    fn edits() {
        let mut obj = JsonObject::parse(br#"{"a":1,"b":2,"a":3}"#).expect("parses");
        assert_eq!(obj.get("a"), Some("3"), "last duplicate wins");
        obj.rename("a", "c");
        obj.insert("d", "x\"y");
        obj.remove("b");
        assert_eq!(&obj.to_bytes()[..], br#"{"c":3,"d":"x\"y"}"#);
        obj.insert("c", &5);
        obj.rename("d", "c");
        assert_eq!(
            &obj.to_bytes()[..],
            br#"{"c":5}"#,
            "rename never overwrites"
        );
        assert_eq!(obj.decode::<u64>("c"), Ok(Some(5)));
        assert!(obj.decode::<String>("c").is_err());
        assert_eq!(obj.decode::<u64>("zz"), Ok(None));
    }
}
