//! tollgate-server: the HTTP side of the gateway — endpoints, client auth, the streaming
//! relay with keepalives, and the live runtime that reloads swap whole.

mod app;
mod auth;
mod body;
mod breaker;
mod catalogue;
mod dashboard;
mod dispatch;
mod door;
mod edge;
mod intake;
mod kept_headers;
mod limits;
mod mask;
mod metrics;
mod outcome;
mod passthrough;
mod relay;
mod request_id;
mod retry;
pub mod runtime;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use app::{error_response, Gateway};
pub use body::Body;
pub use edge::bind;
pub use metrics::Metrics;
pub use outcome::{set_line_writer, RequestLine};
pub use runtime::Runtime;

/// Serves HTTP/1.1 and cleartext HTTP/2 on `listener` until `shutdown` resolves, then stops
/// accepting and lets open connections finish for up to `grace`. Each connection lives under
/// the `server.*` bounds of the configuration current when it was accepted (see `edge`).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    // Histogram samples are buffered until folded; fold them even when nobody scrapes.
    let upkeep = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                gateway.metrics().upkeep();
            }
        })
    };
    let flush_gateway = gateway.clone();
    let edge = edge::Edge::new(gateway);
    let mut backoff = edge::AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backoff.succeeded();
                    edge.admit(stream);
                }
                // Out of file descriptors and the like: the pending connection stays in the
                // backlog, so accepting again at once would spin. Wait, then try again.
                Err(e) => tokio::time::sleep(backoff.failed(&e, &edge)).await,
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    upkeep.abort();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining open connections"
    );
    edge.drain(grace).await;
    // Settlements still queued for the limits store (Redis) are written before exit: a clean
    // shutdown loses no usage.
    let store = flush_gateway.runtime().limiter.store().clone();
    if tokio::time::timeout(Duration::from_secs(2), store.flush())
        .await
        .is_err()
    {
        tracing::warn!("the limits store did not take every settlement before shutdown");
    }
}

/// A gateway serving on a background task: for running tollgate inside another program, and
/// for tests. Dropping it stops accepting and gives open requests a second to finish.
pub struct Serving {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Serving {
    /// Binds `addr` (`127.0.0.1:0` picks a free port) with the configuration's
    /// `server.backlog` and serves `gateway` there.
    pub async fn start(gateway: Arc<Gateway>, addr: &str) -> std::io::Result<Serving> {
        let backlog = gateway.runtime().config.server.backlog;
        let listener = bind(addr, backlog).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        tokio::spawn(serve(listener, gateway, shutdown, Duration::from_secs(1)));
        Ok(Serving {
            addr,
            stop: Some(stop),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
