//! Borrowed JSON pieces the Messages translators read: a string that borrows from the client's
//! bytes when it has no escapes, and an object kept as ordered raw members (a tool's
//! `input_schema`, `thinking`) so that one member can be dropped or replaced without building a
//! tree of the rest.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON string. serde's own `Option<Cow<str>>` always copies; this borrows whenever the
/// text has no escapes, so reading a 50 KB Claude Code body copies little.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A JSON string kept as written, quotes and escapes included. Text blocks are copied from the
/// client's body into the chat body in this form: unescaping them on the way in and escaping
/// them again on the way out would double the cost of translating a long prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonText<'a>(&'a RawValue);

impl<'a> JsonText<'a> {
    /// The string's content, still escaped.
    pub fn escaped(&self) -> &'a str {
        let quoted = self.0.get();
        // Deserialization accepted only a JSON string: it starts and ends with a quote.
        quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.escaped().is_empty()
    }

    /// The string's content, unescaped (borrowed when it has no escapes).
    pub fn plain(&self) -> Cow<'a, str> {
        let escaped = self.escaped();
        if !escaped.contains('\\') {
            return Cow::Borrowed(escaped);
        }
        // A JSON string serde_json already read reads again.
        serde_json::from_str::<String>(self.0.get())
            .map(Cow::Owned)
            .unwrap_or_default()
    }
}

impl Serialize for JsonText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(deserializer)?;
        if raw.get().starts_with('"') {
            Ok(JsonText(raw))
        } else {
            Err(de::Error::custom(format!(
                "expected a string, found {}",
                raw.get()
            )))
        }
    }
}

/// A piece of text on its way into a chat message.
#[derive(Debug, Clone)]
pub(crate) enum Text<'a> {
    /// Copied from the request in its JSON form.
    Json(JsonText<'a>),
    /// Read as text, or written by the translator.
    Plain(Cow<'a, str>),
}

impl<'a> Text<'a> {
    pub fn plain_str(text: &'a str) -> Self {
        Text::Plain(Cow::Borrowed(text))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Text::Json(j) => j.is_empty(),
            Text::Plain(p) => p.is_empty(),
        }
    }

    pub fn plain(&self) -> Cow<'_, str> {
        match self {
            Text::Json(j) => j.plain(),
            Text::Plain(p) => Cow::Borrowed(p),
        }
    }

    /// Appends the text, escaped for the inside of a JSON string.
    fn push_escaped(&self, out: &mut String) {
        match self {
            Text::Json(j) => out.push_str(j.escaped()),
            Text::Plain(p) => push_escaped(out, p),
        }
    }
}

/// Appends `plain` escaped for the inside of a JSON string.
pub(crate) fn push_escaped(out: &mut String, plain: &str) {
    // Serializing a string cannot fail; its quotes are cut off.
    let quoted = serde_json::to_string(plain).unwrap_or_default();
    out.push_str(
        quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default(),
    );
}

/// Pieces of text joined by `separator` into one JSON string, written without unescaping the
/// pieces that are still in their JSON form.
pub(crate) struct Joined<'x, 'a> {
    pub pieces: &'x [Text<'a>],
    /// Plain text; escaped when written.
    pub separator: &'static str,
}

impl Joined<'_, '_> {
    /// The joined text, unescaped.
    pub fn plain(&self) -> String {
        let mut out = String::new();
        for (n, piece) in self.pieces.iter().enumerate() {
            if n > 0 {
                out.push_str(self.separator);
            }
            out.push_str(&piece.plain());
        }
        out
    }
}

impl Serialize for Joined<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.pieces {
            [] => return serializer.serialize_str(""),
            // One piece (the usual case) is written as it is, with no copy.
            [Text::Json(j)] => return j.serialize(serializer),
            [Text::Plain(p)] => return serializer.serialize_str(p),
            _ => {}
        }
        let separator = Text::plain_str(self.separator);
        let len: usize = self
            .pieces
            .iter()
            .map(|p| match p {
                Text::Json(j) => j.escaped().len(),
                Text::Plain(t) => t.len() + 8,
            })
            .sum();
        let mut json = String::with_capacity(len + 2 + 4 * self.pieces.len());
        json.push('"');
        for (n, piece) in self.pieces.iter().enumerate() {
            if n > 0 {
                separator.push_escaped(&mut json);
            }
            piece.push_escaped(&mut json);
        }
        json.push('"');
        // Escaped pieces between quotes are one JSON string: this cannot fail.
        match RawValue::from_string(json) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_str(&self.plain()),
        }
    }
}

/// A JSON object as its members in order, each value left as raw JSON text.
#[derive(Debug, Default)]
pub(crate) struct RawMap<'a> {
    pub members: Vec<(Str<'a>, &'a RawValue)>,
}

