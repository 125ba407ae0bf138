//! tollgate-core: what every part of the gateway shares — the [`Connector`] trait and its
//! [`Registry`], wire types that keep unknown fields, routing, errors, the SSE codec and the
//! configuration schema. No HTTP server and no connector live here.

pub mod auth_header;
pub mod config;
pub mod connector;
pub mod decimal;
pub mod env;
pub mod error;
pub mod http1;
pub mod json;
pub mod keys;
pub mod pattern;
pub mod registry;
pub mod request;
pub mod router;
pub mod secret;
pub mod sse;
pub mod usage;

pub use auth_header::AuthHeader;
pub use config::{Config, Problem};
pub use connector::{Connector, EventStream, Forward, ForwardBody, Reply, ReplyBody};
pub use decimal::Decimal;
pub use env::Env;
pub use error::GatewayError;
pub use json::JsonObject;
pub use registry::{BuildContext, Registry, TypeInfo};
pub use request::{ClientRequest, Endpoint, Protocol, Request};
pub use router::{Router, Target};
pub use secret::Secret;
pub use sse::{EventTooLarge, SseEvent, SseSplitter, MAX_EVENT_BYTES};
pub use usage::{find_usage, places, Marks, Peek, Usage};
