//! The dashboard's endpoints:
//!
//! | path | |
//! |---|---|
//! | `GET /dashboard` | the page (no data in it; open to anyone who can reach it while enabled) |
//! | `GET /dashboard/app.js`, `/dashboard/app.css` | its script and style |
//! | `POST /dashboard/login` | `{"key": "…"}` → a session cookie (see `access`) |
//! | `POST /dashboard/logout` | ends the session |
//! | `GET /dashboard/session` | `{"key_required", "authorized"}`: whether the page must ask for the key |
//! | `GET /dashboard/state` | the whole snapshot; `?request=SEQ` one request's timeline |
//! | `GET /dashboard/events` | the live side channel (`events`) |
//!
//! Every path answers 404 while `dashboard.enabled` is false. The API paths refuse
//! cross-origin requests and, when an admin key is required, requests without one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use tollgate_core::{Env, GatewayError};

use super::access::{self, COOKIE_NAME, SESSION_TTL};
use super::assets;
use super::events::{self, Events};
use super::state::{Board, ANONYMOUS, FINISHED_PER_SHARD, INFLIGHT_SHOWN, SHARDS};
use super::trace::{unix_ms, MARKS_PER_REQUEST};
use super::window::{SLOTS, SLOT_SECS};
use super::Dashboard;
use crate::body::Body;
use crate::runtime::Runtime;

/// The most a login body may be.
const LOGIN_BODY: usize = 4096;

/// How long a login with a wrong key waits before it is refused.
const FAILED_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest wait for one backend's model list or one key's counters in a snapshot.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

impl Dashboard {
    /// Answers one request to a dashboard path.
    pub async fn serve<B>(
        self: &Arc<Self>,
        req: Request<B>,
        runtime: Arc<Runtime>,
        env: &Env,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.route(req, &runtime, env).await {
            Ok(resp) => resp,
            Err(e) => no_store(crate::app::error_response(&e)),
        }
    }

