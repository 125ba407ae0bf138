//! Logs: one structured line per request with what an operator needs, and never a secret —
//! checked over every line a debug-level run writes.

mod common;

use std::time::Duration;

use common::{replace_file, temp_dir, Tollgate};
use tollgate_testkit::client::{get, post};
use tollgate_testkit::{Answer, FakeUpstream};

const UPSTREAM_KEY: &str = "sk-upstream-SECRET-4242";
const NIM_KEY: &str = "nvapi-SECRET-nim-777";
const CLIENT_KEY: &str = "client-SECRET-key-99";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_carry_the_facts_and_no_secret() {
    let up = FakeUpstream::start().await;
    let nim = FakeUpstream::start().await;
    let dir = temp_dir("observability");
    let file = dir.join("config.yaml");
    let config = format!(
        "backends:\n  up: {{ type: openai, api_url: \"{}\", api_key: {UPSTREAM_KEY} }}\n  nvidia: {{ api_url: \"{}\" }}\nauth:\n  keys:\n    - {{ name: team-a, key_env: TEAM_A_KEY }}\nfailure_handling:\n  retries: 0\n",
        up.url(),
        nim.url()
    );
    std::fs::write(&file, &config).expect("write");
    let gw = Tollgate::start(
        &["--config", "config.yaml", "--log-level", "debug"],
        &[
            ("TEAM_A_KEY", CLIENT_KEY),
            ("NVIDIA_API_KEY", NIM_KEY),
            ("PROXY_API_KEY", "proxy-SECRET-1"),
        ],
        &dir,
    );
    let auth = format!("Bearer {CLIENT_KEY}");
    let h = [
        ("authorization", auth.as_str()),
        ("x-request-id", "trace-me-1"),
    ];

    up.push(Answer::chat("fine"));
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &h,
        r#"{"model":"up:gpt","messages":[{"role":"user","content":"PROMPT-TEXT-xyz"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    up.push(Answer::chat_stream(&["a", "b"]));
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &h,
        r#"{"model":"up:gpt","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    // Upstreams that echo our keys in their errors.
    up.push(Answer::error(
        401,
        &format!("invalid key {UPSTREAM_KEY}"),
        "invalid_api_key",
    ));
    post(
        gw.addr,
        "/v1/chat/completions",
        &h,
        r#"{"model":"up:gpt","messages":[]}"#,
    )
    .await;
    nim.push(Answer::error(500, &format!("auth {NIM_KEY} broke"), "oops"));
    post(
        gw.addr,
        "/v1/chat/completions",
        &h,
        r#"{"model":"nvidia:m","messages":[]}"#,
    )
    .await;
    // A client presenting a wrong key, and the environment key.
    post(
        gw.addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer wrong-SECRET-guess")],
        r#"{"model":"up:gpt","messages":[]}"#,
    )
    .await;
    up.push(Answer::chat("via proxy key"));
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-api-key", "proxy-SECRET-1")],
        r#"{"model":"up:gpt","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    get(gw.addr, "/v1/models", &h).await;
    // A reload, good and bad.
    replace_file(&file, &config.replace("retries: 0", "retries: 1"));
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(3)));
    replace_file(&file, &format!("{config}bogus: 1\n"));
    assert!(gw.wait_log("reload refused", Duration::from_secs(3)));

    let logs = gw.logs();
    assert!(
        logs.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "the run logged at debug level"
    );
    for secret in [
        UPSTREAM_KEY,
        NIM_KEY,
        CLIENT_KEY,
        "proxy-SECRET-1",
        "wrong-SECRET-guess",
        "SECRET",
        "PROMPT-TEXT-xyz",
    ] {
        let hits: Vec<&String> = logs.iter().filter(|l| l.contains(secret)).collect();
        assert!(hits.is_empty(), "`{secret}` appears in the logs: {hits:#?}");
    }

    // The request line of the first request has everything an operator needs.
    let line = logs
        .iter()
        .filter(|l| l.contains("\"tollgate::request\""))
        .find(|l| l.contains("trace-me-1"))
        .expect("a request line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    let f = &v["fields"];
    assert_eq!(f["request_id"], "trace-me-1");
    assert_eq!(f["key"], "team-a");
    assert_eq!(f["backend"], "up");
    assert_eq!(f["model"], "gpt");
    assert_eq!(f["status"], 200);
    assert_eq!(f["attempts"], 1);
    assert_eq!(f["prompt_tokens"], 5);
    assert_eq!(f["completion_tokens"], 7);
    assert!(f["latency_ms"].as_f64().is_some());
    let stream_line = logs
        .iter()
        .find(|l| l.contains("\"tollgate::request\"") && l.contains("\"stream\":true"))
        .expect("a stream line");
    let v: serde_json::Value = serde_json::from_str(stream_line).expect("json");
    assert!(v["fields"]["ttft_ms"].as_f64().is_some(), "{stream_line}");
    // The request id went upstream.
    assert_eq!(up.calls()[0].header("x-request-id"), Some("trace-me-1"));
}

