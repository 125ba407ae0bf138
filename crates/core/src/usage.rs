//! Token usage and the light reading of response bodies and stream chunks that finds it.
//!
//! Reading skips everything it does not name (serde's `IgnoredAny`), so looking at a chunk
//! costs one scan and no tree.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// Token counts as OpenAI reports them. Anthropic's and the Responses API's names
/// (`input_tokens`, `output_tokens`) read into the same fields; Anthropic's cached input
/// (`cache_read_input_tokens`, `cache_creation_input_tokens`, not part of its `input_tokens`)
/// is added to the prompt, as OpenAI's `prompt_tokens` includes cached tokens — Claude Code's
/// traffic is mostly cache reads, and limits must count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "WireUsage")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Usage as any of the three protocols writes it.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        // Saturating: an upstream's absurd counts must not overflow (a panic in debug builds).
        let cached = w
            .cache_read_input_tokens
            .unwrap_or(0)
            .saturating_add(w.cache_creation_input_tokens.unwrap_or(0));
        let prompt_tokens = w.prompt_tokens.saturating_add(cached);
        Usage {
            prompt_tokens,
            completion_tokens: w.completion_tokens,
            total_tokens: w
                .total_tokens
                .max(prompt_tokens.saturating_add(w.completion_tokens)),
        }
    }
}

impl Usage {
    /// Combines counts reported in parts (Anthropic streams give the input tokens in
    /// `message_start` and the output tokens in `message_delta`): each count is the larger
    /// of the two, as later reports repeat or grow earlier ones.
    pub fn merge(self, later: Usage) -> Usage {
        let prompt_tokens = self.prompt_tokens.max(later.prompt_tokens);
        let completion_tokens = self.completion_tokens.max(later.completion_tokens);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: later
                .total_tokens
                .max(self.total_tokens)
                .max(prompt_tokens + completion_tokens),
        }
    }
}

/// What the gateway reads from a response body or one stream chunk.
#[derive(Debug, Default, Deserialize)]
pub struct Peek<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Present (and not null) on an error frame.
    #[serde(default)]
    pub error: Option<IgnoredAny>,
    /// The choices, unread: only their number matters (see `has_no_choices`).
    #[serde(default)]
    pub choices: Option<Vec<IgnoredAny>>,
}

impl<'a> Peek<'a> {
    /// Reads `json`; anything that is not a JSON object reads as empty.
    pub fn read(json: &'a [u8]) -> Peek<'a> {
        serde_json::from_slice(json).unwrap_or_default()
    }

    /// Whether this chunk has no choices (the shape of OpenAI's extra usage-only chunk).
    pub fn has_no_choices(&self) -> bool {
        self.choices.as_ref().is_none_or(|c| c.is_empty())
    }
}

/// What a stream chunk carries, found by scanning its bytes, not parsing them. A key can only
/// appear as a key here: inside a JSON string its quotes would be escaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// A `usage` object.
    pub usage: bool,
    /// A non-null `error`.
    pub error: bool,
    /// A non-null `finish_reason`.
    pub finished: bool,
}

static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
static CHOICES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));

impl Marks {
    /// A search per key, with searchers built once (building one costs more than searching a
    /// chunk): most chunks hold `finish_reason` once and the other two not at all.
    pub fn scan(json: &[u8]) -> Marks {
        Marks {
            usage: values_of(&USAGE, json).any(|v| v == b'{'),
            error: values_of(&ERROR, json).any(|v| v != b'n'),
            finished: values_of(&FINISH, json).any(|v| v != b'n'),
        }
    }

    /// Whether a chunk is OpenAI's extra final chunk for `include_usage`: a `usage` object and
    /// no choices (no `choices` key, or only empty ones). Found without parsing; a chunk with a
    /// non-empty `choices` anywhere is never taken for it.
    pub fn usage_only(json: &[u8]) -> bool {
        values_of(&USAGE, json).any(|v| v == b'{') && no_choices(json)
    }

    /// `usage_only` of a chunk these marks were scanned from.
    pub fn usage_only_scanned(self, json: &[u8]) -> bool {
        self.usage && no_choices(json)
    }
}

