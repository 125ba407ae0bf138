//! `/metrics`: counters and histograms after a known mix of requests, and bounded series.

use std::time::Duration;

use tollgate_testkit::client::{get, post};
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

/// The value of the one sample line starting with `series` (its full name and labels).
fn sample(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample `{series}` in:\n{text}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

#[tokio::test]
async fn counters_and_histograms_follow_the_traffic() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!(
        "{}auth:\n  keys:\n    - {{ name: team-a, key: key-a }}\nfailure_handling:\n  retries: 1\n  backoff: {{ initial_ms: 1, max_ms: 10 }}\n  keepalive_interval: 1\n",
        openai_backend(&up.url())
    ))
    .await;
    let auth = [("authorization", "Bearer key-a")];

    // Two whole answers (usage 5 + 7 each), one stream with usage, one 400 from upstream,
    // one 503 then 200 (a retry), one unroutable model, one slow stream with keepalives.
    up.push(Answer::chat("a"));
    up.push(Answer::chat("b"));
    up.push(Answer::chat_stream(&["x", "y", "z"]));
    up.push(Answer::error(400, "bad", "invalid"));
    up.push(Answer::error(503, "busy", "busy"));
    up.push(Answer::chat("after retry"));
    let mut slow = vec![Step::Raw(chunk_event("s"))];
    slow.push(Step::Pause(Duration::from_millis(1500)));
    slow.extend(Answer::stream_steps(&["t"], Duration::ZERO));
    up.push(Answer::Sse {
        status: 200,
        steps: slow,
        end: StreamEnd::Finish,
    });

    let chat = r#"{"model":"up:gpt","messages":[]}"#;
    let stream = r#"{"model":"up:gpt","stream":true,"messages":[]}"#;
    assert_eq!(post(gw.addr, CHAT, &auth, chat).await.status, 200);
    assert_eq!(post(gw.addr, CHAT, &auth, chat).await.status, 200);
    assert_eq!(post(gw.addr, CHAT, &auth, stream).await.status, 200);
    assert_eq!(post(gw.addr, CHAT, &auth, chat).await.status, 400);
    assert_eq!(post(gw.addr, CHAT, &auth, chat).await.status, 200);
    assert_eq!(
        post(
            gw.addr,
            CHAT,
            &auth,
            r#"{"model":"nowhere:x","messages":[]}"#
        )
        .await
        .status,
        404
    );
    let slow = post(gw.addr, CHAT, &auth, stream).await;
    assert_eq!(slow.status, 200);
    assert!(slow.text().contains(": keepalive"), "{}", slow.text());

    let r = get(gw.addr, "/metrics", &[]).await;
    assert_eq!(r.status, 200, "metrics need no key");
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = r.text();
    let ok = r#"tollgate_requests_total{door="chat",backend="up",model="gpt",endpoint="chat",status="2xx",key="team-a"}"#;
    assert_eq!(sample(&text, ok), 5.0);
    let bad = r#"tollgate_requests_total{door="chat",backend="up",model="gpt",endpoint="chat",status="4xx",key="team-a"}"#;
    assert_eq!(sample(&text, bad), 1.0);
    let unrouted = r#"tollgate_requests_total{door="chat",backend="",model="",endpoint="chat",status="4xx",key="team-a"}"#;
    assert_eq!(sample(&text, unrouted), 1.0);
    // Usage: three whole answers of 5/7, streams of 5/3 and 5/1.
    let prompt =
        r#"tollgate_tokens_total{door="chat",backend="up",model="gpt",key="team-a",kind="prompt"}"#;
    let completion = r#"tollgate_tokens_total{door="chat",backend="up",model="gpt",key="team-a",kind="completion"}"#;
    assert_eq!(sample(&text, prompt), 25.0);
    assert_eq!(sample(&text, completion), 7.0 * 3.0 + 3.0 + 1.0);
    assert_eq!(
        sample(&text, r#"tollgate_retries_total{backend="up"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_upstream_errors_total{backend="up",kind="status_5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_upstream_errors_total{backend="up",kind="status_4xx"}"#
        ),
        1.0
    );
    assert!(sample(&text, "tollgate_keepalives_total") >= 1.0, "{text}");
    assert_eq!(sample(&text, "tollgate_inflight_requests"), 0.0);
    // Histograms: every routed request is in the duration histogram; the two streams in TTFT.
    assert_eq!(
        sample(
            &text,
            r#"tollgate_request_duration_seconds_count{door="chat",backend="up"}"#
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_time_to_first_token_seconds_count{door="chat",backend="up"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_upstream_duration_seconds_count{door="chat",backend="up"}"#
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_gateway_overhead_seconds_count{door="chat",backend="up"}"#
        ),
        6.0
    );
    // The slow stream took over a second: it is above the 1 s bucket.
    let under_1s = sample(
        &text,
        r#"tollgate_request_duration_seconds_bucket{door="chat",backend="up",le="1"}"#,
    );
    assert_eq!(under_1s, 5.0, "{text}");
    assert_no_upstream_key(&r);
}

#[tokio::test]
async fn series_stay_bounded_under_distinct_ids_and_models() {
    let gw = start("backends:\n  mock: {}\n").await;
    let count_series = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    };
    // Warm up every kind of series once.
    post(
        gw.addr,
        CHAT,
        &[("x-request-id", "warm")],
        r#"{"model":"mock:m","messages":[]}"#,
    )
    .await;
    post(gw.addr, CHAT, &[], r#"{"model":"ghost-0","messages":[]}"#).await;
    let before = count_series(&get(gw.addr, "/metrics", &[]).await.text());
    for i in 0..1000 {
        let id = format!("req-{i}");
        let r = post(
            gw.addr,
            CHAT,
            &[("x-request-id", &id)],
            r#"{"model":"mock:m","messages":[]}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        let body = format!(r#"{{"model":"ghost-{i}","messages":[]}}"#);
        assert_eq!(post(gw.addr, CHAT, &[], &body).await.status, 404);
    }
    let text = get(gw.addr, "/metrics", &[]).await.text();
    assert_eq!(count_series(&text), before, "new series appeared:\n{text}");
    assert!(!text.contains("ghost-") && !text.contains("req-"));
}

#[tokio::test]
async fn routed_model_labels_are_capped() {
    // With a default backend every name routes: the label set is capped per backend.
    let gw = start("backends:\n  mock: {}\ndefault_backend: mock\n").await;
    for i in 0..150 {
        let body = format!(r#"{{"model":"random-{i}","messages":[]}}"#);
        assert_eq!(post(gw.addr, CHAT, &[], &body).await.status, 200);
    }
    let text = get(gw.addr, "/metrics", &[]).await.text();
    let labels = text
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{"))
        .count();
    assert_eq!(labels, 101, "100 models and `other`");
    assert_eq!(
        sample(
            &text,
            r#"tollgate_requests_total{door="chat",backend="mock",model="other",endpoint="chat",status="2xx",key=""}"#
        ),
        50.0
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let gw = start("backends:\n  mock: {}\nmetrics:\n  enabled: false\n").await;
    assert_eq!(get(gw.addr, "/metrics", &[]).await.status, 404);
}
