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
mod intake;
mod limits;
mod mask;
mod metrics;
mod outcome;
mod relay;
mod request_id;
mod retry;
pub mod runtime;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use app::{error_response, Gateway};
pub use body::Body;
pub use metrics::Metrics;
pub use runtime::Runtime;

/// Serves HTTP/1.1 and cleartext HTTP/2 on `listener` until `shutdown` resolves, then stops
/// accepting and lets open connections finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builders = Arc::new((
        hyper::server::conn::http1::Builder::new(),
        hyper::server::conn::http2::Builder::new(TokioExecutor::new()),
    ));
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
    let graceful = GracefulShutdown::new();
    // Connections still being sniffed (nothing sent yet) are not hyper's yet: this tells them
    // to close when shutdown begins, so a silent client cannot hold up the drain.
    let (closing, closing_seen) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let service = hyper::service::service_fn(move |req| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(req).await) }
                });
                let (builders, watcher) = (builders.clone(), graceful.watcher());
                let mut closing = closing_seen.clone();
                tokio::spawn(async move {
                    let protocol = tokio::select! {
                        protocol = sniff(&stream) => protocol,
                        _ = closing.wait_for(|closing| *closing) => return,
                    };
                    let ended = match protocol {
                        Protocol::Http2 => {
                            let conn = builders.1.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Protocol::Http1 => {
                            let conn = builders.0.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = closing.send(true);
    upkeep.abort();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining open connections"
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace elapsed: ending open streams with an error event");
            gateway.close_streams();
            // Long enough for those last events to be written; then the rest is cut.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut drained).await;
        }
    }
}

enum Protocol {
    Http1,
    Http2,
}

/// Tells cleartext HTTP/2 (prior knowledge: the connection preface) from HTTP/1.1 by peeking
/// at the first bytes, so that hyper reads them itself: a replayed prefix would make the
/// HTTP/1 read buffer grow to twice its size on every connection.
async fn sniff(stream: &tokio::net::TcpStream) -> Protocol {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    // A preface split across packets is rare; wait for the rest a little at a time (peeking
    // does not consume, so the socket stays readable), up to about a second.
    for _ in 0..200 {
        let n = match stream.peek(&mut buf).await {
            Ok(n) => n,
            // Errors and end of stream are HTTP/1's to report.
            Err(_) => return Protocol::Http1,
        };
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Protocol::Http1;
        }
        if n == PREFACE.len() {
            return Protocol::Http2;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Protocol::Http1
}

/// A gateway serving on a background task: for running tollgate inside another program, and
/// for tests. Dropping it stops accepting and gives open requests a second to finish.
pub struct Serving {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Serving {
    /// Binds `addr` (`127.0.0.1:0` picks a free port) and serves `gateway` there.
    pub async fn start(gateway: Arc<Gateway>, addr: &str) -> std::io::Result<Serving> {
        let listener = TcpListener::bind(addr).await?;
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
