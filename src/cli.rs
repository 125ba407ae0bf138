//! Command line: `tollgate [serve]`, with the flags of SPEC §1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tollgate_core::{Config, Env};
use tollgate_server::{Gateway, Runtime};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An LLM gateway: one OpenAI-compatible address in front of many backends."
)]
struct Cli {
    /// Configuration file (default: ./config.yaml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, global = true)]
    host: Option<String>,
    /// Port to listen on.
    #[arg(long, global = true)]
    port: Option<u16>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match load(&cli) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("tollgate: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(host) = &cli.host {
        config.server.host = host.clone();
    }
    if let Some(port) = cli.port {
        config.server.port = port;
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

fn load(cli: &Cli) -> Result<Config, String> {
    let path = match &cli.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from("config.yaml")).filter(|p| p.exists()),
    };
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_new(&config.logging.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.logging.format {
        tollgate_core::config::LogFormat::Json => builder.json().init(),
        tollgate_core::config::LogFormat::Pretty => builder.init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let grace = Duration::from_secs(config.server.shutdown_grace);
    let open = config.auth.keys.is_empty();
    let env = Env::process();
    let registry = crate::connectors::registry();
    let runtime = match Runtime::build(config, &registry, &env, None) {
        Ok(r) => r,
        Err(problems) => {
            for p in &problems {
                eprintln!("tollgate: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tollgate: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    let keys_enabled = runtime.keys_enabled();
    if open && !keys_enabled && !is_loopback(&local) {
        tracing::warn!("listening on {local} with NO client keys: anyone who can reach this address can use every backend");
    }
    tracing::info!(address = %local, "tollgate listening");
    let gateway: Arc<Gateway> = Gateway::new(runtime, registry, env);
    tollgate_server::serve(listener, gateway, shutdown_signal(), grace).await;
    ExitCode::SUCCESS
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
