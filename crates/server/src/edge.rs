//! The edge: the listening socket and the life of each client connection — HTTP/1.1 or h2c
//! told apart by peeking (HTTP/1.1 served by [`h1`], tollgate's own; h2c by hyper), then every
//! way one client could hold the gateway's resources
//! bounded: the time to send a request head, the time a connection may sit with no request,
//! HTTP/2 pings, the number of connections, and accept errors (out of descriptors) that back
//! off instead of spinning. Each connection's end is counted by reason.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::{Counter, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tollgate_core::config::ServerConfig;

use crate::body::Body;
use crate::intake::Closing;
use crate::Gateway;

mod h1;

/// Connections answered `503` at once (beyond `max_connections`); past this many, further
/// ones are closed without an answer, so refusing cannot itself use up descriptors.
const MAX_REFUSING: usize = 256;
/// Accept errors are logged at most this often; the ones in between are counted in the next.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// The first and the longest wait after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Binds `addr` (a host name resolves; the first address that binds wins) with a listen
/// backlog of `backlog`. tokio's own `TcpListener::bind` always asks for 1024 and std's for
/// 128; the kernel caps either at `net.core.somaxconn`.
pub async fn bind(addr: &str, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen_on(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the address resolves to nothing",
        )
    }))
}

fn listen_on(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std's `TcpListener::bind` does on Unix: a restart binds even while the previous
    // process's connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The `server.*` bounds a connection lives under, read when it is accepted (so a reload
/// applies to new connections).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
    max_connections: usize,
    /// HTTP/2 PING interval (`None`: no pings) and the wait for each acknowledgement.
    ping: Option<(Duration, Duration)>,
}

impl Limits {
    fn of(server: &ServerConfig) -> Self {
        Limits {
            header_read: Duration::from_secs(server.header_read_timeout),
            idle: Duration::from_secs(server.idle_timeout),
            max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
            ping: (server.http2_keepalive_interval > 0).then(|| {
                (
                    Duration::from_secs(server.http2_keepalive_interval),
                    Duration::from_secs(server.http2_keepalive_timeout),
                )
            }),
        }
    }
}

/// Why a connection ended: the `reason` label of `tollgate_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// The client closed it (or asked to, with `Connection: close`).
    Client,
    /// No request for `server.idle_timeout`.
    Idle,
    /// The request head (or the first bytes, for the protocol sniff) took longer than
    /// `server.header_read_timeout`.
    HeaderTimeout,
    /// A request body was too slow; its answer closed the connection.
    BodyTimeout,
    /// An answer left a body too large to read away and closed the connection.
    UnreadBody,
    /// An HTTP/2 PING went unanswered for `server.http2_keepalive_timeout`.
    PingTimeout,
    /// Graceful shutdown.
    Shutdown,
    /// A protocol or I/O error (a reset, a malformed request, a client gone mid-answer).
    Error,
    /// Refused with 503: `server.max_connections` were open.
    OverCapacity,
}

const REASONS: [Reason; 9] = [
    Reason::Client,
    Reason::Idle,
    Reason::HeaderTimeout,
    Reason::BodyTimeout,
    Reason::UnreadBody,
    Reason::PingTimeout,
    Reason::Shutdown,
    Reason::Error,
    Reason::OverCapacity,
];

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Client => "client",
            Reason::Idle => "idle",
            Reason::HeaderTimeout => "header_timeout",
            Reason::BodyTimeout => "body_timeout",
            Reason::UnreadBody => "unread_body",
            Reason::PingTimeout => "ping_timeout",
            Reason::Shutdown => "shutdown",
            Reason::Error => "error",
            Reason::OverCapacity => "over_capacity",
        }
    }
}

/// Metric handles, registered once per `serve`.
struct EdgeMetrics {
    open: Gauge,
    active: Gauge,
    closed: [Counter; REASONS.len()],
    accept_errors: Counter,
}

impl EdgeMetrics {
    fn new(metrics: &crate::Metrics) -> Self {
        EdgeMetrics {
            open: metrics.connections("open"),
            active: metrics.connections("active"),
            closed: REASONS.map(|r| metrics.connections_closed(r.label())),
            accept_errors: metrics.accept_errors(),
        }
    }

    fn closed(&self, reason: Reason) {
        // `REASONS` lists every variant in declaration order.
        self.closed[reason as usize].increment(1);
    }
}

/// Where the server is in its life, as seen by every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Serving,
    /// Finish what is in flight, take nothing new.
    Draining,
    /// The grace is over: close now.
    Abort,
}

