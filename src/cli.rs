//! The command line of SPEC §1: `tollgate [serve|config|check|models|chat|code|url|env]` and the flags
//! every sub-command accepts, before or after its name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use tollgate_core::config::LogFormat;
use tollgate_core::Env;
use tollgate_server::{Gateway, Runtime};

use crate::load::{default_path, Diagnostic, Loaded, Overrides, Source};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An LLM gateway: one OpenAI-compatible address in front of many backends."
)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags shared by every sub-command. Each overrides the environment and the YAML file.
#[derive(Debug, Args)]
struct Flags {
    /// Configuration file [default: ./config.yaml when it exists]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on (server.host)
    #[arg(long, global = true)]
    host: Option<String>,
    /// Port to listen on (server.port)
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Backend for models without a known `backend:` prefix (default_backend)
    #[arg(long, global = true, value_name = "NAME")]
    default_backend: Option<String>,
    /// Replace every request's model; a `backend:` prefix picks the backend (force_model)
    #[arg(long, global = true, value_name = "MODEL")]
    force_model: Option<String>,
    /// Seconds of upstream silence before a keepalive, 1..60 (failure_handling.keepalive_interval)
    #[arg(long, global = true, value_name = "SECONDS")]
    keepalive_interval: Option<u64>,
    /// Log format (logging.format)
    #[arg(long, global = true, value_parser = ["pretty", "json"])]
    log_format: Option<String>,
    /// Log level or tracing filter, e.g. `info`, `debug` (logging.level)
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default)
    Serve,
    /// Print the effective configuration as YAML, secrets as ***
    Config {
        /// Show the layer each value came from (default, yaml, env, cli)
        #[arg(long)]
        sources: bool,
    },
    /// Validate the configuration: exit 0, or exit 2 listing every problem
    Check {
        /// The file to check [default: --config, else ./config.yaml]
        path: Option<PathBuf>,
    },
    /// List the routable models of every backend (`backend:model`) and route names
    Models,
    /// Send one prompt through the same routing and stream the answer to the terminal
    Chat {
        /// A model as a client would name it (`backend:model`, a route, …)
        model: String,
        /// The user message
        prompt: String,
    },
    /// Run Claude Code (or, with --codex, Codex CLI) wired to the gateway: one started on a
    /// free loopback port for the session, or a running one (--url)
    Code {
        /// The model the agent asks for (`backend:model`, a route …); default: its own names,
        /// mapped by `anthropic.models`
        #[arg(long)]
        model: Option<String>,
        /// Use the gateway running at this URL instead of starting one
        #[arg(long)]
        url: Option<String>,
        /// Run Codex CLI (`codex`, Responses API) instead of Claude Code (`claude`)
        #[arg(long)]
        codex: bool,
        /// Arguments for the agent, after `--`
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print the base URL a client should use
    Url {
        /// The pass-through base of one backend (`/v1/providers/NAME/-`)
        #[arg(long, conflicts_with = "model")]
        provider: Option<String>,
        /// The base that routes every request to one model or route (`/v1/models/NAME/-/v1`)
        #[arg(long)]
        model: Option<String>,
    },
    /// Print `export` lines for OpenAI- and Anthropic-SDK clients
    Env {
        /// The client key (by name, from auth.keys) whose value to export
        #[arg(long)]
        key: Option<String>,
    },
}

impl Flags {
    fn source(&self, path: Option<PathBuf>) -> Source {
        Source {
            path: path.or_else(|| self.config.clone()).or_else(default_path),
            overrides: Overrides {
                host: self.host.clone(),
                port: self.port,
                default_backend: self.default_backend.clone(),
                force_model: self.force_model.clone(),
                keepalive_interval: self.keepalive_interval,
                log_format: self.log_format.as_deref().map(|f| match f {
                    "json" => LogFormat::Json,
                    _ => LogFormat::Pretty,
                }),
                log_level: self.log_level.clone(),
            },
        }
    }
}

