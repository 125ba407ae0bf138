//! `Upstream`: the HTTP side of one OpenAI-compatible backend — where it lives, the headers
//! and key it is sent, its pooled client and timeout. Shared (behind an `Arc`) by requests,
//! model discovery and the background health check, so all of them use one connection pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use tollgate_core::{GatewayError, Secret};

use crate::client::{HttpClient, OutBody};
use crate::errors::upstream_error;
use crate::h1::UpBody;

/// Largest model list read from `GET /models` (OpenRouter's runs to a few hundred kB).
const MAX_MODELS_BYTES: usize = 16 * 1024 * 1024;

pub struct Upstream {
    /// The backend instance name, for messages.
    pub name: Arc<str>,
    /// `api_url` without a trailing `/`.
    pub base: String,
    /// `{base}/{path}` for each endpoint, parsed once.
    pub uris: Vec<(&'static str, http::Uri)>,
    /// Kept to scrub it from upstream error bodies; never logged or returned.
    pub key: Option<Secret>,
    /// Headers sent with every request: `Authorization` (marked sensitive) and config headers.
    pub headers: HeaderMap,
    pub client: HttpClient,
    /// Bound on waiting for response headers, and for a whole non-streaming body.
    pub timeout: Duration,
}

impl Upstream {
    /// A request to `{base}/{path}` with the backend's headers.
    pub fn request(&self, method: Method, path: &str, body: Bytes) -> http::Request<OutBody> {
        let mut req = http::Request::new(OutBody::from(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri(path);
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// Like [`Upstream::request`], with room for `more` headers the caller adds. A clone of the
    /// backend's map is exactly full: the first insert grew it (a reallocation and a rehash),
    /// and hyper grew it again for `host` and `content-length`, on every request.
    pub fn request_with_room(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        more: usize,
    ) -> http::Request<OutBody> {
        let mut req = http::Request::new(OutBody::from(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri(path);
        // hyper's client adds `host` and `content-length` to the same map.
        let mut headers = HeaderMap::with_capacity(self.headers.len() + more + 2);
        // The same names, values and order as a clone.
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        *req.headers_mut() = headers;
        req
    }

    /// `{base}/{path}`; the endpoints' URIs are built once (a `Uri` clones by reference count).
    fn uri(&self, path: &str) -> http::Uri {
        if let Some((_, uri)) = self.uris.iter().find(|(p, _)| *p == path) {
            return uri.clone();
        }
        // `base` was checked to parse as a URI when the connector was built.
        format!("{}/{}", self.base, path)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"))
    }

    /// The URIs of every endpoint path below `base`.
    pub fn endpoint_uris(base: &str) -> Vec<(&'static str, http::Uri)> {
        [
            "chat/completions",
            "completions",
            "embeddings",
            "responses",
            "models",
        ]
        .into_iter()
        .filter_map(|p| Some((p, format!("{base}/{p}").parse().ok()?)))
        .collect()
    }

    /// Sends a pass-through request below `base` with the backend's own headers (its key,
    /// `headers`) over the client's, and `defaults` where neither set one; resolves with the
    /// answer as it arrives, any status, its headers through the allow-list plus what framing a
    /// client needs (`content-type`, `content-encoding`), its body untouched.
    pub async fn forward(
        &self,
        forward: tollgate_core::Forward,
        defaults: &HeaderMap,
    ) -> Result<http::Response<tollgate_core::ForwardBody>, GatewayError> {
        use http_body_util::BodyExt as _;
        let uri: http::Uri = format!("{}/{}", self.base, forward.path_and_query)
            .parse()
            .map_err(|_| {
                GatewayError::invalid_field("path", "the pass-through path is not a valid URL path")
            })?;
        let mut req = http::Request::new(OutBody::Stream(forward.body));
        *req.method_mut() = forward.method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        *h = forward.headers;
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in defaults {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
        if let Ok(id) = http::HeaderValue::from_str(&forward.request_id) {
            h.insert(http::HeaderName::from_static("x-request-id"), id);
        }
        let resp = self.exchange(req).await?;
        let (parts, body) = resp.into_parts();
        let mut headers = crate::connector::passed_headers(&parts.headers);
        for name in [http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING] {
            if let Some(value) = parts.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        let body = body.boxed_unsync();
        let mut out = http::Response::new(body);
        *out.status_mut() = parts.status;
        *out.headers_mut() = headers;
        Ok(out)
    }

    /// Sends and waits for the response headers, within `timeout`.
    pub async fn exchange(
        &self,
        req: http::Request<OutBody>,
    ) -> Result<http::Response<UpBody>, GatewayError> {
        // Pinned where it is made, not moved into the timeout (a copy of its whole state).
        let send = std::pin::pin!(self.client.send(req));
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(resp)) => Ok(resp),
            // A connect timeout is a timeout too (504), not a broken exchange (502).
            Ok(Err(e)) if e.is_timeout() => Err(GatewayError::UpstreamTimeout(format!(
                "backend `{}`: {}",
                self.name,
                e.describe()
            ))),
            Ok(Err(e)) => Err(GatewayError::UpstreamFailed(format!(
                "backend `{}`: {}",
                self.name,
                e.describe()
            ))),
            Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                "backend `{}` sent no response within {}s",
                self.name,
                self.timeout.as_secs()
            ))),
        }
    }

    /// Reads a whole body, bounded in size and by `deadline`. Over `limit` bytes it is a
    /// 502: tollgate would otherwise hold whatever an upstream chose to send.
    pub async fn read_body<B>(
        &self,
        body: B,
        limit: usize,
        deadline: Instant,
    ) -> Result<Bytes, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut body = std::pin::pin!(body);
        let mut whole = Whole::default();
        // What is here already, without a timer: a whole answer usually arrives with its head.
        loop {
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(body.as_mut().poll_frame(cx)))
                    .await;
            match polled {
                std::task::Poll::Ready(frame) => {
                    if whole.take(frame, limit, &self.name)? || body.is_end_stream() {
                        return Ok(whole.finish());
                    }
                }
                std::task::Poll::Pending => break,
            }
        }
        // The rest, within the deadline (itself: no clock read to turn it into a duration).
        let at = tokio::time::Instant::from_std(deadline);
        let rest = async {
            loop {
                let frame = body.frame().await;
                if whole.take(frame, limit, &self.name)? || body.is_end_stream() {
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout_at(at, rest).await {
            Ok(Ok(())) => Ok(whole.finish()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(GatewayError::UpstreamTimeout(format!(
                "backend `{}` did not finish its response within {}s",
                self.name,
                self.timeout.as_secs()
            ))),
        }
    }

    /// `GET {api_url}/models`: the model ids the upstream lists.
    pub async fn fetch_models(&self) -> Result<Vec<String>, GatewayError> {
        let started = Instant::now();
        let mut req = self.request(Method::GET, "models", Bytes::new());
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let resp = self.exchange(req).await?;
        let status = resp.status();
        let body = self
            .read_body(resp.into_body(), MAX_MODELS_BYTES, started + self.timeout)
            .await?;
        if !status.is_success() {
            return Err(upstream_error(
                &self.name,
                status,
                &body,
                self.key.as_ref(),
                None,
            ));
        }
        parse_model_list(&body).map_err(|e| {
            GatewayError::UpstreamFailed(format!(
                "backend `{}`: unreadable model list: {e}",
                self.name
            ))
        })
    }
}

/// A whole body as its frames arrive: one frame is kept as it came, more are joined.
#[derive(Default)]
struct Whole {
    first: Option<Bytes>,
    joined: Vec<u8>,
}

impl Whole {
    /// Takes a polled frame; true at the body's end.
    fn take<E>(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, E>>,
        limit: usize,
        backend: &str,
    ) -> Result<bool, GatewayError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let data = match frame {
            None => return Ok(true),
            Some(Err(e)) => {
                return Err(GatewayError::UpstreamFailed(format!(
                    "backend `{backend}`: reading the response failed: {}",
                    e.into()
                )))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => return Ok(false), // trailers
            },
        };
        if self.len() + data.len() > limit {
            return Err(GatewayError::UpstreamFailed(format!(
                "backend `{backend}` answered with a body over {limit} bytes"
            )));
        }
        match self.first.take() {
            None if self.joined.is_empty() => self.first = Some(data),
            Some(first) => {
                self.joined.extend_from_slice(&first);
                self.joined.extend_from_slice(&data);
            }
            None => self.joined.extend_from_slice(&data),
        }
        Ok(false)
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.joined.len(), Bytes::len)
    }

    fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => Bytes::from(self.joined),
        }
    }
}

/// Reads an OpenAI list (`{"data":[{"id":…},…]}`), ignoring every other field.
fn parse_model_list(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
    }
    let list: List = serde_json::from_slice(body)?;
    Ok(list.data.into_iter().map(|e| e.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream {
            name: Arc::from("up"),
            base: "http://127.0.0.1:9/v1".into(),
            uris: Vec::new(),
            key: None,
            headers: HeaderMap::new(),
            client: crate::client::build_client(
                crate::client::Protocol::Http1Only,
                Duration::from_secs(1),
                "http://127.0.0.1:9/v1",
            ),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_whole_body_over_its_cap_is_a_502() {
        let up = upstream();
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 2048]));
        let e = up
            .read_body(body, 1024, deadline)
            .await
            .expect_err("over the cap");
        assert_eq!(e.status().as_u16(), 502);
        assert!(e.to_string().contains("over 1024 bytes"), "{e}");
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 1024]));
        assert_eq!(
            up.read_body(body, 1024, deadline)
                .await
                .map(|b| b.len())
                .ok(),
            Some(1024)
        );
    }

    #[tokio::test]
    async fn a_body_in_pieces_is_joined_and_a_late_one_times_out() {
        let up = upstream();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Two pieces at once, one later: the part after the first turn runs under the timer.
        let pieces = futures_util::stream::unfold(0, |n| async move {
            if n == 3 {
                return None;
            }
            if n == 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let piece = Bytes::from(format!("p{n};"));
            Some((
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(piece)),
                n + 1,
            ))
        });
        let body = http_body_util::StreamBody::new(pieces);
        let got = up.read_body(body, 1024, deadline).await.expect("whole");
        assert_eq!(got, Bytes::from_static(b"p0;p1;p2;"));
        // The cap counts every piece, not only the first.
        let pieces = futures_util::stream::iter([&b"12345"[..], b"67890"].map(|p| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(p)))
        }));
        let e = up
            .read_body(http_body_util::StreamBody::new(pieces), 8, deadline)
            .await
            .expect_err("over the cap");
        assert!(e.to_string().contains("over 8 bytes"), "{e}");
        // A body that stops short of its end: a timeout at the deadline, not a hang.
        use futures_util::StreamExt as _;
        let stalled = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(Bytes::from_static(b"part")),
        )])
        .chain(futures_util::stream::pending());
        let soon = Instant::now() + Duration::from_millis(50);
        let e = up
            .read_body(http_body_util::StreamBody::new(stalled), 1024, soon)
            .await
            .expect_err("timed out");
        assert_eq!(e.status().as_u16(), 504, "{e}");
    }

    #[test]
    fn model_lists_keep_ids_in_order() {
        let body = br#"{"object":"list","data":[{"id":"meta/llama3-70b","object":"model","owned_by":"meta","root":"x"},{"id":"b"}]}"#;
        assert_eq!(
            parse_model_list(body).expect("parses"),
            ["meta/llama3-70b", "b"]
        );
        assert!(parse_model_list(br#"{"models":[]}"#).is_err());
    }
}