    async fn route<B>(
        self: &Arc<Self>,
        req: Request<B>,
        runtime: &Runtime,
        env: &Env,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !runtime.config.dashboard.enabled {
            return Err(GatewayError::NotFound(
                "the dashboard is disabled (dashboard.enabled: false)".into(),
            ));
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let page = |asset: &assets::Asset| {
            require(&method, Method::GET, &path)?;
            Ok(assets::response(asset))
        };
        match path.as_str() {
            "/dashboard" | "/dashboard/" => return page(&assets::PAGE),
            "/dashboard/app.js" => return page(&assets::SCRIPT),
            "/dashboard/app.css" => return page(&assets::STYLE),
            "/dashboard/state" | "/dashboard/events" | "/dashboard/login" | "/dashboard/logout"
            | "/dashboard/session" => {}
            _ => return Err(GatewayError::NotFound(format!("no dashboard path {path}"))),
        }
        access::same_origin(req.headers(), req.uri())?;
        match path.as_str() {
            "/dashboard/login" => {
                require(&method, Method::POST, &path)?;
                return self.login(req, runtime, env).await;
            }
            "/dashboard/logout" => {
                require(&method, Method::POST, &path)?;
                if let Some(token) = access::session_token(req.headers()) {
                    self.sessions().close(token);
                }
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp.headers_mut().insert(SET_COOKIE, cookie("", 0));
                return Ok(no_store(resp));
            }
            _ => {}
        }
        require(&method, Method::GET, &path)?;
        if path == "/dashboard/session" {
            // Answered 200 either way, so the page learns it must ask for the key without a
            // failed request in the browser's console.
            let authorized = self.authorize(req.headers(), runtime, env).is_ok();
            let body =
                json!({"key_required": access::key_required(runtime), "authorized": authorized});
            return Ok(json_response(StatusCode::OK, body.to_string()));
        }
        self.authorize(req.headers(), runtime, env)?;
        if path == "/dashboard/events" {
            return Ok(events_response(Events::subscribe(self)));
        }
        let body = match query_value(req.uri().query(), "request") {
            Some(seq) => {
                let seq: u64 = seq
                    .parse()
                    .map_err(|_| GatewayError::invalid("`request` must be a request's seq"))?;
                match self.board.find(seq) {
                    Some(live) => live.detail(),
                    None => {
                        return Err(GatewayError::NotFound(format!(
                            "request {seq} is no longer kept (the dashboard keeps the last {} finished)",
                            SHARDS * FINISHED_PER_SHARD
                        )))
                    }
                }
            }
            None => self.snapshot(runtime).await,
        };
        Ok(json_response(StatusCode::OK, body.to_string()))
    }

    /// Admits a request with a valid session cookie or an admin key of its own.
    fn authorize(
        &self,
        headers: &http::HeaderMap,
        runtime: &Runtime,
        env: &Env,
    ) -> Result<(), GatewayError> {
        if !access::key_required(runtime) {
            return Ok(());
        }
        if access::session_token(headers).is_some_and(|t| self.sessions().valid(t)) {
            return Ok(());
        }
        match access::presented_key(headers) {
            Some(key) if access::is_admin(key, runtime, env) => Ok(()),
            Some(_) => Err(GatewayError::InvalidApiKey(
                "not an admin key: the dashboard takes the key named by dashboard.key_env, or a client key with `admin: true`".into(),
            )),
            None => Err(GatewayError::InvalidApiKey(
                "the dashboard needs an admin key: log in at /dashboard".into(),
            )),
        }
    }

    /// `POST /dashboard/login` with `{"key": "…"}` (or a form's `key=…`): a session cookie.
    async fn login<B>(
        &self,
        req: Request<B>,
        runtime: &Runtime,
        env: &Env,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let required = access::key_required(runtime);
        let body = Limited::new(req.into_body(), LOGIN_BODY)
            .collect()
            .await
            .map_err(|_| GatewayError::invalid("the login body is unreadable or too large"))?
            .to_bytes();
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if required {
            let key = login_key(&body)
                .ok_or_else(|| GatewayError::invalid_field("key", "send {\"key\": \"…\"}"))?;
            if !access::is_admin(&key, runtime, env) {
                // Guessing is slowed down: each wrong key costs its sender a quarter second.
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                return Err(GatewayError::InvalidApiKey("not an admin key".into()));
            }
            let token = self.sessions().open()?;
            resp.headers_mut()
                .insert(SET_COOKIE, cookie(&token, SESSION_TTL.as_secs()));
        }
        Ok(no_store(resp))
    }

    /// The whole snapshot: requests, backends, keys, configuration.
    async fn snapshot(&self, runtime: &Runtime) -> Value {
        let board = &self.board;
        let (inflight, total) = board.inflight();
        let finished = board.finished(0, SHARDS * FINISHED_PER_SHARD);
        let reloads = {
            let r = self
                .reloads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            json!({
                "loaded_at": r.loaded_ms,
                "succeeded": r.succeeded,
                "refused": r.refused,
                "last_failed": r.last_failed,
                "last_refused": r.last_refused.as_ref().map(|(at, problems)| json!({"at": at, "problems": problems})),
            })
        };
        let config = &runtime.config;
        json!({
            "now": unix_ms(SystemTime::now()),
            "started_at": self.started_ms,
            "version": env!("CARGO_PKG_VERSION"),
            "key_required": access::key_required(runtime),
            "viewers": self.viewers.load(Ordering::Relaxed),
            "sizes": {
                "finished": SHARDS * FINISHED_PER_SHARD,
                "inflight_shown": INFLIGHT_SHOWN,
                "marks_per_request": MARKS_PER_REQUEST,
                "window_seconds": SLOT_SECS * SLOTS as u64,
                "event_buffer": events::BUFFER,
                "tick_ms": events::TICK.as_millis() as u64,
            },
            "inflight_total": total,
            "inflight": inflight.iter().map(|l| l.summary()).collect::<Vec<_>>(),
            "finished": finished.iter().map(|l| l.summary()).collect::<Vec<_>>(),
            "backends": backends(runtime, board).await,
            "keys": keys(runtime, board).await,
            "config": {
                "reloads": reloads,
                "backends": config.backends.len(),
                "routes": config.routes.len(),
                "client_keys": config.auth.keys.len(),
                "store": format!("{:?}", config.state.store).to_lowercase(),
            },
        })
    }
}

/// Each backend's five-minute window, by name.
pub fn windows_json(board: &Board) -> Value {
    let mut windows: Vec<(String, Value)> = board
        .windows()
        .into_iter()
        .map(|(name, merged)| (name, json!(merged.stats())))
        .collect();
    windows.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(windows.into_iter().collect())
}

/// The backends the configuration lists: usable or why not, circuit, window, model count.
async fn backends(runtime: &Runtime, board: &Board) -> Vec<Value> {
    let windows = board.windows();
    let mut listed: Vec<_> = runtime.backends.iter().filter(|(_, b)| b.listed).collect();
    listed.sort_by(|a, b| a.0.cmp(b.0));
    // Catalogues are cached by their connectors; a slow one is shown as unknown, not waited on.
    let models = join_all(listed.iter().map(|(_, b)| async move {
        match tokio::time::timeout(LOOKUP_TIMEOUT, b.connector.list_models()).await {
            Ok(Ok(models)) => Some(models.len()),
            _ => None,
        }
    }))
    .await;
    listed
        .iter()
        .zip(models)
        .map(|((name, backend), models)| {
            let breaker = &backend.breaker;
            let (circuit, retry_in) = match breaker.retry_in().filter(|_| breaker.is_open()) {
                None => ("closed", None),
                Some(wait) if wait > Duration::ZERO => ("open", Some(wait.as_secs_f64())),
                Some(_) => ("half_open", None),
            };
            let reason = if circuit == "open" {
                Some(format!(
                    "circuit open: too many consecutive failures; next probe in {}s",
                    retry_in.unwrap_or_default().ceil()
                ))
            } else {
                backend.connector.unusable_reason()
            };
            let kind = backend.config.kind.clone().unwrap_or_else(|| name.to_string());
            json!({
                "name": name.as_ref(),
                "type": kind,
                "usable": circuit != "open" && reason.is_none(),
                "unusable_reason": reason,
                "circuit": circuit,
                "retry_in_s": retry_in,
                "models": models,
                "window": windows.get(name.as_ref()).map(|m| m.stats()).unwrap_or_else(|| super::window::Merged::default().stats()),
            })
        })
        .collect()
}

/// Each key: requests and tokens today (this process), the store's counters and what is
/// left of its limits, when it has limits.
async fn keys(runtime: &Runtime, board: &Board) -> Vec<Value> {
    let local = board.keys();
    let mut names: Vec<(String, bool)> = runtime
        .config
        .auth
        .keys
        .iter()
        .map(|k| (k.name.clone(), k.admin))
        .collect();
    let mut seen: Vec<&String> = local.keys().collect();
    seen.sort();
    for name in seen {
        if !names.iter().any(|(n, _)| n == name) {
            names.push((name.clone(), false));
        }
    }
    if names.is_empty() {
        names.push((ANONYMOUS.to_owned(), false));
    }
    let limiter = &runtime.limiter;
    let rows = names.iter().map(|(name, admin)| {
        let anonymous = name == ANONYMOUS && !runtime.keys_enabled();
        let limits = limiter.key_limits((!anonymous).then_some(name.as_str()));
        let scope = crate::limits::key_scope((!anonymous).then_some(name.as_str()));
        let today = local.get(name).copied().unwrap_or_default();
        async move {
            let store = if limits.counts() {
                let asked = limiter.store().usage(&scope, SystemTime::now());
                match tokio::time::timeout(LOOKUP_TIMEOUT, asked).await {
                    Ok(Ok(u)) => {
                        let remaining = json!({
                            "requests_this_minute": limits.rpm.map(|l| l.saturating_sub(u.window_requests)),
                            "tokens_this_minute": limits.tpm.map(|l| l.saturating_sub(u.window_tokens.saturating_add(u.reserved))),
                            "tokens_today": limits.tokens_per_day.map(|l| u.remaining_today(l)),
                        });
                        json!({
                            "status": "ok",
                            "requests_this_minute": u.window_requests,
                            "tokens_this_minute": u.window_tokens,
                            "tokens_today": u.tokens_today,
                            "reserved": u.reserved,
                            "remaining": remaining,
                        })
                    }
                    _ => json!({"status": "unreachable"}),
                }
            } else {
                Value::Null
            };
            json!({
                "name": name,
                "admin": admin,
                "today": today,
                "limits": limits.any().then_some(limits),
                "store": store,
            })
        }
    });
    join_all(rows).await
}

/// The value of `name` in a query string.
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The key in a login body: JSON `{"key": "…"}`, or a form's `key=…`.
fn login_key(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return v["key"].as_str().map(str::to_owned);
    }
    let text = std::str::from_utf8(body).ok()?;
    query_value(Some(text.trim()), "key").map(form_decode)
}

