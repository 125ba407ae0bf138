//! `tollgate-bench`: measures tollgate against the zero-overhead limit (the client talking to
//! the upstream directly) and nginx as a bare proxy hop, all on loopback, in one run.
//!
//! `run` starts a fast fake upstream, the proxies (pinned to their own core) and drives the
//! scenarios from the load core; `upstream` is that fake upstream on its own, and `drive`
//! sends one kind of load at any address (for profiling a gateway started by hand, as
//! `profile.sh` does).

mod client;
mod procfs;
mod report;
mod scenario;
mod stats;
mod targets;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::scenario::{Bench, Door, Measurement, Scenario};
use crate::targets::{Target, TollgateSpec, Workdir};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-bench",
    about = "Benchmarks tollgate against direct upstream access and nginx on loopback."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every scenario against every target and print a markdown report
    Run(RunArgs),
    /// Serve the fake upstream on 127.0.0.1 (prints its port first)
    Upstream {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Send load to an address (closed loop, open loop or idle streams) and print a summary
    Drive(DriveArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The tollgate binary to measure
    #[arg(long, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    /// A second tollgate binary, measured as the target `tollgate-base` with the same
    /// configuration as `tollgate` (an earlier commit's build, for before/after in one run)
    #[arg(long)]
    tollgate_base: Option<PathBuf>,
    /// The redis-server binary, started on loopback for the `tollgate-redis*` targets
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// The nginx binary; skipped (with a note) when it is not found
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// Targets, in the order each scenario visits them: direct, tollgate, tollgate-quiet
    /// (logging.level warn: no per-request log line), tollgate-h2c (HTTP/2 with prior
    /// knowledge to the upstream: `http2_only: true`), tollgate-dashboard (as tollgate, with
    /// `dashboard.enabled` and one viewer reading `/dashboard/events`), tollgate-base (the
    /// `--tollgate-base` binary, configured as tollgate), tollgate-key (one client key, no
    /// limits), tollgate-limits (that key with rpm, tpm and tokens_per_day set too high to
    /// refuse; memory store), tollgate-redis and tollgate-redis3 (the same key and limits with
    /// `state.store: redis`, one replica or three sharing the load), nginx
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,tollgate,tollgate-quiet,tollgate-h2c,nginx"
    )]
    targets: Vec<String>,
    /// Scenarios to run: open, closed, stream (paced: one upstream write per event),
    /// stream-burst (the whole stream in one upstream write), idle; the Messages and Responses
    /// doors (tollgate targets only): messages-closed, messages-stream, responses-closed,
    /// responses-stream, or doors for all four
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "open,closed,stream,stream-burst,idle"
    )]
    scenarios: Vec<String>,
    /// Rounds of every load scenario: each round visits every target in turn, and a target's
    /// numbers sum its rounds, so a slow spell of the machine falls on every target alike
    /// (idle streams run once)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds each phase is measured
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before each measured phase
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open-loop rates, requests per second
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// Closed-loop concurrencies (connections), non-streaming
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Closed-loop concurrency of the streaming scenarios
    #[arg(long, default_value_t = 32)]
    stream_concurrency: usize,
    /// Closed-loop concurrency of the doors' non-streaming scenarios
    #[arg(long, default_value_t = 64)]
    door_concurrency: usize,
    /// Idle streams to hold open (fewer if the open-file limit does not allow them)
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Core for the load generator and the fake upstream
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// Core for the proxy under test
    #[arg(long, default_value_t = 1)]
    proxy_core: usize,
    /// Also write the report to this file
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep generated configurations and logs
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, clap::Args)]
struct DriveArgs {
    /// Where to send the load
    #[arg(long)]
    addr: SocketAddr,
    /// The model to ask for (`m` directly); through tollgate `up:m`, or `up:idle` with `--idle`
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Ask for streams instead of whole answers
    #[arg(long)]
    stream: bool,
    /// The door: chat, messages or responses
    #[arg(long, default_value = "chat")]
    door: String,
    /// Send this client key as a bearer token
    #[arg(long)]
    key: Option<String>,
    /// Stop after this many requests in all (spread over the connections) instead of after
    /// `duration`: a fixed amount of work, for instruction counts under callgrind
    #[arg(long)]
    requests: Option<usize>,
    /// Open loop at this many requests per second instead of closed loop
    #[arg(long)]
    rate: Option<u64>,
    /// Instead of load: open this many streams (ask for the model `up:idle`), hold them for
    /// `duration` seconds, then close them (for memory profiles)
    #[arg(long)]
    idle: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Upstream { port } => match upstream::run(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upstream: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Drive(args) => current_thread().block_on(drive(args)),
        Cmd::Run(args) => {
            let pinning = prepare_process(&args);
            current_thread().block_on(run(args, pinning))
        }
    }
}

