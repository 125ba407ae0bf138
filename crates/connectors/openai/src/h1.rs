//! tollgate's own HTTP/1.1 connection pool, for the backends that speak only HTTP/1.1: those
//! configured so (NIM), and every plain `http://` backend, where nothing negotiates HTTP/2.
//!
//! A connection is read and written by the request that holds it, in HTTP/1.1 of the pool's
//! own ([`crate::wire`]). The exchange writes the request (head and a whole body in one write)
//! and reads until the response head is in; the response body ([`UpBody`]) reads the rest as
//! it is read itself, and at its end the connection goes back to the pool, ready for the next
//! request. No task is spawned per connection or per request, no channel stands between the
//! socket and the body, and an upstream read wakes the one task that writes its bytes to the
//! client.
//!
//! Semantics, kept from hyper-util's pool that the other backends use:
//! - the most recently returned idle connection is used first;
//! - a connection idle for [`IDLE_TIMEOUT`] is closed, and at most [`MAX_IDLE`] are kept;
//!   a sweep every [`SWEEP_EVERY`] also closes those the backend closed while they were idle;
//! - a pooled connection the backend closed while it was idle is not used (the check costs no
//!   system call); a request refused before a byte of it left is sent again, once, on a new
//!   connection (it never reached the backend);
//! - a pass-through upload the backend answers before its end: after a success that keeps
//!   the connection, the rest is sent first; after an error or a close, it is not sent, and
//!   the connection closes after the answer;
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
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::client::{OutBody, SendError};
use crate::wire::{self, WireError};

/// The socket, in tokio's I/O traits (the connector hands out hyper's).
type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// An idle connection older than this is closed (hyper-util's pool uses the same 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per backend; past it the oldest is closed.
pub const MAX_IDLE: usize = 1024;
/// How often idle connections are looked at without traffic.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Bytes a connection reads at a time at first.
const READ_BUF: usize = 8 * 1024;
/// The most it grows to for a long body (and for a long head, up to [`wire::MAX_HEAD`]).
const MAX_READ_BUF: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/1.1 connection: the socket, and what was read from it but not yet used.
struct Conn {
    io: Io,
    /// Always initialized (`unsafe` is not used): bytes `start..end` are read and unused.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Reads in a row that filled the buffer: a long body, read in larger pieces.
    full_reads: u8,
    /// The request being written.
    wbuf: Vec<u8>,
    /// Over TLS, a failed write may follow bytes that left.
    tls: bool,
}

impl Conn {
    fn new(io: Io, tls: bool) -> Conn {
        Conn {
            io,
            tls,
            rbuf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            full_reads: 0,
            wbuf: Vec::new(),
        }
    }

