//! `GET /v1/models` (every backend's catalogue as `backend:model`, plus route names) and
//! `GET /health/ready` (whether any backend can take requests).

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, Response, StatusCode};
use serde_json::json;
use tollgate_core::config::{OnError, StoreKind};
use tollgate_core::GatewayError;

use crate::app::json_response;
use crate::body::Body;
use crate::runtime::Runtime;

/// Longest wait for one backend's catalogue; a slow backend is left out, not waited for.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The model list, or one model when `only` is given (404 when it is not listed).
pub async fn list(
    runtime: &Runtime,
    headers: &HeaderMap,
    only: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let key = runtime.keys.authenticate(headers)?;
    let permitted = |backend: &str, model: &str| {
        runtime.router.backend_permits(backend, model)
            && key.as_ref().is_none_or(|k| k.permits(backend, model))
    };
    let listed = runtime.backends.iter().filter(|(_, b)| b.listed);
    let lists = join_all(listed.map(|(name, backend)| async move {
        let wait = LIST_TIMEOUT.min(Duration::from_secs(backend.config.timeout));
        (
            name,
            tokio::time::timeout(wait, backend.connector.list_models()).await,
        )
    }))
    .await;
    let mut entries: Vec<(String, String)> = Vec::new();
    for (name, listed) in lists {
        match listed {
            Ok(Ok(models)) => entries.extend(
                models
                    .into_iter()
                    .filter(|m| permitted(name, m))
                    .map(|m| (format!("{name}:{m}"), name.to_string())),
            ),
            Ok(Err(e)) => tracing::warn!(backend = %name, error = %e, "listing models failed"),
            Err(_) => tracing::warn!(backend = %name, "listing models timed out"),
        }
    }
    for route in runtime.router.route_names() {
        let usable = runtime
            .router
            .resolve(route)
            .is_ok_and(|targets| targets.iter().any(|t| permitted(&t.backend, &t.model)));
        if usable {
            entries.push((route.to_owned(), "tollgate".to_owned()));
        }
    }
    entries.sort();
    entries.dedup();
    let entry = |(id, owner): &(String, String)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
    let body = match only {
        None => json!({"object": "list", "data": entries.iter().map(entry).collect::<Vec<_>>()}),
        Some(id) => match entries.iter().find(|(e, _)| e == id) {
            Some(found) => entry(found),
            None => {
                return Err(GatewayError::ModelNotFound(format!(
                    "model `{id}` is not listed by any backend"
                )))
            }
        },
    };
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}

/// 200 when at least one backend is usable; 503 otherwise, with a reason per backend.
pub fn readiness(runtime: &Runtime) -> Response<Body> {
    let mut backends = serde_json::Map::new();
    let mut usable = 0;
    let mut names: Vec<_> = runtime
        .backends
        .iter()
        .filter(|(_, b)| b.listed)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    for name in names {
        let backend = &runtime.backends[name];
        let state = if backend.breaker.is_open() {
            let wait = backend.breaker.retry_in().unwrap_or_default().as_secs();
            json!({"status": "circuit_open", "reason": format!("too many consecutive failures; next probe in {wait}s")})
        } else {
            match backend.connector.unusable_reason() {
                None => {
                    usable += 1;
                    json!({"status": "ok"})
                }
                Some(reason) => json!({"status": "unavailable", "reason": reason}),
            }
        };
        backends.insert(name.to_string(), state);
    }
    // A store that cannot be reached while `on_error: closed` refuses every counted request.
    let (kind, healthy, on_error) = runtime.limiter.health();
    let store_name = match kind {
        StoreKind::Memory => "memory",
        StoreKind::Sqlite => "sqlite",
        StoreKind::Redis => "redis",
    };
    let state = json!({"store": store_name, "status": if healthy { "ok" } else { "unreachable" }});
    let (status, body) = if usable > 0 && (healthy || on_error == OnError::Open) {
        (
            StatusCode::OK,
            json!({"status": "ready", "backends": backends, "state": state}),
        )
    } else if usable > 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": crate::limits::STORE_DOWN, "backends": backends, "state": state}),
        )
    } else {
        let reason = if backends.is_empty() {
            "no backends are configured"
        } else {
            "no backend is usable"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": reason, "backends": backends, "state": state}),
        )
    };
    json_response(status, Bytes::from(body.to_string()))
}