impl<'a> RawMap<'a> {
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| *v)
    }

    /// The object without the members named in `drop`, serialized as it came otherwise.
    pub fn without<'m>(&'m self, drop: &'m [&'m str]) -> Without<'m, 'a> {
        Without { map: self, drop }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawMap<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawMap { members })
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A [`RawMap`] serialized without some of its members.
pub(crate) struct Without<'m, 'a> {
    map: &'m RawMap<'a>,
    drop: &'m [&'m str],
}

impl Serialize for Without<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(None)?;
        for (key, value) in &self.map.members {
            if !self.drop.contains(&key.as_str()) {
                out.serialize_entry(key, value)?;
            }
        }
        out.end()
    }
}

/// Rough token count of `text`: a quarter token per ASCII byte (English prose and code average
/// about four characters per token in BPE vocabularies) and one token per other character
/// (CJK scripts and emoji take one or more tokens each), so estimates err on the high side for
/// non-Latin text, which is the safe side for limits.
pub(crate) fn text_tokens(text: &str) -> u64 {
    let bytes = text.as_bytes();
    if bytes.is_ascii() {
        // The usual case, checked a word at a time.
        return (bytes.len() as u64).div_ceil(4);
    }
    // Counted eight bytes at a time: a byte >= 0x80 has its top bit set, a lead byte of a
    // multi-byte character (0b11xx_xxxx) its top two (bit 6 shifted onto bit 7 of the same
    // byte by `<< 1`; the mask keeps only bit 7 of each byte).
    const TOP: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let (mut high, mut leads) = (0u64, 0u64);
    for word in words.by_ref() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        high += u64::from((w & TOP).count_ones());
        leads += u64::from((w & (w << 1) & TOP).count_ones());
    }
    for &b in words.remainder() {
        high += u64::from(b >= 0x80);
        leads += u64::from(b >= 0xC0);
    }
    (bytes.len() as u64 - high).div_ceil(4) + leads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_borrows_unless_escaped() {
        let s: Str<'_> = serde_json::from_str(r#""plain""#).expect("string");
        assert!(matches!(s.0, Cow::Borrowed("plain")));
        let s: Str<'_> = serde_json::from_str(r#""a\nb""#).expect("string");
        assert!(matches!(s.0, Cow::Owned(ref o) if o == "a\nb"));
        assert!(serde_json::from_str::<Str<'_>>("1").is_err());
    }

    #[test]
    fn json_text_is_copied_escaped_and_read_unescaped() {
        let t: JsonText<'_> = serde_json::from_str(r#""a\n\"b\"""#).expect("string");
        assert_eq!(t.escaped(), r#"a\n\"b\""#);
        assert_eq!(t.plain(), "a\n\"b\"");
        assert!(serde_json::from_str::<JsonText<'_>>("[1]").is_err());
        let pieces = [Text::Json(t), Text::plain_str("c\td")];
        let joined = Joined {
            pieces: &pieces,
            separator: "\n\n",
        };
        let json = serde_json::to_string(&joined).expect("serializes");
        assert_eq!(json, r#""a\n\"b\"\n\nc\td""#);
        assert_eq!(
            serde_json::from_str::<String>(&json).expect("string"),
            joined.plain()
        );
    }

    #[test]
    fn raw_map_drops_members_and_keeps_the_rest_verbatim() {
        let json = r#"{"$schema":"x","type":"object","properties":{"a":{"type":"string"}},"type":"object"}"#;
        let map: RawMap<'_> = serde_json::from_str(json).expect("object");
        assert_eq!(map.get("type").map(RawValue::get), Some(r#""object""#));
        let out = serde_json::to_string(&map.without(&["$schema"])).expect("serializes");
        assert_eq!(
            out,
            r#"{"type":"object","properties":{"a":{"type":"string"}},"type":"object"}"#
        );
    }

    #[test]
    fn token_estimate_counts_ascii_by_four_and_other_characters_by_one() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("日本語"), 3);
        assert_eq!(text_tokens("é"), 1);
        // The word-at-a-time count agrees with a byte-by-byte one on every length and mix.
        for text in [
            "abcdefgh日本語とé🙂xyz",
            "ééééééééé",
            "a日b本c語dとeéf🙂g",
            "🙂🙂🙂🙂",
        ] {
            for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                let t = &text[..end];
                let ascii = t.bytes().filter(u8::is_ascii).count() as u64;
                let chars = t.chars().filter(|c| !c.is_ascii()).count() as u64;
                assert_eq!(text_tokens(t), ascii.div_ceil(4) + chars, "{t:?}");
            }
        }
    }
}
