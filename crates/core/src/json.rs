//! `JsonObject`: a request body kept as its top-level fields with each value's raw JSON text.
//!
//! The gateway reads a handful of fields (`model`, `stream`, `max_tokens` …) and rewrites a few
//! (connector quirks); everything else — messages, tools, parameters OpenAI adds next month —
//! must reach the upstream byte for byte. Holding raw values means a body is scanned once,
//! never rebuilt as a tree, and re-written by concatenation.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level fields of a JSON object, in the order the client sent them.
#[derive(Default)]
pub struct JsonObject {
    fields: Vec<(String, Box<RawValue>)>,
}

impl fmt::Debug for JsonObject {
    // Bodies hold prompts: debug output names the fields only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.fields.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Clone for JsonObject {
    fn clone(&self) -> Self {
        JsonObject {
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_owned()))
                .collect(),
        }
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

impl JsonObject {
    /// Parses a body that must be one JSON object. Later duplicates of a key win, as in
    /// serde_json's own maps.
    pub fn parse(bytes: &[u8]) -> Result<Self, JsonError> {
        let trimmed = bytes.trim_ascii_start();
        if !trimmed.starts_with(b"{") {
            // Distinguish "valid JSON, wrong kind" from "not JSON at all".
            return match serde_json::from_slice::<de::IgnoredAny>(bytes) {
                Ok(_) => Err(JsonError::NotAnObject),
                Err(e) => Err(JsonError::Syntax(e.to_string())),
            };
        }
        serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))
    }

    /// The raw JSON text of `key`.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether `key` is present (even as `null`).
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// `key` decoded as `T`; `None` when absent, `Err` when present with another type.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }

    /// Sets `key` to a raw JSON value, replacing an existing one in place.
    pub fn insert_raw(&mut self, key: &str, value: Box<RawValue>) {
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    /// Sets `key` to `value` serialized as JSON.
    pub fn insert<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        // Serializing plain data (strings, numbers, serde_json values) cannot fail.
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.insert_raw(key, raw);
        }
    }

    /// Removes `key`, returning its raw value.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let at = self.fields.iter().position(|(k, _)| k == key)?;
        Some(self.fields.remove(at).1)
    }

    /// Renames `from` to `to` unless `to` is already present; then `from` is dropped.
    pub fn rename(&mut self, from: &str, to: &str) {
        if self.contains(to) {
            self.remove(from);
        } else if let Some((k, _)) = self.fields.iter_mut().find(|(k, _)| k == from) {
            *k = to.to_owned();
        }
    }

    /// Keeps only the fields for which `keep` answers true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.fields.retain(|(k, _)| keep(k));
    }

    /// The field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }

    /// Writes the object back as compact JSON.
    pub fn to_bytes(&self) -> Bytes {
        let len: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(len + 2);
        out.push(b'{');
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Keys came from a JSON parse or from our own code; escaping them cannot fail.
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                let mut object = JsonObject {
                    fields: Vec::with_capacity(map.size_hint().unwrap_or(8)),
                };
                while let Some(key) = map.next_key::<String>()? {
                    let value: Box<RawValue> = map.next_value()?;
                    object.insert_raw(&key, value);
                }
                Ok(object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
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
    fn edits() {
        let mut obj = JsonObject::parse(br#"{"a":1,"b":2,"a":3}"#).expect("parses");
        assert_eq!(
            obj.get("a").map(|v| v.get()),
            Some("3"),
            "last duplicate wins"
        );
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
