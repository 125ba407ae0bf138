//! What the Responses door costs per request, on the benchmark's shapes (ignored by default;
//! numbers mean something only in release):
//!
//! ```text
//! cargo test --release -p tollgate-translate --test responses_perf -- --ignored --nocapture
//! ```
//!
//! It times the translator's own work — `to_chat` + `reply_context` on the request, then the
//! bench upstream's 20-chunk stream through `ChatToResponses` — beside what the pass-through
//! relay does to each event in user space (a byte scan for usage, error and finish marks and a
//! copy), so the added CPU can be set against the gateway's measured CPU per proxied stream
//! (docs/benchmarks.md).

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use tollgate_core::{JsonObject, Marks};
use tollgate_translate::responses::{reply_context, to_chat, ChatToResponses};
use tollgate_translate::{ChatTarget, StreamTranslator};

/// The bench upstream's stream: 20 content chunks, the last with finish and usage.
fn bench_stream() -> Vec<String> {
    (0..20)
        .map(|i| {
            let last = i == 19;
            format!(
                "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
                 \"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i:02} \"}},\
                 \"finish_reason\":{}}}]{}}}",
                if last { "\"stop\"" } else { "null" },
                if last {
                    ",\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":20,\"total_tokens\":44}"
                } else {
                    ""
                }
            )
        })
        .chain(std::iter::once("[DONE]".to_owned()))
        .collect()
}

/// The bench's small request, in its Responses form.
const BENCH_REQUEST: &str = r#"{"model":"m","instructions":"You are a helpful assistant.","input":"Say hello in one short sentence.","max_output_tokens":64,"temperature":0.2,"stream":true}"#;

fn codex_request() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/clients/codex-0.169.0-tool-turn.json"
    );
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    fixture["requests"][1]["body"].to_string()
}

/// Mean nanoseconds of `f` over `n` runs (after a warm-up).
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn door(request: &str, events: &[String]) -> usize {
    let body = JsonObject::parse(request.as_bytes()).expect("json");
    let chat = to_chat(&body, &ChatTarget::default()).expect("translates");
    black_box(chat.to_bytes());
    let ctx = reply_context(&body, "resp_0123456789abcdef".into(), "m".into()).expect("ctx");
    let mut t = ChatToResponses::new(ctx);
    let mut out = BytesMut::with_capacity(8 * 1024);
    for e in events {
        t.event(e.as_bytes(), &mut out);
    }
    t.finish(&mut out);
    out.len()
}

fn relay(events: &[String]) -> usize {
    let mut out = BytesMut::with_capacity(4 * 1024);
    for e in events {
        black_box(Marks::scan(e.as_bytes()));
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out.len()
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn translator_cost_per_request() {
    let events = bench_stream();
    let codex = codex_request();
    let relay_ns = time(20_000, || {
        black_box(relay(&events));
    });
    let request_ns = time(20_000, || {
        let body = JsonObject::parse(BENCH_REQUEST.as_bytes()).expect("json");
        black_box(
            to_chat(&body, &ChatTarget::default())
                .expect("ok")
                .to_bytes(),
        );
        black_box(reply_context(&body, "resp_1".into(), "m".into()).expect("ctx"));
    });
    let door_ns = time(20_000, || {
        black_box(door(BENCH_REQUEST, &events));
    });
    let codex_ns = time(500, || {
        black_box(door(&codex, &events));
    });
    let bytes_out = door(BENCH_REQUEST, &events);
    let codex_out = door(&codex, &events);
    println!("bench request + 20-chunk stream:");
    println!(
        "  relay's own work per stream (scan + copy): {:>8.1} µs",
        relay_ns / 1e3
    );
    println!(
        "  door: request translation + context:       {:>8.1} µs",
        request_ns / 1e3
    );
    println!(
        "  door: request + stream translation:        {:>8.1} µs ({bytes_out} bytes out)",
        door_ns / 1e3
    );
    println!(
        "  door on Codex's 40 KB follow-up request:   {:>8.1} µs ({codex_out} bytes out)",
        codex_ns / 1e3
    );

    // Where Codex's request goes, beside one serde_json::Value parse of the same body.
    let body = JsonObject::parse(codex.as_bytes()).expect("json");
    let parse = time(500, || {
        black_box(JsonObject::parse(codex.as_bytes()).expect("json"));
    });
    let chat = time(500, || {
        black_box(
            to_chat(&body, &ChatTarget::default())
                .expect("ok")
                .to_bytes(),
        );
    });
    let context = time(500, || {
        black_box(reply_context(&body, "resp_1".into(), "m".into()).expect("ctx"));
    });
    let ctx = reply_context(&body, "resp_1".into(), "m".into()).expect("ctx");
    let stream = time(500, || {
        let mut t = ChatToResponses::new(ctx.clone());
        let mut out = BytesMut::with_capacity(64 * 1024);
        for e in &events {
            t.event(e.as_bytes(), &mut out);
        }
        black_box(out.len());
    });
    let value = time(500, || {
        black_box(serde_json::from_str::<serde_json::Value>(&codex).expect("value"));
    });
    println!(
        "Codex request: JsonObject::parse {:.1}, to_chat {:.1}, reply_context {:.1}, \
         stream {:.1} µs; a serde_json::Value parse of it: {:.1} µs",
        parse / 1e3,
        chat / 1e3,
        context / 1e3,
        stream / 1e3,
        value / 1e3
    );
}
