//! tollgate's own HTTP/1.1 connection pool, for the backends that speak only HTTP/1.1: those
//! configured so (NIM), and every plain `http://` backend, where nothing negotiates HTTP/2.
//!
//! A connection is driven by the request that holds it. The exchange's future polls hyper's
//! connection itself while it waits for the response head, and the response body ([`UpBody`])
//! polls it again on every read; once the body has been read to its end the connection goes
//! back to the pool, ready for the next request. No task is spawned per connection or per
//! request, and an upstream read wakes the one task that writes its bytes to the client,
//! instead of the connection's task which then wakes the client's.
//!
//! Semantics, kept from hyper-util's pool that the other backends use:
//! - the most recently returned idle connection is used first;
//! - a connection idle for [`IDLE_TIMEOUT`] is closed, and at most [`MAX_IDLE`] are kept;
//!   a sweep every [`SWEEP_EVERY`] also closes those the backend closed while they were idle;
//! - a request refused by a pooled connection that had closed before the request left is sent
//!   again on a new connection (it never reached the backend);
//! - an answer whose body is dropped unread, or that says `connection: close`, closes its
//!   connection.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, TrySendError};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::client::{OutBody, SendError};

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An idle connection older than this is closed (hyper-util's pool uses the same 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per backend; past it the oldest is closed.
pub const MAX_IDLE: usize = 1024;
/// How often idle connections are looked at without traffic.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One HTTP/1.1 connection: the handle requests are sent with, and hyper's connection state
/// machine, polled by whoever holds the two.
struct Conn {
    sender: http1::SendRequest<OutBody>,
    /// `None` once the connection future has completed (closed or failed): it is dropped
    /// then, which answers a request still queued in it (one that never left) with itself,
    /// and the connection cannot be reused.
    driver: Option<http1::Connection<Io, OutBody>>,
}

impl Conn {
    /// Lets the connection read and write what it can; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(driver) = &mut self.driver {
            if Pin::new(driver).poll(cx).is_ready() {
                self.driver = None;
            }
        }
        self.driver.is_some()
    }

    /// Whether a request may be sent on it now. It is driven first: a connection the backend
    /// closed (or wrote to unasked) ends here, and after a body's end a connection may need
    /// one more turn to say it wants a request.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.sender.is_ready()
    }

    /// [`Conn::reusable`] without a turn when it already wants a request: a body that has just
    /// ended was driven to its end in the same turn.
    fn reusable_now(&mut self, cx: &mut Context<'_>) -> bool {
        (self.driver.is_some() && self.sender.is_ready()) || self.reusable(cx)
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

struct Shared {
    idle: Mutex<VecDeque<Idle>>,
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the backend: what a new connection is opened to.
    target: Uri,
    /// The `host` header every request carries (unless it has its own).
    host: HeaderValue,
    /// Whether the sweeping task runs.
    sweeping: AtomicBool,
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest idle connection, if any is younger than the idle timeout. It is not driven
    /// here (a turn of hyper's state machine for each request): one the backend closed while
    /// it was idle ends on the exchange's first turn, before the request leaves, and the request
    /// goes again on a new connection (`send_from`); the sweep drops the rest.
    fn take(&self) -> Option<Box<Conn>> {
        let Idle { conn, since } = self.idle().pop_back()?;
        if since.elapsed() >= IDLE_TIMEOUT {
            // The newest is too old, so is every other one.
            let stale = std::mem::take(&mut *self.idle());
            drop((conn, stale));
            return None;
        }
        Some(conn)
    }

    fn put(self: &Arc<Self>, conn: Box<Conn>) {
        let now = Instant::now();
        let closed = {
            let mut idle = self.idle();
            let mut closed = Vec::new();
            while idle
                .front()
                .is_some_and(|old| now.duration_since(old.since) >= IDLE_TIMEOUT)
                || idle.len() >= MAX_IDLE
            {
                closed.extend(idle.pop_front());
            }
            idle.push_back(Idle { conn, since: now });
            closed
        };
        drop(closed);
        if !self.sweeping.load(Ordering::Relaxed) {
            self.start_sweeping();
        }
    }

    /// Closes the idle connections that are too old or that the backend closed.
    fn sweep(&self) {
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        let held = std::mem::take(&mut *self.idle());
        let mut kept = VecDeque::with_capacity(held.len());
        for mut idle in held {
            // An idle connection only reads: a close (or stray bytes) ends it.
            if now.duration_since(idle.since) < IDLE_TIMEOUT && idle.conn.reusable(&mut cx) {
                kept.push_back(idle);
            }
        }
        let mut idle = self.idle();
        // Connections returned while the lock was free are newer: they stay at the back.
        kept.append(&mut idle);
        let over = kept.len().saturating_sub(MAX_IDLE);
        let closed: Vec<Idle> = kept.drain(..over).collect();
        *idle = kept;
        drop(idle);
        drop(closed);
    }

    fn start_sweeping(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let sweeper = Sweeper(Arc::downgrade(self));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                match sweeper.0.upgrade() {
                    // Outside the cooperative budget: past it, a closed connection's read
                    // would say Pending, and it would be kept.
                    Some(shared) => tokio::task::unconstrained(async { shared.sweep() }).await,
                    // The backend is gone, and with it its idle connections.
                    None => return,
                }
            }
        });
    }
}

