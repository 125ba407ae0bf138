//! Who may see the dashboard: same-origin requests only, and — when client keys are
//! configured or `dashboard.key_env` is set — an admin key: the value of `dashboard.key_env`,
//! or a client key with `admin: true`.
//!
//! The browser's `EventSource` cannot send headers, so the page does not send the key with
//! each request: `POST /dashboard/login` takes it once (in the body, never in a URL, so no
//! access log sees it) and answers with a random session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Path=/dashboard`). Scripts may send the key itself instead, as
//! `Authorization: Bearer` or `x-api-key`. Sessions live in memory, at most `MAX_SESSIONS`,
//! for `SESSION_TTL`, and all of them end when a reload changes `auth` or `dashboard`.

use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use http::{HeaderMap, HeaderValue, Uri};
use ring::rand::SecureRandom;
use tollgate_core::secret::clean_key;
use tollgate_core::{Env, GatewayError};

use crate::runtime::Runtime;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "tollgate_dashboard";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept; a new login past this ends the oldest.
pub const MAX_SESSIONS: usize = 32;

struct Session {
    /// SHA-256 of the cookie's token: the token itself is not kept.
    digest: [u8; 32],
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    list: Vec<Session>,
}

impl Sessions {
    /// A new session: its cookie token (64 hex digits of the system's randomness).
    pub fn open(&mut self) -> Result<String, GatewayError> {
        let mut token = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut token)
            .map_err(|_| GatewayError::Internal("no randomness for a session token".into()))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        self.list.retain(|s| s.expires > now);
        if self.list.len() >= MAX_SESSIONS {
            self.list.remove(0);
        }
        self.list.push(Session {
            digest: sha256(token.as_bytes()),
            expires: now + SESSION_TTL,
        });
        Ok(token)
    }

    pub fn valid(&self, token: &str) -> bool {
        let digest = sha256(token.as_bytes());
        let now = Instant::now();
        self.list
            .iter()
            .any(|s| s.expires > now && s.digest == digest)
    }

    pub fn close(&mut self, token: &str) {
        let digest = sha256(token.as_bytes());
        self.list.retain(|s| s.digest != digest);
    }

    pub fn clear(&mut self) {
        self.list.clear();
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether the dashboard asks for an admin key under `runtime`.
pub fn key_required(runtime: &Runtime) -> bool {
    runtime.keys_enabled() || runtime.config.dashboard.key_env.is_some()
}

/// Whether `presented` is an admin key: the value of `dashboard.key_env`, or a client key
/// whose entry says `admin: true`. Digests are compared, not the keys.
pub fn is_admin(presented: &str, runtime: &Runtime, env: &Env) -> bool {
    let presented = clean_key(presented);
    if presented.is_empty() {
        return false;
    }
    let digest = sha256(presented.as_bytes());
    if let Some(value) = runtime
        .config
        .dashboard
        .key_env
        .as_deref()
        .and_then(|var| env.var(var))
    {
        if sha256(clean_key(&value).as_bytes()) == digest {
            return true;
        }
    }
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {presented}")) else {
        return false;
    };
    headers.insert(AUTHORIZATION, value);
    match runtime.keys.authenticate(&headers) {
        Ok(Some(key)) => runtime
            .config
            .auth
            .keys
            .iter()
            .any(|k| k.admin && k.name == key.name),
        _ => false,
    }
}

/// The key a script sends itself (`Authorization: Bearer` or `x-api-key`).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
}

/// The session token in the request's cookies.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Refuses requests another site's page makes: an `Origin` that is not this server's own
/// (the `Host` it was reached at), and `Sec-Fetch-Site: cross-site|same-site`. No CORS
/// headers are ever sent, so a browser shows another origin nothing either way; this keeps a
/// foreign page from making the requests at all (a login, a logout).
pub fn same_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), GatewayError> {
    let refused = || {
        GatewayError::PermissionDenied(
            "the dashboard answers its own page only (cross-origin requests are refused)".into(),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(refused());
        }
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        h
    }

    #[test]
    fn origins() {
        let uri: Uri = "/dashboard/state".parse().expect("uri");
        let ok = |pairs: &[(&'static str, &str)]| same_origin(&headers(pairs), &uri).is_ok();
        assert!(ok(&[("host", "127.0.0.1:8000")]), "no Origin: a plain GET");
        assert!(ok(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000")
        ]));
        assert!(ok(&[
            ("host", "Gate.example"),
            ("origin", "https://gate.example")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://evil.example")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8001")
        ]));
        assert!(!ok(&[("host", "127.0.0.1:8000"), ("origin", "null")]));
        assert!(!ok(&[
            ("host", "127.0.0.1:8000"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(ok(&[
            ("host", "127.0.0.1:8000"),
            ("sec-fetch-site", "same-origin")
        ]));
    }

    #[test]
    fn cookies_and_sessions() {
        let h = headers(&[("cookie", "a=1; tollgate_dashboard=abc ; b=2")]);
        assert_eq!(session_token(&h), Some("abc"));
        assert_eq!(session_token(&headers(&[("cookie", "a=1")])), None);

        let mut s = Sessions::default();
        let token = s.open().expect("token");
        assert_eq!(token.len(), 64);
        assert!(s.valid(&token));
        assert!(!s.valid("other"));
        let second = s.open().expect("token");
        assert_ne!(token, second);
        s.close(&token);
        assert!(!s.valid(&token) && s.valid(&second));
        for _ in 0..MAX_SESSIONS {
            s.open().expect("token");
        }
        assert!(!s.valid(&second), "the oldest session made room");
        s.clear();
        assert!(s.list.is_empty());
    }
}
