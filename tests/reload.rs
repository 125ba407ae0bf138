//! Hot reload over real TCP: edits to the YAML file apply to new requests within 2 s,
//! in-flight streams finish on their snapshot, invalid edits keep the old configuration.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{replace_file, run, temp_dir, Tollgate};
use tollgate_testkit::client::{post, stream_text};

const CHAT: &str = "/v1/chat/completions";

fn config(reply: &str, extra: &str) -> String {
    format!(
        "default_backend: mock\nbackends:\n  mock:\n    reply: \"{reply}\"\n    chunk_delay_ms: 0\n  slow:\n    type: mock\n    reply: \"slow stream of old words\"\n    chunk_delay_ms: 300\n{extra}"
    )
}

async fn content(gw: &Tollgate, model: &str) -> (u16, String) {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = post(gw.addr, CHAT, &[], &body).await;
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (r.status.as_u16(), text)
}

/// Polls until `model` answers `want`, for at most 2 s; returns how long it took.
async fn answers_within_2s(gw: &Tollgate, model: &str, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        let (status, text) = content(gw, model).await;
        if status == 200 && text == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still `{text}` ({status}) after 2 s; want `{want}`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start(dir: &Path) -> Tollgate {
    Tollgate::start(&["--config", "config.yaml"], &[], dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_to_new_requests_within_two_seconds() {
    let dir = temp_dir("reload_edits");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config("first", "")).expect("write");
    let gw = start(&dir);
    assert_eq!(content(&gw, "mock:x").await, (200, "first".to_owned()));

    // force_model: every request now goes to the new backend.
    replace_file(
        &file,
        &config("first", "force_model: \"added:m\"\n").replace(
            "backends:\n",
            "backends:\n  added: { type: mock, reply: forced }\n",
        ),
    );
    answers_within_2s(&gw, "mock:x", "forced").await;

    // Adding a backend and a route.
    replace_file(
        &file,
        &config("first", "routes:\n  fast: [\"extra:m\"]\n").replace(
            "backends:\n",
            "backends:\n  extra: { type: mock, reply: via-route }\n",
        ),
    );
    answers_within_2s(&gw, "fast", "via-route").await;
    answers_within_2s(&gw, "extra:m", "via-route").await;

    // Changing the route's target.
    replace_file(&file, &config("second", "routes:\n  fast: [\"mock:m\"]\n"));
    answers_within_2s(&gw, "fast", "second").await;

    // Writing in place (no rename) is seen too.
    std::fs::write(&file, config("third", "")).expect("write");
    answers_within_2s(&gw, "mock:x", "third").await;
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_started_before_a_change_finishes_unchanged() {
    let dir = temp_dir("reload_stream");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config("first", "")).expect("write");
    let gw = start(&dir);
    let addr = gw.addr;
    let stream = tokio::spawn(async move {
        post(
            addr,
            CHAT,
            &[],
            r#"{"model":"slow:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Remove the backend the stream is using.
    replace_file(
        &file,
        "default_backend: mock\nbackends:\n  mock: { reply: after }\n",
    );
    answers_within_2s(&gw, "mock:x", "after").await;
    let r = stream.await.expect("stream task");
    assert_eq!(r.status, 200);
    assert_eq!(stream_text(&r.body), "slow stream of old words");
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    // New requests no longer find the removed backend.
    assert_eq!(
        content(&gw, "slow:m").await.0,
        200,
        "unknown prefix goes to default_backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_edits_keep_the_old_configuration() {
    let dir = temp_dir("reload_invalid");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config("good", "")).expect("write");
    let gw = start(&dir);

    let bad = [
        ("bad yaml", "backends: [unclosed\n", "config.yaml"),
        (
            "unknown key",
            &config("bad", "sever: {}\n") as &str,
            "sever",
        ),
        (
            "out of range",
            &config("bad", "failure_handling:\n  keepalive_interval: 0\n"),
            "failure_handling.keepalive_interval",
        ),
    ];
    let mut refusals = 0;
    for (what, content_text, names) in bad {
        replace_file(&file, content_text);
        refusals += 1;
        let deadline = Instant::now() + Duration::from_secs(3);
        while gw
            .logs()
            .iter()
            .filter(|l| l.contains("reload refused"))
            .count()
            < refusals
        {
            assert!(
                Instant::now() < deadline,
                "{what}: no refusal logged: {:?}",
                gw.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            gw.logs()
                .iter()
                .any(|l| l.contains("reload refused") && l.contains(names)),
            "{what}"
        );
        assert_eq!(
            content(&gw, "mock:x").await,
            (200, "good".to_owned()),
            "{what}: old config serves"
        );
        let (code, _, err) = run(&["check", "config.yaml"], &[], &dir);
        assert_eq!(code, 2, "{what}");
        assert!(
            err.contains("config.yaml") && err.contains(names),
            "{what}: {err}"
        );
    }

    // Fixing the file applies it.
    replace_file(&file, &config("fixed", ""));
    answers_within_2s(&gw, "mock:x", "fixed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let dir = temp_dir("reload_hup");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config("before", "")).expect("write");
    let gw = start(&dir);
    // Same content, but the environment-independent path: SIGHUP forces a rebuild.
    gw.hangup();
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(2)));
    assert_eq!(content(&gw, "mock:x").await, (200, "before".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_during_twenty_reloads() {
    let dir = temp_dir("reload_loop");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config("v0", "")).expect("write");
    let gw = start(&dir);
    let addr = gw.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded: at most 5,000 requests per worker.
            for _ in 0..5000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = post(addr, CHAT, &[], r#"{"model":"mock:x","messages":[]}"#).await;
                if r.status == 200
                    && r.json()["choices"][0]["message"]["content"]
                        .as_str()
                        .is_some_and(|c| c.starts_with('v'))
                {
                    ok += 1;
                } else {
                    failed.push(format!("{} {}", r.status, r.text()));
                }
            }
            (ok, failed)
        }));
    }
    for i in 1..=20 {
        replace_file(&file, &config(&format!("v{i}"), ""));
        answers_within_2s(&gw, "mock:x", &format!("v{i}")).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.expect("worker");
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 20, "only {total} requests ran");
    // Log lines are written in batches: give the last one a moment.
    let reloads = || {
        gw.logs()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while reloads() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloads() >= 20, "{} reloads", reloads());
}
