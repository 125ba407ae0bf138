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
        // A port found free can be taken by another test's server before this one binds it;
        // this one then exits, and the other answers its PING. So the server that answers
        // must be this one (its process id), or another port is tried.
        for _ in 0..5 {
            let port = free_port();
            match spawn_redis(port) {
                Ok(child) => {
                    let mut server = RedisServer {
                        child: Some(child),
                        port,
                    };
                    if server.wait_ready() {
                        return Some(server);
                    }
                }
                Err(e) => return missing(test, e),
            }
        }
        panic!("redis-server did not start on a port of its own in five tries");
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
        assert!(
            self.wait_ready(),
            "redis-server's port {} was taken while it was down",
            self.port
        );
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

    /// Waits for the server to answer; false when what answers on its port is another
    /// process (this one could not bind it, and exits).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let own = self.child.as_ref().map(Child::id);
        while Instant::now() < deadline {
            if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 4096];
                if conn.write_all(b"INFO server\r\n").is_ok() {
                    if let Ok(n) = conn.read(&mut buf) {
                        let info = String::from_utf8_lossy(&buf[..n]);
                        let pid = info
                            .lines()
                            .find_map(|l| l.strip_prefix("process_id:"))
                            .and_then(|p| p.trim().parse::<u32>().ok());
                        if pid.is_some() {
                            return pid == own;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }
}

/// No `redis-server` to run: a skip, or a failure under `TOLLGATE_REQUIRE_REDIS=1` (CI).
fn missing(test: &str, e: std::io::Error) -> Option<RedisServer> {
    if std::env::var("TOLLGATE_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("redis-server is required (TOLLGATE_REQUIRE_REDIS=1): {e}");
    }
    // Straight to the process's stderr: the harness captures `eprintln!`, and a skip must be
    // seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: redis-server not found on PATH ({e})"
    );
    None
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
