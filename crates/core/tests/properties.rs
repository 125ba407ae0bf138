//! Property tests (fuzzing) of what parses client and upstream bytes: `JsonObject::parse`,
//! `ClientRequest::parse_shared` and the SSE splitter. None may panic on any input; the JSON
//! parse agrees with serde_json on validity and on every value; the splitter's output does not
//! depend on how the stream was cut into chunks.
//!
//! Inputs are arbitrary bytes, generated JSON, and mutations of real bodies (the recorded
//! client requests in `tests/fixtures/clients/` and the shapes the tests use). The default run
//! is proptest's 256 cases per property; a long run sets `PROPTEST_CASES` (see
//! docs/benchmarks.md for the 1M-input record).

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;
use tollgate_core::json::{JsonError, MAX_DEPTH};
use tollgate_core::{ClientRequest, Endpoint, JsonObject, SseEvent, SseSplitter};

/// Bodies the other tests send, and real clients' requests.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#,
        r#"{"model":"nvidia:meta/llama3-70b","messages":[{"role":"user","content":"Hi"}],"temperature":0.2,"max_completion_tokens":32,"stream_options":{"include_usage":true},"parallel_tool_calls":false,"store":false,"stream":true}"#,
        r#"{"model":"m","temperature":1.0,"messages":[{"role":"user","content":"h\u00e9"}],"x_new":{"a":[1,2e3]}}"#,
        r#"{"a\"b":[1],"c":"x","a\"b":null}"#,
        r#"{"model":"up:m","input":["a","b"],"max_tokens":-1,"stream":"yes"}"#,
        r#" {"model":"m","prompt":"x","stream":null} "#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let fixtures = [
        include_str!("../../../tests/fixtures/clients/claude-code-2.1.330-probes.json"),
        include_str!("../../../tests/fixtures/clients/claude-code-2.1.330-tool-turn.json"),
        include_str!("../../../tests/fixtures/clients/codex-0.169.0-tool-turn.json"),
    ];
    for fixture in fixtures {
        let v: Value = serde_json::from_str(fixture).expect("fixture is JSON");
        for req in v["requests"].as_array().into_iter().flatten() {
            if req["body"].is_object() {
                seeds.push(req["body"].to_string().into_bytes());
            }
        }
    }
    seeds
}

/// A seed with a few bytes flipped, inserted, removed, or the whole cut short.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    let n = seeds.len();
    (
        0..n,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 0..6),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    break;
                }
                let at = at.index(b.len());
                match op {
                    0 => b[at] = byte,
                    1 => b.insert(at, byte),
                    2 => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        })
}

/// JSON values, strings with escapes and non-ASCII included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z\"\\\\\u{0}-\u{1f}é😀]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-z\"\\\\]{0,4}", inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A top-level object written by hand: duplicate keys, white space, and the fields the
/// request parser reads, with right and wrong types.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("model".to_owned()),
        Just("messages".to_owned()),
        Just("stream".to_owned()),
        Just("max_tokens".to_owned()),
        Just("input".to_owned()),
        "[a-z\"\\\\é]{0,5}",
    ];
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r\n  ")];
    (
        prop::collection::vec((key, json_value(), ws), 0..8),
        any::<bool>(),
    )
        .prop_map(|(fields, pretty)| {
            let mut out = String::from(if pretty { " {\n" } else { "{" });
            for (i, (k, v, ws)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                out.push_str(&serde_json::to_string(k).expect("a string"));
                out.push(':');
                out.push_str(ws);
                out.push_str(&v.to_string());
            }
            out.push('}');
            out.into_bytes()
        })
}

/// Any of the above, or plain noise.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64),
        6 => json_body(),
        8 => mutated(),
    ]
}

/// Nesting depth of arrays and objects, strings skipped (the plain definition).
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn check_json_object(bytes: &[u8]) {
    // serde_json's grammar check (numbers of any size, any depth), and its full parse.
    let valid = serde_json::from_slice::<Box<RawValue>>(bytes)
        .ok()
        .is_some_and(|raw| raw.get().starts_with('{'));
    match JsonObject::parse(bytes) {
        Ok(obj) => {
            assert!(valid, "accepted what serde_json refuses");
            assert!(depth(bytes) <= MAX_DEPTH);
            // Every value is the one serde_json reads (the last of duplicate keys).
            if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) {
                assert_eq!(obj.keys().count(), map.len());
                for key in obj.keys() {
                    let raw = obj.get(key).expect("a listed key has a value");
                    let ours: Value = serde_json::from_str(raw).expect("a value is JSON");
                    assert_eq!(Some(&ours), map.get(key), "{key}");
                }
            }
            // Its own output parses back to the same bytes.
            let written = obj.to_bytes();
            let again = JsonObject::parse(&written).expect("own output parses");
            assert_eq!(again.to_bytes(), written);
        }
        Err(JsonError::TooDeep) => assert!(depth(bytes) > MAX_DEPTH),
        Err(_) => assert!(!valid || depth(bytes) > MAX_DEPTH, "refused valid JSON"),
    }
}