/// The sweeping task's hold on its pool. When the task ends, or its runtime drops it, the
/// next connection returned starts another.
struct Sweeper(Weak<Shared>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.sweeping.store(false, Ordering::Release);
        }
    }
}

/// A backend's HTTP/1.1 connections.
pub struct H1Pool {
    shared: Arc<Shared>,
}

impl H1Pool {
    /// A pool for `base` (`scheme://authority/…`), connecting through `connector`; `None` when
    /// `base` names no host.
    pub fn new(connector: HttpsConnector<HttpConnector>, base: &str) -> Option<H1Pool> {
        let base: Uri = base.parse().ok()?;
        let scheme = base.scheme()?.clone();
        let authority = base.authority()?.clone();
        let default_port = if scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        // Host and port only: never the user information an `api_url` may carry.
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let target = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .ok()?;
        Some(H1Pool {
            shared: Arc::new(Shared {
                idle: Mutex::new(VecDeque::new()),
                connector,
                target,
                host: HeaderValue::from_str(&host).ok()?,
                sweeping: AtomicBool::new(false),
            }),
        })
    }

    /// Idle connections held now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.idle().len()
    }

    /// Sends `req` (an absolute URI below the backend's base) and resolves with the response
    /// head; the body drives the connection as it is read.
    pub async fn send(&self, mut req: Request<OutBody>) -> Result<Response<UpBody>, SendError> {
        origin_form(req.uri_mut());
        // This pool speaks HTTP/1.1 only (hyper's HTTP/1 encoder refuses other versions).
        if req.version() != http::Version::HTTP_10 {
            *req.version_mut() = http::Version::HTTP_11;
        }
        req.headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.shared.host.clone());
        let pooled = self.shared.take();
        self.send_from(pooled, req).await
    }

    /// Sends on `pooled` (a connection from the pool) or a new connection.
    async fn send_from(
        &self,
        mut pooled: Option<Box<Conn>>,
        mut req: Request<OutBody>,
    ) -> Result<Response<UpBody>, SendError> {
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match exchange(&mut conn, req).await {
                Ok(resp) => {
                    let lease = Lease {
                        conn,
                        pool: self.shared.clone(),
                    };
                    return Ok(resp.map(|incoming| UpBody {
                        incoming: Some(incoming),
                        lease: Some(lease),
                    }));
                }
                Err(mut refused) => match refused.take_message() {
                    // The pooled connection had closed before the request left: it never
                    // reached the backend, so it goes again on a new connection.
                    Some(back) if reused => req = back,
                    _ => return Err(SendError::Exchange(refused.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        use tower_service::Service as _;
        let mut connector = self.shared.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.shared.target.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Exchange)?;
        Ok(Box::new(Conn {
            sender,
            driver: Some(driver),
        }))
    }
}

/// Sends on `conn` and drives it until the response head is in.
async fn exchange(
    conn: &mut Conn,
    req: Request<OutBody>,
) -> Result<Response<Incoming>, TrySendError<Request<OutBody>>> {
    // Outside tokio's cooperative budget: with the budget spent, the answer's channel would
    // say Pending even with the answer in it, and defer the no-op waker below, waking nothing.
    let mut answer = pin!(tokio::task::unconstrained(
        conn.sender.try_send_request(req)
    ));
    poll_fn(|cx| {
        conn.drive(cx);
        // Only the connection, driven here, can complete the answer: it needs no waker of
        // its own (a real one would wake this task once more for nothing).
        answer
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    })
    .await
}

/// `http://host/path?q` → `/path?q`, as HTTP/1.1 sends it to an origin server.
fn origin_form(uri: &mut Uri) {
    let Some(path) = uri.path_and_query() else {
        *uri = Uri::from_static("/");
        return;
    };
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path.clone());
    *uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
}

struct Lease {
    conn: Box<Conn>,
    pool: Arc<Shared>,
}

/// A response body from an upstream. On tollgate's own pool it carries the connection, drives
/// it as it is read, and returns it to the pool at its end.
pub struct UpBody {
    /// `None` only while it is dropped.
    incoming: Option<Incoming>,
    lease: Option<Lease>,
}

impl std::fmt::Debug for UpBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpBody")
            .field("pooled", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

impl UpBody {
    /// A body whose connection is driven elsewhere (hyper-util's pool).
    pub fn plain(incoming: Incoming) -> UpBody {
        UpBody {
            incoming: Some(incoming),
            lease: None,
        }
    }

    /// Back to the pool, if the connection can take another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut lease) = self.lease.take() {
            if lease.conn.reusable_now(cx) {
                lease.pool.put(lease.conn);
            }
        }
    }
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(incoming) = &mut this.incoming else {
            return Poll::Ready(None);
        };
        let Some(lease) = &mut this.lease else {
            return Pin::new(incoming).poll_frame(cx);
        };
        if !lease.conn.drive(cx) {
            // Closed: what it read is in the body already.
            this.lease = None;
            return Pin::new(incoming).poll_frame(cx);
        }
        // Only the connection, just driven with this task's waker, feeds the body.
        let frame = Pin::new(incoming).poll_frame(&mut Context::from_waker(Waker::noop()));
        match frame {
            Poll::Ready(None) => {
                this.release(cx);
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for UpBody {
    fn drop(&mut self) {
        if self.lease.is_none() {
            return;
        }
        // Not read to its end: a stream's reader stops at `[DONE]`, before the chunked body's
        // last, empty chunk. Without its reader hyper reads what is left of the body if that
        // is already here, and then the connection is good for another request; if it is not
        // (a client that went away mid-stream), the connection closes and the backend sees
        // the cancel.
        drop(self.incoming.take());
        self.release(&mut Context::from_waker(Waker::noop()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// How the raw server ends each answer.
    #[derive(Clone, Copy, PartialEq)]
    enum After {
        /// Keeps the connection open.
        Stay,
        /// Says `connection: close` and closes.
        SayClose,
        /// Closes without saying so when told to (as a server's idle timeout does).
        CloseWhenTold,
        /// Sends a head and part of a chunked body, and keeps the connection open.
        Unfinished,
        /// Sends a whole chunked body.
        Chunked,
    }

    /// A bare HTTP/1.1 server on 127.0.0.1: every request's bytes go to `requests`, each
    /// closed connection to `closed`.
    struct Raw {
        base: String,
        accepted: Arc<AtomicUsize>,
        requests: mpsc::UnboundedReceiver<String>,
        closed: mpsc::UnboundedReceiver<()>,
        /// Tells a `CloseWhenTold` connection to close.
        close: Arc<tokio::sync::Notify>,
    }

    async fn raw(after: After) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = accepted.clone();
        let close = Arc::new(tokio::sync::Notify::new());
        let told = close.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (req_tx, closed_tx) = (req_tx.clone(), closed_tx.clone());
                let close = told.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: its head, then `content-length` bytes.
                        let mut chunk = [0u8; 4096];
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    let _ = closed_tx.send(());
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let _ = req_tx
                            .send(String::from_utf8_lossy(&buf[..head_end + len]).to_string());
                        buf.drain(..head_end + len);
                        let answer: &[u8] = match after {
                            After::Stay | After::CloseWhenTold => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                            After::SayClose => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                            After::Unfinished => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n",
                            After::Chunked => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                        };
                        let _ = sock.write_all(answer).await;
                        if after == After::CloseWhenTold {
                            close.notified().await;
                        }
                        if matches!(after, After::SayClose | After::CloseWhenTold) {
                            drop(sock);
                            let _ = closed_tx.send(());
                            return;
                        }
                    }
                });
            }
        });
        Raw {
            base,
            accepted,
            requests,
            closed,
            close,
        }
    }

    fn pool(base: &str) -> H1Pool {
        let crate::client::HttpClient::Http1(pool) = crate::client::build_client(
            crate::client::Protocol::Auto,
            Duration::from_secs(2),
            base,
        ) else {
            panic!("a plain http:// backend gets tollgate's pool");
        };
        pool
    }

    fn post(base: &str, body: &'static str) -> Request<OutBody> {
        let mut req = Request::new(OutBody::from(Bytes::from_static(body.as_bytes())));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{base}/chat/completions?x=1").parse().expect("uri");
        req
    }

    async fn read(resp: Response<UpBody>) -> (u16, Bytes) {
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    #[tokio::test]
    async fn requests_share_one_connection_and_go_in_origin_form() {
        let mut up = raw(After::Stay).await;
        let pool = pool(&up.base);
        for i in 0..3 {
            let (status, body) = read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
            assert_eq!((status, &body[..]), (200, &b"ok"[..]), "request {i}");
            assert_eq!(pool.idle_count(), 1, "back in the pool after request {i}");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "one connection");
        let port = up
            .base
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/v1");
        for _ in 0..3 {
            let sent = up.requests.recv().await.expect("request");
            assert!(
                sent.starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"),
                "{sent}"
            );
            assert!(
                sent.contains(&format!("host: 127.0.0.1:{port}\r\n")),
                "{sent}"
            );
            assert!(
                sent.contains("content-length: 2\r\n") && sent.ends_with("\r\n\r\n{}"),
                "{sent}"
            );
        }
    }

    #[tokio::test]
    async fn a_host_header_of_the_request_is_kept() {
        let mut up = raw(After::Stay).await;
        let pool = pool(&up.base);
        let mut req = post(&up.base, "{}");
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("example.org"));
        read(pool.send(req).await.expect("sent")).await;
        let sent = up.requests.recv().await.expect("request");
        assert_eq!(sent.matches("host:").count(), 1, "{sent}");
        assert!(sent.contains("host: example.org\r\n"), "{sent}");
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_not_used() {
        let mut up = raw(After::CloseWhenTold).await;
        let pool = pool(&up.base);
        for i in 0..3 {
            let (status, _) = read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
            assert_eq!(status, 200, "request {i}");
            assert_eq!(pool.idle_count(), 1);
            up.close.notify_one();
            // The server has closed its end: the FIN is in the pooled socket by now.
            up.closed.recv().await.expect("closed");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
        // Each request after the first met a closed connection and went on a new one; the
        // backend saw each of them once.
        for _ in 0..3 {
            up.requests.recv().await.expect("a request");
        }
        assert!(up.requests.try_recv().is_err(), "no request sent twice");
        // The sweep closes the last one, which nobody asked for again.
        assert_eq!(pool.idle_count(), 1);
        pool.shared.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_request_refused_by_a_closed_pooled_connection_goes_again() {
        let mut up = raw(After::CloseWhenTold).await;
        let pool = pool(&up.base);
        read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
        up.close.notify_one();
        up.closed.recv().await.expect("closed");
        // Taken without the checkout's look, as when the close lands after it.
        let stale = pool.shared.idle().pop_back().expect("idle").conn;
        let resp = pool
            .send_from(Some(stale), post(&up.base, "{\"n\":2}"))
            .await
            .expect("sent again on a new connection");
        assert_eq!(read(resp).await.0, 200);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        up.requests.recv().await.expect("first");
        let second = up.requests.recv().await.expect("second");
        assert!(second.ends_with("{\"n\":2}"), "{second}");
        assert!(up.requests.try_recv().is_err(), "sent once to the backend");
    }

    #[tokio::test]
    async fn connection_close_answers_are_not_kept() {
        let mut up = raw(After::SayClose).await;
        let pool = pool(&up.base);
        for _ in 0..2 {
            assert_eq!(
                read(pool.send(post(&up.base, "{}")).await.expect("sent"))
                    .await
                    .0,
                200
            );
            assert_eq!(pool.idle_count(), 0);
            up.closed.recv().await.expect("closed");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let mut up = raw(After::Unfinished).await;
        let pool = pool(&up.base);
        let resp = pool.send(post(&up.base, "{}")).await.expect("sent");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok().as_deref(), Some(&b"ok"[..]));
        drop(body);
        assert_eq!(pool.idle_count(), 0);
        tokio::time::timeout(Duration::from_secs(5), up.closed.recv())
            .await
            .expect("the backend sees the connection close");
    }

    #[tokio::test]
    async fn a_body_whose_rest_is_here_keeps_its_connection_when_dropped() {
        let up = raw(After::Chunked).await;
        let pool = pool(&up.base);
        for i in 0..3 {
            let resp = pool.send(post(&up.base, "{}")).await.expect("sent");
            let mut body = resp.into_body();
            let first = body.frame().await.expect("a frame").expect("data");
            assert_eq!(first.into_data().ok().as_deref(), Some(&b"ok"[..]));
            // As a stream's reader after `[DONE]`: the last chunk is not asked for.
            drop(body);
            assert_eq!(pool.idle_count(), 1, "request {i}");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    /// Spends `burn` units of tokio's cooperative budget before each poll of `inner`.
    struct Burn<F> {
        burn: usize,
        inner: Pin<Box<F>>,
    }

    impl<F: Future> Future for Burn<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            for _ in 0..self.burn {
                if pin!(tokio::task::consume_budget()).poll(cx).is_pending() {
                    break; // spent already
                }
            }
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn a_head_read_on_the_last_unit_of_budget_is_not_lost() {
        // The head and the first chunk of an open body arrive in one read: the connection
        // then waits for the body's reader, and only the answer can move things on.
        let up = raw(After::Unfinished).await;
        let pool = pool(&up.base);
        for burn in 120..128 {
            let send = pool.send(post(&up.base, "{}"));
            let started = Instant::now();
            // A lost wake-up shows as the whole timeout: the timer's poll takes no budget,
            // and the timeout polls the answer once more before it gives up.
            let resp = tokio::time::timeout(
                Duration::from_secs(3),
                Burn {
                    burn,
                    inner: Box::pin(send),
                },
            )
            .await
            .expect("within the timeout")
            .expect("sent");
            assert_eq!(resp.status(), 200);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the head waited {:?} with {burn} units spent",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn idle_connections_past_the_idle_timeout_are_closed() {
        let up = raw(After::Stay).await;
        let pool = pool(&up.base);
        read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
        let old = Instant::now()
            .checked_sub(IDLE_TIMEOUT)
            .expect("an old instant");
        pool.shared.idle().back_mut().expect("idle").since = old;
        read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            2,
            "the stale one was not used"
        );
        pool.shared.idle().back_mut().expect("idle").since = old;
        pool.shared.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    /// A self-signed certificate for `localhost` and 127.0.0.1, valid until 2126, and its key:
    /// made for this test with `openssl req -x509 -newkey ec` (see `testdata/tls/README.md`).
    const TEST_CERT: &[u8] = include_bytes!("../testdata/tls/cert.der");
    const TEST_KEY: &[u8] = include_bytes!("../testdata/tls/key.der");

    #[tokio::test]
    async fn https_backends_are_spoken_to_over_tls_in_http1_on_one_connection() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::io::{Read as _, Write as _};
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(TEST_CERT.to_vec())],
                PrivateKeyDer::try_from(TEST_KEY.to_vec()).expect("a PKCS#8 key"),
            )
            .expect("the test certificate");
        // The server would take HTTP/2 if it were offered.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = Arc::new(server);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (seen_tx, seen) = std::sync::mpsc::channel::<(Option<Vec<u8>>, String)>();
        // The connection stays open until the test is done with it.
        let (done, hold) = std::sync::mpsc::channel::<()>();
        // One connection, served on a plain thread with rustls' blocking stream.
        std::thread::spawn(move || {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let conn = rustls::ServerConnection::new(server).expect("a TLS connection");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            for _ in 0..2 {
                let end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                // Each request has a two-byte body.
                while buf.len() < end + 2 {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf[..end + 2]).to_string();
                buf.drain(..end + 2);
                let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
                let _ = seen_tx.send((alpn, head));
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntls");
                let _ = tls.flush();
            }
            let _ = hold.recv();
        });

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(TEST_CERT.to_vec()))
            .expect("the test certificate as a root");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // As `build_client` makes it, with the test's root instead of the system's.
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let base = format!("https://localhost:{port}/v1");
        let pool = H1Pool::new(connector, &base).expect("a pool");
        for _ in 0..2 {
            let (status, body) = read(pool.send(post(&base, "{}")).await.expect("sent")).await;
            assert_eq!((status, &body[..]), (200, &b"tls"[..]));
        }
        assert_eq!(pool.idle_count(), 1, "one TLS connection, kept");
        for _ in 0..2 {
            let (alpn, head) = seen.recv().expect("a request over TLS");
            // hyper-rustls offers no ALPN at all for HTTP/1.1 only: the server cannot pick h2.
            assert_eq!(alpn, None, "no protocol negotiated");
            assert!(
                head.starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(
                head.contains(&format!("host: localhost:{port}\r\n")),
                "{head}"
            );
        }
        drop(done);
    }

    #[tokio::test]
    async fn no_listener_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let base = format!("http://127.0.0.1:{port}/v1");
        let e = pool(&base)
            .send(post(&base, "{}"))
            .await
            .expect_err("nothing listens");
        assert!(matches!(e, SendError::Connect(_)), "{e:?}");
        assert!(
            e.describe().starts_with("could not connect: "),
            "{}",
            e.describe()
        );
        assert!(
            !e.describe().contains("127.0.0.1"),
            "no address: {}",
            e.describe()
        );
        assert!(!e.is_timeout());
    }

    #[test]
    fn only_http1_backends_get_this_pool() {
        use crate::client::{build_client, HttpClient, Protocol};
        let t = Duration::from_secs(1);
        let own = |p, base| matches!(build_client(p, t, base), HttpClient::Http1(_));
        assert!(own(Protocol::Auto, "http://127.0.0.1:8000/v1"));
        assert!(own(Protocol::Http1Only, "http://nim:8000/v1"));
        assert!(own(
            Protocol::Http1Only,
            "https://integrate.api.nvidia.com/v1"
        ));
        assert!(!own(Protocol::Auto, "https://api.openai.com/v1"));
        // The URI parser reads the scheme without regard to case, and so does this choice.
        assert!(!own(Protocol::Auto, "HTTPS://api.openai.com/v1"));
        assert!(!own(Protocol::Http2Only, "http://127.0.0.1:8000/v1"));
    }

    #[test]
    fn the_host_header_leaves_out_a_default_port() {
        let host = |base| {
            H1Pool::new(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(
                        rustls::ClientConfig::builder_with_provider(Arc::new(
                            rustls::crypto::ring::default_provider(),
                        ))
                        .with_safe_default_protocol_versions()
                        .expect("versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                    )
                    .https_or_http()
                    .enable_http1()
                    .build(),
                base,
            )
            .expect("a pool")
            .shared
            .host
            .clone()
        };
        assert_eq!(host("http://nim:80/v1"), "nim");
        assert_eq!(host("http://nim:8000/v1"), "nim:8000");
        assert_eq!(
            host("https://integrate.api.nvidia.com/v1"),
            "integrate.api.nvidia.com"
        );
        assert_eq!(host("https://h:443"), "h");
        assert_eq!(host("https://h:8443/x"), "h:8443");
        // Never the user information.
        assert_eq!(host("http://u:tok@nim:8000/v1"), "nim:8000");
        assert_eq!(host("http://u:tok@nim/v1"), "nim");
    }
}