/// The load generator is one thread on one core: a multi-threaded runtime would only
/// move work between threads that share that core.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime")
}

/// Where the processes run.
struct Pinning {
    /// Whether the proxy can be pinned apart from the load.
    pinned: bool,
    /// For the report.
    text: String,
}

impl Pinning {
    fn not(why: &str) -> Pinning {
        Pinning {
            pinned: false,
            text: format!("not pinned: {why}"),
        }
    }
}

/// Raises this process's open-file limit to its hard limit and pins it to the load core,
/// before any thread starts, so that every child inherits both.
fn prepare_process(args: &RunArgs) -> Pinning {
    let me = std::process::id().to_string();
    if let Some((soft, hard)) = procfs::open_files_limit() {
        if soft < hard {
            // std has no setrlimit; util-linux's prlimit may raise the soft limit of a process
            // we own up to its hard limit without privileges.
            let _ = Command::new("prlimit")
                .args(["--pid", &me, &format!("--nofile={hard}:{hard}")])
                .status();
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Pinning::not("fewer than 2 CPUs available");
    }
    if !procfs::on_path("taskset") {
        return Pinning::not("taskset not found (util-linux)");
    }
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", &args.load_core.to_string(), &me])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if pinned && procfs::allowed_cpus() == args.load_core.to_string() {
        Pinning {
            pinned: true,
            text: format!(
                "proxy on core {} (`taskset -c {}`); load generator and fake upstream on core {}",
                args.proxy_core, args.proxy_core, args.load_core
            ),
        }
    } else {
        Pinning::not("taskset failed")
    }
}