/// A log line's JSON, found by the request id it carries.
fn line_of(gw: &Tollgate, request_id: &str) -> serde_json::Value {
    assert!(
        gw.wait_log(
            &format!("\"request_id\":\"{request_id}\""),
            Duration::from_secs(3)
        ),
        "no line for {request_id}: {:?}",
        gw.logs()
    );
    let line = gw
        .logs()
        .into_iter()
        .find(|l| {
            l.contains(&format!("\"request_id\":\"{request_id}\""))
                && l.contains("\"message\":\"request\"")
        })
        .expect("request line");
    serde_json::from_str(&line).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_error_frames_are_accounted_for() {
    let up = FakeUpstream::start().await;
    let dir = temp_dir("observability_accounting");
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "backends:\n  up: {{ type: openai, api_url: \"{}\", api_key: {UPSTREAM_KEY} }}\nfailure_handling:\n  retries: 0\n",
            up.url()
        ),
    )
    .expect("write");
    let gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);

    // Codex and Claude Code retry paths they expect: each is a request of its own.
    for _ in 0..2 {
        let r = post(gw.addr, "/v1/nowhere", &[("x-request-id", "lost-1")], "{}").await;
        assert_eq!(r.status, 404);
    }
    let line = line_of(&gw, "lost-1");
    assert_eq!(line["fields"]["endpoint"], "unknown");
    assert_eq!(line["fields"]["status"], 404);
    assert_eq!(line["fields"]["error"], "not_found");

    // A stream whose upstream ends with an error frame after content.
    let frame = r#"{"error":{"message":"model crashed","code":500}}"#;
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            tollgate_testkit::Step::Raw(tollgate_testkit::chunk_event("par")),
            tollgate_testkit::Step::Raw(format!("data: {frame}\n\n")),
        ],
        end: tollgate_testkit::StreamEnd::Finish,
    });
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-request-id", "frame-1")],
        r#"{"model":"up:m","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("model crashed") && !r.text().contains("[DONE]"));
    let line = line_of(&gw, "frame-1");
    assert_eq!(line["fields"]["status"], 200, "the status sent");
    assert_eq!(line["fields"]["error"], "upstream_error_frame");

    let metrics = get(gw.addr, "/metrics", &[]).await.text();
    let has = |needle: &str| metrics.lines().any(|l| l.starts_with(needle));
    assert!(
        has(
            r#"tollgate_requests_total{door="chat",backend="",model="",endpoint="unknown",status="4xx",key=""} 2"#
        ),
        "{metrics}"
    );
    assert!(
        has(
            r#"tollgate_requests_total{door="chat",backend="up",model="m",endpoint="chat",status="5xx",key=""} 1"#
        ),
        "the broken stream counts as its failure: {metrics}"
    );
    assert!(
        has(r#"tollgate_upstream_errors_total{backend="up",kind="stream_error_frame"} 1"#),
        "{metrics}"
    );
}
