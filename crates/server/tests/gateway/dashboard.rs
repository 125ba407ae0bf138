//! The live dashboard: off by default; the state endpoint and the event channel show requests
//! with complete timelines; a slow viewer is dropped; nothing secret (no key, no prompt, no
//! completion) in any payload; admin keys and sessions; cross-origin requests refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_testkit::client::{get, open, post, send, Collected, Open};
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

const ADMIN_KEY: &str = "admin-SECRET-dashboard-key-42";
const CLIENT_KEY: &str = "client-SECRET-key-1";
const OPS_KEY: &str = "ops-SECRET-admin-client-key";

fn dashboard_on(url: &str) -> String {
    format!(
        "{}dashboard:\n  enabled: true\nfailure_handling:\n  keepalive_interval: 1\n  retries: 0\n",
        openai_backend(url)
    )
}

/// Keys configured: `ci` (a client), `ops` (a client and an admin), and the admin key in
/// `DASH_KEY`.
fn with_keys(url: &str) -> String {
    format!(
        "{}auth:\n  keys:\n    - {{ name: ci, key: {CLIENT_KEY}, limits: {{ rpm: 100, tokens_per_day: 100000 }} }}\n    - {{ name: ops, key: {OPS_KEY}, admin: true }}\ndashboard:\n  enabled: true\n  key_env: DASH_KEY\nfailure_handling:\n  keepalive_interval: 1\n  retries: 0\n",
        openai_backend(url)
    )
}

fn admin_env() -> HashMap<String, String> {
    [("DASH_KEY".to_string(), ADMIN_KEY.to_string())].into()
}

const STREAM_BODY: &str =
    r#"{"model":"up:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const WHOLE_BODY: &str = r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#;

async fn state(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> Value {
    let r = get(addr, "/dashboard/state", headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.json()
}

fn find<'a>(list: &'a Value, request_id: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|r| r["request_id"] == request_id)
}

