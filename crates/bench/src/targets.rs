//! The systems under test, each started with a generated configuration and stopped when
//! dropped: the fake upstream (which `direct` talks to with no proxy at all), tollgate (one
//! process, or several replicas sharing a Redis), nginx as a bare reverse proxy, and the
//! `redis-server` the Redis targets share.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::client;
use crate::procfs;

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Spawned {
    name: String,
    child: Child,
}

impl Spawned {
    fn new(name: &str, child: Child) -> Self {
        Spawned {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited (a bad configuration, a port in use).
    fn check_alive(&mut self, log: &Path) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                log.display(),
                tail(log)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first, so tollgate and nginx shut down as they would in production.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Reads a child's stderr the way a container runtime's log pipe does, so that writing its
/// log costs what it costs in production (a pipe write), not a file system's. The first
/// 64 KiB are kept in `log` for error messages; the rest is counted out and dropped. The
/// thread runs on the load core (the runner's).
fn drain(stderr: ChildStderr, log: &Path) -> Result<(), String> {
    const KEEP: usize = 64 * 1024;
    let mut file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    std::thread::spawn(move || {
        let mut stderr = stderr;
        let mut buf = vec![0u8; 64 * 1024];
        let mut kept = 0;
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if kept < KEEP {
                let take = n.min(KEEP - kept);
                let _ = file.write_all(&buf[..take]);
                kept += take;
            }
        }
    });
    Ok(())
}

/// A command for `program`, pinned to `core` with `taskset` when one is given.
fn pinned(program: &Path, core: Option<usize>) -> Command {
    match core {
        Some(core) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(core.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A port free right now on 127.0.0.1 (the target binds it a moment later).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The fake upstream process; it inherits the runner's core.
pub fn start_upstream() -> Result<(Spawned, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut child = Command::new(exe)
        .args(["upstream", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the upstream: {e}"))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let spawned = Spawned::new("upstream", child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("upstream: {e}"))?;
    let port: u16 = line
        .trim()
        .parse()
        .map_err(|_| format!("upstream printed {line:?} instead of its port"))?;
    Ok((spawned, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// One thing the load is sent to.
pub struct Target {
    /// `direct`, `tollgate`, `nginx` …
    pub name: String,
    /// Where to connect: one address, or one per replica (connections take them in turn).
    pub addrs: Vec<SocketAddr>,
    /// Put before the upstream's model names: tollgate routes `up:m` to the upstream's `m`.
    pub prefix: &'static str,
    /// The client key every request carries, for targets configured with client keys.
    pub client_key: Option<&'static str>,
    /// Whether this is tollgate (which alone has the Messages and Responses doors).
    pub gateway: bool,
    /// The proxy's processes (none for `direct`; one per replica).
    pub processes: Vec<Spawned>,
    /// Processes whose CPU time is the proxy's (nginx: master and worker; every replica).
    pub cpu_pids: Vec<u32>,
    /// The process whose memory is the proxy's (nginx: the worker; the first replica).
    pub mem_pid: Option<u32>,
    /// VmRSS right after start-up, in KiB.
    pub idle_rss_kib: Option<u64>,
    /// A dashboard viewer reading `/dashboard/events` for as long as the target lives.
    pub viewer: Option<Viewer>,
}

/// One viewer of tollgate's dashboard: a task on the load core that reads the event stream
/// as a browser would, counting what it gets. Stopped when dropped.
pub struct Viewer {
    task: tokio::task::JoinHandle<()>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Viewer {
    /// Connects to `GET /dashboard/events` at `addr` and starts reading.
    pub async fn connect(addr: SocketAddr) -> Result<Viewer, String> {
        let mut sender = client::connect(addr).await?;
        let req = Request::get("/dashboard/events")
            .header(HOST, "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("GET /dashboard/events answered {}", resp.status()));
        }
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = bytes.clone();
        let task = tokio::spawn(async move {
            let _sender = sender;
            let mut body = resp.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    counted.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Ok(Viewer { task, bytes })
    }

    /// Bytes of events read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the stream is still open (a viewer dropped for being slow is not).
    pub fn connected(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    pub fn direct(upstream: SocketAddr) -> Target {
        Target {
            name: "direct".into(),
            addrs: vec![upstream],
            prefix: "",
            client_key: None,
            gateway: false,
            processes: Vec::new(),
            cpu_pids: Vec::new(),
            mem_pid: None,
            idle_rss_kib: None,
            viewer: None,
        }
    }

    /// CPU ticks of the proxy's processes, summed.
    pub fn cpu_ticks(&self) -> Option<u64> {
        if self.cpu_pids.is_empty() {
            return None;
        }
        self.cpu_pids.iter().map(|&p| procfs::cpu_ticks(p)).sum()
    }
}

/// Where the generated configurations and logs go.
pub struct Workdir {
    pub path: PathBuf,
    keep: bool,
}

impl Workdir {
    pub fn create(keep: bool) -> Result<Workdir, String> {
        let path = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
        for sub in ["nginx-tmp", "logs"] {
            fs::create_dir_all(path.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        }
        Ok(Workdir { path, keep })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "bench: configurations and logs kept in {}",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The client key of the targets with client keys (`tollgate-key`, `tollgate-limits`, the
/// Redis ones).
pub const CLIENT_KEY: &str = "bench-client-key";

/// How to run tollgate.
pub struct TollgateSpec<'a> {
    pub name: &'a str,
    pub binary: &'a Path,
    /// `logging.level`: tollgate's default `info` writes one line per request.
    pub log_level: &'a str,
    /// The backend option `http2_only`: one multiplexed h2c connection to the upstream.
    pub http2_only: bool,
    /// `dashboard.enabled`, with one viewer connected to `/dashboard/events`.
    pub dashboard: bool,
    /// One client key ([`CLIENT_KEY`]) in `auth.keys`, sent by every request.
    pub client_key: bool,
    /// That key's `limits`: rpm, tpm and tokens_per_day set far above what a run can reach,
    /// so that every request is checked, reserved and settled but never refused.
    pub limits: bool,
    /// `state.store: redis` at this address (else the memory store).
    pub redis: Option<SocketAddr>,
    /// Processes sharing the load (each its own port, all on the proxy core).
    pub replicas: usize,
}

impl TollgateSpec<'_> {
    /// The configuration of one replica listening on `port`. Sections the measured binary
    /// may predate (`dashboard`, the backend's `http2_only`, `auth`, `state`) are written only
    /// when set, so that an older tollgate (`tollgate-base`) reads the same file.
    fn config(&self, port: u16, upstream: SocketAddr) -> String {
        let mut config = format!(
            r#"# Generated by tollgate-bench.
server:
  host: 127.0.0.1
  port: {port}
  shutdown_grace: 1
failure_handling:
  # The idle-streams scenario holds silent streams open; keepalives every 60 s stay out of
  # its measurement (and out of every other scenario, whose upstream never pauses).
  keepalive_interval: 60
backends:
  up:
    type: openai
    api_url: "http://{upstream}/v1"
    api_key: bench-upstream-key
    models: ["m", "idle", "burst"]
    health_check: false
"#
        );
        if self.http2_only {
            config.push_str("    http2_only: true\n");
        }
        config.push_str(&format!(
            "logging:\n  format: json\n  level: {}\n",
            self.log_level
        ));
        if self.dashboard {
            config.push_str("dashboard:\n  enabled: true\n");
        }
        if self.client_key {
            config.push_str(&format!(
                "auth:\n  keys:\n    - name: bench\n      key: {CLIENT_KEY}\n"
            ));
            if self.limits {
                config.push_str(
                    "      limits: { rpm: 1000000000, tpm: 1000000000000, tokens_per_day: 1000000000000000 }\n",
                );
            }
        }
        if let Some(redis) = self.redis {
            config.push_str(&format!(
                "state:\n  store: redis\n  url: \"redis://{redis}\"\n"
            ));
        }
        config
    }
}

/// Starts tollgate (`spec.replicas` processes) with an `openai` backend `up` in front of the
/// fake upstream.
pub async fn start_tollgate(
    spec: &TollgateSpec<'_>,
    dir: &Workdir,
    upstream: SocketAddr,
    core: Option<usize>,
) -> Result<Target, String> {
    let mut processes = Vec::new();
    let mut addrs = Vec::new();
    for replica in 0..spec.replicas.max(1) {
        let port = free_port()?;
        // Each configuration sits alone in its directory: tollgate watches that directory
        // for reloads, and a busy file beside it (a log) would wake the watcher on every write.
        let label = match spec.replicas {
            0 | 1 => spec.name.to_owned(),
            _ => format!("{}-{}", spec.name, replica + 1),
        };
        let conf_dir = dir.path.join(&label);
        fs::create_dir_all(&conf_dir).map_err(|e| format!("{}: {e}", conf_dir.display()))?;
        let conf = conf_dir.join("config.yaml");
        let log = dir.path.join("logs").join(format!("{label}.log"));
        fs::write(&conf, spec.config(port, upstream))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut child = pinned(spec.binary, core)
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", spec.binary.display()))?;
        drain(child.stderr.take().expect("stderr was piped"), &log)?;
        let mut spawned = Spawned::new(&label, child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_ready(&mut spawned, addr, "/health/live", &log).await?;
        processes.push(spawned);
        addrs.push(addr);
    }
    let pids: Vec<u32> = processes.iter().map(Spawned::pid).collect();
    let viewer = match spec.dashboard {
        true => Some(Viewer::connect(addrs[0]).await?),
        false => None,
    };
    Ok(Target {
        name: spec.name.to_owned(),
        addrs,
        prefix: "up:",
        client_key: spec.client_key.then_some(CLIENT_KEY),
        gateway: true,
        mem_pid: pids.first().copied(),
        idle_rss_kib: pids.first().and_then(|&p| procfs::status_kib(p, "VmRSS")),
        cpu_pids: pids,
        processes,
        viewer,
    })
}

/// Starts Debian's `redis-server` on a free loopback port, pinned to `core` (the proxy's:
/// what the Redis store costs then shows as "other on proxy core"), with no persistence.
pub async fn start_redis(
    binary: &Path,
    dir: &Workdir,
    core: Option<usize>,
) -> Result<(Spawned, SocketAddr), String> {
    let port = free_port()?;
    let log = dir.path.join("logs").join("redis.log");
    let child = pinned(binary, core)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .arg("--logfile")
        .arg(&log)
        .current_dir(&dir.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut spawned = Spawned::new("redis-server", child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        spawned.check_alive(&log)?;
        if redis_ping(addr).is_ok() {
            return Ok((spawned, addr));
        }
        if Instant::now() > until {
            return Err(format!(
                "redis-server did not answer PING on {addr} within 20 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `PING` in Redis's inline protocol; `+PONG` back means it is ready.
fn redis_ping(addr: SocketAddr) -> Result<(), String> {
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 7];
    conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
    match &buf {
        b"+PONG\r\n" => Ok(()),
        other => Err(format!(
            "redis answered {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Starts nginx (one worker) as a bare reverse proxy in front of the fake upstream.
pub async fn start_nginx(
    binary: &Path,
    dir: &Workdir,
    upstream: SocketAddr,
    core: Option<usize>,
    open_files: u64,
) -> Result<Target, String> {
    let port = free_port()?;
    let d = dir.path.display();
    let user = if procfs::is_root() {
        // Workers would otherwise drop to `nobody` and lose access to the temp paths.
        "user root;"
    } else {
        ""
    };
    // nginx counts connections in slots of its own, and more slots than descriptors: with
    // exactly as many, it ran out a few hundred streams short of the descriptor limit and
    // closed fresh client connections. The descriptors are the limit that binds, as for
    // tollgate.
    let connections = open_files * 2;
    let config = format!(
        r#"# Generated by tollgate-bench: nginx as a bare HTTP/1.1 reverse proxy.
worker_processes 1;
daemon off;
{user}
pid {d}/nginx.pid;
error_log {d}/logs/nginx.log warn;
worker_rlimit_nofile {open_files};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    # Clients keep their connections for the whole run (the default closes after 1,000).
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    upstream fake {{
        server {upstream};
        keepalive 1024;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"#
    );
    let conf = dir.path.join("nginx.conf");
    let log = dir.path.join("logs").join("nginx.log");
    fs::write(&conf, config).map_err(|e| format!("{}: {e}", conf.display()))?;
    let child = pinned(binary, core)
        .arg("-p")
        .arg(&dir.path)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut spawned = Spawned::new("nginx", child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Any answer will do: nginx forwards the probe to the upstream's model list.
    wait_ready(&mut spawned, addr, "/v1/models", &log).await?;
    let master = spawned.pid();
    let workers = procfs::children(master);
    let Some(&worker) = workers.first() else {
        return Err("nginx runs but has no worker process".into());
    };
    Ok(Target {
        name: "nginx".into(),
        addrs: vec![addr],
        prefix: "",
        client_key: None,
        gateway: false,
        cpu_pids: vec![master, worker],
        mem_pid: Some(worker),
        idle_rss_kib: procfs::status_kib(worker, "VmRSS"),
        processes: vec![spawned],
        viewer: None,
    })
}

/// Waits until `GET path` answers 200, or the process dies, or 20 s pass.
async fn wait_ready(
    spawned: &mut Spawned,
    addr: SocketAddr,
    path: &str,
    log: &Path,
) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < until {
        spawned.check_alive(log)?;
        match probe(addr, path).await {
            Ok(StatusCode::OK) => return Ok(()),
            Ok(status) => last = format!("status {status}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{} did not answer GET {path} within 20s ({last}); its log:\n{}",
        spawned.name,
        tail(log)
    ))
}

async fn probe(addr: SocketAddr, path: &str) -> Result<StatusCode, String> {
    let mut sender = client::connect(addr).await?;
    let req = Request::get(path)
        .header(HOST, "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> TollgateSpec<'_> {
        TollgateSpec {
            name,
            binary: Path::new("tollgate"),
            log_level: "info",
            http2_only: false,
            dashboard: false,
            client_key: false,
            limits: false,
            redis: None,
            replicas: 1,
        }
    }

    #[test]
    fn a_plain_configuration_names_only_what_every_tollgate_knows() {
        let up = SocketAddr::from(([127, 0, 0, 1], 9));
        let text = spec("tollgate").config(8000, up);
        assert!(text.contains("port: 8000") && text.contains("http://127.0.0.1:9/v1"));
        assert!(text.contains(r#"models: ["m", "idle", "burst"]"#));
        for newer in ["http2_only", "dashboard", "auth:", "limits", "state:"] {
            assert!(!text.contains(newer), "{newer} in:\n{text}");
        }
    }

    #[test]
    fn keys_limits_and_redis_are_written_when_asked_for() {
        let up = SocketAddr::from(([127, 0, 0, 1], 9));
        let key = TollgateSpec {
            client_key: true,
            ..spec("tollgate-key")
        }
        .config(1, up);
        assert!(key.contains(&format!("key: {CLIENT_KEY}")) && !key.contains("limits"));
        let redis = TollgateSpec {
            client_key: true,
            limits: true,
            redis: Some(SocketAddr::from(([127, 0, 0, 1], 6400))),
            ..spec("tollgate-redis")
        }
        .config(1, up);
        assert!(redis.contains("rpm: 1000000000,") && redis.contains("tokens_per_day"));
        assert!(
            redis.contains("store: redis") && redis.contains(r#"url: "redis://127.0.0.1:6400""#)
        );
        let h2c = TollgateSpec {
            http2_only: true,
            dashboard: true,
            ..spec("tollgate-h2c")
        }
        .config(1, up);
        assert!(h2c.contains("    http2_only: true\nlogging:"));
        assert!(h2c.contains("dashboard:\n  enabled: true"));
    }
}