/// No `choices` key, or only empty ones.
fn no_choices(json: &[u8]) -> bool {
    places(&CHOICES, json).all(|at| {
        let after = &json[at + CHOICES.needle().len()..];
        match value_start(after) {
            // Not a key here (no `:`): it says nothing about the choices.
            None => true,
            Some(b'[') => {
                let open = after.iter().position(|&b| b == b'[').unwrap_or(0);
                after[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b']')
            }
            Some(b'n') => true,
            Some(_) => false,
        }
    })
}

/// The first byte of the value after each place `key` stands as a key in `json`.
fn values_of<'a>(key: &'a Finder<'static>, json: &'a [u8]) -> impl Iterator<Item = u8> + 'a {
    let len = key.needle().len();
    places(key, json).filter_map(move |at| value_start(&json[at + len..]))
}

/// Where `key` stands in `json`, each place after the last (as `Finder::find_iter` finds them).
/// `Finder::find` on what is left, not `find_iter`: an iterator copies the whole searcher (a
/// few hundred bytes) each time it is made, which cost a chunk more than most of its searches.
pub fn places<'a>(key: &'a Finder<'_>, json: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + key.find(json.get(from..)?)?;
        from = at + key.needle().len().max(1);
        Some(at)
    })
}

/// After a key: the first byte of its value, when a `:` follows (else it was not a key).
fn value_start(after_key: &[u8]) -> Option<u8> {
    let mut rest = after_key
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace);
    if rest.next()? != b':' {
        return None;
    }
    rest.find(|b| !b.is_ascii_whitespace())
}

/// The `usage` of a whole response body, read from its last `"usage"` key alone (it sits at
/// the end in OpenAI's answers), so a long answer is not parsed whole; falls back to a full
/// read when that fails.
pub fn find_usage(body: &[u8]) -> Option<Usage> {
    let key = b"\"usage\"";
    let at = rfind_key(body, key)?;
    let rest = &body[at + key.len()..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] == b':' {
        let value = &rest[colon + 1..];
        if let Some(usage) = flat_usage(value) {
            return Some(usage);
        }
        let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Option<Usage>>();
        if let Some(Ok(usage)) = values.next() {
            return usage;
        }
    }
    Peek::read(body).usage
}

/// Where the last `key` (a quoted name) starts: only a quote can start it, so the quotes are
/// walked from the end. A key near the end (usage is last in OpenAI's answers) is found after
/// a few quotes, and no searcher is built per call (building one cost more than the search).
fn rfind_key(body: &[u8], key: &[u8]) -> Option<usize> {
    memchr::memrchr_iter(b'"', body).find(|&at| body[at..].starts_with(key))
}

