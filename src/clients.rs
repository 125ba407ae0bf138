//! `tollgate url` and `tollgate env`: what a client needs to reach this gateway — its base URL
//! (plain, for one provider's pass-through, or for one model's routes) and the `export` lines
//! OpenAI- and Anthropic-SDK clients read.

use std::process::ExitCode;

use tollgate_core::secret::clean_key;
use tollgate_core::{Config, Env};

/// The address clients connect to: the listening host, with a wildcard address replaced by
/// loopback (nothing connects to `0.0.0.0`).
fn root(config: &Config) -> String {
    let host = match config.server.host.as_str() {
        "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_owned(),
    };
    format!("http://{host}:{}", config.server.port)
}

/// Path segments are percent-encoded where a URL needs it (`/` and `:` in model names).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `tollgate url`: the base URL an OpenAI-style client is given.
pub fn url(config: &Config, provider: Option<&str>, model: Option<&str>) -> ExitCode {
    let root = root(config);
    // Backends named only by their connector type (`default_backend: nvidia`) count too.
    let mut config = config.clone();
    config.add_implicit_backends(&crate::connectors::registry().kinds());
    let config = &config;
    match (provider, model) {
        (Some(p), _) => {
            if !config.backends.contains_key(p) {
                eprintln!(
                    "tollgate: `{p}` is not a configured backend (configured: {})",
                    names(config)
                );
                return ExitCode::from(2);
            }
            println!("{root}/v1/providers/{}/-", segment(p));
        }
        (None, Some(m)) => println!("{root}/v1/models/{}/-/v1", segment(m)),
        (None, None) => println!("{root}/v1"),
    }
    ExitCode::SUCCESS
}

fn names(config: &Config) -> String {
    let names: Vec<&str> = config.backends.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// `tollgate env`: `export` lines for OpenAI- and Anthropic-SDK clients, with the value of
/// client key `key` (or of `PROXY_API_KEY`, or a placeholder when the gateway needs none).
pub fn env(config: &Config, key: Option<&str>) -> ExitCode {
    let env = Env::process();
    let value = match key {
        Some(name) => match config.auth.keys.iter().find(|k| k.name == name) {
            None => {
                eprintln!("tollgate: no client key named `{name}` in auth.keys");
                return ExitCode::from(2);
            }
            Some(k) => match (&k.key, &k.key_env) {
                (Some(v), _) => v.expose().to_owned(),
                (None, Some(var)) => match env.var(var) {
                    Some(v) => clean_key(&v).to_owned(),
                    None => {
                        eprintln!("tollgate: key `{name}` comes from `{var}`, which is not set");
                        return ExitCode::from(2);
                    }
                },
                (None, None) => {
                    eprintln!(
                        "tollgate: key `{name}` is configured by its SHA-256 only; export its value yourself"
                    );
                    return ExitCode::from(2);
                }
            },
        },
        None => match env.var("PROXY_API_KEY") {
            Some(v) => clean_key(&v).to_owned(),
            None if config.auth.keys.is_empty() => "unused".to_owned(),
            None => {
                eprintln!(
                    "tollgate: the gateway needs a client key: name one with --key (configured: {})",
                    config
                        .auth
                        .keys
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let root = root(config);
    let quoted = shell_quote(&value);
    println!(
        "export OPENAI_BASE_URL={}",
        shell_quote(&format!("{root}/v1"))
    );
    println!("export OPENAI_API_KEY={quoted}");
    println!("export ANTHROPIC_BASE_URL={}", shell_quote(&root));
    println!("export ANTHROPIC_AUTH_TOKEN={quoted}");
    ExitCode::SUCCESS
}

/// Single-quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_quotes() {
        assert_eq!(segment("nvidia:meta/llama"), "nvidia%3Ameta%2Fllama");
        assert_eq!(
            shell_quote("http://127.0.0.1:8000/v1"),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