async fn run(args: RunArgs, pinning: Pinning) -> ExitCode {
    // On Ctrl-C the run's future is dropped, and with it every process it started.
    let outcome = tokio::select! {
        r = run_inner(args, pinning) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(args: RunArgs, pinning: Pinning) -> Result<(), String> {
    let load_before = procfs::load_average();
    let busy_before = busy_cores(Duration::from_secs(1));
    let mut notes = Vec::new();
    let (soft, hard) = procfs::open_files_limit().unwrap_or((1024, 1024));
    // A proxied stream costs the proxy two descriptors (client and upstream side).
    let idle_count = args
        .idle_streams
        .min(usize::try_from(soft.saturating_sub(128) / 2).unwrap_or(usize::MAX));
    if idle_count < args.idle_streams {
        notes.push(format!(
            "idle streams: {idle_count} instead of {} — the open-file limit is {soft} (hard {hard}) and a proxied stream needs 2 descriptors",
            args.idle_streams
        ));
    }

    let mut plan = Vec::new();
    for s in &args.scenarios {
        match s.as_str() {
            "open" => plan.extend(args.rates.iter().map(|&rate| Scenario::Open { rate })),
            "closed" => plan.extend(
                args.concurrency
                    .iter()
                    .map(|&concurrency| Scenario::Closed {
                        concurrency,
                        door: Door::Chat,
                    }),
            ),
            "stream" | "stream-burst" => plan.push(Scenario::Stream {
                concurrency: args.stream_concurrency,
                door: Door::Chat,
                burst: s == "stream-burst",
            }),
            "messages-closed" | "responses-closed" => plan.push(Scenario::Closed {
                concurrency: args.door_concurrency,
                door: door_of(s),
            }),
            "messages-stream" | "responses-stream" => plan.push(Scenario::Stream {
                concurrency: args.stream_concurrency,
                door: door_of(s),
                burst: false,
            }),
            "doors" => {
                for door in [Door::Messages, Door::Responses] {
                    plan.push(Scenario::Closed {
                        concurrency: args.door_concurrency,
                        door,
                    });
                    plan.push(Scenario::Stream {
                        concurrency: args.stream_concurrency,
                        door,
                        burst: false,
                    });
                }
            }
            "idle" => plan.push(Scenario::Idle { count: idle_count }),
            other => return Err(format!("unknown scenario `{other}`")),
        }
    }

    let dir = Workdir::create(args.keep)?;
    let (upstream_proc, upstream_addr) = targets::start_upstream()?;
    let proxy_core = pinning.pinned.then_some(args.proxy_core);
    // One Redis for every Redis target, on the proxy's core, started only when one is asked for.
    let redis = if args.targets.iter().any(|t| t.starts_with("tollgate-redis")) {
        if !procfs::on_path(&args.redis_server.to_string_lossy()) {
            return Err(format!(
                "{} not found: the tollgate-redis targets need it (apt-get install redis-server)",
                args.redis_server.display()
            ));
        }
        let (proc, addr) = targets::start_redis(&args.redis_server, &dir, proxy_core).await?;
        notes.push(format!(
            "tollgate-redis*: `state.store: redis` at one `redis-server` on {addr} (no persistence), pinned to the proxy core with the replicas — its CPU is in \"other on proxy core\"; on 2 cores three replicas and Redis share one core, so that row measures their contention, not scaling; tollgate-redis3's CPU is its three processes', its memory the first one's"
        ));
        Some((proc, addr))
    } else {
        None
    };
    let mut targets: Vec<Target> = Vec::new();
    for name in &args.targets {
        let target = match name.as_str() {
            "direct" => Target::direct(upstream_addr),
            "tollgate" | "tollgate-quiet" | "tollgate-h2c" | "tollgate-dashboard"
            | "tollgate-base" | "tollgate-key" | "tollgate-limits" | "tollgate-redis"
            | "tollgate-redis3" => {
                let binary = match (name.as_str(), &args.tollgate_base) {
                    ("tollgate-base", Some(base)) => base,
                    ("tollgate-base", None) => {
                        return Err("the target tollgate-base needs --tollgate-base PATH".into())
                    }
                    _ => &args.tollgate,
                };
                if !binary.exists() {
                    return Err(format!(
                        "{} not found: build it first (cargo build --release)",
                        binary.display()
                    ));
                }
                let spec = TollgateSpec {
                    name,
                    binary,
                    log_level: if name == "tollgate-quiet" {
                        "warn"
                    } else {
                        "info"
                    },
                    http2_only: name == "tollgate-h2c",
                    dashboard: name == "tollgate-dashboard",
                    client_key: matches!(
                        name.as_str(),
                        "tollgate-key" | "tollgate-limits" | "tollgate-redis" | "tollgate-redis3"
                    ),
                    limits: matches!(
                        name.as_str(),
                        "tollgate-limits" | "tollgate-redis" | "tollgate-redis3"
                    ),
                    redis: match name.as_str() {
                        "tollgate-redis" | "tollgate-redis3" => redis.as_ref().map(|r| r.1),
                        _ => None,
                    },
                    replicas: if name == "tollgate-redis3" { 3 } else { 1 },
                };
                targets::start_tollgate(&spec, &dir, upstream_addr, proxy_core).await?
            }
            "nginx" => {
                if !procfs::on_path(&args.nginx.to_string_lossy()) {
                    notes.push(format!(
                        "nginx: not measured — `{}` not found (apt-get install nginx)",
                        args.nginx.display()
                    ));
                    continue;
                }
                targets::start_nginx(&args.nginx, &dir, upstream_addr, proxy_core, hard).await?
            }
            other => return Err(format!("unknown target `{other}`")),
        };
        targets.push(target);
    }
    notes.push(
        "tollgate runs with `logging.format: json`, `level: info`: one log line per request, written to a pipe the runner drains (as under a container runtime); tollgate-quiet with `level: warn`; tollgate-h2c as tollgate, speaking HTTP/2 (h2c, prior knowledge) to the upstream; tollgate-dashboard as tollgate, with `dashboard.enabled: true` and one viewer on the load core reading `/dashboard/events` throughout; nginx with `access_log off` and HTTP/1.1 to the upstream"
            .into(),
    );

    let bench = Bench {
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        hz: procfs::clock_ticks_per_second() as f64,
        upstream_pid: upstream_proc.pid(),
        proxy_core,
        max_conns: 1024,
        open_parallel: 200,
    };
    let idle_rss: Vec<(String, Option<u64>)> = targets
        .iter()
        .filter(|t| !t.processes.is_empty())
        .map(|t| (t.name.clone(), t.idle_rss_kib))
        .collect();

    let mut results: Vec<Measurement> = Vec::new();
    for &scenario in &plan {
        let first = results.len();
        // Memory under idle streams is steady; one round of it is enough.
        let rounds = if matches!(scenario, Scenario::Idle { .. }) {
            1
        } else {
            args.rounds.max(1)
        };
        for round in 1..=rounds {
            for target in &targets {
                if matches!(scenario, Scenario::Idle { .. }) && target.processes.is_empty() {
                    continue; // no proxy memory to weigh
                }
                if scenario.needs_gateway() && !target.gateway {
                    continue; // only tollgate has the Messages and Responses doors
                }
                eprintln!(
                    "bench: {scenario} → {} (round {round} of {rounds}) …",
                    target.name
                );
                let m = bench.measure(scenario, target).await;
                eprintln!(
                    "bench:   {} ok, {} errors, {:.0}/s, p50 {} ms, p99 {} ms",
                    m.ok,
                    m.errors,
                    m.throughput(),
                    m.latency
                        .map_or("–".into(), |l| format!("{:.3}", stats::ms(l.p50))),
                    m.latency
                        .map_or("–".into(), |l| format!("{:.3}", stats::ms(l.p99))),
                );
                match results[first..].iter_mut().find(|r| r.target == m.target) {
                    Some(earlier) => earlier.absorb(m),
                    None => results.push(m),
                }
            }
        }
        results[first..].iter_mut().for_each(Measurement::settle);
    }
    for target in &targets {
        if let Some(viewer) = &target.viewer {
            notes.push(format!(
                "{}: the dashboard viewer read {:.0} KiB of events over the run and {}",
                target.name,
                viewer.bytes() as f64 / 1024.0,
                if viewer.connected() {
                    "was still connected at the end"
                } else {
                    "was disconnected (too slow)"
                }
            ));
        }
    }
    drop(targets);
    drop(redis);
    drop(upstream_proc);

    let ctx = report::Context {
        machine: procfs::machine(),
        pinning: pinning.text,
        revision: revision(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        load_before,
        load_after: procfs::load_average(),
        busy_before,
        duration_secs: args.duration,
        rounds: args.rounds.max(1),
        warmup_secs: args.warmup,
        idle_wanted: args.idle_streams,
        idle_count,
        notes,
        idle_rss,
    };
    let text = report::render(&ctx, &results);
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("bench: report written to {}", path.display());
    }
    Ok(())
}

/// How busy each CPU was over `window`, before anything of ours ran: other work on the
/// machine shows here.
fn busy_cores(window: Duration) -> String {
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2);
    let before: Vec<Option<u64>> = (0..cpus).map(procfs::cpu_busy_ticks).collect();
    std::thread::sleep(window);
    let hz = procfs::clock_ticks_per_second() as f64;
    let parts: Vec<String> = (0..cpus)
        .filter_map(|c| {
            let b = before[c]?;
            let a = procfs::cpu_busy_ticks(c)?;
            let pct = a.saturating_sub(b) as f64 / hz / window.as_secs_f64() * 100.0;
            Some(format!("core {c} {pct:.0}%"))
        })
        .collect();
    parts.join(", ")
}

/// The git revision measured, `+dirty` when tracked files differ from it.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{rev}{}", if dirty { "+dirty" } else { "" })
        }
        None => "unknown revision".into(),
    }
}

