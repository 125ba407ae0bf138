//! The model catalogue: `GET {api_url}/v1/models`, page by page, cached for `models_refresh`.
//!
//! Anthropic's list is paged (`has_more`, `last_id`, the next page asked with `after_id`); the
//! OpenAI-compatible discovery reads one page, so this one follows the pages itself, up to
//! [`MAX_PAGES`] so a misbehaving upstream cannot keep the gateway paging forever.

use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT};
use http::{HeaderMap, Method};
use serde::Deserialize;
use tollgate_core::GatewayError;
use tollgate_openai::Upstream;

use crate::connector::{add_headers, anthropic_error};

/// Models asked for per page: Anthropic's maximum, so one page is the usual whole list.
pub const PAGE_SIZE: u32 = 1000;

/// Pages followed at most.
pub const MAX_PAGES: usize = 20;

/// Largest page read.
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// One page of `GET /v1/models`.
#[derive(Deserialize)]
struct Page {
    data: Vec<Entry>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
}

/// Every model id the upstream lists, in its order, following the pages. `defaults` are the
/// backend's default headers (`anthropic-version`, which every Anthropic endpoint requires).
pub(crate) async fn fetch(
    upstream: &Upstream,
    defaults: &HeaderMap,
) -> Result<Vec<String>, GatewayError> {
    let mut models = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let path = match &after {
            None => format!("models?limit={PAGE_SIZE}"),
            Some(id) => format!("models?limit={PAGE_SIZE}&after_id={}", encode(id)),
        };
        let page = fetch_page(upstream, defaults, &path).await?;
        let next = page.last_id.filter(|_| page.has_more);
        models.extend(page.data.into_iter().map(|e| e.id));
        match next {
            // A cursor that does not move would page forever.
            Some(id) if after.as_deref() != Some(id.as_str()) => after = Some(id),
            _ => return Ok(models),
        }
    }
    tracing::warn!(backend = %upstream.name, pages = MAX_PAGES, "model list cut: too many pages");
    Ok(models)
}

async fn fetch_page(
    upstream: &Upstream,
    defaults: &HeaderMap,
    path: &str,
) -> Result<Page, GatewayError> {
    let started = Instant::now();
    let mut req = upstream.request(Method::GET, path, Bytes::new());
    let h = req.headers_mut();
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    add_headers(h, &HeaderMap::new(), defaults);
    let resp = upstream.exchange(req).await?;
    let status = resp.status();
    let body = upstream
        .read_body(resp.into_body(), MAX_PAGE_BYTES, started + upstream.timeout)
        .await?;
    if !status.is_success() {
        return Err(anthropic_error(upstream, status, &body, None));
    }
    serde_json::from_slice(&body).map_err(|e| {
        GatewayError::UpstreamFailed(format!(
            "backend `{}`: unreadable model list: {e}",
            upstream.name
        ))
    })
}

/// Percent-encodes a query value (model ids are plain; anything else is escaped).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_escaped() {
        assert_eq!(
            encode("claude-3-5-haiku-20241022"),
            "claude-3-5-haiku-20241022"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    use std::time::Duration;

    use tollgate_openai::{Catalogue, Health};

    #[tokio::test]
    async fn the_cache_serves_until_refresh_and_keeps_the_list_on_failure() {
        let catalogue = Catalogue::new(Duration::from_secs(60));
        let health = Health::new(false);
        let first = catalogue
            .get_with("b", &health, || async { Ok(vec!["m1".to_owned()]) })
            .await
            .unwrap_or_default();
        assert_eq!(first, ["m1"]);
        let second = catalogue
            .get_with("b", &health, || async { Ok(vec!["m2".to_owned()]) })
            .await
            .unwrap_or_default();
        assert_eq!(second, ["m1"], "served from the cache");

        let stale = Catalogue::new(Duration::from_millis(1));
        stale
            .fill(async { Ok(vec!["old".to_owned()]) })
            .await
            .expect("kept");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let after_failure = stale
            .get_with("b", &health, || async {
                Err(GatewayError::UpstreamFailed("down".into()))
            })
            .await
            .unwrap_or_default();
        assert_eq!(after_failure, ["old"]);
    }
}
