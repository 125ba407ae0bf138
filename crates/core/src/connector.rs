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
