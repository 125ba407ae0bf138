//! End-to-end tests of the gateway over real TCP: a real server on 127.0.0.1:0 in front of
//! fake upstreams from tollgate-testkit. Each test asserts what the client received and what
//! the upstream was sent.

mod common;

mod auth;
mod catalogue;
mod dashboard;
mod edge;
mod failures;
mod headers;
mod implicit;
mod input;
mod limits;
mod metrics;
mod passthrough;
mod protocols;
mod proxy;
mod secrets;
mod streaming;