/// The door a scenario name (`messages-…`, `responses-…`) or `--door` value names.
fn door_of(name: &str) -> Door {
    if name.starts_with("messages") {
        Door::Messages
    } else if name.starts_with("responses") {
        Door::Responses
    } else {
        Door::Chat
    }
}

async fn drive(args: DriveArgs) -> ExitCode {
    let door = door_of(&args.door);
    if door == Door::Chat && args.door != "chat" {
        eprintln!(
            "drive: unknown door `{}` (chat, messages, responses)",
            args.door
        );
        return ExitCode::FAILURE;
    }
    let stream = args.stream || args.idle.is_some();
    let load = Arc::new(client::Load::new(
        vec![args.addr],
        door.path(),
        scenario::request_headers(door, args.key.as_deref()),
        scenario::request_body(
            door,
            args.model.as_deref().unwrap_or(if args.idle.is_some() {
                "up:idle"
            } else {
                "up:m"
            }),
            stream,
        ),
        // An idle stream is held, never finished: its ending is not checked.
        if args.idle.is_some() {
            client::Ending::Any
        } else {
            door.ending(args.stream)
        },
    ));
    if let Some(count) = args.idle {
        let held = client::hold_idle(&load, count, 200).await;
        println!(
            "{} streams held, {} errors, opened in {:.2} s{}",
            held.opened,
            held.errors,
            held.setup.as_secs_f64(),
            held.first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        let ok = held.errors == 0;
        held.release().await;
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let mut tally = match args.rate {
        Some(rate) => {
            let pool = Arc::new(client::Pool::default());
            let duration = Duration::from_secs_f64(args.duration);
            client::open(&load, &pool, rate, duration, 1024).await
        }
        None => {
            let (duration, per_conn) = match args.requests {
                // A generous bound: under callgrind a gateway runs some 50 times slower.
                Some(n) => (
                    Duration::from_secs(3600),
                    Some(n.div_ceil(args.concurrency.max(1))),
                ),
                None => (Duration::from_secs_f64(args.duration), None),
            };
            let mut conns = Vec::new();
            client::closed(&load, &mut conns, args.concurrency, duration, per_conn).await
        }
    };
    let n = tally.latencies.len();
    let rate = n as f64 / tally.elapsed.as_secs_f64().max(1e-9);
    match stats::Summary::of(&mut tally.latencies) {
        Some(s) => println!(
            "{n} ok, {} errors, {rate:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            tally.errors,
            stats::ms(s.p50),
            stats::ms(s.p90),
            stats::ms(s.p99),
            stats::ms(s.max)
        ),
        None => println!("no answers; {} errors", tally.errors),
    }
    if let Some(e) = tally.first_error {
        println!("first error: {e}");
    }
    if tally.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
