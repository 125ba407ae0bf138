//! `JsonObject`: a request body kept as its top-level fields with each value's raw JSON text.
//!
//! The gateway reads a handful of fields (`model`, `stream`, `max_tokens` …) and rewrites a few
//! (connector quirks); everything else — messages, tools, parameters OpenAI adds next month —
//! must reach the upstream byte for byte. Holding raw values means a body is scanned once,
//! never rebuilt as a tree, and re-written by concatenation.

use std::collections::HashMap;
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
    /// The exact body the object was parsed from, while no edit changed it: `to_bytes` then
    /// gives the client's bytes back (white space and key order included), so a request a
    /// backend takes untouched reaches it byte for byte.
    source: Option<Bytes>,
}

/// Bodies with this many fields find duplicate keys through a hash index.
const INDEX_FROM: usize = 32;

/// A key as text. Keys are UTF-8: they come from parsed JSON or from `&str`.
fn key_str(key: &[u8]) -> &str {
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

/// The deepest nesting of arrays and objects accepted anywhere in a body (the top-level
/// object counts as 1). serde_json's own recursion limit guards only what it builds into
/// trees: raw values — `messages`, `tools`, everything forwarded untouched — are skipped by an
/// iterative scan with no limit at all, so a body could carry any depth to an upstream, or to
/// a translator that parses it recursively. serde_json builds at most 127 levels into a
/// `Value`; 100 stays below that with room for the few levels a translation wraps around a
/// client's values, and far above what real requests use (a JSON schema in `tools` nests a few
/// dozen levels at most).
pub const MAX_DEPTH: usize = 100;

/// Why a body is not a JSON object.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("request body nests arrays and objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Whether `bytes` nests arrays and objects deeper than `limit` anywhere, strings skipped.
/// One pass, no recursion; text that is not JSON is scanned the same way (serde_json reports
/// it), so this runs before the parse.
fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                // Jump over the string: to its closing quote, past any escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i.min(bytes.len())..]) {
                        None => return false,
                        Some(at) if bytes[i + at] == b'"' => {
                            i += at;
                            break;
                        }
                        Some(at) => i += at + 2,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
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
        if nests_deeper_than(bytes, MAX_DEPTH) {
            return Err(JsonError::TooDeep);
        }
        let trimmed = bytes.trim_ascii_start();
        if !trimmed.starts_with(b"{") {
            // Distinguish "valid JSON, wrong kind" from "not JSON at all".
            return match serde_json::from_slice::<de::IgnoredAny>(bytes) {
                Ok(_) => Err(JsonError::NotAnObject),
                Err(e) => Err(JsonError::Syntax(e.to_string())),
            };
        }
        // Checked as UTF-8 once, whole, then read as text: read from bytes, serde_json checks
        // every string and every raw value again on its own (most of a body is both). A body
        // that is not UTF-8 is read from its bytes, for serde_json's own error and position.
        let read = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str::<Fields<'_>>(text),
            Err(_) => serde_json::from_slice::<Fields<'_>>(bytes),
        };
        let fields = read.map_err(|e| JsonError::Syntax(e.to_string()))?;
        let base = bytes.as_ptr() as usize;
        let mut object = JsonObject {
            fields: Vec::with_capacity(fields.0.len()),
            source: Some(bytes.clone()),
        };
        // A duplicated key is read last-wins here; other parsers may differ, so such a body is
        // never passed on as sent.
        let mut duplicated = false;
        // Where each key sits, for finding duplicates in one pass: a scan per key would make
        // a body of n keys cost n² (100k keys within max_body_bytes: minutes). Small bodies,
        // the usual case, compare in place instead of hashing.
        let mut index: Option<HashMap<Bytes, usize>> = None;
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
            let value = slice_of(raw.get());
            let fields = &mut object.fields;
            if fields.len() < INDEX_FROM && index.is_none() {
                match fields.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => {
                        *v = value;
                        duplicated = true;
                    }
                    None => fields.push((key, value)),
                }
                continue;
            }
            let index = index.get_or_insert_with(|| {
                let mut map = HashMap::with_capacity(fields.len() * 2);
                for (at, (k, _)) in fields.iter().enumerate() {
                    map.insert(k.clone(), at);
                }
                map
            });
            match index.get(&key) {
                Some(&at) => {
                    fields[at].1 = value;
                    duplicated = true;
                }
                None => {
                    index.insert(key.clone(), fields.len());
                    fields.push((key, value));
                }
            }
        }
        if duplicated {
            object.source = None;
        }
        Ok(object)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|(k, _)| k.as_ref() == key.as_bytes())
    }

    fn set(&mut self, key: &str, value: Bytes) {
        match self.position(key) {
            // The same value again (a model name set to what it was) changes nothing.
            Some(at) if self.fields[at].1 == value => {}
            Some(at) => {
                self.fields[at].1 = value;
                self.source = None;
            }
            None => {
                self.fields
                    .push((Bytes::copy_from_slice(key.as_bytes()), value));
                self.source = None;
            }
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
            // Read as text, its UTF-8 validated once: `from_slice` validates every string it
            // meets again. (Values are UTF-8: checked by serde_json or written by `insert`.)
            Some(at) => std::str::from_utf8(&self.fields[at].1)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
                .map(Some),
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

    /// Sets `key` to the JSON string `value`: what `insert(key, value)` writes, without
    /// serde for a string that needs no escape (a model name, the usual case).
    pub fn insert_str(&mut self, key: &str, value: &str) {
        if needs_no_escape(value.as_bytes()) {
            let mut json = BytesMut::with_capacity(value.len() + 2);
            json.extend_from_slice(b"\"");
            json.extend_from_slice(value.as_bytes());
            json.extend_from_slice(b"\"");
            self.set(key, json.freeze());
        } else {
            self.insert(key, value);
        }
    }

    /// Removes `key`, returning its raw JSON text.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let at = self.position(key)?;
        self.source = None;
        Some(self.fields.remove(at).1)
    }

    /// Renames `from` to `to` unless `to` is already present; then `from` is dropped.
    pub fn rename(&mut self, from: &str, to: &str) {
        if self.contains(to) {
            self.remove(from);
        } else if let Some(at) = self.position(from) {
            self.fields[at].0 = Bytes::copy_from_slice(to.as_bytes());
            self.source = None;
        }
    }

    /// Keeps only the fields for which `keep` answers true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let before = self.fields.len();
        self.fields.retain(|(k, _)| keep(key_str(k)));
        if self.fields.len() != before {
            self.source = None;
        }
    }

    /// The field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| key_str(k))
    }

    /// Writes the object back as compact JSON.
    pub fn to_bytes(&self) -> Bytes {
        if let Some(source) = &self.source {
            return source.clone();
        }
        let len: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = BytesMut::with_capacity(len + 2);
        out.extend_from_slice(b"{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            write_key(&mut out, key);
            out.extend_from_slice(b":");
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"}");
        out.freeze()
    }
}

