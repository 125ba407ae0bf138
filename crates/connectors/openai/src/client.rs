//! The outbound HTTP client: one connection pool per backend instance, over rustls with the
//! `ring` provider and the system's root certificates. A backend that speaks only HTTP/1.1
//! (configured so, or a plain `http://` one) uses tollgate's own pool ([`crate::h1`]); one that
//! may speak HTTP/2 uses hyper-util's.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::h1::{H1Pool, UpBody};

/// The client every OpenAI-shaped connector sends with.
pub enum HttpClient {
    /// HTTP/1.1 only: connections driven by the requests that hold them.
    Http1(H1Pool),
    /// HTTP/2, or HTTP/1.1 and HTTP/2 as TLS negotiates: hyper-util's pool (boxed: it is
    /// large, and the backend holds one or the other for its life).
    Shared(Box<Client<HttpsConnector<HttpConnector>, OutBody>>),
}

impl HttpClient {
    /// Sends and resolves with the response head (no timeout of its own).
    pub async fn send(
        &self,
        req: http::Request<OutBody>,
    ) -> Result<http::Response<UpBody>, SendError> {
        match self {
            HttpClient::Http1(pool) => pool.send(req).await,
            HttpClient::Shared(client) => match client.request(req).await {
                Ok(resp) => Ok(resp.map(UpBody::plain)),
                Err(e) => Err(SendError::Shared(e)),
            },
        }
    }
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed, or closed, before the head arrived.
    Exchange(Box<dyn std::error::Error + Send + Sync>),
    /// hyper-util's client failed (either of the above).
    Shared(hyper_util::client::legacy::Error),
}

impl SendError {
    /// Whether it was a timeout (the connect timeout): a 504, not a 502.
    pub fn is_timeout(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self.inner());
        while let Some(s) = source {
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return true;
            }
            source = s.source();
        }
        false
    }

    fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            SendError::Connect(e) => e.as_ref(),
            SendError::Exchange(e) => e.as_ref(),
            SendError::Shared(e) => e,
        }
    }

    /// In words, without the URL (which a user may have given a token in): what failed and
    /// its deepest cause.
    pub fn describe(&self) -> String {
        let what = match self {
            SendError::Connect(_) => "could not connect",
            SendError::Shared(e) if e.is_connect() => "could not connect",
            _ => "the exchange failed",
        };
        let top = self.inner();
        let mut deepest = top;
        while let Some(s) = deepest.source() {
            deepest = s;
        }
        format!("{what}: {deepest}")
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A request body sent upstream: whole (every routed request, built by tollgate), or streamed
/// from the client as it arrives (a pass-through request, never read by tollgate).
pub enum OutBody {
    /// `None` once sent.
    Full(Option<Bytes>),
    Stream(tollgate_core::ForwardBody),
}

impl From<Bytes> for OutBody {
    fn from(bytes: Bytes) -> Self {
        OutBody::Full(Some(bytes))
    }
}

impl http_body::Body for OutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            OutBody::Full(full) => std::task::Poll::Ready(
                full.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(http_body::Frame::data(b))),
            ),
            OutBody::Stream(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Full(full) => full.as_ref().is_none_or(Bytes::is_empty),
            OutBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            OutBody::Full(full) => {
                http_body::SizeHint::with_exact(full.as_ref().map_or(0, |b| b.len() as u64))
            }
            OutBody::Stream(body) => body.size_hint(),
        }
    }
}

/// Which HTTP versions a backend may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, and HTTP/2 where TLS negotiates it.
    Auto,
    /// HTTP/1.1 only (NIM: long HTTP/2 streams drop).
    Http1Only,
    /// HTTP/2 only: over TLS by ALPN, and on `http://` with prior knowledge (h2c). Every
    /// request to the backend is a stream on one shared connection.
    Http2Only,
}

/// Builds a client with its own connection pool, for a backend below `base`.
pub fn build_client(protocol: Protocol, connect_timeout: Duration, base: &str) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_keepalive(Some(Duration::from_secs(60)));

    let builder = || {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls_config()).clone())
            .https_or_http()
    };
    // HTTP/2 is only ever negotiated over TLS here (or asked for with `Http2Only`). The
    // scheme is read as the URI parser reads it: `HTTPS://` is HTTPS too.
    let tls = base
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|uri| uri.scheme() == Some(&http::uri::Scheme::HTTPS));
    let http1 = match protocol {
        Protocol::Http1Only => true,
        Protocol::Auto => !tls,
        Protocol::Http2Only => false,
    };
    if http1 {
        // HTTP/1.1 only: hyper-rustls then offers no ALPN, so TLS cannot pick HTTP/2.
        let https = builder().enable_http1().wrap_connector(tcp.clone());
        if let Some(pool) = H1Pool::new(https, base) {
            return HttpClient::Http1(pool);
        }
    }
    let https = match protocol {
        Protocol::Auto => builder().enable_all_versions().wrap_connector(tcp),
        Protocol::Http1Only => builder().enable_http1().wrap_connector(tcp),
        Protocol::Http2Only => builder().enable_http2().wrap_connector(tcp),
    };
    HttpClient::Shared(Box::new(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(crate::h1::IDLE_TIMEOUT)
            .http2_only(protocol == Protocol::Http2Only)
            .build(https),
    ))
}

/// The TLS settings shared by all backends; the system roots are read once per process.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates found; HTTPS backends will fail verification \
                     (install the ca-certificates package)"
                );
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                // The ring provider supports the default versions; this cannot fail.
                .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}
