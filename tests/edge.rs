//! The bounded edge in the real binary, and which HTTP version each connector type speaks to
//! a server that could speak either.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{temp_dir, Tollgate};
use tollgate_core::{Config, Env, Registry};
use tollgate_server::{Gateway, Runtime, Serving};
use tollgate_testkit::client::post;
use tollgate_testkit::FakeUpstream;

const CHAT: &str = "/v1/chat/completions";

/// The fake below speaks HTTP/1.1 and h2c (prior knowledge), so each backend's version is its
/// own choice: an `nvidia` backend must still arrive over HTTP/1.1 (NIM drops long HTTP/2
/// streams), while an `openai` backend with `http2_only` arrives over HTTP/2 — which shows
/// the fake would have taken HTTP/2 from NIM too, had it been offered.
#[tokio::test]
async fn nim_speaks_http1_to_a_server_that_also_takes_h2c_and_http2_only_speaks_h2() {
    let up = FakeUpstream::start().await;
    let yaml = format!(
        "backends:\n  nvidia:\n    api_url: {url}\n    api_key: nvapi-test-key\n    health_check: false\n  h2:\n    type: openai\n    api_url: {url}\n    api_key: sk-test\n    http2_only: true\n",
        url = up.url()
    );
    let config: Config = serde_yaml::from_str(&yaml).expect("config");
    let mut registry = Registry::new();
    tollgate_openai::register(&mut registry);
    tollgate_nvidia::register(&mut registry);
    let env = Env::from_map(HashMap::new());
    let runtime = Runtime::build(config, &registry, &env, None).expect("valid config");
    let serving = Serving::start(Gateway::new(runtime, registry, env), "127.0.0.1:0")
        .await
        .expect("bind");
    for (model, stream) in [
        ("nvidia:meta/llama3-70b", false),
        ("nvidia:meta/llama3-70b", true),
        ("h2:gpt-4o", false),
        ("h2:gpt-4o", true),
    ] {
        let body = format!(r#"{{"model":"{model}","messages":[],"stream":{stream}}}"#);
        let r = post(serving.addr(), CHAT, &[], &body).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
    }
    let versions: Vec<(String, http::Version)> = up
        .calls()
        .iter()
        .map(|c| {
            (
                c.header("authorization").unwrap_or("").to_owned(),
                c.version,
            )
        })
        .collect();
    assert_eq!(versions.len(), 4);
    for (auth, version) in versions {
        let want = if auth.contains("nvapi") {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_2
        };
        assert_eq!(version, want, "{auth}");
    }
}

/// Reads a raw HTTP/1.1 answer's status line (blocking, for the binary's tests).
fn status_line(stream: &mut std::net::TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.lines().next().unwrap_or("").to_owned()
}

#[test]
fn the_binary_raises_its_open_file_limit_refuses_past_max_connections_and_stays_up() {
    let dir = temp_dir("edge-max-connections");
    std::fs::write(
        dir.join("config.yaml"),
        "server:\n  max_connections: 8\n  header_read_timeout: 30\n  backlog: 64\nbackends:\n  mock: {}\n",
    )
    .expect("config");
    let gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    assert!(
        gw.wait_log("open-file limit", Duration::from_secs(5)),
        "{:?}",
        gw.logs()
    );

    let mut held: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(gw.addr).expect("connect"))
        .collect();
    // The eight are accepted (silent, so held by the protocol sniff) before the ninth.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut extra = std::net::TcpStream::connect(gw.addr).expect("connect");
    let _ = extra.write_all(b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n");
    let line = status_line(&mut extra);
    assert!(line.starts_with("HTTP/1.1 503"), "{line:?}");
    assert!(t.elapsed() < Duration::from_secs(2));

    // Freed slots serve again; the process never stopped.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = std::net::TcpStream::connect(gw.addr).expect("connect");
        c.write_all(b"GET /health/live HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .expect("write");
        let line = status_line(&mut c);
        if line.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {line:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = gw;
    assert!(
        child.child.try_wait().expect("wait").is_none(),
        "the process exited"
    );
}

/// Starts the binary with an open-file limit of `nofile` (soft and hard), so it cannot raise it.
fn start_limited(
    nofile: u32,
    dir: &std::path::Path,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(common::BIN)
        .args([
            "--config",
            "config.yaml",
            "--port",
            "0",
            "--log-format",
            "json",
        ])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tollgate starts");
    let stderr = child.stderr.take().expect("stderr");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("tollgate listening") {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("tollgate listening");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    let addr = v["fields"]["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("address");
    (child, addr, logs)
}

#[test]
fn out_of_descriptors_the_binary_backs_off_quietly_and_recovers() {
    let dir = temp_dir("edge-emfile");
    std::fs::write(
        dir.join("config.yaml"),
        "server:\n  max_connections: 1000\n  header_read_timeout: 2\nbackends:\n  mock: {}\n",
    )
    .expect("config");
    let (mut child, addr, logs) = start_limited(64, &dir);
    let lines = |needle: &str| {
        logs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    // It says the limit is too low for max_connections.
    assert_eq!(lines("open-file limit is below"), 1);
    // 120 silent connections: more than 64 descriptors can hold.
    let held: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    assert!(held.len() >= 100, "{} connected", held.len());
    std::thread::sleep(Duration::from_millis(1500));
    // Accept failed many times, backing off; logged once, not once per failure.
    assert_eq!(
        lines("accept failed; backing off"),
        1,
        "{:?}",
        logs.lock().map(|l| l.clone())
    );
    drop(held);
    // The silent ones time out (header_read_timeout: 2), the backlog drains, and it serves.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
            let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
            let mut text = String::new();
            let _ = c.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                let errors = text
                    .lines()
                    .find_map(|l| l.strip_prefix("tollgate_accept_errors_total "))
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                assert!(errors >= 1.0, "{text}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the process exited"
    );
    let _ = child.kill();
    let _ = child.wait();
}
