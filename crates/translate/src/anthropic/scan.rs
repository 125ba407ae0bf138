//! Reading the common chat chunk — one text or reasoning fragment and nothing else — in one
//! pass over its bytes instead of a parse. Most events of an answer are such chunks, and a
//! full parse costs more than the relay spends on the event itself; here the fragment is
//! found by its key and copied out still escaped, which is how the Messages event carries it.
//!
//! The pass walks from string to string, and a string followed by `:` is a key. (A plain
//! byte loop: chunks are a few hundred bytes of short strings, where `memchr`'s set-up per
//! call costs more than it saves.) Anything it is not sure of — a key it
//! watches appearing twice (several choices, `logprobs.content`), a non-null `finish_reason`,
//! `usage`, tool calls, a refusal, an error, a text value that is not a plain JSON string —
//! sends the chunk to the full parse instead.
//!
//! A server writes every text chunk of a stream from one template — the same id, model,
//! `created` and keys, only the fragment differs — so the bytes around the fragment of the
//! last plain chunk are kept, and a chunk that starts and ends with them and holds a valid
//! string in between is that template again: its fragment is read with no scan of the rest.

/// The text fragments of a plain chunk, still JSON-escaped (without their quotes).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fragments<'a> {
    pub content: Option<&'a str>,
    pub reasoning: Option<&'a str>,
}

/// Keys whose non-null value only the full parse handles.
const BLOCKING: &[&[u8]] = &[
    b"finish_reason",
    b"tool_calls",
    b"function_call",
    b"refusal",
    b"usage",
    b"error",
];

/// Reads plain chunks, remembering the template of the last one per kind of fragment.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// The bytes before and after the fragment of the last plain chunk that had one text
    /// fragment: `[content, reasoning]`.
    templates: [Option<Template>; 2],
}

#[derive(Debug)]
struct Template {
    /// Up to and including the fragment's opening quote.
    before: Vec<u8>,
    /// From the fragment's closing quote to the end.
    after: Vec<u8>,
}

impl Scanner {
    /// The fragments of `data` when it is a plain text/reasoning chunk; `None` when it needs
    /// the full parse.
    pub(crate) fn fragments<'a>(&mut self, data: &'a [u8]) -> Option<Fragments<'a>> {
        for (slot, template) in self.templates.iter().enumerate() {
            let Some(t) = template else { continue };
            let fits = data.len() >= t.before.len() + t.after.len()
                && data.starts_with(&t.before)
                && data.ends_with(&t.after);
            if !fits {
                continue;
            }
            // Between the template's quotes there must be exactly one JSON string's inside;
            // a quote in it would mean another structure.
            if let Some(text) = checked_string(&data[t.before.len()..data.len() - t.after.len()]) {
                let mut found = Fragments::default();
                *found.slot(slot) = Some(text);
                return Some(found);
            }
        }
        let (found, single) = scan(data)?;
        if let Some((slot, open, close)) = single {
            self.templates[slot] = Some(Template {
                before: data[..=open].to_vec(),
                after: data[close..].to_vec(),
            });
        }
        Some(found)
    }
}

impl<'a> Fragments<'a> {
    fn slot(&mut self, slot: usize) -> &mut Option<&'a str> {
        if slot == 0 {
            &mut self.content
        } else {
            &mut self.reasoning
        }
    }
}

/// A string value found by [`scan`]: its inside and the positions of its quotes.
#[derive(Debug, Clone, Copy)]
struct Found<'a> {
    text: &'a str,
    open: usize,
    close: usize,
}

/// Where the only fragment of a chunk is: which kind (0 content, 1 reasoning), its quotes.
type Single = (usize, usize, usize);