/// What every connection of one `serve` shares.
pub(crate) struct Edge {
    gateway: Arc<Gateway>,
    metrics: EdgeMetrics,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// Connections being served (refused ones not included).
    open: AtomicUsize,
    /// 503 answers being written.
    refusing: AtomicUsize,
    /// Woken when `open` drops to zero.
    drained: Notify,
    stage: watch::Sender<Stage>,
}

impl Edge {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Edge> {
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // hyper's timer drives the PINGs (set per connection, from the current config).
        http2.timer(TokioTimer::new());
        let metrics = EdgeMetrics::new(gateway.metrics());
        Arc::new(Edge {
            gateway,
            metrics,
            http2,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            drained: Notify::new(),
            stage: watch::channel(Stage::Serving).0,
        })
    }

    /// Takes a new connection: served on a task of its own, or refused when
    /// `server.max_connections` are open.
    pub fn admit(self: &Arc<Self>, stream: TcpStream) {
        let limits = Limits::of(&self.gateway.runtime().config.server);
        // Only this (the accept loop) adds to `open`, so the check cannot be raced past.
        if self.open.load(Ordering::Acquire) >= limits.max_connections {
            self.refuse(stream);
            return;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.open.increment(1.0);
        let _ = stream.set_nodelay(true);
        let mut open = Open {
            edge: self.clone(),
            reason: Reason::Client,
        };
        tokio::spawn(async move {
            let edge = open.edge.clone();
            edge.serve_connection(stream, limits, &mut open).await;
        });
    }

    /// Answers `503` with `retry-after` without reading the request, then closes.
    fn refuse(self: &Arc<Self>, stream: TcpStream) {
        self.metrics.closed(Reason::OverCapacity);
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let edge = self.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), answer_over_capacity(stream)).await;
            edge.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Stops serving: connections finish what is in flight, for up to `grace`; then the rest
    /// are closed.
    pub async fn drain(&self, grace: Duration) {
        self.stage.send_replace(Stage::Draining);
        self.gateway.draining();
        let all_closed = || async {
            loop {
                // Created before the check: a wake-up between the two is not lost.
                let notified = self.drained.notified();
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::select! {
            () = all_closed() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(grace) => {
                // Streams still open get the door's error event, never a silent cut (SPEC §6);
                // a second lets those last events be written before the rest is closed.
                tracing::warn!(
                    open = self.open.load(Ordering::Acquire),
                    "shutdown grace elapsed: ending open streams with an error event"
                );
                self.gateway.close_streams();
                if tokio::time::timeout(Duration::from_secs(1), all_closed()).await.is_err() {
                    tracing::warn!(
                        open = self.open.load(Ordering::Acquire),
                        "closing remaining connections"
                    );
                }
                self.stage.send_replace(Stage::Abort);
            }
        }
    }

    async fn serve_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        limits: Limits,
        open: &mut Open,
    ) {
        let mut stage = self.stage.subscribe();
        if *stage.borrow_and_update() != Stage::Serving {
            open.reason = Reason::Shutdown;
            return;
        }
        // A connection that sends nothing is not served yet: the sniff has its own bound,
        // and shutdown closes it at once rather than wait for it.
        let protocol = tokio::select! {
            sniffed = tokio::time::timeout(limits.header_read, sniff(&stream)) => match sniffed {
                Ok(protocol) => protocol,
                Err(_) => {
                    open.reason = Reason::HeaderTimeout;
                    return;
                }
            },
            _ = stage.wait_for(|s| *s != Stage::Serving) => {
                open.reason = Reason::Shutdown;
                return;
            }
        };
        let conn = Arc::new(ConnState::new(protocol == Protocol::Http2));
        let ended = match protocol {
            Protocol::Http1 => {
                let shared = h1::Shared::new(stream, conn.clone());
                let service = |req: http::Request<h1::ReqBody>| self.answer(&conn, req);
                let served = h1::serve(shared.clone(), service);
                drive(served, |_| shared.shut(), &conn, limits, &stage, open)
                    .await
                    .map(|ended| ended.map_err(|e| e.to_string()))
            }
            Protocol::Http2 => {
                let io = TokioIo::new(Watched {
                    stream,
                    conn: conn.clone(),
                });
                let service = {
                    let (edge, conn) = (self.clone(), conn.clone());
                    hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let edge = edge.clone();
                        let conn = conn.clone();
                        async move { Ok::<_, Infallible>(edge.answer(&conn, req).await) }
                    })
                };
                let mut http2 = self.http2.clone();
                match limits.ping {
                    Some((interval, timeout)) => http2
                        .keep_alive_interval(interval)
                        .keep_alive_timeout(timeout),
                    None => http2.keep_alive_interval(None),
                };
                let served = http2.serve_connection(io, service);
                // Boxed: an HTTP/2 connection's state is far larger than an HTTP/1.1 one's,
                // and an async fn's state is as large as its largest arm, so unboxed every
                // HTTP/1.1 connection would carry it for its whole life.
                Box::pin(drive(
                    served,
                    |c| {
                        c.graceful_shutdown();
                        false
                    },
                    &conn,
                    limits,
                    &stage,
                    open,
                ))
                .await
                .map(|ended| {
                    ended.map_err(|e| {
                        if is_ping_timeout(&e) {
                            PING_TIMEOUT.to_string()
                        } else {
                            e.to_string()
                        }
                    })
                })
            }
        };
        match ended {
            // Ended as asked: by the client, or after an answer that closed it (noted).
            Some(Ok(())) if open.reason == Reason::Client => {
                open.reason = conn.noted().unwrap_or(Reason::Client);
            }
            Some(Ok(())) => {}
            Some(Err(e)) => {
                if e == PING_TIMEOUT {
                    open.reason = Reason::PingTimeout;
                } else if open.reason != Reason::Shutdown {
                    open.reason = Reason::Error;
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
            // Closed by tollgate, which set the reason.
            None => {}
        }
    }

    /// One request: counted as active from the call (the head is in) until its answer's body
    /// is dropped.
    fn answer<B>(
        self: &Arc<Self>,
        conn: &Arc<ConnState>,
        req: http::Request<B>,
    ) -> impl Future<Output = http::Response<Tracked>> + Send + 'static
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let active = Active::start(conn, &self.metrics.active);
        let edge = self.clone();
        async move {
            let resp = edge.gateway.handle(req).await;
            if let Some(closing) = resp.extensions().get::<Closing>() {
                active.conn.note(*closing);
            }
            resp.map(|body| Tracked {
                body,
                _active: active,
            })
        }
    }
}