pub fn main() -> ExitCode {
    let code = run();
    crate::logging::flush();
    code
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Local commands log only warnings unless a level was asked for.
    let quiet = cli.flags.log_level.is_none();
    let source = match &command {
        Command::Check { path } => cli.flags.source(path.clone()),
        _ => cli.flags.source(None),
    };
    let loaded = match source.load() {
        Ok(l) if l.unknown.is_empty() || matches!(command, Command::Check { .. }) => l,
        Ok(l) => return report(&l.unknown),
        Err(diagnostics) => return report(&diagnostics),
    };
    match command {
        Command::Config { sources } => print_config(&loaded, sources),
        Command::Check { .. } => check(&source, loaded),
        Command::Serve => with_runtime(|| serve(source, loaded)),
        Command::Models => with_runtime(|| models(loaded, quiet)),
        Command::Chat { model, prompt } => with_runtime(|| chat(loaded, quiet, model, prompt)),
        Command::Code {
            model,
            url,
            codex,
            args,
        } => {
            let launch = crate::launch::Launch {
                codex,
                model,
                url,
                args,
            };
            with_runtime(|| crate::launch::code(loaded, quiet, launch))
        }
        Command::Url { provider, model } => {
            crate::clients::url(&loaded.config, provider.as_deref(), model.as_deref())
        }
        Command::Env { key } => crate::clients::env(&loaded.config, key.as_deref()),
    }
}