/// One pass over a chunk: its fragments, and where the only one of them is when there is
/// exactly one.
fn scan(data: &[u8]) -> Option<(Fragments<'_>, Option<Single>)> {
    // `content`, `reasoning_content` (vLLM, NIM), `reasoning` (OpenRouter): each may appear
    // once, as a string or null. The flag says the key was seen.
    let mut texts: [(Option<Found<'_>>, bool); 3] = [(None, false); 3];
    let mut at = 0;
    while let Some(quote) = data[at..].iter().position(|&b| b == b'"') {
        let start = at + quote + 1;
        let end = string_end(data, start)?;
        let after = skip_space(data, end + 1);
        if data.get(after) != Some(&b':') {
            at = end + 1;
            continue;
        }
        let key = &data[start..end];
        let value = skip_space(data, after + 1);
        at = value;
        let slot = match key {
            b"content" => Some(0),
            b"reasoning_content" => Some(1),
            b"reasoning" => Some(2),
            _ => None,
        };
        if let Some(slot) = slot {
            let (text, seen) = &mut texts[slot];
            if std::mem::replace(seen, true) {
                return None;
            }
            if data[value..].starts_with(b"\"") {
                let close = string_end(data, value + 1)?;
                *text = Some(Found {
                    text: checked_string(&data[value + 1..close])?,
                    open: value,
                    close,
                });
                at = close + 1;
            } else if !data[value..].starts_with(b"null") {
                return None;
            }
        } else if BLOCKING.contains(&key) && !data[value..].starts_with(b"null") {
            return None;
        }
    }
    let [(content, _), (reasoning_content, _), (reasoning, _)] = texts;
    let single = match (content, reasoning_content, reasoning) {
        (Some(f), None, None) => Some((0, f.open, f.close)),
        (None, Some(f), None) | (None, None, Some(f)) => Some((1, f.open, f.close)),
        _ => None,
    };
    let found = Fragments {
        content: content.map(|f| f.text),
        // As `chat::Delta::reasoning_text` reads them.
        reasoning: reasoning_content.or(reasoning).map(|f| f.text),
    };
    Some((found, single))
}

/// The index of the quote closing the string whose content starts at `start`.
fn string_end(data: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    loop {
        match data.get(at)? {
            b'"' => return Some(at),
            // An escape: the next byte is escaped (`\"` does not close the string).
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

fn skip_space(data: &[u8], mut at: usize) -> usize {
    while data.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// `content` when it is the inside of a valid JSON string (UTF-8, no control characters, no
/// bare quote, valid escapes), since it is copied into the client's JSON as it is.
fn checked_string(content: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(content).ok()?;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0..=0x1f | b'"' => return None,
            b'\\' => match bytes.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = bytes.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            _ => i += 1,
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Chunk;
    use proptest::prelude::*;

    fn frags(json: &str) -> Option<Fragments<'_>> {
        Scanner::default().fragments(json.as_bytes())
    }

    #[test]
    fn reads_plain_text_and_reasoning_chunks() {
        assert_eq!(
            frags(
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a \"q\" \n\\"},"finish_reason":null}]}"#
            ),
            Some(Fragments {
                content: Some(r#"a \"q\" \n\\"#),
                reasoning: None
            })
        );
        assert_eq!(
            frags(
                r#"{"choices":[{"delta":{"reasoning_content":"hm","content":null},"logprobs":null,"finish_reason":null}],"usage":null}"#
            ),
            Some(Fragments {
                content: None,
                reasoning: Some("hm")
            })
        );
        assert_eq!(
            frags(r#"{ "choices" : [ { "delta" : { "reasoning" : "r" , "refusal" : null } } ] }"#),
            Some(Fragments {
                content: None,
                reasoning: Some("r")
            })
        );
        assert_eq!(
            frags(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#),
            Some(Fragments::default())
        );
    }

    #[test]
    fn words_inside_text_are_not_keys() {
        let f = frags(
            r#"{"choices":[{"delta":{"content":"say \"usage\": 1, \"content\": 2, \"finish_reason\":"},"finish_reason":null}]}"#,
        );
        assert_eq!(
            f.and_then(|f| f.content),
            Some(r#"say \"usage\": 1, \"content\": 2, \"finish_reason\":"#)
        );
    }

    #[test]
    fn anything_else_takes_the_full_parse() {
        for chunk in [
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[{"delta":{"refusal":"no"}}]}"#,
            r#"{"error":{"message":"x"}}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"x"}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"unterminated}}]}"#,
            r#"{"choices":[{"delta":{"content":"bad \x escape"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"raw \n newline\"}}]}",
        ] {
            assert_eq!(frags(chunk), None, "{chunk}");
        }
    }

    #[test]
    fn a_chunk_of_the_same_template_is_read_between_its_ends() {
        let mut scanner = Scanner::default();
        let chunk = |t: &str| {
            format!(
                r#"{{"id":"c1","created":5,"choices":[{{"index":0,"delta":{{"content":"{t}"}},"finish_reason":null}}]}}"#
            )
        };
        let first = chunk("one");
        assert_eq!(
            scanner.fragments(first.as_bytes()).and_then(|f| f.content),
            Some("one")
        );
        assert!(scanner.templates[0].is_some());
        for (t, want) in [
            (r#"two \"q\""#, Some(r#"two \"q\""#)),
            ("", Some("")),
            (r#"\\"#, Some(r#"\\"#)),
        ] {
            let c = chunk(t);
            assert_eq!(
                scanner.fragments(c.as_bytes()).map(|f| f.content),
                Some(want),
                "{c}"
            );
        }
        // Same ends, but the middle closes the string and adds a key: not the template.
        let forged = chunk(r#"x"},"finish_reason":"stop","y":{"z":"w"#);
        assert_eq!(scanner.fragments(forged.as_bytes()), None);
        // Another template (a new `created`) takes the full scan, then becomes the template.
        let other = first.replace("\"created\":5", "\"created\":6");
        assert_eq!(
            scanner.fragments(other.as_bytes()).and_then(|f| f.content),
            Some("one")
        );
        let reasoning = r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#;
        assert_eq!(
            scanner
                .fragments(reasoning.as_bytes())
                .and_then(|f| f.reasoning),
            Some("hm")
        );
        assert!(scanner.templates[1].is_some());
        let again = r#"{"choices":[{"delta":{"reasoning_content":"hm2"}}]}"#;
        assert_eq!(
            scanner.fragments(again.as_bytes()),
            Some(Fragments {
                content: None,
                reasoning: Some("hm2")
            })
        );
    }

    fn chunk_json() -> impl Strategy<Value = String> {
        let text = "[a-z \"\\\\\n\t/é🙂]{0,8}";
        (
            proptest::option::of(proptest::option::of(text)),
            proptest::option::of(proptest::option::of(text)),
            proptest::option::of(proptest::option::of(text)),
            proptest::option::of(prop_oneof![Just("stop"), Just("length")]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(content, reasoning_content, reasoning, finish, usage, tool, pretty)| {
                let mut delta = serde_json::Map::new();
                for (key, v) in [("content", content), ("reasoning_content", reasoning_content), ("reasoning", reasoning)] {
                    if let Some(v) = v {
                        delta.insert(key.into(), v.map_or(serde_json::Value::Null, Into::into));
                    }
                }
                if tool {
                    delta.insert("tool_calls".into(), serde_json::json!([{"index":0,"function":{"arguments":"{}"}}]));
                }
                let mut chunk = serde_json::json!({"id":"c","choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
                if usage {
                    chunk["usage"] = serde_json::json!({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2});
                }
                if pretty {
                    serde_json::to_string_pretty(&chunk).unwrap_or_default()
                } else {
                    chunk.to_string()
                }
            })
    }

    fn unescape(escaped: &str) -> String {
        serde_json::from_str(&format!("\"{escaped}\""))
            .unwrap_or_else(|e| panic!("{escaped:?}: {e}"))
    }

    proptest! {
        #[test]
        fn templates_agree_with_the_full_parse(
            shapes in proptest::collection::vec((0u8..4, "[a-z \"\\\\\n{}:,]{0,6}"), 1..10)
        ) {
            let mut scanner = Scanner::default();
            for (shape, text) in shapes {
                let delta = match shape {
                    0 => serde_json::json!({"content": text}),
                    1 => serde_json::json!({"reasoning_content": text, "content": null}),
                    2 => serde_json::json!({"content": text, "tool_calls": [{"index": 0}]}),
                    _ => serde_json::json!({"content": text}),
                };
                let finish = (shape == 3).then_some("stop");
                let json = serde_json::json!({"id":"c","created":1,"choices":[{"index":0,"delta":delta,"finish_reason":finish}]}).to_string();
                let full = Chunk::read(json.as_bytes()).expect("a chunk");
                let d = &full.choices[0].delta;
                match scanner.fragments(json.as_bytes()) {
                    Some(f) => {
                        prop_assert!(shape < 2, "{}", json);
                        prop_assert_eq!(f.content.map(unescape), d.content.as_deref().map(str::to_owned));
                        prop_assert_eq!(f.reasoning.map(unescape), d.reasoning_content.as_deref().map(str::to_owned));
                    }
                    None => prop_assert!(shape >= 2, "{}", json),
                }
            }
        }

        #[test]
        fn agrees_with_the_full_parse(json in chunk_json()) {
            let full = Chunk::read(json.as_bytes()).expect("a chunk");
            let choice = &full.choices[0];
            match Scanner::default().fragments(json.as_bytes()) {
                Some(f) => {
                    prop_assert!(choice.finish_reason.is_none() && full.usage.is_none());
                    prop_assert!(choice.delta.tool_calls.is_empty());
                    prop_assert_eq!(f.content.map(unescape), choice.delta.content.as_deref().map(str::to_owned));
                    let reasoning = f.reasoning.map(unescape).filter(|r| !r.is_empty());
                    prop_assert_eq!(reasoning.as_deref(), choice.delta.reasoning_text());
                }
                None => prop_assert!(
                    choice.finish_reason.is_some() || full.usage.is_some() || !choice.delta.tool_calls.is_empty(),
                    "a plain chunk missed the fast path: {}", json
                ),
            }
        }
    }
}