/// How an HTTP/2 connection that ended on an unanswered PING is told from other errors.
const PING_TIMEOUT: &str = "keep-alive ping timed out";

/// Drives a connection under the edge's deadlines; `None` when tollgate closed it (the reason
/// is then in `open`). `shut` starts a graceful shutdown, and says whether the connection is
/// idle enough to close at once.
async fn drive<F>(
    served: F,
    shut: impl Fn(Pin<&mut F>) -> bool,
    conn: &ConnState,
    limits: Limits,
    stage: &watch::Receiver<Stage>,
    open: &mut Open,
) -> Option<F::Output>
where
    F: Future,
{
    let mut served = std::pin::pin!(served);
    // The stage's next change, one wait kept across the loop's turns: a `changed()` made
    // afresh on each turn (each wake-up of the connection, several per request) put a waiter
    // in the channel's list and took it out again every time.
    let mut next_stage = std::pin::pin!(stage_change(stage.clone()));
    let timer = tokio::time::sleep(Duration::ZERO);
    let mut timer = std::pin::pin!(timer);
    // Set once an idle HTTP/2 connection was told to go: the latest it may take to finish.
    let mut stop_by: Option<Instant> = None;
    // Whether the graceful shutdown was started (it is started once).
    let mut draining = false;
    loop {
        let now = Instant::now();
        let (at, _) = conn.deadline(limits, now);
        timer.as_mut().reset(stop_by.map_or(at, |s| s.min(at)));
        tokio::select! {
            ended = served.as_mut() => return Some(ended),
            () = timer.as_mut() => {
                let now = Instant::now();
                if stop_by.is_some_and(|s| now >= s) {
                    return None;
                }
                // Re-read: a request may have started since the deadline was set.
                let (at, reason) = conn.deadline(limits, now);
                let Some(reason) = reason.filter(|_| now >= at) else { continue };
                open.reason = reason;
                if !conn.http2 {
                    // HTTP/1.1 with no request in flight: nothing to finish, close now.
                    return None;
                }
                // HTTP/2: GOAWAY (once), and a bound on the goodbye.
                if stop_by.is_none() {
                    if !draining {
                        let _ = shut(served.as_mut());
                        draining = true;
                    }
                    stop_by = Some(now + limits.header_read);
                }
            }
            (stage, rx) = next_stage.as_mut() => {
                next_stage.set(stage_change(rx));
                match stage {
                    Stage::Serving => {}
                    Stage::Draining => {
                        open.reason = Reason::Shutdown;
                        if !draining {
                            draining = true;
                            if shut(served.as_mut()) {
                                return None;
                            }
                        }
                    }
                    Stage::Abort => {
                        open.reason = Reason::Shutdown;
                        return None;
                    }
                }
            }
        }
    }
}

