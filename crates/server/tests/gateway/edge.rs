//! The bounded edge: no client can exhaust the gateway. Slow and silent connections are
//! closed within their timeouts while others are served, the connection cap answers 503,
//! oversized or pathological input is refused, keep-alive stays honest after early answers,
//! and upstream input is bounded too. Small timeouts keep each test to a few seconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tollgate_testkit::client::{post, send, sse_data};
use tollgate_testkit::{chunk_event, Answer, FakeUpstream, Step, StreamEnd};

use crate::common::*;

const MOCK_CHAT: &str = r#"{"model":"mock:mock-1","messages":[{"role":"user","content":"hi"}]}"#;

/// One raw HTTP/1.1 connection, so a test decides exactly what goes on the wire and when.
struct Raw {
    reader: BufReader<TcpStream>,
}

/// A response as read off the wire.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            reader: BufReader::new(stream),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes).await
    }

    /// Reads one response with a `content-length` body; `None` when the connection closed
    /// before a status line.
    async fn response(&mut self) -> Option<RawResponse> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.ok()?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':')?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).await.ok()?;
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Waits for the server to close: true when it did within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut sink = [0u8; 1024];
        tokio::time::timeout(within, async {
            loop {
                match self.reader.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A metric's value in the gateway's exposition (0 when absent).
fn metric(gw: &TestGateway, series: &str) -> f64 {
    gw.gateway
        .metrics()
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Waits (up to 3 s) until a metric reaches `want`; its last value.
async fn metric_reaches(gw: &TestGateway, series: &str, want: f64) -> f64 {
    for _ in 0..300 {
        let got = metric(gw, series);
        if got >= want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metric(gw, series)
}

/// Open descriptors of this process (Linux).
fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// The soft open-file limit of this process (Linux).
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_while_others_are_served() {
    let gw = start("backends:\n  mock: {}\nserver:\n  header_read_timeout: 2\n  idle_timeout: 5\n")
        .await;
    // 2,000 silent and 200 trickling clients, fewer when the open-file limit is low (each
    // is two descriptors here: the client's and the gateway's side).
    let budget = fd_limit().map_or(2200, |l| l.saturating_sub(300) / 2);
    let silent = 2000.min(budget * 10 / 11);
    let trickling = 200.min(budget / 11);
    let baseline = open_fds();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..silent {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            // Spread the connects a little: the listen backlog is the kernel's to bound.
            tokio::time::sleep(Duration::from_millis((i / 200) as u64 * 10)).await;
            let mut c = Raw::connect(addr).await;
            let connected = Instant::now();
            assert!(
                c.closed_within(Duration::from_secs(10)).await,
                "never closed"
            );
            connected.elapsed()
        }));
    }
    for _ in 0..trickling {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            let first = Instant::now();
            let head = b"GET /health/live HTTP/1.1\r\nhost: t\r\nx-slow: aaaaaaaaaaaaaaaaaaaa";
            let mut sink = [0u8; 64];
            for byte in head.iter().cycle() {
                // One header byte per tick, never the end of the head.
                let wrote = c.write(&[*byte]).await;
                let read =
                    tokio::time::timeout(Duration::from_millis(500), c.reader.read(&mut sink));
                match (wrote, read.await) {
                    (Err(_), _) | (_, Ok(Ok(0))) | (_, Ok(Err(_))) => break,
                    (_, Ok(Ok(_))) => panic!("a partial head got an answer"),
                    (Ok(()), Err(_)) => {}
                }
                assert!(first.elapsed() < Duration::from_secs(10), "never closed");
            }
            first.elapsed()
        }));
    }

    // Meanwhile a normal client: each request on a new connection, as the slow ones hold theirs.
    let mut latencies = Vec::new();
    while latencies.len() < 200 {
        let t = Instant::now();
        let r = post(gw.addr, CHAT, &[], MOCK_CHAT).await;
        latencies.push(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");

    for t in tasks {
        let lived = t.await.expect("client task");
        // header_read_timeout (2 s) plus scheduling slack; the trickle from its first byte.
        assert!(
            lived < Duration::from_millis(3500),
            "closed after {lived:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let closed = metric(
        &gw,
        r#"tollgate_connections_closed_total{reason="header_timeout"}"#,
    );
    assert!(
        closed >= (silent + trickling) as f64,
        "{closed} closed for header_timeout"
    );
    // Every descriptor comes back: the gateway holds none of the slow clients'.
    if let Some(baseline) = baseline {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = open_fds().unwrap_or(0);
            if now <= baseline + 16 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{now} fds open, {baseline} before"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let open = metric(&gw, r#"tollgate_connections{state="open"}"#);
    assert!(open <= 1.0, "{open} connections still open");
}

#[tokio::test]
async fn at_max_connections_the_next_client_gets_a_fast_503() {
    let gw = start("backends:\n  mock: {}\nserver:\n  max_connections: 20\n").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(Raw::connect(gw.addr).await);
    }
    // Wait until the gateway has taken all twenty (connects complete in the backlog first).
    let open = r#"tollgate_connections{state="open"}"#;
    for _ in 0..200 {
        if metric(&gw, open) >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&gw, open), 20.0);

    let t = Instant::now();
    let mut extra = Raw::connect(gw.addr).await;
    extra
        .write(request("POST", CHAT, &[], MOCK_CHAT.len()).as_bytes())
        .await
        .expect("write");
    let _ = extra.write(MOCK_CHAT.as_bytes()).await;
    let r = extra.response().await.expect("an answer, not a hang");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.closes());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["error"]["code"], "too_many_connections");
    assert_eq!(
        metric_reaches(
            &gw,
            r#"tollgate_connections_closed_total{reason="over_capacity"}"#,
            1.0
        )
        .await,
        1.0
    );

    // A slot freed is a slot served: the process never went down.
    held.pop();
    for _ in 0..200 {
        if metric(&gw, open) < 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = post(gw.addr, CHAT, &[], MOCK_CHAT).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_huge_header_line_is_a_431() {
    let gw = start("backends:\n  mock: {}\n").await;
    let mut c = Raw::connect(gw.addr).await;
    let head = format!(
        "GET /health/live HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    // The gateway answers before it has read everything: write and read at once.
    let (mut read, mut write) = c.reader.into_inner().into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut got)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    c = Raw::connect(gw.addr).await;
    c.write(request("GET", "/health/live", &[], 0).as_bytes())
        .await
        .expect("write");
    assert_eq!(c.response().await.map(|r| r.status), Some(200));
}

fn many_keys(n: usize) -> String {
    let mut body = String::from(r#"{"model":"mock:mock-1","messages":[],"#);
    for i in 0..n {
        body.push_str(&format!("\"k{i}\":{i},"));
    }
    body.push_str("\"last\":0}");
    body
}

#[tokio::test]
async fn a_body_of_100k_keys_is_answered_in_linear_time() {
    let gw = start("backends:\n  mock: {}\n").await;
    let time = |body: String| async move {
        let t = Instant::now();
        let r = post(gw.addr, CHAT, &[], &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        t.elapsed()
    };
    let small = time(many_keys(10_000)).await;
    let large = time(many_keys(100_000)).await;
    // A complexity check, loosely: ten times the keys, not a hundred times the time (the
    // quadratic parse took seconds here), and well under a second in a debug build.
    assert!(large < Duration::from_secs(1), "100k keys: {large:?}");
    assert!(
        large < small * 30 + Duration::from_millis(50),
        "10k: {small:?}, 100k: {large:?}"
    );
}

#[tokio::test]
async fn nesting_100k_deep_anywhere_is_a_400() {
    let gw = start("backends:\n  mock: {}\n").await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies = [
        format!(r#"{{"model":"mock:mock-1","messages":[{{"role":"user","content":{deep}}}]}}"#),
        format!(r#"{{"model":"mock:mock-1","messages":[],"tools":{deep}}}"#),
        deep.clone(),
    ];
    for body in bodies {
        let r = post(gw.addr, CHAT, &[], &body).await;
        assert_eq!(r.status, 400);
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(message.contains("deeper than 100"), "{message}");
    }
    assert_eq!(post(gw.addr, CHAT, &[], MOCK_CHAT).await.status, 200);
}

#[tokio::test]
async fn an_upstream_event_that_never_ends_ends_the_stream_with_an_error_event() {
    let up = FakeUpstream::start().await;
    // One good chunk, then 20 MiB of one event with no blank line, then silence.
    let mut steps = vec![Step::Raw(chunk_event("Hel"))];
    steps.push(Step::Raw("data: ".to_owned()));
    let piece = "x".repeat(1 << 20);
    steps.extend((0..20).map(|_| Step::Raw(piece.clone())));
    up.push(Answer::Sse {
        status: 200,
        steps,
        end: StreamEnd::Hang,
    });
    let gw = start(&format!("{}{NO_RETRIES}", openai_backend(&up.url()))).await;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        post(
            gw.addr,
            CHAT,
            &[],
            r#"{"model":"up:m","messages":[],"stream":true}"#,
        ),
    )
    .await
    .expect("the stream ends instead of buffering forever");
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert!(events[0].contains("Hel"), "{events:?}");
    let last: serde_json::Value =
        serde_json::from_str(events.last().expect("an event")).expect("json");
    let message = last["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("16777216 bytes"), "{message}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    // The client got the good event and the error, never the oversized bytes.
    assert!(r.body.len() < 64 * 1024, "{} bytes relayed", r.body.len());
}

#[tokio::test]
async fn odd_retry_after_values_from_upstreams_do_not_panic() {
    let up = FakeUpstream::start().await;
    let gw = start(&format!(
        "{}failure_handling:\n  retries: 1\n  backoff: {{ initial_ms: 1, max_ms: 50 }}\n",
        openai_backend(&up.url())
    ))
    .await;
    for value in [
        "1e30",
        "inf",
        "-1",
        "NaN",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "0.01",
    ] {
        up.set_default(
            Answer::error(429, "slow down", "rate_limit_exceeded")
                .with_header("retry-after", value),
        );
        let r = post(gw.addr, CHAT, &[], r#"{"model":"up:m","messages":[]}"#).await;
        assert_eq!(r.status, 429, "{value}: {}", r.text());
        if let Some(secs) = r.header("retry-after") {
            let secs: u64 = secs.parse().expect("whole seconds");
            assert!(secs <= 86_400, "{value}: {secs}");
        }
    }
    up.set_default(Answer::chat("fine"));
    assert_eq!(
        post(gw.addr, CHAT, &[], r#"{"model":"up:m","messages":[]}"#)
            .await
            .status,
        200,
        "still serving"
    );
}

type Headers<'a> = &'a [(&'a str, &'a str)];

/// Sends an early-refused request with a 64 KiB body (whole, or its body in a second write),
/// then a valid one on the same connection; returns whether the refusal closed it.
async fn refusal_then_valid(
    c: &mut Raw,
    refused: &str,
    refused_headers: &[(&str, &str)],
    want: u16,
    split: bool,
) -> bool {
    let body = vec![b' '; 64 * 1024];
    let head = request("POST", refused, refused_headers, body.len());
    if split {
        c.write(head.as_bytes()).await.expect("head");
        tokio::time::sleep(Duration::from_millis(2)).await;
        c.write(&body).await.expect("body");
    } else {
        let mut all = head.into_bytes();
        all.extend_from_slice(&body);
        c.write(&all).await.expect("request");
    }
    let r = c.response().await.expect("the refusal");
    assert_eq!(r.status, want);
    if r.closes() {
        return true;
    }
    c.write(
        request(
            "POST",
            CHAT,
            &[("authorization", "Bearer k1")],
            MOCK_CHAT.len(),
        )
        .as_bytes(),
    )
    .await
    .expect("next head");
    c.write(MOCK_CHAT.as_bytes()).await.expect("next body");
    let next = c
        .response()
        .await
        .expect("the next request on a kept-alive connection is answered");
    assert_eq!(next.status, 200);
    false
}

#[tokio::test]
async fn keep_alive_stays_honest_after_early_refusals() {
    let gw = start(
        "backends:\n  mock: {}\nauth:\n  keys: [{ name: a, key: k1 }]\nserver:\n  max_body_bytes: 1000\n",
    )
    .await;
    let mut c = Raw::connect(gw.addr).await;
    let mut closes = 0;
    let cases: [(&str, Headers<'_>, u16); 3] = [
        // 401 from the head, before the body was read.
        (CHAT, &[], 401),
        // 413 by content-length.
        (CHAT, &[("authorization", "Bearer k1")], 413),
        // 404: no such endpoint.
        ("/v1/nowhere", &[], 404),
    ];
    for (path, headers, status) in cases {
        for i in 0..100 {
            if refusal_then_valid(&mut c, path, headers, status, i % 2 == 1).await {
                closes += 1;
                c = Raw::connect(gw.addr).await;
            }
        }
    }
    // 64 KiB is read away at once on loopback: no connection had to close.
    assert_eq!(closes, 0);
}

#[tokio::test]
async fn an_unread_body_too_large_to_read_away_closes_with_connection_close() {
    let gw = start("backends:\n  mock: {}\nauth:\n  keys: [{ name: a, key: k1 }]\n").await;
    let mut c = Raw::connect(gw.addr).await;
    // 8 MiB declared, a little sent: the 401 comes at once and says it closes.
    c.write(request("POST", CHAT, &[], 8 << 20).as_bytes())
        .await
        .expect("head");
    c.write(&[b' '; 1024]).await.expect("some body");
    let t = Instant::now();
    let r = c.response().await.expect("the refusal");
    assert_eq!(r.status, 401);
    assert!(r.closes());
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(c.closed_within(Duration::from_secs(2)).await);
    assert_eq!(
        metric_reaches(
            &gw,
            r#"tollgate_connections_closed_total{reason="unread_body"}"#,
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn slow_bodies_get_a_408_and_their_connection_closes() {
    let gw =
        start("backends:\n  mock: {}\nserver:\n  body_read_timeout: 2\n  body_gap_timeout: 1\n")
            .await;
    // Stalled: a piece, then nothing.
    let mut c = Raw::connect(gw.addr).await;
    c.write(request("POST", CHAT, &[], 200).as_bytes())
        .await
        .expect("head");
    c.write(b"{\"model\":").await.expect("piece");
    let t = Instant::now();
    let r = c.response().await.expect("an answer");
    let waited = t.elapsed();
    assert_eq!(r.status, 408);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(1800),
        "{waited:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["error"]["code"], "request_timeout");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("body_gap_timeout")));
    assert!(r.closes());
    assert!(c.closed_within(Duration::from_secs(1)).await);

    // Trickled: a byte every 300 ms keeps within the gap, not within the whole.
    let mut c = Raw::connect(gw.addr).await;
    c.write(request("POST", CHAT, &[], 200).as_bytes())
        .await
        .expect("head");
    let t = Instant::now();
    let trickle = async {
        loop {
            if c.write(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if t.elapsed() > Duration::from_secs(2) {
                return;
            }
        }
    };
    trickle.await;
    let r = c.response().await.expect("an answer");
    assert_eq!(r.status, 408);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("body_read_timeout")));
    assert!(t.elapsed() < Duration::from_millis(3000));
    assert_eq!(
        metric_reaches(
            &gw,
            r#"tollgate_connections_closed_total{reason="body_timeout"}"#,
            2.0
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn keep_alive_connections_close_after_idle_timeout_not_the_head_timeout() {
    let gw = start("backends:\n  mock: {}\nserver:\n  header_read_timeout: 1\n  idle_timeout: 3\n")
        .await;
    let mut c = Raw::connect(gw.addr).await;
    let get = request("GET", "/health/live", &[], 0);
    c.write(get.as_bytes()).await.expect("write");
    assert_eq!(c.response().await.map(|r| r.status), Some(200));
    // Idle longer than the head timeout, shorter than the idle one: still open.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    c.write(get.as_bytes()).await.expect("write");
    assert_eq!(
        c.response().await.map(|r| r.status),
        Some(200),
        "closed too early"
    );
    let idle = Instant::now();
    assert!(c.closed_within(Duration::from_secs(6)).await);
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(2900) && after < Duration::from_millis(4500),
        "{after:?}"
    );
    assert_eq!(
        metric_reaches(
            &gw,
            r#"tollgate_connections_closed_total{reason="idle"}"#,
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn an_idle_h2c_connection_gets_goaway_and_unanswered_pings_close_it() {
    let gw = start(
        "backends:\n  mock: {}\nserver:\n  idle_timeout: 1\n  http2_keepalive_interval: 30\n",
    )
    .await;
    // A real HTTP/2 client, idle after one request: closed by the gateway after idle_timeout.
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/health/live")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    drop(resp);
    let t = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(4), conn).await;
    assert!(ended.is_ok(), "the idle h2c connection stayed open");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        metric_reaches(
            &gw,
            r#"tollgate_connections_closed_total{reason="idle"}"#,
            1.0
        )
        .await,
        1.0
    );

    // A peer that never answers PINGs (raw bytes: preface and an empty SETTINGS frame).
    let gw = start(
        "backends:\n  mock: {}\nserver:\n  idle_timeout: 60\n  http2_keepalive_interval: 1\n  http2_keepalive_timeout: 1\n",
    )
    .await;
    let mut c = Raw::connect(gw.addr).await;
    c.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let t = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(6)).await,
        "never closed"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        metric_reaches(
            &gw,
            r#"tollgate_connections_closed_total{reason="ping_timeout"}"#,
            1.0
        )
        .await,
        1.0,
        "{}",
        gw.gateway.metrics().render()
    );
}

#[tokio::test]
async fn connection_gauges_count_open_and_active() {
    let up = FakeUpstream::start().await;
    up.push(Answer::chat("late").after(Duration::from_millis(600)));
    let gw = start(&openai_backend(&up.url())).await;
    let slow = tokio::spawn({
        let addr = gw.addr;
        async move { post(addr, CHAT, &[], r#"{"model":"up:m","messages":[]}"#).await }
    });
    let _idle = Raw::connect(gw.addr).await;
    assert!(up.wait_calls(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metric(&gw, r#"tollgate_connections{state="open"}"#), 2.0);
    assert_eq!(metric(&gw, r#"tollgate_connections{state="active"}"#), 1.0);
    assert_eq!(slow.await.expect("task").status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metric(&gw, r#"tollgate_connections{state="active"}"#), 0.0);
    let r = send(gw.addr, Method::GET, "/metrics", &[], Bytes::new()).await;
    assert!(r
        .text()
        .contains("# HELP tollgate_connections_closed_total"));
}