/// Whether serde_json writes `text` as a JSON string unchanged between its quotes: it escapes
/// only control characters, `"` and `\\`.
fn needs_no_escape(text: &[u8]) -> bool {
    text.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Writes `key` as a JSON string; plain keys (the usual case) are copied as they are.
fn write_key(out: &mut BytesMut, key: &[u8]) {
    if needs_no_escape(key) {
        out.extend_from_slice(b"\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\"");
    } else if let Ok(quoted) = serde_json::to_vec(key_str(key)) {
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
    fn an_unchanged_body_is_written_as_sent_an_edited_one_compactly() {
        let body = b" {\n \"a\" : [1, 2] ,\"b\":\"x y\"}";
        let mut obj = JsonObject::parse(body).expect("parses");
        assert_eq!(&obj.to_bytes()[..], &body[..], "untouched: byte for byte");
        // Setting a value to what it was is no edit.
        obj.insert("b", "x y");
        assert_eq!(&obj.to_bytes()[..], &body[..]);
        obj.insert("b", "z");
        assert_eq!(&obj.to_bytes()[..], br#"{"a":[1, 2],"b":"z"}"#);
        // A duplicated key is never passed on as sent.
        let dup = JsonObject::parse(br#"{"a": 1, "a": 2}"#).expect("parses");
        assert_eq!(&dup.to_bytes()[..], br#"{"a":2}"#);
        let mut kept = JsonObject::parse(br#"{"a": 1}"#).expect("parses");
        kept.retain(|_| true);
        assert_eq!(
            &kept.to_bytes()[..],
            br#"{"a": 1}"#,
            "retaining everything is no edit"
        );
        kept.remove("a");
        assert_eq!(&kept.to_bytes()[..], b"{}");
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
    fn errors_read_as_from_bytes() {
        // Text and bytes are read by the same parser: the same message at the same place.
        let bodies: &[&[u8]] = &[
            b"{",
            br#"{"a":1,}"#,
            b"{\"a\":\"x\x01\"}",
            br#"{"a":"\q"}"#,
            br#"{"a":tru}"#,
            br#"{"a":1} x"#,
            b"{\"a\":\"\xff\"}",
            b"{\"\xc3\":1}",
            br#"{"a":[1,2,{"b":}]}"#,
        ];
        for body in bodies {
            let expected = match serde_json::from_slice::<Fields<'_>>(body) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{} parses", String::from_utf8_lossy(body)),
            };
            match JsonObject::parse(body) {
                Err(JsonError::Syntax(got)) => assert_eq!(got, expected),
                other => panic!("{other:?}"),
            }
        }
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
    fn many_keys_parse_in_linear_time_and_duplicates_still_collapse() {
        let n = 100_000;
        let mut body = String::from("{");
        for i in 0..n {
            body.push_str(&format!("\"k{i}\":{i},"));
        }
        // Duplicates of an early and a late key, past the point where the index takes over.
        body.push_str("\"k3\":\"again\",\"k99999\":true}");
        let started = std::time::Instant::now();
        let obj = JsonObject::parse(body.as_bytes()).expect("parses");
        // Quadratic duplicate search took ~10 s here; linear takes milliseconds (loose bound).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(obj.keys().count(), n);
        assert_eq!(obj.get("k3"), Some("\"again\""));
        assert_eq!(obj.get("k99999"), Some("true"));
        assert_eq!(
            obj.keys().nth(3),
            Some("k3"),
            "a duplicate keeps the first place"
        );
    }

    fn nested(depth: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_is_bounded_anywhere_in_the_body() {
        // At the bound: accepted (the object itself is level 1).
        let at_limit = format!(r#"{{"messages":{}}}"#, nested(MAX_DEPTH - 1, "1"));
        assert!(JsonObject::parse(at_limit.as_bytes()).is_ok());
        let over = format!(r#"{{"messages":{}}}"#, nested(MAX_DEPTH, "1"));
        assert!(matches!(
            JsonObject::parse(over.as_bytes()),
            Err(JsonError::TooDeep)
        ));
        // 100k deep, as a raw value (serde_json skips those without a limit), inside a
        // message, and as the whole body: refused, no stack overflow. A small stack proves
        // nothing recursed.
        let cases = [
            format!(r#"{{"model":"m","x":{}}}"#, nested(100_000, "")),
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":{}}}]}}"#,
                "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000)
            ),
            nested(100_000, ""),
        ];
        let refused = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                cases
                    .iter()
                    .map(|c| matches!(JsonObject::parse(c.as_bytes()), Err(JsonError::TooDeep)))
                    .collect::<Vec<_>>()
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(refused, [true, true, true]);
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let deep_text = "[{".repeat(1000);
        let body = format!(r#"{{"s":"{deep_text}","t":"\\\"[[[","u":[1]}}"#);
        let obj = JsonObject::parse(body.as_bytes()).expect("strings are not nesting");
        assert_eq!(obj.get("u"), Some("[1]"));
    }

    #[test]
    fn insert_str_writes_what_insert_writes() {
        for value in [
            "m",
            "up:m",
            "",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}",
            "é/ü",
            "\u{7f}",
        ] {
            let mut fast = JsonObject::parse(br#"{"model":"x"}"#).expect("parses");
            let mut slow = fast.clone();
            fast.insert_str("model", value);
            slow.insert("model", value);
            assert_eq!(fast.to_bytes(), slow.to_bytes(), "{value:?}");
        }
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