/// The serving stage once it changes (`Abort` when the edge is gone), and the receiver, to
/// wait for the change after.
async fn stage_change(mut rx: watch::Receiver<Stage>) -> (Stage, watch::Receiver<Stage>) {
    let stage = match rx.changed().await {
        Ok(()) => *rx.borrow_and_update(),
        Err(_) => Stage::Abort,
    };
    (stage, rx)
}

/// Whether hyper ended an HTTP/2 connection because a keep-alive PING went unanswered (its
/// error type for that is private; its text is the only handle).
fn is_ping_timeout(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.to_string().contains("keep-alive timed out") {
            return true;
        }
        source = s.source();
    }
    false
}

/// One open connection, counted until dropped (also when its task is aborted or panics).
struct Open {
    edge: Arc<Edge>,
    reason: Reason,
}

impl Drop for Open {
    fn drop(&mut self) {
        let edge = &self.edge;
        edge.metrics.open.decrement(1.0);
        edge.metrics.closed(self.reason);
        if edge.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            edge.drained.notify_waiters();
        }
    }
}

/// Milliseconds since `ConnState::origin`; `NONE` for "not set".
const NONE: u64 = u64::MAX;

/// What the edge knows of one connection, updated by its socket (bytes read) and its
/// requests (started, answered).
struct ConnState {
    origin: Instant,
    http2: bool,
    /// Requests in flight: from the service call until the answer's body is dropped.
    active: AtomicUsize,
    /// When `active` last fell to zero (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (HTTP/1.1), since `idle_since`.
    head_at: AtomicU64,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// Set by an answer that closes the connection: why (a `Closing` as 1 + its index).
    noted: AtomicU8,
}

