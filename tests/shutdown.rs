//! Graceful shutdown: on SIGTERM tollgate stops accepting at once and lets every in-flight
//! stream finish (within `server.shutdown_grace`) before it exits.

mod common;

use std::time::{Duration, Instant};

use common::{temp_dir, Tollgate};
use http::Method;
use tollgate_testkit::client::{open, sse_data, stream_text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_ten_active_streams_finish_and_refuses_new_connections() {
    let dir = temp_dir("shutdown");
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  mock: { reply: \"one two three four five six seven eight\", chunk_delay_ms: 200 }\nserver:\n  shutdown_grace: 20\n",
    )
    .expect("write");
    let mut gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    let addr = gw.addr;
    let body = r#"{"model":"mock:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut resp = open(addr, Method::POST, "/v1/chat/completions", &[], body).await;
        assert_eq!(resp.status, 200);
        let first = resp.next_chunk().await.expect("first chunk").expect("ok");
        streams.push(tokio::spawn(async move {
            let (rest, error) = resp.read_all().await;
            let mut all = first.1.to_vec();
            for (_, c) in rest {
                all.extend_from_slice(&c);
            }
            (all, error)
        }));
    }

    gw.terminate();
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting 2 s after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    for s in streams {
        let (body, error) = s.await.expect("stream task");
        assert!(error.is_none(), "stream broke: {error:?}");
        assert_eq!(
            stream_text(&body),
            "one two three four five six seven eight"
        );
        assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    }
    // And then it exits, cleanly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gw.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit after the streams finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(gw.wait_log("all connections drained", Duration::from_secs(1)));
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_connections_that_sent_nothing_or_sit_idle() {
    let dir = temp_dir("shutdown-silent");
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  mock: {}\nserver:\n  shutdown_grace: 20\n",
    )
    .expect("write");
    let mut gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    // Connected, never a byte sent (a client's pre-opened pool connection).
    let _silent = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    // A keep-alive connection that served one request and now waits.
    let mut idle = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        idle.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = idle.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    }
    // Let the server see both connections before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    gw.terminate();
    let status = loop {
        if let Some(status) = gw.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "open but quiet connections held the shutdown (grace is 20 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(gw.wait_log("all connections drained", Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_open_when_the_grace_ends_gets_an_error_event() {
    let dir = temp_dir("shutdown-grace-ends");
    // A stream that needs ~10 s, a grace of 1 s.
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  mock: { reply: \"a b c d e f g h i j\", chunk_delay_ms: 1000 }\nserver:\n  shutdown_grace: 1\n",
    )
    .expect("write");
    let mut gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    let body = r#"{"model":"mock:m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut resp = open(gw.addr, Method::POST, "/v1/chat/completions", &[], body).await;
    assert_eq!(resp.status, 200);
    let first = resp.next_chunk().await.expect("first chunk").expect("ok");

    gw.terminate();
    let (rest, _) = resp.read_all().await;
    let mut all = first.1.to_vec();
    for (_, c) in rest {
        all.extend_from_slice(&c);
    }
    let data = sse_data(&all);
    let last = data.last().expect("events");
    assert!(
        last.contains("\"error\"") && last.contains("shutting down"),
        "the stream must end with an error event, got {data:?}"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