fn check_client_request(bytes: &[u8]) {
    let shared = Bytes::copy_from_slice(bytes);
    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::Responses,
    ] {
        let Ok(req) = ClientRequest::parse_shared(endpoint, &shared) else {
            continue;
        };
        // What the parser read is what serde_json reads.
        let v: Value = serde_json::from_slice(bytes).expect("accepted bodies are JSON");
        assert_eq!(v["model"].as_str(), Some(req.model.as_str()));
        assert!(!req.model.trim().is_empty());
        assert_eq!(req.stream, v["stream"].as_bool().unwrap_or(false));
        match endpoint {
            Endpoint::ChatCompletions => assert!(v["messages"].is_array()),
            Endpoint::Completions => assert!(v.get("prompt").is_some()),
            Endpoint::Embeddings => assert!(v.get("input").is_some()),
            Endpoint::Messages | Endpoint::CountTokens => assert!(v["messages"].is_array()),
            Endpoint::Responses => assert!(v["input"].is_array() || v["input"].is_string()),
        }
    }
}

/// Events, the leftover, and whether an event was refused, for `stream` cut at `cuts`.
fn split(stream: &[u8], cuts: &[usize], limit: usize) -> (Vec<Bytes>, Option<Bytes>, bool) {
    let mut s = SseSplitter::with_limit(limit);
    let mut out = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    for p in points {
        if s.push(Bytes::copy_from_slice(&stream[at..p]), &mut out)
            .is_err()
        {
            return (
                out.into_iter().map(SseEvent::into_raw).collect(),
                None,
                true,
            );
        }
        at = p;
    }
    let rest = s.finish();
    (
        out.into_iter().map(SseEvent::into_raw).collect(),
        rest,
        false,
    )
}

/// Bytes shaped like an SSE stream, with every kind of line ending.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"data: "[..]),
        Just(&b"data:"[..]),
        Just(&b": keepalive"[..]),
        Just(&b"event: x"[..]),
        Just(&b"{\"a\":1}"[..]),
        Just(&b"[DONE]"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n\n"[..]),
        Just(&b" "[..]),
        Just(&b"xxxxxxxxxxxxxxxxxxxxxxxx"[..]),
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..40).prop_map(|p| p.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #[test]
    fn json_object_parse_agrees_with_serde_json(bytes in body()) {
        check_json_object(&bytes);
    }

    #[test]
    fn client_request_parse_never_panics_and_reads_what_serde_json_reads(bytes in body()) {
        check_client_request(&bytes);
    }

    #[test]
    fn sse_splitting_does_not_depend_on_chunking(
        stream in sse_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        small_limit in any::<bool>(),
    ) {
        let limit = if small_limit { 32 } else { usize::MAX };
        let whole = split(&stream, &[], limit);
        let cut = split(&stream, &cuts, limit);
        prop_assert_eq!(&cut, &whole);
        let (events, rest, refused) = whole;
        if !refused {
            // Nothing is lost or changed: the events, then the leftover, are the stream.
            let consumed: usize = events.iter().map(Bytes::len).sum();
            prop_assert!(consumed <= stream.len());
            prop_assert_eq!(&events.concat()[..], &stream[..consumed]);
            let tail = &stream[consumed..];
            match &rest {
                Some(rest) => prop_assert_eq!(&rest[..], tail),
                None => prop_assert!(tail.iter().all(u8::is_ascii_whitespace)),
            }
        }
        for event in &events {
            prop_assert!(event.len() <= limit);
        }
    }
}

#[test]
fn the_seeds_themselves_pass() {
    for seed in seeds() {
        check_json_object(&seed);
        check_client_request(&seed);
    }
    assert!(seeds().len() >= 10, "fixture bodies are included");
}