/// The usual `usage` object read by hand: a flat object of plain non-negative integers
/// (`{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`). `None` for anything else —
/// nested details, `null`, escapes, a duplicated field, a number serde_json would refuse or
/// read another way — which serde then reads as before; where this answers, it answers what
/// serde would (`flat_usage_agrees_with_serde`).
fn flat_usage(value: &[u8]) -> Option<Usage> {
    /// JSON's own white space (not `is_ascii_whitespace`, which also takes a form feed).
    fn skip_ws(v: &[u8], mut i: usize) -> usize {
        while i < v.len() && matches!(v[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }
    let mut i = skip_ws(value, 0);
    if value.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(value, i + 1);
    // prompt (or input), completion (or output), total, cache read, cache creation.
    let mut seen: [Option<u64>; 5] = [None; 5];
    if value.get(i) == Some(&b'}') {
        return Some(Usage::from_parts(seen));
    }
    loop {
        if value.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i + 1;
        let key_len = memchr::memchr2(b'"', b'\\', &value[key_start..])?;
        if value[key_start + key_len] != b'"' {
            return None;
        }
        let key = &value[key_start..key_start + key_len];
        i = skip_ws(value, key_start + key_len + 1);
        if value.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(value, i + 1);
        let digits_start = i;
        let mut n: u64 = 0;
        while let Some(d) = value.get(i).filter(|b| b.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            i += 1;
        }
        let digits = i - digits_start;
        // No digits, or a leading zero serde_json refuses; a fraction or exponent would be
        // read as a float.
        if digits == 0 || (digits > 1 && value[digits_start] == b'0') {
            return None;
        }
        if matches!(value.get(i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let slot = match key {
            b"prompt_tokens" | b"input_tokens" => Some(0),
            b"completion_tokens" | b"output_tokens" => Some(1),
            b"total_tokens" => Some(2),
            b"cache_read_input_tokens" => Some(3),
            b"cache_creation_input_tokens" => Some(4),
            _ => None,
        };
        if let Some(slot) = slot {
            // serde refuses a field given twice (an alias counts as the same field).
            if seen[slot].replace(n).is_some() {
                return None;
            }
        }
        i = skip_ws(value, i);
        match value.get(i) {
            Some(b',') => i = skip_ws(value, i + 1),
            Some(b'}') => return Some(Usage::from_parts(seen)),
            _ => return None,
        }
    }
}

impl Usage {
    /// The counts `flat_usage` read, as `WireUsage` (absent counts are 0) would give them.
    fn from_parts(seen: [Option<u64>; 5]) -> Usage {
        Usage::from(WireUsage {
            prompt_tokens: seen[0].unwrap_or(0),
            completion_tokens: seen[1].unwrap_or(0),
            total_tokens: seen[2].unwrap_or(0),
            cache_read_input_tokens: seen[3],
            cache_creation_input_tokens: seen[4],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_chunk() {
        let p = Peek::read(
            br#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        );
        assert_eq!(p.id.as_deref(), Some("c1"));
        assert_eq!(p.model.as_deref(), Some("m"));
        assert!(p.usage.is_none());
        assert!(p.error.is_none());
    }

    #[test]
    fn reads_usage_finish_and_errors() {
        let p = Peek::read(
            br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        );
        assert_eq!(
            p.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7
            })
        );
        assert!(Peek::read(br#"{"error":{"message":"x"}}"#).error.is_some());
        assert!(Peek::read(br#"{"error":null}"#).error.is_none());
        assert!(Peek::read(b"[DONE]").id.is_none());
        assert!(Peek::read(br#"{"choices":[],"usage":null}"#).has_no_choices());
    }

    #[test]
    fn places_are_where_find_iter_finds_them() {
        let hays: [&[u8]; 6] = [
            b"",
            b"a",
            b"aaaa",
            b"abaabaaab",
            b"xx\"usage\"\"usage\"",
            b"aab",
        ];
        for needle in [&b"a"[..], b"aa", b"aab", b"\"usage\"", b"zzz"] {
            let finder = Finder::new(needle);
            for hay in hays {
                let want: Vec<usize> = finder.find_iter(hay).collect();
                let got: Vec<usize> = places(&finder, hay).collect();
                assert_eq!(got, want, "{needle:?} in {hay:?}");
            }
        }
    }

    /// The searcher-per-key scan built per call, kept as the reference.
    fn reference_marks(json: &[u8]) -> Marks {
        let value_after = |key: &'static [u8]| {
            memchr::memmem::find_iter(json, key)
                .filter_map(move |at| value_start(&json[at + key.len()..]))
                .collect::<Vec<u8>>()
        };
        Marks {
            usage: value_after(b"\"usage\"").contains(&b'{'),
            error: value_after(b"\"error\"").iter().any(|&v| v != b'n'),
            finished: value_after(b"\"finish_reason\"").iter().any(|&v| v != b'n'),
        }
    }

    #[test]
    fn the_scan_agrees_with_a_search_built_per_call() {
        let samples: &[&[u8]] = &[
            br#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[],"usage":null}"#,
            br#"{"error":{"message":"x"}}"#,
            br#"{"error" :  null , "usage" : { }}"#,
            br#"{"content":"usage","x":"error","y":"finish_reason"}"#,
            br#"{"content":"say "usage": {"error": 1}"}"#,
            br#""usage""#,
            br#""finish_reason":"#,
            br#"{"usage"#,
            b"",
            br#"{"a":""","finish_reason":"length","error":false}"#,
        ];
        for sample in samples {
            assert_eq!(
                Marks::scan(sample),
                reference_marks(sample),
                "{}",
                String::from_utf8_lossy(sample)
            );
        }
    }

    proptest::proptest! {
        /// Chunks spliced from the pieces the keys are made of (and of what looks like them).
        #[test]
        fn the_scan_agrees_on_spliced_chunks(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "\"usage\"", "\"error\"", "\"finish_reason\"", ":", " ", "{", "}", "null",
                    "\"stop\"", "\\\"", "\"", "u", "e", "f", ",", "\"usag", "[", "]", "n",
                ]),
                0..24,
            )
        ) {
            let chunk = pieces.concat();
            proptest::prop_assert_eq!(Marks::scan(chunk.as_bytes()), reference_marks(chunk.as_bytes()));
        }
    }

    #[test]
    fn the_usage_only_chunk_is_found_as_a_parse_finds_it() {
        let parsed = |json: &[u8]| {
            let peek = Peek::read(json);
            peek.usage.is_some() && peek.has_no_choices()
        };
        let samples: &[&[u8]] = &[
            br#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            br#"{"id":"c","choices":[ ],"usage":{"prompt_tokens":1}}"#,
            br#"{"id":"c","usage":{"prompt_tokens":1}}"#,
            br#"{"id":"c","choices":null,"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[{"delta":{"content":"hi"}}]}"#,
            br#"{"choices":[],"usage":null}"#,
            br#"{"choices" : [] , "usage" : { }}"#,
            br#"{"choices":[{"delta":{"content":""usage":{"}}],"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[{"delta":{"content":"choices"}}],"x":1}"#,
        ];
        for sample in samples {
            assert_eq!(
                Marks::usage_only(sample),
                parsed(sample),
                "{}",
                String::from_utf8_lossy(sample)
            );
            // The same from the marks a connector scanned.
            assert_eq!(
                Marks::scan(sample).usage_only_scanned(sample),
                parsed(sample),
                "{}",
                String::from_utf8_lossy(sample)
            );
        }
    }

    #[test]
    fn marks_are_found_without_parsing() {
        let m = Marks::scan(
            br#"{"choices":[{"delta":{"content":"say \"usage\": {"},"finish_reason":null}]}"#,
        );
        assert_eq!(m, Marks::default(), "keys inside strings do not count");
        let m = Marks::scan(
            br#"{"choices":[{"finish_reason" : "stop"}],"usage": {"prompt_tokens":1}}"#,
        );
        assert!(m.finished && m.usage && !m.error);
        assert!(Marks::scan(br#"{"error":{"message":"x"}}"#).error);
        assert!(!Marks::scan(br#"{"error":null,"usage":null}"#).error);
        assert!(!Marks::scan(br#"{"usage":null}"#).usage);
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let u: Usage = serde_json::from_str(&format!(
            r#"{{"input_tokens":{m},"cache_read_input_tokens":{m},"cache_creation_input_tokens":5,"output_tokens":{m}}}"#,
            m = u64::MAX
        ))
        .expect("usage");
        assert_eq!(u.prompt_tokens, u64::MAX);
        assert_eq!(u.total_tokens, u64::MAX);
    }

    #[test]
    fn anthropic_cached_input_counts_as_prompt() {
        let u: Usage = serde_json::from_slice(
            br#"{"input_tokens":3,"cache_read_input_tokens":1000,"cache_creation_input_tokens":20,"output_tokens":5}"#,
        )
        .expect("usage");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1023, 5, 1028)
        );
        let openai: Usage = serde_json::from_slice(
            br#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#,
        )
        .expect("usage");
        assert_eq!(openai.total_tokens, 7);
    }

    #[test]
    fn usage_is_found_from_the_end() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": no"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(find_usage(body).map(|u| u.total_tokens), Some(7));
        assert_eq!(find_usage(br#"{"usage":null}"#), None);
        assert_eq!(find_usage(br#"{"choices":[]}"#), None);
        // Usage first, then more fields: still found.
        let body =
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"id":"z"}"#;
        assert_eq!(find_usage(body).map(|u| u.completion_tokens), Some(2));
    }

    /// `find_usage`'s serde read of the value, kept as the reference for `flat_usage`.
    fn serde_usage(value: &[u8]) -> Option<Option<Usage>> {
        let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Option<Usage>>();
        values.next()?.ok()
    }

    #[test]
    fn flat_usage_agrees_with_serde() {
        let samples: &[&[u8]] = &[
            br#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#,
            br#" { "input_tokens" : 3 ,"output_tokens":5,"cache_read_input_tokens":1000,"cache_creation_input_tokens":20 } "#,
            br#"{}"#,
            br#"{"total_tokens":0,"x":12}"#,
            br#"{"prompt_tokens":18446744073709551615}"#,
            br#"{"prompt_tokens":1,"total_tokens":1}}]"#,
        ];
        for sample in samples {
            let fast = flat_usage(sample);
            assert!(fast.is_some(), "{}", String::from_utf8_lossy(sample));
            assert_eq!(
                fast,
                serde_usage(sample).flatten(),
                "{}",
                String::from_utf8_lossy(sample)
            );
        }
        // Left to serde: each of these is refused or read another way there.
        let declined: &[&[u8]] = &[
            b"null",
            br#"{"prompt_tokens":1,"input_tokens":2}"#,
            br#"{"prompt_tokens":01}"#,
            br#"{"prompt_tokens":1.0}"#,
            br#"{"prompt_tokens":1e2}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":18446744073709551616}"#,
            br#"{"prompt_tokens":null}"#,
            br#"{"prompt_tokens_details":{"cached_tokens":0},"prompt_tokens":3}"#,
            br#"{"prompt\u005ftokens":3}"#,
            b"{\"prompt_tokens\":\x0c3}",
            br#"{"prompt_tokens":3,}"#,
            br#"{"prompt_tokens":3"#,
        ];
        for sample in declined {
            assert_eq!(
                flat_usage(sample),
                None,
                "{}",
                String::from_utf8_lossy(sample)
            );
        }
    }

    proptest::proptest! {
        /// Wherever the hand reader answers, serde_json reads the same usage.
        #[test]
        fn flat_usage_agrees_on_spliced_objects(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "{", "}", ",", ":", " ", "\n", "\"prompt_tokens\"", "\"input_tokens\"",
                    "\"completion_tokens\"", "\"output_tokens\"", "\"total_tokens\"",
                    "\"cache_read_input_tokens\"", "\"cache_creation_input_tokens\"", "\"x\"",
                    "0", "7", "12", "00", "1.5", "-3", "null", "99999999999999999999",
                ]),
                0..16,
            )
        ) {
            let value = pieces.concat();
            if let Some(fast) = flat_usage(value.as_bytes()) {
                proptest::prop_assert_eq!(Some(fast), serde_usage(value.as_bytes()).flatten());
            }
        }

        /// Objects of the usual shape, with any counts: always read by hand, as serde reads them.
        #[test]
        fn flat_usage_reads_the_usual_shape(
            // (Counts that sum without overflow: `From<WireUsage>` adds them.)
            counts in proptest::collection::vec((0usize..7, 0u64..1 << 60), 0..6)
        ) {
            let names = ["prompt_tokens", "completion_tokens", "total_tokens", "input_tokens",
                "output_tokens", "cache_read_input_tokens", "other"];
            let mut used = std::collections::HashSet::new();
            let members: Vec<String> = counts
                .iter()
                // An alias and its field, or a field twice, is a duplicate: serde refuses it.
                .filter(|(k, _)| used.insert(if *k == 3 { 0 } else if *k == 4 { 1 } else { *k }) || *k == 6)
                .map(|(k, n)| format!("\"{}\":{n}", names[*k]))
                .collect();
            let value = format!("{{{}}}", members.join(","));
            let fast = flat_usage(value.as_bytes());
            proptest::prop_assert!(fast.is_some(), "{}", value);
            proptest::prop_assert_eq!(fast, serde_usage(value.as_bytes()).flatten());
        }
    }

    #[test]
    fn the_last_usage_key_is_found_from_the_end() {
        let body =
            br#"{"a":"\"usage\"","usage":{"total_tokens":1},"b":{"usage":{"total_tokens":2}}}"#;
        assert_eq!(find_usage(body).map(|u| u.total_tokens), Some(2));
        assert_eq!(
            rfind_key(body, b"\"usage\""),
            memchr::memmem::rfind(body, b"\"usage\"")
        );
        assert_eq!(rfind_key(b"usage\"", b"\"usage\""), None);
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let p = Peek::read(br#"{"id":"a\"b"}"#);
        assert_eq!(p.id.as_deref(), Some("a\"b"));
    }
}
