//! The `Connector` trait every backend type implements, and what it answers with.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;

use crate::error::GatewayError;
use crate::request::{Protocol, Request};
use crate::sse::SseEvent;

/// Upstream SSE events in arrival order. An `Err` ends the stream: the upstream broke it.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, GatewayError>> + Send>>;

/// A body that passes through untouched, either way (a pass-through request's, and its answer).
pub type ForwardBody = http_body_util::combinators::UnsyncBoxBody<
    Bytes,
    Box<dyn std::error::Error + Send + Sync + 'static>,
>;

/// A pass-through request (`/v1/providers/{backend}/-/{path}`): sent to the backend as it
/// came, with the backend's own auth and headers; nothing in it is parsed.
pub struct Forward {
    pub method: http::Method,
    /// The path below the backend's `api_url`, with its query: already checked to stay below
    /// it (no `..`, no encoded slash, no absolute URL).
    pub path_and_query: String,
    /// The client's headers, without hop-by-hop headers and without the client's own key.
    pub headers: HeaderMap,
    pub body: ForwardBody,
    /// The request id, sent upstream as `x-request-id`.
    pub request_id: String,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .finish()
    }
}

/// A successful upstream answer, available as soon as its status and headers arrived.
pub struct Reply {
    /// Upstream response headers that passed the connector's allow-list.
    pub headers: HeaderMap,
    pub body: ReplyBody,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.body {
            ReplyBody::Complete(_) => "complete",
            ReplyBody::Events(_) => "events",
        };
        f.debug_struct("Reply").field("body", &kind).finish()
    }
}

pub enum ReplyBody {
    /// A whole JSON body (non-streaming requests).
    Complete(Bytes),
    /// An SSE stream, split into events but otherwise untouched.
    Events(EventStream),
}

/// A backend: something that can answer OpenAI-shaped requests.
///
/// Implementations are built by a factory registered under their type name (see
/// [`crate::registry::Registry`]) and shared by every request of a runtime snapshot.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Sends one request for `request.endpoint`. Resolves once the upstream's status and
    /// headers are in: an error status becomes `Err` (OpenAI-shaped, with that status);
    /// a stream's events then arrive through [`ReplyBody::Events`]. Dropping the reply or
    /// its stream cancels the upstream request.
    async fn send(&self, request: Request) -> Result<Reply, GatewayError>;

    /// The models this backend serves, as the upstream names them (no `backend:` prefix).
    async fn list_models(&self) -> Result<Vec<String>, GatewayError>;

    /// Sends a pass-through request and resolves with the backend's answer as it arrives —
    /// any status (an upstream 404 is the answer, not a failure), its headers through the
    /// connector's allow-list, its body untouched. `Err` only when no answer came (connect,
    /// timeout). Backends without one refuse it.
    async fn forward(&self, request: Forward) -> Result<http::Response<ForwardBody>, GatewayError> {
        Err(GatewayError::invalid(format!(
            "this backend takes no pass-through requests ({} {})",
            request.method, request.path_and_query
        )))
    }

    /// Whether the backend speaks `protocol` natively: a request on that door is then sent
    /// untouched. OpenAI-compatible backends speak Chat.
    fn speaks(&self, protocol: Protocol) -> bool {
        protocol == Protocol::Chat
    }

    /// Why this backend cannot take requests right now, if it cannot.
    fn unusable_reason(&self) -> Option<String> {
        None
    }
}
