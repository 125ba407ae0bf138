//! A real `redis-server` of a test's own, on a free loopback port, with nothing saved to disk:
//! for the Redis store's tests and the gateway's replicas tests. Skipped (with a message) when
//! `redis-server` is not installed, unless `TOLLGATE_REQUIRE_REDIS=1` (CI).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of this test's own, on a free loopback port, with nothing saved to disk.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or `None` (with a message) when `redis-server` is not installed — unless
    /// `TOLLGATE_REQUIRE_REDIS=1` (CI), where a missing server fails the test.
    pub fn start(test: &str) -> Option<Self> {
        let port = free_port();
        match spawn_redis(port) {
            Ok(child) => {
                let mut server = RedisServer {
                    child: Some(child),
                    port,
                };
                server.wait_ready();
                Some(server)
            }
            Err(e) => {
                if std::env::var("TOLLGATE_REQUIRE_REDIS").as_deref() == Ok("1") {
                    panic!("redis-server is required (TOLLGATE_REQUIRE_REDIS=1): {e}");
                }
                // Straight to the process's stderr: the harness captures `eprintln!`, and a
                // skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping {test}: redis-server not found on PATH ({e})"
                );
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (its data goes with it: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn_redis(self.port).expect("redis-server starts again"));
        self.wait_ready();
    }

    /// One command over a raw connection, for assertions about what Redis holds.
    pub fn command(&self, args: &[&str]) -> String {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        conn.write_all(out.as_bytes()).expect("send");
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).expect("reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 16];
                if conn.write_all(b"PING\r\n").is_ok()
                    && conn
                        .read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_redis(port: u16) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