/// `application/x-www-form-urlencoded` decoding: `+` and `%XX`.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The session cookie: scoped to the dashboard's paths, hidden from scripts, never sent
/// by another site's requests.
fn cookie(token: &str, max_age: u64) -> HeaderValue {
    let text = format!(
        "{COOKIE_NAME}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn require(method: &Method, wanted: Method, path: &str) -> Result<(), GatewayError> {
    if *method == wanted {
        return Ok(());
    }
    Err(GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
        allow: if wanted == Method::POST {
            "POST"
        } else {
            "GET"
        },
    })
}

fn no_store(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(resp)
}

fn events_response(events: Events) -> Response<Body> {
    let mut resp = Response::new(Body::Events(Box::new(events)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        http::header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    no_store(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_bodies() {
        assert_eq!(login_key(br#"{"key":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(login_key(b"key=a%2Bb+c").as_deref(), Some("a+b c"));
        assert_eq!(login_key(b"other=1"), None);
        assert_eq!(login_key(br#"{"nokey":1}"#), None);
        assert_eq!(form_decode("100%"), "100%");
    }

    #[test]
    fn queries() {
        assert_eq!(query_value(Some("a=1&request=42"), "request"), Some("42"));
        assert_eq!(query_value(None, "request"), None);
    }
}