/// Prints configuration problems and gives the exit code for them.
pub fn report(diagnostics: &[Diagnostic]) -> ExitCode {
    for d in diagnostics {
        eprintln!("tollgate: {d}");
    }
    eprintln!(
        "tollgate: {} configuration problem{}",
        diagnostics.len(),
        if diagnostics.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(2)
}

fn with_runtime<F, Fut>(run: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    // On one core (a container limited to one CPU, or pinned) a work-stealing scheduler has
    // nothing to steal and only costs: measured 34.6 → 28 µs of CPU per request in
    // crates/bench. With more cores, one worker per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cores > 1 {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("tollgate: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the runtime of a loaded configuration, naming each problem's layer.
fn build(loaded: &Loaded, env: &Env) -> Result<Runtime, Vec<Diagnostic>> {
    crate::load::build(loaded, &crate::connectors::registry(), env, None)
}

fn print_config(loaded: &Loaded, sources: bool) -> ExitCode {
    let registry = crate::connectors::registry();
    let env = Env::process();
    // Backends the configuration names only by their connector type are shown as built.
    let mut config = loaded.config.clone();
    let implicit = config.add_implicit_backends(&registry.kinds());
    if sources {
        for line in loaded.sources() {
            println!("{line}");
        }
        for name in &implicit {
            for line in crate::load::implicit_lines(name, &registry, &env) {
                println!("{line}");
            }
        }
        return ExitCode::SUCCESS;
    }
    for name in &implicit {
        if let (Some(backend), Some(info)) = (config.backends.get_mut(name), registry.info(name)) {
            backend.api_url = Some(info.default_url.to_owned());
            backend.api_key = info
                .key_var
                .and_then(|var| env.var(var))
                .map(|v| tollgate_core::Secret::new(&v));
        }
    }
    config.state.url = tollgate_core::secret::hide_url_passwords(&config.state.url);
    match serde_yaml::to_string(&config) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: cannot print the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(source: &Source, loaded: Loaded) -> ExitCode {
    match crate::load::check(&loaded, &crate::connectors::registry(), &Env::process()) {
        Ok(runtime) => {
            let what = source
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            let backends = runtime.backends.values().filter(|b| b.listed).count();
            println!(
                "{what}: ok ({} backend{}, {} route{})",
                backends,
                if backends == 1 { "" } else { "s" },
                runtime.config.routes.len(),
                if runtime.config.routes.len() == 1 {
                    ""
                } else {
                    "s"
                },
            );
            ExitCode::SUCCESS
        }
        Err(diagnostics) => report(&diagnostics),
    }
}

async fn serve(source: Source, loaded: Loaded) -> ExitCode {
    crate::logging::init(&loaded.config);
    let env = Env::process();
    let runtime = match build(&loaded, &env) {
        Ok(r) => r,
        Err(diagnostics) => return report(&diagnostics),
    };
    let server = &loaded.config.server;
    crate::open_files::raise(server.max_connections);
    crate::allocator::return_memory_when_idle();
    let addr = format!("{}:{}", server.host, server.port);
    let grace = Duration::from_secs(server.shutdown_grace);
    let listener = match tollgate_server::bind(&addr, server.backlog).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tollgate: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    let loopback = local
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if !loopback && !runtime.keys_enabled() {
        tracing::warn!(
            address = %local,
            "listening beyond loopback with NO client keys: anyone who can reach this address can use every backend (set auth.keys or PROXY_API_KEY)"
        );
    }
    let dashboard = &runtime.config.dashboard;
    if !loopback && dashboard.enabled && !runtime.keys_enabled() && dashboard.key_env.is_none() {
        tracing::warn!(
            address = %local,
            "the dashboard is ON beyond loopback with NO admin key: anyone who can reach /dashboard sees every request, key name and backend (set dashboard.key_env)"
        );
    }
    let gateway: Arc<Gateway> = Gateway::new(runtime, crate::connectors::registry(), env);
    // Watching starts before the address is announced: an edit made right after start-up
    // is not missed.
    crate::reload::spawn(gateway.clone(), source.clone(), loaded.digest);
    tracing::info!(
        address = %local,
        backends = gateway.runtime().backends.len(),
        config = %source.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()),
        "tollgate listening"
    );
    tollgate_server::serve(listener, gateway, shutdown_signal(), grace).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A gateway for one local command: the operator holds the configuration, so client keys
/// are not asked for.
fn local_gateway(loaded: &Loaded, quiet: bool) -> Result<Arc<Gateway>, ExitCode> {
    let mut logging = loaded.config.clone();
    if quiet {
        // Request log lines would mix with the command's own output.
        logging.logging.level = "warn".into();
    }
    crate::logging::init(&logging);
    let env = Env::process();
    match build(loaded, &env) {
        Ok(runtime) => Ok(Gateway::new(
            runtime.without_client_keys(),
            crate::connectors::registry(),
            env,
        )),
        Err(diagnostics) => Err(report(&diagnostics)),
    }
}

/// Sends one request through the gateway in process, without a socket.
async fn call(
    gateway: &Gateway,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> http::Response<tollgate_server::Body> {
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
    gateway.handle(req).await
}

async fn models(loaded: Loaded, quiet: bool) -> ExitCode {
    let gateway = match local_gateway(&loaded, quiet) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let resp = call(&gateway, http::Method::GET, "/v1/models", Bytes::new()).await;
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            eprintln!("tollgate: the answer broke: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !status.is_success() {
        eprintln!("tollgate: {}", String::from_utf8_lossy(&body));
        return ExitCode::FAILURE;
    }
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    for model in list["data"].as_array().into_iter().flatten() {
        if let Some(id) = model["id"].as_str() {
            println!("{id}");
        }
    }
    ExitCode::SUCCESS
}

async fn chat(loaded: Loaded, quiet: bool, model: String, prompt: String) -> ExitCode {
    use std::io::Write;
    let gateway = match local_gateway(&loaded, quiet) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let body = serde_json::json!({
        "model": model,
        "stream": true,
        "messages": [{"role": "user", "content": prompt}],
    });
    let resp = call(
        &gateway,
        http::Method::POST,
        "/v1/chat/completions",
        Bytes::from(body.to_string()),
    )
    .await;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                eprintln!("tollgate: the answer broke: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("tollgate: {status}: {}", String::from_utf8_lossy(&bytes));
        return ExitCode::FAILURE;
    }
    let mut splitter = tollgate_core::SseSplitter::new();
    let mut events = Vec::new();
    let mut out = std::io::stdout();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // The gateway relays only events within the splitter's limit, so this holds.
        if let Err(e) = splitter.push(data, &mut events) {
            eprintln!("\ntollgate: stream failed: {e}");
            return ExitCode::FAILURE;
        }
        for event in events.drain(..) {
            let Some(payload) = event.payload() else {
                continue;
            };
            if payload.as_ref() == b"[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
            if let Some(err) = v.get("error") {
                eprintln!(
                    "\ntollgate: stream failed: {}",
                    err["message"].as_str().unwrap_or("unknown error")
                );
                failed = true;
            } else if let Some(text) = v["choices"][0]["delta"]["content"].as_str() {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    }
    println!();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
