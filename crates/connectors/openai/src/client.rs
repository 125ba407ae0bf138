//! The outbound HTTP client: one pooled hyper-util client per backend instance, over rustls
//! with the `ring` provider and the system's root certificates.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The client every OpenAI-shaped connector sends with.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, OutBody>;

/// A request body sent upstream: whole (every routed request, built by tollgate), or streamed
/// from the client as it arrives (a pass-through request, never read by tollgate).
pub enum OutBody {
    Full(Full<Bytes>),
    Stream(tollgate_core::ForwardBody),
}

impl From<Bytes> for OutBody {
    fn from(bytes: Bytes) -> Self {
        OutBody::Full(Full::new(bytes))
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
            OutBody::Full(full) => std::pin::Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            OutBody::Stream(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Full(full) => full.is_end_stream(),
            OutBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            OutBody::Full(full) => full.size_hint(),
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

/// Builds a client with its own connection pool.
pub fn build_client(protocol: Protocol, connect_timeout: Duration) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_keepalive(Some(Duration::from_secs(60)));

    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls_config()).clone())
        .https_or_http();
    let https = match protocol {
        Protocol::Auto => builder.enable_all_versions().wrap_connector(tcp),
        Protocol::Http1Only => builder.enable_http1().wrap_connector(tcp),
        Protocol::Http2Only => builder.enable_http2().wrap_connector(tcp),
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(protocol == Protocol::Http2Only)
        .build(https)
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