/// Polls the state until `pick` finds something, for at most `within`.
async fn wait_for(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    within: Duration,
    pick: impl Fn(&Value) -> Option<Value>,
) -> Value {
    let until = Instant::now() + within;
    loop {
        let s = state(addr, headers).await;
        if let Some(found) = pick(&s) {
            return found;
        }
        assert!(Instant::now() < until, "not seen within {within:?}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn whats(detail: &Value) -> Vec<String> {
    detail["marks"]
        .as_array()
        .expect("marks")
        .iter()
        .map(|m| m["what"].as_str().expect("what").to_owned())
        .collect()
}

#[tokio::test]
async fn every_dashboard_path_is_404_while_disabled() {
    let up = FakeUpstream::start().await;
    let gw = start(&openai_backend(&up.url())).await;
    for path in [
        "/dashboard",
        "/dashboard/state",
        "/dashboard/events",
        "/dashboard/session",
        "/dashboard/app.js",
    ] {
        let r = get(gw.addr, path, &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found", "{path}");
    }
    let r = post(gw.addr, "/dashboard/login", &[], r#"{"key":"x"}"#).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_stream_appears_in_flight_then_finished_with_its_whole_timeline() {
    let up = FakeUpstream::start().await;
    // Slower than the keepalive interval to its first event (so the 200 goes first), then a
    // silence mid-stream: keepalives at both places.
    up.push(
        Answer::Sse {
            status: 200,
            steps: Answer::stream_steps(&["Hel", "lo"], Duration::from_millis(1300)),
            end: StreamEnd::Finish,
        }
        .after(Duration::from_millis(1300)),
    );
    let gw = start(&dashboard_on(&up.url())).await;
    let id = [("x-request-id", "dash-stream-1")];
    let addr = gw.addr;
    let client = tokio::spawn(async move { post(addr, CHAT, &id, STREAM_BODY).await });

    let inflight = wait_for(gw.addr, &[], Duration::from_secs(1), |s| {
        find(&s["inflight"], "dash-stream-1").cloned()
    })
    .await;
    assert_eq!(inflight["door"], "chat");
    assert_eq!(inflight["endpoint"], "chat");
    assert_eq!(inflight["model"], "up:m");
    assert_eq!(inflight["stream"], true);
    assert_eq!(inflight["status"], Value::Null, "no end yet: {inflight}");

    let r = client.await.expect("client");
    assert_eq!(r.status, 200);
    let done = wait_for(gw.addr, &[], Duration::from_secs(2), |s| {
        find(&s["finished"], "dash-stream-1").cloned()
    })
    .await;
    assert_eq!(done["status"], 200, "{done}");
    assert_eq!(done["counted_status"], 200);
    assert_eq!(done["completed"], true);
    assert_eq!(done["target"], "up:m");
    assert_eq!(
        (done["attempts"].as_u64(), done["fallbacks"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(
        done["keepalives"].as_u64().expect("keepalives") >= 2,
        "{done}"
    );
    let ttft = done["ttft_ms"].as_f64().expect("ttft");
    let duration = done["duration_ms"].as_f64().expect("duration");
    assert!(ttft >= 1200.0 && duration >= ttft + 1200.0, "{done}");
    assert_eq!(
        (
            done["prompt_tokens"].as_u64(),
            done["completion_tokens"].as_u64()
        ),
        (Some(5), Some(2))
    );

    let seq = done["seq"].as_u64().expect("seq");
    let detail = get(gw.addr, &format!("/dashboard/state?request={seq}"), &[])
        .await
        .json();
    let w = whats(&detail);
    // Received; the status held, then committed before the first event; the attempt answers;
    // keepalives before and after the first event; the last event; the end.
    let pos = |what: &str| {
        w.iter()
            .position(|x| x == what)
            .unwrap_or_else(|| panic!("{what} missing: {w:?}"))
    };
    assert_eq!(w[0], "received");
    assert!(pos("held") < pos("committed"), "{w:?}");
    assert!(pos("attempt") < pos("answered"), "{w:?}");
    assert!(pos("committed") < pos("first_event"), "{w:?}");
    assert!(
        pos("keepalive") < pos("first_event"),
        "a keepalive while waiting: {w:?}"
    );
    assert!(
        w.iter().rposition(|x| x == "keepalive") > Some(pos("first_event")),
        "a keepalive in the mid-stream silence: {w:?}"
    );
    assert_eq!(&w[w.len() - 2..], ["last_event", "end"], "{w:?}");
    let marks = detail["marks"].as_array().expect("marks");
    let committed = &marks[pos("committed")];
    assert_eq!(committed["before_first_event"], true);
    assert_eq!(committed["status"], 200);
    assert_eq!(marks[pos("attempt")]["target"], "up:m");
    let end = marks.last().expect("end");
    assert_eq!(
        (end["status"].as_u64(), end["completed"].as_bool()),
        (Some(200), Some(true))
    );
    assert_eq!(
        marks[marks.len() - 2]["events"].as_u64(),
        Some(4),
        "two chunks, the finish and [DONE]"
    );
    // Times only go forward.
    let times: Vec<f64> = marks.iter().map(|m| m["t"].as_f64().expect("t")).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1] + 0.01), "{times:?}");
    assert_eq!(detail["in_flight"], false);

    // The backend's window counts it.
    let s = state(gw.addr, &[]).await;
    let backend = &s["backends"].as_array().expect("backends")[0];
    assert_eq!(backend["name"], "up");
    assert_eq!(backend["usable"], true);
    assert_eq!(backend["circuit"], "closed");
    assert_eq!(backend["window"]["requests"], 1);
    assert_eq!(backend["window"]["error_rate"], 0.0);
    assert!(
        backend["window"]["ttft_ms"]["p50"]
            .as_f64()
            .expect("ttft p50")
            > 1000.0
    );
    assert_eq!(s["keys"][0]["name"], "anonymous");
    assert_eq!(s["keys"][0]["today"]["requests"], 1);
    assert_eq!(s["sizes"]["finished"], 256);
}

#[tokio::test]
async fn a_fallback_and_a_refused_target_are_in_the_timeline_and_the_windows() {
    let bad = FakeUpstream::start().await;
    bad.set_default(Answer::error(503, "overloaded", "overloaded"));
    let good = FakeUpstream::start().await;
    good.set_default(Answer::chat("ok"));
    let yaml = format!(
        "backends:\n  bad: {{ type: openai, api_url: \"{}\", api_key: {UPSTREAM_KEY} }}\n  good: {{ type: openai, api_url: \"{}\", api_key: {UPSTREAM_KEY}, models: [m] }}\nroutes:\n  both: [\"bad:m\", \"good:m\"]\ndashboard: {{ enabled: true }}\nfailure_handling: {{ retries: 0, circuit_breaker: {{ failures: 1, cooldown: 60 }} }}\n",
        bad.url(),
        good.url()
    );
    let gw = start(&yaml).await;
    let body = r#"{"model":"both","messages":[{"role":"user","content":"hi"}]}"#;
    for id in ["fb-1", "fb-2"] {
        let r = post(gw.addr, CHAT, &[("x-request-id", id)], body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let s = state(gw.addr, &[]).await;
    let first = find(&s["finished"], "fb-1").expect("fb-1");
    assert_eq!(first["model"], "both");
    assert_eq!(first["target"], "good:m");
    assert_eq!(
        (first["attempts"].as_u64(), first["fallbacks"].as_u64()),
        (Some(2), Some(1))
    );
    let detail = get(
        gw.addr,
        &format!("/dashboard/state?request={}", first["seq"]),
        &[],
    )
    .await
    .json();
    let marks = detail["marks"].as_array().expect("marks");
    let failed = marks
        .iter()
        .find(|m| m["what"] == "failed")
        .expect("failed");
    assert_eq!(failed["status"], 503);
    assert_eq!(failed["kind"], "status_5xx");
    assert_eq!(failed["n"], 1);
    let targets: Vec<&Value> = marks
        .iter()
        .filter(|m| m["what"] == "attempt")
        .map(|m| &m["target"])
        .collect();
    assert_eq!(targets, ["bad:m", "good:m"]);

    // The failure opened `bad`'s circuit: the second request skipped it.
    let second = find(&s["finished"], "fb-2").expect("fb-2");
    assert_eq!(
        (second["attempts"].as_u64(), second["fallbacks"].as_u64()),
        (Some(1), Some(0))
    );
    let detail = get(
        gw.addr,
        &format!("/dashboard/state?request={}", second["seq"]),
        &[],
    )
    .await
    .json();
    let skipped = detail["marks"]
        .as_array()
        .expect("marks")
        .iter()
        .find(|m| m["what"] == "skipped")
        .expect("skipped");
    assert_eq!(
        (skipped["target"].as_str(), skipped["why"].as_str()),
        (Some("bad:m"), Some("circuit_open"))
    );

    let backends = s["backends"].as_array().expect("backends");
    let by = |name: &str| backends.iter().find(|b| b["name"] == name).expect(name);
    assert_eq!(by("bad")["usable"], false);
    assert_eq!(by("bad")["circuit"], "open");
    assert!(by("bad")["unusable_reason"]
        .as_str()
        .expect("reason")
        .contains("circuit open"));
    assert_eq!(by("bad")["window"]["attempts"], 1);
    assert_eq!(by("bad")["window"]["error_rate"], 1.0);
    assert_eq!(
        by("bad")["window"]["latency_ms"],
        Value::Null,
        "it answered nothing"
    );
    assert_eq!(by("good")["window"]["requests"], 2);
    assert_eq!(by("good")["window"]["error_rate"], 0.0);
    assert!(by("good")["window"]["latency_ms"]["p95"].as_f64().is_some());
    assert_eq!(
        by("good")["models"],
        Value::from(1),
        "the fake lists one model"
    );
}

/// Reads SSE events from an open response until `pick` accepts one's data, or `within`.
async fn next_event(
    resp: &mut Open,
    buf: &mut String,
    within: Duration,
    mut pick: impl FnMut(&str, &Value) -> bool,
) -> Value {
    let until = Instant::now() + within;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("message")
                .to_owned();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let v: Value = serde_json::from_str(data).expect("event data is JSON");
                if pick(&name, &v) {
                    return v;
                }
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.next_chunk()).await {
            Ok(Some(Ok((_, chunk)))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no matching event within {within:?}: {other:?}; buffered {buf}"),
        }
    }
}

#[tokio::test]
async fn the_event_channel_shows_a_request_start_and_end() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("fine").after(Duration::from_millis(800)));
    let gw = start(&dashboard_on(&up.url())).await;
    let mut events = open(gw.addr, Method::GET, "/dashboard/events", &[], "").await;
    assert_eq!(events.status, 200);
    assert_eq!(events.headers["content-type"], "text/event-stream");
    let mut buf = String::new();
    let addr = gw.addr;
    let sent = Instant::now();
    let client =
        tokio::spawn(
            async move { post(addr, CHAT, &[("x-request-id", "live-1")], WHOLE_BODY).await },
        );
    let tick = next_event(&mut events, &mut buf, Duration::from_secs(2), |name, v| {
        name == "tick" && find(&v["inflight"], "live-1").is_some()
    })
    .await;
    assert!(
        sent.elapsed() < Duration::from_millis(800),
        "seen in flight before it ended"
    );
    assert!(tick["now"].as_u64().is_some());
    assert!(tick["inflight_total"].as_u64() >= Some(1));
    let tick = next_event(&mut events, &mut buf, Duration::from_secs(3), |name, v| {
        name == "tick" && find(&v["finished"], "live-1").is_some()
    })
    .await;
    let done = find(&tick["finished"], "live-1").expect("finished");
    assert_eq!(done["status"], 200);
    assert!(done["duration_ms"].as_f64().expect("duration") >= 700.0);
    assert_eq!(client.await.expect("client").status, 200);
    assert_eq!(state(gw.addr, &[]).await["viewers"], 1);
    events.disconnect();
}

/// Opens `/dashboard/events` on a socket that takes little (a 4 KiB receive buffer, and a
/// 536-byte MSS, which keeps the gateway's send buffer small too: Linux sizes it from the
/// MSS), and never reads.
async fn stalled_viewer(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_tcp_mss(536).expect("mss");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.connect(&addr.into()).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    let mut stream = tokio::net::TcpStream::from_std(socket.into()).expect("tokio stream");
    let req = format!("GET /dashboard/events HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream
}

#[tokio::test]
async fn a_viewer_that_stops_reading_is_dropped_not_buffered_for() {
    // Long route names and request ids make each tick large (up to 200 summaries), so the
    // stalled viewer's socket and hyper's write buffer fill in a few seconds.
    let route = "r".repeat(190);
    let yaml = format!(
        "backends:\n  m: {{ type: mock, latency_ms: 150 }}\nroutes:\n  {route}: [\"m:mock-1\"]\ndashboard: {{ enabled: true }}\n"
    );
    let gw = start(&yaml).await;
    let mut viewer = stalled_viewer(gw.addr).await;
    let body = format!(r#"{{"model":"{route}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let started = Instant::now();
    let load = Duration::from_secs(9);
    let workers: Vec<_> = (0..100)
        .map(|w| {
            let (addr, body) = (gw.addr, body.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while started.elapsed() < load {
                    let id = format!("{w:03}-{n:06}-{}", "i".repeat(110));
                    let r = post(addr, CHAT, &[("x-request-id", id.as_str())], &body).await;
                    assert_eq!(r.status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut sent = 0;
    for w in workers {
        sent += w.await.expect("worker");
    }
    assert_eq!(
        state(gw.addr, &[]).await["viewers"],
        1,
        "stalled, not yet polled"
    );
    // What was already written reaches it; then the stream ends with the reason.
    let mut got = Vec::new();
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = viewer.read(&mut chunk).await.expect("read");
            got.extend_from_slice(&chunk[..n]);
            if n == 0 || got.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), read).await;
    let text = String::from_utf8_lossy(&got);
    let ticks = text.matches("event: tick").count();
    eprintln!(
        "{sent} requests in {load:?}; the stalled viewer got {} bytes, {ticks} ticks",
        got.len()
    );
    ended.expect("the stream ends");
    assert!(ticks > 0, "it got ticks first");
    let tail = &text[text.len().saturating_sub(200)..];
    assert!(tail.contains("event: dropped"), "{tail}");
    // Its connection's body is gone, so is the viewer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state(gw.addr, &[]).await["viewers"], 0);
}

#[tokio::test]
async fn no_payload_holds_a_key_a_prompt_or_a_completion() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("COMPLETION-MARKER-91c2"));
    up.push(Answer::Sse {
        status: 200,
        steps: vec![
            Step::Raw(chunk_event("STREAMED-MARKER-55")),
            Step::Pause(Duration::from_millis(1200)),
        ],
        end: StreamEnd::Cut,
    });
    // An upstream error that echoes the prompt and the upstream key.
    up.push(Answer::error(
        400,
        &format!("bad input PROMPT-MARKER-7f3a from {UPSTREAM_KEY}"),
        "invalid",
    ));
    let gw = start_with_env(&with_keys(&up.url()), admin_env()).await;
    let client = [("authorization", format!("Bearer {CLIENT_KEY}"))];
    let client: Vec<(&str, &str)> = client.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let admin = [("authorization", format!("Bearer {ADMIN_KEY}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let prompt = r#"{"model":"up:m","messages":[{"role":"user","content":"PROMPT-MARKER-7f3a"}]}"#;
    let stream = r#"{"model":"up:m","stream":true,"messages":[{"role":"user","content":"PROMPT-MARKER-7f3a"}]}"#;

    let mut events = open(gw.addr, Method::GET, "/dashboard/events", &admin, "").await;
    assert_eq!(events.status, 200);
    assert_eq!(post(gw.addr, CHAT, &client, prompt).await.status, 200);
    assert_eq!(post(gw.addr, CHAT, &client, stream).await.status, 200);
    assert_eq!(post(gw.addr, CHAT, &client, prompt).await.status, 400);
    // A refused key and a wrong model too.
    let wrong = [("authorization", "Bearer wrong-SECRET-guess")];
    assert_eq!(post(gw.addr, CHAT, &wrong, prompt).await.status, 401);

    let mut payloads: Vec<String> = Vec::new();
    let s = state(gw.addr, &admin).await;
    assert_eq!(s["finished"].as_array().expect("finished").len(), 4, "{s}");
    for r in s["finished"].as_array().expect("finished") {
        let detail = get(
            gw.addr,
            &format!("/dashboard/state?request={}", r["seq"]),
            &admin,
        )
        .await;
        assert_eq!(detail.status, 200);
        payloads.push(detail.text());
    }
    payloads.push(s.to_string());
    let mut buf = String::new();
    let mut seen = std::collections::HashSet::new();
    next_event(&mut events, &mut buf, Duration::from_secs(3), |_, v| {
        payloads.push(v.to_string());
        for f in v["finished"].as_array().into_iter().flatten() {
            seen.insert(f["seq"].as_u64());
        }
        seen.len() >= 4
    })
    .await;
    events.disconnect();
    let ci = s["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "ci")
        .expect("ci");
    assert_eq!(ci["today"]["requests"], 3, "{ci}");
    assert_eq!(ci["limits"]["rpm"], 100);
    assert_eq!(ci["store"]["status"], "ok");
    assert_eq!(ci["store"]["requests_this_minute"], 3);
    assert!(
        ci["store"]["remaining"]["tokens_today"]
            .as_u64()
            .expect("remaining")
            < 100_000
    );
    let ops = s["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "ops")
        .expect("ops");
    assert_eq!(ops["admin"], true);

    for text in &payloads {
        for secret in [
            UPSTREAM_KEY,
            CLIENT_KEY,
            ADMIN_KEY,
            OPS_KEY,
            "SECRET",
            "PROMPT-MARKER",
            "COMPLETION-MARKER",
            "STREAMED-MARKER",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    // The names are there instead.
    assert!(payloads.iter().any(|p| p.contains("\"key\":\"ci\"")));
}

fn cookie_of(r: &Collected) -> String {
    let set = r.header("set-cookie").expect("set-cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(set.contains("Path=/dashboard"), "{set}");
    set.split(';').next().expect("pair").to_owned()
}

#[tokio::test]
async fn an_admin_key_is_required_when_client_keys_exist() {
    let up = FakeUpstream::start().await;
    let gw = start_with_env(&with_keys(&up.url()), admin_env()).await;
    let bearer = |k: &str| format!("Bearer {k}");

    // The page itself holds no data: it loads, and asks for the key.
    let page = get(gw.addr, "/dashboard", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .expect("type")
        .starts_with("text/html"));
    assert!(page
        .header("content-security-policy")
        .expect("csp")
        .contains("default-src 'none'"));
    assert!(page.text().contains("/dashboard/app.js"));
    let session = get(gw.addr, "/dashboard/session", &[]).await;
    assert_eq!(session.status, 200);
    assert_eq!(
        session.json(),
        serde_json::json!({"key_required": true, "authorized": false})
    );

    for path in ["/dashboard/state", "/dashboard/events"] {
        let r = get(gw.addr, path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        let r = get(gw.addr, path, &[("authorization", &bearer(CLIENT_KEY))]).await;
        assert_eq!(r.status, 401, "{path}: a client key that is no admin");
        assert!(!r.text().contains(CLIENT_KEY));
    }
    // The key named by dashboard.key_env, and a client key with `admin: true`.
    for key in [ADMIN_KEY, OPS_KEY] {
        let r = get(
            gw.addr,
            "/dashboard/state",
            &[("authorization", &bearer(key))],
        )
        .await;
        assert_eq!(r.status, 200, "{key}");
        let r = get(gw.addr, "/dashboard/state", &[("x-api-key", key)]).await;
        assert_eq!(r.status, 200, "{key}");
    }

    // The browser's way: the key once, then a session cookie.
    let r = post(gw.addr, "/dashboard/login", &[], r#"{"key":"nope"}"#).await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let r = post(
        gw.addr,
        "/dashboard/login",
        &[],
        &format!(r#"{{"key":"{ADMIN_KEY}"}}"#),
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(!r.text().contains(ADMIN_KEY));
    let cookie = cookie_of(&r);
    assert!(
        !cookie.contains(ADMIN_KEY),
        "the cookie is a session token, not the key"
    );
    let with_cookie = [("cookie", cookie.as_str())];
    assert_eq!(
        get(gw.addr, "/dashboard/state", &with_cookie).await.status,
        200
    );
    assert_eq!(
        get(gw.addr, "/dashboard/session", &with_cookie)
            .await
            .json()["authorized"],
        true
    );
    let mut events = open(gw.addr, Method::GET, "/dashboard/events", &with_cookie, "").await;
    assert_eq!(events.status, 200);
    let (_, first) = events.next_chunk().await.expect("chunk").expect("ok");
    assert!(String::from_utf8_lossy(&first).starts_with("retry:"));
    events.disconnect();
    // A form body works too (a page without script).
    let r = send(
        gw.addr,
        Method::POST,
        "/dashboard/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("key={OPS_KEY}"),
    )
    .await;
    assert_eq!(r.status, 204);

    let r = post(gw.addr, "/dashboard/logout", &with_cookie, "").await;
    assert_eq!(r.status, 204);
    assert!(r
        .header("set-cookie")
        .expect("cleared")
        .contains("Max-Age=0"));
    assert_eq!(
        get(gw.addr, "/dashboard/state", &with_cookie).await.status,
        401
    );
}

#[tokio::test]
async fn a_reload_that_changes_access_ends_sessions_and_reloads_are_remembered() {
    let up = FakeUpstream::start().await;
    let gw = start_with_env(&with_keys(&up.url()), admin_env()).await;
    let admin = format!("Bearer {ADMIN_KEY}");
    let admin = [("authorization", admin.as_str())];
    let r = post(
        gw.addr,
        "/dashboard/login",
        &[],
        &format!(r#"{{"key":"{ADMIN_KEY}"}}"#),
    )
    .await;
    let cookie = cookie_of(&r);
    let with_cookie = [("cookie", cookie.as_str())];
    let before = state(gw.addr, &with_cookie).await["config"]["reloads"].clone();
    assert_eq!(before["succeeded"], 0);
    assert_eq!(before["last_refused"], Value::Null);

    // A refusal, as src/reload.rs records it.
    gw.gateway.reload_refused(&[
        format!("config.yaml: backends.up.api_key: invalid type, got `{UPSTREAM_KEY}`"),
        "config.yaml: state.url: got `redis://user:hunter2@cache:6379`".to_string(),
    ]);
    let reloads = state(gw.addr, &with_cookie).await["config"]["reloads"].clone();
    assert_eq!(reloads["refused"], 1);
    assert_eq!(reloads["last_failed"], true);
    let problems = reloads["last_refused"]["problems"].to_string();
    assert!(problems.contains("backends.up.api_key"), "{problems}");
    assert!(
        !problems.contains(UPSTREAM_KEY) && !problems.contains("hunter2"),
        "{problems}"
    );

    // The same access: the session stays.
    let config: tollgate_core::Config = serde_yaml::from_str(&format!(
        "{}routes:\n  r: [\"up:m\"]\n",
        with_keys(&up.url())
    ))
    .expect("yaml");
    gw.gateway.reload(config).expect("reload");
    let s = state(gw.addr, &with_cookie).await;
    assert_eq!(s["config"]["reloads"]["succeeded"], 1);
    assert_eq!(s["config"]["reloads"]["last_failed"], false);
    assert_eq!(s["config"]["routes"], 1);
    assert!(s["config"]["reloads"]["loaded_at"].as_u64() > before["loaded_at"].as_u64());

    // Another admin: every session ends.
    let yaml = with_keys(&up.url()).replace("admin: true", "admin: false");
    let config: tollgate_core::Config = serde_yaml::from_str(&yaml).expect("yaml");
    gw.gateway.reload(config).expect("reload");
    assert_eq!(
        get(gw.addr, "/dashboard/state", &with_cookie).await.status,
        401
    );
    let ops = format!("Bearer {OPS_KEY}");
    assert_eq!(
        get(gw.addr, "/dashboard/state", &[("authorization", &ops)])
            .await
            .status,
        401
    );
    assert_eq!(get(gw.addr, "/dashboard/state", &admin).await.status, 200);

    // Turned off by a reload: 404 again.
    let config: tollgate_core::Config =
        serde_yaml::from_str(&openai_backend(&up.url())).expect("yaml");
    gw.gateway.reload(config).expect("reload");
    assert_eq!(get(gw.addr, "/dashboard/state", &admin).await.status, 404);
}

#[tokio::test]
async fn cross_origin_requests_are_refused() {
    let up = FakeUpstream::start().await;
    let gw = start(&dashboard_on(&up.url())).await;
    let own = format!("http://{}", gw.addr);
    let foreign = [("origin", "http://evil.example")];
    for path in [
        "/dashboard/state",
        "/dashboard/events",
        "/dashboard/session",
    ] {
        let r = get(gw.addr, path, &foreign).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.header("access-control-allow-origin").is_none());
        let r = get(gw.addr, path, &[("sec-fetch-site", "cross-site")]).await;
        assert_eq!(r.status, 403, "{path}");
    }
    assert_eq!(
        post(gw.addr, "/dashboard/login", &foreign, "{}")
            .await
            .status,
        403
    );
    let r = get(gw.addr, "/dashboard/state", &[("origin", own.as_str())]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "no CORS, ever"
    );
    // A preflight gets no CORS answer either.
    let r = send(gw.addr, Method::OPTIONS, "/dashboard/state", &foreign, "").await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_enabled_dashboard_with_client_keys_needs_a_way_in() {
    let registry = registry();
    let build = |yaml: &str, env: HashMap<String, String>| {
        let config: tollgate_core::Config = serde_yaml::from_str(yaml).expect("yaml");
        tollgate_server::Runtime::build(config, &registry, &tollgate_core::Env::from_map(env), None)
    };
    let keys = "auth:\n  keys:\n    - { name: ci, key: k }\n";
    let problems = match build(
        &format!("{keys}dashboard: {{ enabled: true }}\n"),
        HashMap::new(),
    ) {
        Err(p) => p,
        Ok(_) => panic!("no admin key: refused"),
    };
    assert!(
        problems.iter().any(|p| p.path == "dashboard.enabled"),
        "{problems:?}"
    );
    let problems = match build(
        "dashboard: { enabled: true, key_env: NOPE }\n",
        HashMap::new(),
    ) {
        Err(p) => p,
        Ok(_) => panic!("unset variable: refused"),
    };
    assert_eq!(problems[0].path, "dashboard.key_env");
    assert!(build(
        &format!("{keys}dashboard: {{ enabled: true, key_env: K }}\n"),
        admin_env_named("K")
    )
    .is_ok());
    assert!(build(
        "auth:\n  keys:\n    - { name: ci, key: k, admin: true }\ndashboard: { enabled: true }\n",
        HashMap::new()
    )
    .is_ok());
    assert!(
        build("dashboard: { enabled: true }\n", HashMap::new()).is_ok(),
        "no keys: open, like the gateway"
    );
    assert!(build(
        &format!("{keys}dashboard: {{ enabled: false }}\n"),
        HashMap::new()
    )
    .is_ok());
}

fn admin_env_named(name: &str) -> HashMap<String, String> {
    [(name.to_string(), ADMIN_KEY.to_string())].into()
}