    fn filled(&self) -> &[u8] {
        &self.rbuf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes in: `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.start == self.end && self.full_reads >= 2 && self.rbuf.len() < MAX_READ_BUF {
            self.rbuf.resize(self.rbuf.len() * 2, 0);
            self.full_reads = 0;
        }
        if self.end == self.rbuf.len() {
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // A head longer than the buffer (the head's own limit ends it).
                let grown = (self.rbuf.len() * 2).min(wire::MAX_HEAD + READ_BUF);
                self.rbuf.resize(grown.max(self.rbuf.len() + 1), 0);
            }
        }
        let space = self.rbuf.len() - self.end;
        let mut buf = tokio::io::ReadBuf::new(&mut self.rbuf[self.end..]);
        std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.end += n;
        self.full_reads = if n == space {
            self.full_reads.saturating_add(1)
        } else {
            0
        };
        Poll::Ready(Ok(n))
    }

    /// Whether an idle connection may still carry a request: the backend has neither closed
    /// it nor written to it unasked. Costs no system call when nothing has arrived (tokio
    /// knows the socket is not readable).
    fn alive(&mut self) -> bool {
        if self.start != self.end {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Outside the cooperative budget: with it spent, every read would say Pending.
        let mut probe = pin!(tokio::task::unconstrained(poll_fn(|cx| Poll::Ready(
            self.poll_fill(cx)
        ))));
        matches!(probe.as_mut().poll(&mut cx), Poll::Ready(Poll::Pending))
    }

    /// Goes back to the pool's size while idle (the exchange already let a long request go).
    fn shrink(&mut self) {
        if self.rbuf.len() > READ_BUF {
            self.rbuf.truncate(READ_BUF);
            self.rbuf.shrink_to_fit();
        }
        self.full_reads = 0;
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

    /// The newest idle connection, if any is younger than the idle timeout. `send_from` checks
    /// it is still open before it writes; the sweep drops the rest of those the backend closed.
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

    fn put(self: &Arc<Self>, mut conn: Box<Conn>) {
        conn.shrink();
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
        let held = std::mem::take(&mut *self.idle());
        let mut kept = VecDeque::with_capacity(held.len());
        for mut idle in held {
            // An idle connection only reads: a close (or stray bytes) ends it.
            if now.duration_since(idle.since) < IDLE_TIMEOUT && idle.conn.alive() {
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
    /// head; the body reads the rest from the connection as it is read itself.
    pub async fn send(&self, mut req: Request<OutBody>) -> Result<Response<UpBody>, SendError> {
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
        req: Request<OutBody>,
    ) -> Result<Response<UpBody>, SendError> {
        // An idle connection the backend closed (or wrote to unasked) is not used: the request
        // goes on the next one, or a new one.
        let mut conn = loop {
            match pooled.take() {
                Some(mut conn) => {
                    if conn.alive() {
                        break Some(conn);
                    }
                    pooled = self.shared.take();
                }
                None => break None,
            }
        };
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        loop {
            let reused = conn.is_some();
            let mut c = match conn.take() {
                Some(c) => c,
                None => self.connect().await?,
            };
            match exchange(&mut c, &parts, &mut body).await {
                Ok((head, sent)) => {
                    let keep = head.keep_alive && sent && !wire::has_token(&parts.headers, "close");
                    return Ok(UpBody::own(c, head, keep, &self.shared));
                }
                // Refused before a byte of it left (the backend closed the connection as the
                // request was taken): it goes again, once, on a new connection.
                Err(Failed::Unsent(_)) if reused && body.is_some() => {}
                Err(Failed::Unsent(e) | Failed::Broken(e)) => return Err(SendError::Exchange(e)),
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
        let tls = matches!(io, MaybeHttpsStream::Https(_));
        Ok(Box::new(Conn::new(TokioIo::new(io), tls)))
    }
}

/// Why an exchange got no response head.
enum Failed {
    /// Nothing of the request was written: it may go again.
    Unsent(BoxError),
    Broken(BoxError),
}

/// The request body, as the exchange writes it.
enum Out {
    /// Written whole already (it is in the write buffer with the head).
    Done,
    /// `content-length` bytes still to come from the body.
    Length(u64),
    Chunked,
}

/// Writes the request on `conn` and reads until the response head is in; says whether the
/// whole request was written. `body` is taken once a byte of the request has left.
async fn exchange(
    conn: &mut Conn,
    parts: &http::request::Parts,
    body: &mut Option<OutBody>,
) -> Result<(wire::Head, bool), Failed> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let out_body = body.take().expect("a body to send");
    let len = http_body::Body::size_hint(&out_body).exact();
    conn.wbuf.clear();
    let sending = wire::encode_head(&mut conn.wbuf, &parts.method, path, &parts.headers, len)
        .map_err(|e| Failed::Broken(Box::new(e)))?;
    let mut out = match (sending, &out_body) {
        (wire::Sending::Length(n), OutBody::Full(bytes)) => {
            let bytes = bytes.as_deref().unwrap_or_default();
            if bytes.len() as u64 != n {
                return Err(Failed::Broken(Box::new(wire::WireError(
                    "a request's content-length is not its body's length",
                ))));
            }
            conn.wbuf.extend_from_slice(bytes);
            Out::Done
        }
        (wire::Sending::Chunked, OutBody::Full(bytes)) => {
            let bytes = bytes.as_deref().unwrap_or_default();
            if !bytes.is_empty() {
                wire::chunk_head(&mut conn.wbuf, bytes.len());
                conn.wbuf.extend_from_slice(bytes);
                conn.wbuf.extend_from_slice(b"\r\n");
            }
            conn.wbuf.extend_from_slice(wire::LAST_CHUNK);
            Out::Done
        }
        (wire::Sending::Length(0), OutBody::Stream(_)) => Out::Done,
        (wire::Sending::Length(n), OutBody::Stream(_)) => Out::Length(n),
        (wire::Sending::Chunked, OutBody::Stream(_)) => Out::Chunked,
    };
    let mut streaming = !matches!(out, Out::Done);
    let mut out_body = Some(out_body);
    let mut written = 0usize;
    let mut wrote_any = false;
    let mut flushed = false;
    let mut write_failed: Option<BoxError> = None;
    // A head that came before the whole request had left, held while the rest goes out.
    let mut early: Option<wire::Head> = None;
    let tls = conn.tls;
    let result = poll_fn(|cx| 'turn: loop {
        // The write side: what is buffered, then the body's next frame, until the socket or
        // the body says Pending. A failed write does not end the exchange: a backend may have
        // answered (say, 413) and closed before it read the whole request.
        while write_failed.is_none() {
            if written < conn.wbuf.len() {
                match Pin::new(&mut conn.io).poll_write(cx, &conn.wbuf[written..]) {
                    Poll::Ready(Ok(0)) => {
                        write_failed = Some(Box::new(std::io::Error::from(
                            std::io::ErrorKind::WriteZero,
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        wrote_any = true;
                        flushed = false;
                    }
                    Poll::Ready(Err(e)) => {
                        // Over TLS, records of earlier passes may have left before the error.
                        wrote_any |= tls;
                        write_failed = Some(Box::new(e));
                    }
                    Poll::Pending => break,
                }
                continue;
            }
            if !flushed {
                match Pin::new(&mut conn.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => flushed = true,
                    Poll::Ready(Err(e)) => write_failed = Some(Box::new(e)),
                    Poll::Pending => break,
                }
                continue;
            }
            if !streaming {
                break;
            }
            let Some(OutBody::Stream(stream)) = out_body.as_mut() else {
                break;
            };
            match http_body::Body::poll_frame(Pin::new(stream), cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not sent
                    };
                    if data.is_empty() {
                        continue;
                    }
                    conn.wbuf.clear();
                    written = 0;
                    match &mut out {
                        Out::Length(left) => {
                            if data.len() as u64 > *left {
                                return Poll::Ready(Err(BoxError::from(wire::WireError(
                                    "the request body is longer than its content-length",
                                ))));
                            }
                            *left -= data.len() as u64;
                            conn.wbuf.extend_from_slice(&data);
                            streaming = *left > 0;
                        }
                        Out::Chunked => {
                            wire::chunk_head(&mut conn.wbuf, data.len());
                            conn.wbuf.extend_from_slice(&data);
                            conn.wbuf.extend_from_slice(b"\r\n");
                        }
                        Out::Done => {}
                    }
                }
                // The client's upload broke: the backend must not take it as whole.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    streaming = false;
                    conn.wbuf.clear();
                    written = 0;
                    match out {
                        Out::Chunked => conn.wbuf.extend_from_slice(wire::LAST_CHUNK),
                        Out::Length(left) if left > 0 => {
                            return Poll::Ready(Err(BoxError::from(wire::WireError(
                                "the request body is shorter than its content-length",
                            ))));
                        }
                        _ => {}
                    }
                }
            }
        }
        let sent = !streaming && written == conn.wbuf.len() && flushed && write_failed.is_none();
        if let Some(head) = early.take() {
            if sent || write_failed.is_some() {
                return Poll::Ready(Ok((head, sent)));
            }
            // The write side is waiting on the socket or the upload, with this task's waker.
            early = Some(head);
            return Poll::Pending;
        }
        // The read side: the head, past any interim answers.
        loop {
            match wire::parse_head(conn.filled(), &parts.method) {
                // Said before the request left (a backend's parting 408 on an idle
                // connection): not an answer to it.
                Ok(wire::Parsed::Head(..)) if !wrote_any => {
                    return Poll::Ready(Err(BoxError::from(wire::WireError(
                        "the upstream answered before the request was sent",
                    ))));
                }
                Ok(wire::Parsed::Head(head, n)) => {
                    conn.consume(n);
                    // Answered before the whole upload left: a success that keeps the
                    // connection gets the rest first (the backend may still be reading it);
                    // an error, or a close, does not.
                    if !sent
                        && write_failed.is_none()
                        && head.keep_alive
                        && head.response.status().as_u16() < 300
                    {
                        early = Some(head);
                        continue 'turn;
                    }
                    return Poll::Ready(Ok((head, sent)));
                }
                Ok(wire::Parsed::Interim(n)) => {
                    conn.consume(n);
                    continue;
                }
                Ok(wire::Parsed::Partial) => {}
                Err(e) => return Poll::Ready(Err(Box::new(e) as BoxError)),
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(write_failed.take().unwrap_or_else(|| {
                        Box::new(wire::WireError(
                            "the upstream closed the connection before its answer's head",
                        ))
                    })));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(write_failed.take().unwrap_or_else(|| Box::new(e))));
                }
                // A socket that failed a write with nothing yet to read will not answer.
                Poll::Pending if write_failed.is_some() && !wrote_any => {
                    return Poll::Ready(Err(write_failed.take().expect("failed")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    // The request's copy is not kept for the answer's life (a long prompt, a long stream).
    conn.wbuf.clear();
    if conn.wbuf.capacity() > READ_BUF {
        conn.wbuf = Vec::new();
    }
    match result {
        Ok(answer) => Ok(answer),
        // Not a byte of it left: the body is put back, whole, for a resend.
        Err(e) if !wrote_any => {
            *body = out_body;
            Err(Failed::Unsent(e))
        }
        Err(e) => Err(Failed::Broken(e)),
    }
}

/// How much of the response body is still to be read.
enum Reading {
    Length(u64),
    Chunked(wire::Chunked),
    UntilClose,
}

/// A response body read on tollgate's own pool: the connection is held until the body's end.
struct Own {
    /// `None` once the body has ended (the connection back in the pool, or closed).
    conn: Option<Box<Conn>>,
    reading: Reading,
    /// Whether the connection may carry another request after this body.
    keep: bool,
    /// A framing error found after data that still goes out first.
    failed: Option<WireError>,
    pool: Arc<Shared>,
}

impl Own {
    /// Takes what the buffer holds of the body, as one piece; whether the body has ended.
    fn take_buffered(&mut self, keep_data: bool) -> Result<(Option<Bytes>, bool), WireError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok((None, true));
        };
        let filled = conn.filled();
        let (data, used, ended) = match &mut self.reading {
            Reading::Length(left) => {
                let n = filled
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                let data = (keep_data && n > 0).then(|| Bytes::copy_from_slice(&filled[..n]));
                *left -= n as u64;
                (data, n, *left == 0)
            }
            Reading::UntilClose => {
                let data =
                    (keep_data && !filled.is_empty()).then(|| Bytes::copy_from_slice(filled));
                (data, filled.len(), false)
            }
            Reading::Chunked(decoder) => {
                // Every chunk already read goes out as one piece: a burst of events read at
                // once is written to the client at once.
                let mut data = Vec::new();
                let most = filled.len();
                let decoded = decoder.decode(filled, |piece| {
                    if keep_data {
                        if data.capacity() == 0 {
                            data.reserve_exact(most);
                        }
                        data.extend_from_slice(piece);
                    }
                });
                let used = match decoded {
                    Ok(used) => used,
                    // What came before the error goes out first; the error after it.
                    Err(e) if !data.is_empty() => {
                        self.failed = Some(e);
                        filled.len()
                    }
                    Err(e) => return Err(e),
                };
                let data = (!data.is_empty()).then(|| Bytes::from(data));
                (data, used, decoder.is_done())
            }
        };
        conn.consume(used);
        Ok((data, ended))
    }

    /// The body has ended: the connection goes back to the pool if it can carry another
    /// request (nothing unasked for read after the body), or closes.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep && conn.start == conn.end {
                self.pool.put(conn);
            }
        }
    }
}

/// A response body from an upstream. On tollgate's own pool it reads from the connection it
/// holds, and returns the connection to the pool at its end.
pub struct UpBody {
    kind: Kind,
}

enum Kind {
    /// From hyper-util's pool, which drives its connections itself.
    Plain(Incoming),
    Own(Own),
}

impl std::fmt::Debug for UpBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpBody")
            .field("pooled", &matches!(self.kind, Kind::Own(_)))
            .finish_non_exhaustive()
    }
}

impl UpBody {
    /// A body whose connection is driven elsewhere (hyper-util's pool).
    pub fn plain(incoming: Incoming) -> UpBody {
        UpBody {
            kind: Kind::Plain(incoming),
        }
    }

    /// The answer to a request sent on `conn`, whose head is `head`.
    fn own(conn: Box<Conn>, head: wire::Head, keep: bool, pool: &Arc<Shared>) -> Response<UpBody> {
        let reading = match head.framing {
            wire::Framing::Empty => Reading::Length(0),
            wire::Framing::Length(n) => Reading::Length(n),
            wire::Framing::Chunked => Reading::Chunked(wire::Chunked::default()),
            wire::Framing::UntilClose => Reading::UntilClose,
        };
        let mut own = Own {
            conn: Some(conn),
            reading,
            keep,
            failed: None,
            pool: pool.clone(),
        };
        if matches!(own.reading, Reading::Length(0)) {
            own.finish();
        }
        head.response.map(|()| UpBody {
            kind: Kind::Own(own),
        })
    }
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let own = match &mut self.get_mut().kind {
            Kind::Plain(incoming) => {
                return Pin::new(incoming)
                    .poll_frame(cx)
                    .map_err(|e| Box::new(e) as BoxError)
            }
            Kind::Own(own) => own,
        };
        loop {
            if let Some(e) = own.failed.take() {
                own.conn = None;
                return Poll::Ready(Some(Err(Box::new(e))));
            }
            let (data, ended) = match own.take_buffered(true) {
                Ok(taken) => taken,
                Err(e) => {
                    own.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            };
            if ended {
                own.finish();
            }
            if let Some(data) = data {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
            if ended {
                return Poll::Ready(None);
            }
            let Some(conn) = own.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(own.reading, Reading::UntilClose) => {
                    own.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    own.conn = None;
                    return Poll::Ready(Some(Err(Box::new(WireError(
                        "the upstream closed the connection before the body's end",
                    )))));
                }
                Ok(_) => {}
                Err(e) => {
                    own.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain(incoming) => incoming.is_end_stream(),
            Kind::Own(own) => own.conn.is_none(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            Kind::Plain(incoming) => incoming.size_hint(),
            Kind::Own(own) => match (&own.conn, &own.reading) {
                (None, _) => http_body::SizeHint::with_exact(0),
                (Some(_), Reading::Length(n)) => http_body::SizeHint::with_exact(*n),
                (Some(_), Reading::Chunked(decoder)) => {
                    let mut hint = http_body::SizeHint::new();
                    hint.set_lower(decoder.in_chunk());
                    hint
                }
                (Some(_), Reading::UntilClose) => http_body::SizeHint::new(),
            },
        }
    }
}

impl Drop for UpBody {
    fn drop(&mut self) {
        let Kind::Own(own) = &mut self.kind else {
            return;
        };
        if own.conn.is_none() {
            return;
        }
        // Not read to its end: a stream's reader stops at `[DONE]`, before the chunked body's
        // last, empty chunk. If the rest of the body is here already, the connection is good
        // for another request; if it is not (a client that went away mid-stream), the
        // connection closes and the backend sees the cancel.
        match own.take_buffered(false) {
            Ok((_, true)) => own.finish(),
            _ => own.conn = None,
        }
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

    /// A server for one connection at a time: it reads a request (to the end of its body,
    /// by length or chunked), hands its bytes to `seen`, and writes `answer`; it closes after
    /// the answer when `close`, and stops reading the request early when `early`.
    struct Scripted {
        base: String,
        seen: mpsc::UnboundedReceiver<Vec<u8>>,
        accepted: Arc<AtomicUsize>,
    }

    async fn scripted(answer: &'static [u8], close: bool, early: bool) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let (tx, seen) = mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        let done = |buf: &[u8]| {
                            let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                                return false;
                            };
                            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                            if early {
                                return true;
                            }
                            if head.contains("transfer-encoding: chunked") {
                                return buf.ends_with(b"\r\n0\r\n\r\n")
                                    || buf[i + 4..].starts_with(b"0\r\n\r\n");
                            }
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length: ")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            buf.len() >= i + 4 + len
                        };
                        while !done(&buf) {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let _ = tx.send(buf);
                        if sock.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted {
            base,
            seen,
            accepted,
        }
    }

    /// A streamed request body (as a pass-through sends), from these pieces; with no length
    /// known unless `len`.
    fn streamed(base: &str, pieces: Vec<&'static str>, len: Option<usize>) -> Request<OutBody> {
        use http_body_util::BodyExt as _;
        let frames = pieces
            .into_iter()
            .map(|p| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(p.as_bytes()))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut req = Request::new(OutBody::Stream(body.boxed_unsync()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{base}/files").parse().expect("uri");
        if let Some(len) = len {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        req
    }

    #[tokio::test]
    async fn streamed_uploads_go_chunked_or_by_their_length() {
        let mut up = scripted(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
            false,
        )
        .await;
        let pool = pool(&up.base);
        let resp = pool
            .send(streamed(&up.base, vec!["hello", "", " world"], None))
            .await
            .expect("sent");
        assert_eq!(read(resp).await, (200, Bytes::from_static(b"ok")));
        let sent = String::from_utf8(up.seen.recv().await.expect("a request")).expect("utf-8");
        assert!(
            sent.starts_with("POST /v1/files HTTP/1.1\r\nhost: 127.0.0.1:"),
            "{sent}"
        );
        assert!(
            sent.ends_with(
                "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            ),
            "{sent:?}"
        );
        let resp = pool
            .send(streamed(&up.base, vec!["abc", "de"], Some(5)))
            .await
            .expect("sent");
        assert_eq!(read(resp).await.0, 200);
        let sent = String::from_utf8(up.seen.recv().await.expect("a request")).expect("utf-8");
        assert!(sent.ends_with("content-length: 5\r\n\r\nabcde"), "{sent:?}");
        assert!(!sent.contains("transfer-encoding"), "{sent:?}");
        // Both on one connection, which is idle again.
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
        // A body longer than the length it claims never reaches the backend whole.
        let e = pool.send(streamed(&up.base, vec!["abcdef"], Some(5))).await;
        assert!(e.is_err(), "{e:?}");
    }

    /// A body that never ends: the upload a backend answers without reading.
    struct Endless;

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
                b'x';
                16 * 1024
            ])))))
        }
    }

    #[tokio::test]
    async fn an_answer_before_the_upload_ends_closes_the_connection_after_it() {
        use http_body_util::BodyExt as _;
        let up = scripted(
            b"HTTP/1.1 413 Too Large\r\ncontent-length: 3\r\n\r\nbig",
            false,
            true,
        )
        .await;
        let pool = pool(&up.base);
        let mut req = Request::new(OutBody::Stream(Endless.boxed_unsync()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{}/files", up.base).parse().expect("uri");
        let resp = tokio::time::timeout(Duration::from_secs(5), pool.send(req))
            .await
            .expect("answered while uploading")
            .expect("sent");
        assert_eq!(read(resp).await, (413, Bytes::from_static(b"big")));
        assert_eq!(
            pool.idle_count(),
            0,
            "the rest of the upload was not sent: not reusable"
        );
    }

    #[tokio::test]
    async fn a_success_before_the_upload_ends_gets_the_whole_upload_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Answers as soon as the head is in, then reads the upload to its end.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await.expect("read");
                buf.extend_from_slice(&chunk[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("write");
            while !buf.ends_with(b"\r\n0\r\n\r\n") {
                let n = sock.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the upload was cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            (String::from_utf8(buf).expect("utf-8"), sock)
        });
        let pieces = futures_util::stream::unfold(0, |n| async move {
            if n == 3 {
                return None;
            }
            if n > 0 {
                // Later than the answer.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            let piece = Bytes::from(format!("part{n}"));
            Some((Ok::<_, BoxError>(http_body::Frame::data(piece)), n + 1))
        });
        use http_body_util::BodyExt as _;
        let body = http_body_util::StreamBody::new(pieces);
        let mut req = Request::new(OutBody::Stream(body.boxed_unsync()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{base}/files").parse().expect("uri");
        let pool = pool(&base);
        let resp = pool.send(req).await.expect("sent");
        assert_eq!(read(resp).await, (200, Bytes::from_static(b"ok")));
        let (sent, _sock) = server.await.expect("server");
        assert!(
            sent.ends_with("5\r\npart0\r\n5\r\npart1\r\n5\r\npart2\r\n0\r\n\r\n"),
            "{sent:?}"
        );
        assert_eq!(pool.idle_count(), 1, "sent whole: the connection is kept");
    }

    #[tokio::test]
    async fn a_request_a_reset_connection_refuses_is_handed_back_unsent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let pool = pool(&base);
        let (conn, accepted) = tokio::join!(pool.connect(), listener.accept());
        let mut conn = conn.expect("connected");
        let (sock, _) = accepted.expect("accept");
        // A reset, not a close: the next write fails before a byte of it leaves.
        sock.set_zero_linger().expect("linger");
        drop(sock);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (parts, body) = post(&base, "{\"n\":1}").into_parts();
        let mut body = Some(body);
        match exchange(&mut conn, &parts, &mut body).await {
            Err(Failed::Unsent(_)) => {}
            Err(Failed::Broken(e)) => panic!("taken as sent: {e}"),
            Ok(_) => panic!("answered"),
        }
        assert!(
            matches!(&body, Some(OutBody::Full(Some(b))) if b.as_ref() == b"{\"n\":1}"),
            "the body is handed back whole, for a resend"
        );
    }

    #[tokio::test]
    async fn bodies_without_a_length_run_to_the_close_and_interim_answers_are_skipped() {
        let up = scripted(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nto the end",
            true,
            false,
        )
        .await;
        let pool = pool(&up.base);
        let resp = pool.send(post(&up.base, "{}")).await.expect("sent");
        assert_eq!(resp.headers()["x-a"], "1");
        assert_eq!(read(resp).await, (200, Bytes::from_static(b"to the end")));
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn broken_bodies_are_errors_not_ends() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let up = scripted(answer, true, false).await;
            let pool = pool(&up.base);
            let resp = pool.send(post(&up.base, "{}")).await.expect("a head");
            let got = resp.into_body().collect().await;
            assert!(got.is_err(), "{}", String::from_utf8_lossy(answer));
            assert_eq!(pool.idle_count(), 0);
        }
        let up = scripted(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", true, false).await;
        let e = pool(&up.base)
            .send(post(&up.base, "{}"))
            .await
            .expect_err("no head");
        assert!(e.describe().contains("content-length"), "{}", e.describe());
        let up = scripted(b"", true, false).await;
        let e = pool(&up.base)
            .send(post(&up.base, "{}"))
            .await
            .expect_err("no head");
        assert!(
            e.describe().contains("before its answer's head"),
            "{}",
            e.describe()
        );
    }

    #[tokio::test]
    async fn long_bodies_and_bursts_of_chunks_arrive_whole() {
        // 300 KiB in one piece: the read buffer grows, and goes back to its size when idle.
        static LONG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let long = LONG.get_or_init(|| {
            let body: Vec<u8> = (0..300 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
            let mut answer =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
            answer.extend_from_slice(&body);
            answer
        });
        let up = scripted(long, false, false).await;
        let pool = pool(&up.base);
        let (status, body) = read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), 300 * 1024);
        assert!(body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8));
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(
            pool.shared.idle().back().expect("idle").conn.rbuf.len(),
            READ_BUF
        );
        // Chunks read at once come out as one piece.
        let up = scripted(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n2\r\nef\r\n0\r\n\r\n",
            false,
            false,
        )
        .await;
        let burst = super::tests::pool(&up.base);
        let mut body = burst
            .send(post(&up.base, "{}"))
            .await
            .expect("sent")
            .into_body();
        let frame = body
            .frame()
            .await
            .expect("a frame")
            .expect("data")
            .into_data()
            .expect("data");
        assert_eq!(frame, Bytes::from_static(b"abcdef"));
        assert!(body.frame().await.is_none());
        assert_eq!(burst.idle_count(), 1);
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
    async fn a_request_given_a_closed_pooled_connection_goes_on_a_new_one() {
        let mut up = raw(After::CloseWhenTold).await;
        let pool = pool(&up.base);
        read(pool.send(post(&up.base, "{}")).await.expect("sent")).await;
        up.close.notify_one();
        up.closed.recv().await.expect("closed");
        // Handed to `send_from` as the checkout hands it: the close is seen before the
        // request is written (the resend of a request refused before it left is tested on
        // `exchange` itself, below).
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