impl ConnState {
    fn new(http2: bool) -> Self {
        ConnState {
            origin: Instant::now(),
            http2,
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_at: AtomicU64::new(NONE),
            requests: AtomicU64::new(0),
            noted: AtomicU8::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    /// Bytes arrived. With no request in flight on HTTP/1.1 they begin the next head, and
    /// `header_read_timeout` runs from the first of them.
    fn read_some(&self) {
        if !self.http2
            && self.active.load(Ordering::Acquire) == 0
            && self.head_at.load(Ordering::Relaxed) == NONE
        {
            self.head_at.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the connection must close unless something happens first, and why; no reason
    /// while a request is in flight (its own limits apply then: body timeouts, request
    /// timeout), only a time to look again.
    fn deadline(&self, limits: Limits, now: Instant) -> (Instant, Option<Reason>) {
        if self.active.load(Ordering::Acquire) > 0 {
            return (now + limits.header_read.min(limits.idle), None);
        }
        let head_at = self.head_at.load(Ordering::Relaxed);
        if !self.http2 && head_at != NONE {
            return (
                self.at(head_at) + limits.header_read,
                Some(Reason::HeaderTimeout),
            );
        }
        let since = self.at(self.idle_since.load(Ordering::Relaxed));
        // A new HTTP/1.1 connection owes its first head within header_read_timeout.
        if !self.http2 && self.requests.load(Ordering::Relaxed) == 0 {
            return (since + limits.header_read, Some(Reason::HeaderTimeout));
        }
        (since + limits.idle, Some(Reason::Idle))
    }

    fn note(&self, closing: Closing) {
        let code = match closing {
            Closing::BodyTimeout => 1,
            Closing::UnreadBody => 2,
        };
        self.noted.store(code, Ordering::Relaxed);
    }

    fn noted(&self) -> Option<Reason> {
        match self.noted.load(Ordering::Relaxed) {
            1 => Some(Reason::BodyTimeout),
            2 => Some(Reason::UnreadBody),
            _ => None,
        }
    }
}

/// One request in flight on a connection: from the service call until its answer's body is
/// dropped (written out, or the client gone).
struct Active {
    conn: Arc<ConnState>,
    /// `tollgate_connections{state="active"}`.
    gauge: Gauge,
}

impl Active {
    fn start(conn: &Arc<ConnState>, gauge: &Gauge) -> Active {
        conn.requests.fetch_add(1, Ordering::Relaxed);
        if conn.active.fetch_add(1, Ordering::AcqRel) == 0 {
            gauge.increment(1.0);
        }
        Active {
            conn: conn.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let conn = &self.conn;
        // The next head's clock starts afresh; idle time starts now.
        conn.head_at.store(NONE, Ordering::Relaxed);
        conn.idle_since.store(conn.now_ms(), Ordering::Relaxed);
        if conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gauge.decrement(1.0);
        }
    }
}

/// An answer's body, carrying its request's [`Active`] until its connection is done with it.
struct Tracked {
    body: Body,
    _active: Active,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

/// The client socket of an HTTP/2 connection, telling its connection's state when bytes
/// arrive.
struct Watched {
    stream: TcpStream,
    conn: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The answer beyond `max_connections`: HTTP/1.1 (what nearly every client speaks first),
/// OpenAI-shaped, closing.
fn over_capacity_answer() -> &'static [u8] {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    ANSWER.get_or_init(|| {
        let body = tollgate_core::error::openai_error_body(
            "tollgate is serving its maximum number of connections (server.max_connections); retry shortly",
            "server_error",
            None,
            "too_many_connections",
        );
        let mut out = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    })
}

async fn answer_over_capacity(mut stream: TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A few hundred bytes always fit a new socket's send buffer.
    stream.write_all(over_capacity_answer()).await?;
    stream.shutdown().await?;
    // Closing with the request unread would send a reset, which can destroy the 503 before
    // the client reads it: read (and drop) what it sent, up to a bound, until it closes.
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024usize;
    while left > 0 {
        match stream.read(&mut sink).await? {
            0 => break,
            n => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// Accept errors: back off (10 ms doubling to 1 s), log at most every 10 s with a count of
/// the ones not logged.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
    failing: bool,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    pub fn succeeded(&mut self) {
        if self.failing {
            tracing::info!("accepting connections again");
            *self = AcceptBackoff::default();
        }
    }

    /// Records a failure; the wait before the next accept.
    pub fn failed(&mut self, e: &io::Error, edge: &Edge) -> Duration {
        edge.metrics.accept_errors.increment(1);
        self.failing = true;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_EVERY)
        {
            tracing::warn!(
                error = %e,
                not_logged = self.unlogged,
                open = edge.open.load(Ordering::Acquire),
                "accept failed; backing off (out of file descriptors? raise the open-file limit or lower server.max_connections)"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.delay = (self.delay * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
        self.delay
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells cleartext HTTP/2 (prior knowledge: the connection preface) from HTTP/1.1 by peeking
/// at the first bytes, so that the server reads them itself: a replayed prefix would make the
/// HTTP/1 read buffer grow to twice its size on every connection.
async fn sniff(stream: &TcpStream) -> Protocol {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            max_connections: 10,
            ping: None,
        }
    }

    #[test]
    fn reasons_are_listed_in_declaration_order() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let l = limits();
        let c = ConnState::new(false);
        let now = c.origin;
        // New HTTP/1.1 connection: its first head is due within header_read_timeout.
        assert_eq!(
            c.deadline(l, now),
            (c.origin + l.header_read, Some(Reason::HeaderTimeout))
        );
        // A request in flight: no reason to close, only a time to look again.
        let gauge = Gauge::noop();
        let conn = Arc::new(c);
        let active = Active::start(&conn, &gauge);
        conn.read_some();
        assert_eq!(conn.head_at.load(Ordering::Relaxed), NONE, "body bytes");
        assert_eq!(conn.deadline(l, now).1, None);
        drop(active);
        // Idle after an answer: idle_timeout.
        let (at, why) = conn.deadline(l, now);
        assert_eq!(why, Some(Reason::Idle));
        assert!(at >= conn.origin + l.idle);
        // The next head's first byte: header_read_timeout from it.
        conn.read_some();
        assert_eq!(conn.deadline(l, now).1, Some(Reason::HeaderTimeout));
        // HTTP/2: only idleness counts (its bytes are frames, pings included).
        let h2 = ConnState::new(true);
        h2.read_some();
        assert_eq!(
            h2.deadline(l, h2.origin),
            (h2.origin + l.idle, Some(Reason::Idle))
        );
    }

    #[test]
    fn the_over_capacity_answer_is_well_formed() {
        let text = std::str::from_utf8(over_capacity_answer()).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nretry-after: 1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
