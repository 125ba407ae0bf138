//! `tollgate code`: runs Claude Code (`claude`) — or, with `--codex`, Codex CLI (`codex`) —
//! wired to a gateway: one started here on a free loopback port for the session, or a running
//! one (`--url`). The agent's exit code is passed on, and the gateway started here stops with it.
//!
//! - Claude Code gets `ANTHROPIC_BASE_URL`, `ANTHROPIC_AUTH_TOKEN` (sent as `Authorization:
//!   Bearer`, so it does not ask about an API key) and, with `--model`, `ANTHROPIC_MODEL`,
//!   `ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL` and `ANTHROPIC_CUSTOM_MODEL_OPTION`.
//!   Without `--model` it asks for its `claude-*` names, which `anthropic.models` maps.
//! - Codex gets a generated `CODEX_HOME` whose `config.toml` names the gateway as a custom
//!   provider with `wire_api = "responses"` (Codex speaks only the Responses API), and the key
//!   in `TOLLGATE_API_KEY`.
//!
//! A gateway started here accepts one key, made for the session, so nothing else on the
//! machine can use it while it runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tollgate_core::Env;
use tollgate_server::Gateway;

use crate::load::Loaded;

/// What `tollgate code` was asked to run.
pub struct Launch {
    pub codex: bool,
    pub model: Option<String>,
    pub url: Option<String>,
    pub args: Vec<String>,
}

impl Launch {
    fn program(&self) -> &'static str {
        if self.codex {
            "codex"
        } else {
            "claude"
        }
    }

    fn install_hint(&self) -> &'static str {
        if self.codex {
            "Codex CLI: `npm install -g @openai/codex`"
        } else {
            "Claude Code: `npm install -g @anthropic-ai/claude-code`"
        }
    }
}

pub async fn code(loaded: Loaded, quiet: bool, launch: Launch) -> ExitCode {
    let program = launch.program();
    let Some(path) = find_on_path(program) else {
        eprintln!(
            "tollgate: `{program}` is not on PATH; install {}",
            launch.install_hint()
        );
        return ExitCode::from(2);
    };

    // The gateway: a running one, or one started here for the session.
    let (base, key, session) = match &launch.url {
        Some(url) => {
            let base = url.trim_end_matches('/');
            let base = base.strip_suffix("/v1").unwrap_or(base).to_owned();
            let key = Env::process()
                .var("PROXY_API_KEY")
                .unwrap_or_else(|| "unused".into());
            (base, key, None)
        }
        None => match start_session(&loaded, quiet).await {
            Ok((base, key, session)) => (base, key, Some(session)),
            Err(code) => return code,
        },
    };

    let mut cmd = std::process::Command::new(&path);
    cmd.args(&launch.args);
    let mut codex_home = None;
    if launch.codex {
        match write_codex_home(&base, launch.model.as_deref()) {
            Ok(dir) => {
                cmd.env("CODEX_HOME", &dir).env("TOLLGATE_API_KEY", &key);
                codex_home = Some(dir);
            }
            Err(e) => {
                eprintln!("tollgate: cannot write Codex's configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        // A real Anthropic key must not ride along to the gateway (it would never be used).
        cmd.env_remove("ANTHROPIC_API_KEY")
            .env("ANTHROPIC_BASE_URL", &base)
            .env("ANTHROPIC_AUTH_TOKEN", &key);
        if let Some(model) = &launch.model {
            for var in [
                "ANTHROPIC_MODEL",
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "ANTHROPIC_CUSTOM_MODEL_OPTION",
            ] {
                cmd.env(var, model);
            }
        }
    }

    // Ctrl-C is the agent's (it cancels a turn there); the terminal sends it to the whole
    // process group, so the gateway swallows it while the agent runs rather than dying
    // under it.
    let swallow = tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let status = tokio::task::spawn_blocking(move || cmd.status()).await;
    swallow.abort();
    if let Some(session) = session {
        session.stop().await;
    }
    if let Some(dir) = codex_home {
        let _ = std::fs::remove_dir_all(dir);
    }
    match status {
        Ok(Ok(status)) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            // Killed by a signal: the shell's convention, 128 + the signal.
            None => ExitCode::from(signal_code(&status)),
        },
        Ok(Err(e)) => {
            eprintln!("tollgate: cannot run {}: {e}", path.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tollgate: {program} could not be waited for: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(unix)]
fn signal_code(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(1)
}

#[cfg(not(unix))]
fn signal_code(_status: &std::process::ExitStatus) -> u8 {
    1
}

/// A gateway serving on loopback until `stop`.
struct Session {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), self.served).await;
    }
}

/// Starts the configured gateway on `127.0.0.1:0`, accepting one new session key.
async fn start_session(
    loaded: &Loaded,
    quiet: bool,
) -> Result<(String, String, Session), ExitCode> {
    let mut config = loaded.config.clone();
    if quiet {
        // The agent owns the terminal: log lines would draw over its screen.
        config.logging.level = "off".into();
    }
    crate::logging::init(&config);
    let env = Env::process();
    let runtime = match crate::load::build(loaded, &crate::connectors::registry(), &env, None) {
        Ok(r) => r,
        Err(diagnostics) => return Err(crate::cli::report(&diagnostics)),
    };
    let key = session_key();
    let gateway = Gateway::new(
        runtime.with_only_key("code", &key),
        crate::connectors::registry(),
        env,
    );
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tollgate: cannot listen on 127.0.0.1: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    let addr = listener.local_addr().map_err(|e| {
        eprintln!("tollgate: {e}");
        ExitCode::FAILURE
    })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(tollgate_server::serve(
        listener,
        gateway,
        shutdown,
        Duration::from_secs(2),
    ));
    Ok((format!("http://{addr}"), key, Session { stop, served }))
}

/// A fresh random key for one session.
fn session_key() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    // The system's random source failing is not something to recover from quietly; fall
    // back to a clock-and-pid mix, still unguessable to a process that did not see it.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        bytes[..16].copy_from_slice(&seed.to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("tg-session-{hex}")
}

/// `CODEX_HOME` with a `config.toml` naming the gateway at `base` as Codex's provider.
/// The directory is new, with a random name, and only its owner may enter it (0700), so no
/// other local user can plant or read the file first.
fn write_codex_home(base: &str, model: Option<&str>) -> std::io::Result<PathBuf> {
    let suffix = session_key();
    let dir = std::env::temp_dir().join(format!(
        "tollgate-codex-{}",
        suffix.trim_start_matches("tg-session-")
    ));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    // `create`, not `create_all`: a directory already there is an error, never reused.
    builder.create(&dir)?;
    let mut toml = String::new();
    if let Some(model) = model {
        toml.push_str(&format!("model = {}\n", toml_string(model)));
    }
    toml.push_str("model_provider = \"tollgate\"\n\n[model_providers.tollgate]\n");
    toml.push_str("name = \"tollgate\"\n");
    toml.push_str(&format!(
        "base_url = {}\n",
        toml_string(&format!("{base}/v1"))
    ));
    toml.push_str("env_key = \"TOLLGATE_API_KEY\"\n");
    toml.push_str("wire_api = \"responses\"\n");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(dir.join("config.toml"))
        .and_then(|mut file| std::io::Write::write_all(&mut file, toml.as_bytes()));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(dir)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first executable named `program` on `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000ay""#);
    }
}
