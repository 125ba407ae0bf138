//! The edge's own HTTP/1.1 server, after RFC 9112: request heads read with `httparse`, request
//! bodies by their length or chunked, answers written with one write per burst of ready body
//! frames. HTTP/2 stays on hyper.
//!
//! One connection is served at a time by one future ([`serve`]), in the connection's task. The
//! socket and its read buffer sit in [`Shared`], which the request body ([`ReqBody`]) also
//! holds: the body reads from the socket while the gateway handles the request, and the serve
//! loop reads only between requests (and, once a body is read, to notice a client that went
//! away). What the framing of a request body cannot be relied on for is refused with 400 and
//! the connection closed: `transfer-encoding` with `content-length`, codings that do not end
//! in one `chunked`, `transfer-encoding` in HTTP/1.0, a `content-length` that is not one
//! number. That is what keeps a request smuggled inside another out (RFC 9112 §6.3, §11.2).

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tollgate_core::http1::{
    self, chunk_head, content_length, has_token, last_coding_is_chunked, read_fields, BadField,
    Chunked, WireError, LAST_CHUNK,
};

use super::ConnState;

/// The longest request head taken; past it the answer is 431.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a request head may have; past it the answer is 431.
const MAX_HEADERS: usize = 100;
/// A read asks for at least this much room; after reads that fill it, for twice as much each
/// time, up to [`MAX_READ_ROOM`] (a large body then takes few system calls).
const READ_ROOM: usize = 8 * 1024;
const MAX_READ_ROOM: usize = 256 * 1024;
/// Body frames ready at once are written together up to this much.
const MAX_COALESCED: usize = 64 * 1024;
/// A write buffer grown past this is freed after its answer, not kept for the next.
const KEEP_WBUF: usize = 8 * 1024;
/// Body data larger than this is written from its own buffer instead of being copied.
const COPY_AT_MOST: usize = 16 * 1024;
/// Whether a read that leaves room clears the socket's readiness (see [`Shared::poll_fill`]):
/// where tokio's own `poll_read` does the same (not on Windows, whose readiness is emulated).
const CLEAR_ON_SHORT_READ: bool = cfg!(not(windows));

/// The socket of one HTTP/1.1 connection and what has been read from it.
pub(crate) struct Shared {
    stream: TcpStream,
    conn: Arc<ConnState>,
    read: Mutex<ReadSide>,
    /// Set by a graceful shutdown: the answer in flight is the last.
    closing: AtomicBool,
    /// Whether the loop waits for a head with nothing of it read: a shutdown closes at once.
    idle: AtomicBool,
    /// The room the next read asks for.
    room: AtomicUsize,
}

/// The read buffer and the state of the request body being read from it.
struct ReadSide {
    buf: BytesMut,
    eof: bool,
    body: BodyState,
    /// `Expect: 100-continue` not yet answered: `100 Continue` goes out before the body is
    /// first waited for. `Some(n)`: its first `n` bytes are written.
    continue_owed: Option<usize>,
    /// The serve loop, waiting for the body's end to watch for the client's: woken when the
    /// body ends (it may be read on another task, an upstream connection's).
    waiter: Option<Waker>,
}

#[derive(Debug)]
enum BodyState {
    /// The request body was read to its end (or there was none).
    Done,
    Length(u64),
    Chunked(Box<Chunked>),
    /// The body's framing broke: nothing more can be read on this connection.
    Failed,
}

impl Shared {
    pub fn new(stream: TcpStream, conn: Arc<ConnState>) -> Arc<Shared> {
        Arc::new(Shared {
            stream,
            conn,
            read: Mutex::new(ReadSide {
                buf: BytesMut::new(),
                eof: false,
                body: BodyState::Done,
                continue_owed: None,
                waiter: None,
            }),
            closing: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            room: AtomicUsize::new(READ_ROOM),
        })
    }

    /// A graceful shutdown: the answer in flight is the last. True when there is none (and no
    /// head begun): the connection may close at once.
    pub fn shut(&self) -> bool {
        self.closing.store(true, Ordering::Release);
        self.idle.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, ReadSide> {
        // Nothing panics while holding it; a poisoned lock still holds consistent bytes.
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what the socket has into `buf`: `Ok(0)` at the end of the stream.
    fn poll_fill(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            let want = self.room.load(Ordering::Relaxed);
            if buf.capacity() - buf.len() < want / 4 {
                // Room is made only for bytes there are: a connection waiting for its client
                // holds no buffer.
                ready!(self.stream.poll_read_ready(cx))?;
                buf.reserve(want);
            }
            // A read that leaves room has drained the socket: its readiness is cleared then
            // (as tokio's own `poll_read` does), so the next read waits for the next bytes
            // instead of costing a system call that finds none. The read is made inside
            // `try_io`, whose readiness a `WouldBlock` from the closure clears.
            let room = buf.capacity() - buf.len();
            let mut drained = 0;
            let read = self.stream.try_io(Interest::READABLE, || {
                let n = self.stream.try_read_buf(buf)?;
                if CLEAR_ON_SHORT_READ && n > 0 && n < room {
                    drained = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            // Room filled: more is likely waiting, so the next read asks for more; a read that
            // left room goes back to the first size.
            let next = match read {
                Ok(n) if n > 0 && n == room => (want * 2).min(MAX_READ_ROOM),
                _ => READ_ROOM,
            };
            if next != want {
                self.room.store(next, Ordering::Relaxed);
            }
            match read {
                Ok(n) => {
                    if n > 0 {
                        self.conn.read_some();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained > 0 => {
                    self.conn.read_some();
                    return Poll::Ready(Ok(drained));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes all of `parts`, in order, with as few system calls as the socket allows.
    async fn write_all(&self, parts: &mut [&[u8]]) -> io::Result<()> {
        let mut first = 0;
        while first < parts.len() {
            if parts[first].is_empty() {
                first += 1;
                continue;
            }
            let slices: [IoSlice<'_>; 4] = std::array::from_fn(|i| {
                IoSlice::new(parts.get(first + i).copied().unwrap_or_default())
            });
            let n = (parts.len() - first).min(slices.len());
            match self.stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut written) => {
                    while written > 0 {
                        let part = &mut parts[first];
                        let k = written.min(part.len());
                        *part = &part[k..];
                        written -= k;
                        if part.is_empty() {
                            first += 1;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stream.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ready when the client has closed its side (or the socket failed) while its request is
    /// answered. Reads only once the request body is read (until then reading is the body's,
    /// which wakes this when it ends), and only while nothing is buffered: the client's next
    /// request, once one is here, is served after this answer, even if the client then
    /// closes its side (as hyper did).
    fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut side = self.lock();
        let side = &mut *side;
        if !matches!(side.body, BodyState::Done | BodyState::Failed) {
            if !side
                .waiter
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                side.waiter = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        if side.eof || !side.buf.is_empty() {
            return Poll::Pending;
        }
        match ready!(self.poll_fill(cx, &mut side.buf)) {
            Ok(0) => {
                side.eof = true;
                Poll::Ready(())
            }
            // The next request: kept, and no more reading until this answer is out.
            Ok(_) => Poll::Pending,
            Err(_) => Poll::Ready(()),
        }
    }

    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write);
    }
}

/// A request body read from the connection.
pub(crate) struct ReqBody {
    shared: Arc<Shared>,
    /// Bytes still owed, when the head gave a length.
    hint: Option<u64>,
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = self.get_mut();
        let shared = &*this.shared;
        let mut side = shared.lock();
        let side = &mut *side;
        let polled = poll_body(shared, side, &mut this.hint, cx);
        if matches!(side.body, BodyState::Done | BodyState::Failed) {
            if let Some(waiter) = side.waiter.take() {
                waiter.wake();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.shared.lock().body, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.hint {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// One frame of the request body: from what is buffered, else read (after `100 Continue`,
/// when it is owed).
fn poll_body(
    shared: &Shared,
    side: &mut ReadSide,
    hint: &mut Option<u64>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
    loop {
        if !side.buf.is_empty() && side.continue_owed == Some(0) {
            // The client sent its body without waiting: no 100 is owed any more.
            side.continue_owed = None;
        }
        match &mut side.body {
            BodyState::Done => return Poll::Ready(None),
            BodyState::Failed => {
                return Poll::Ready(Some(Err(WireError("the request body broke off"))))
            }
            BodyState::Length(left) if !side.buf.is_empty() => {
                let n = side
                    .buf
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                *hint = Some(*left);
                if *left == 0 {
                    side.body = BodyState::Done;
                }
                return Poll::Ready(Some(Ok(Frame::data(side.buf.split_to(n).freeze()))));
            }
            BodyState::Chunked(decoder) if !side.buf.is_empty() => {
                let mut out = BytesMut::new();
                match decoder.decode(&side.buf, |data| out.extend_from_slice(data)) {
                    Ok(used) => {
                        side.buf.advance(used);
                        if decoder.is_done() {
                            side.body = BodyState::Done;
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                        if matches!(side.body, BodyState::Done) {
                            return Poll::Ready(None);
                        }
                    }
                    Err(e) => {
                        side.body = BodyState::Failed;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            BodyState::Length(_) | BodyState::Chunked(_) => {}
        }
        // More bytes are needed.
        if side.eof {
            side.body = BodyState::Failed;
            return Poll::Ready(Some(Err(WireError("the request body ended early"))));
        }
        if let Some(at) = side.continue_owed {
            // A few bytes on a socket with nothing else queued: written at once as a rule;
            // a part written is finished before anything else.
            match shared.stream.try_write(&CONTINUE[at..]) {
                Ok(n) if at + n == CONTINUE.len() => side.continue_owed = None,
                Ok(n) if n > 0 => side.continue_owed = Some(at + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(shared.stream.poll_write_ready(cx)).map_err(|_| broke(side))?;
                }
                _ => return Poll::Ready(Some(Err(broke(side)))),
            }
            continue;
        }
        match ready!(shared.poll_fill(cx, &mut side.buf)) {
            Ok(0) => side.eof = true,
            Ok(_) => {}
            Err(_) => return Poll::Ready(Some(Err(broke(side)))),
        }
    }
}

fn broke(side: &mut ReadSide) -> WireError {
    side.body = BodyState::Failed;
    WireError("the request body could not be read")
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why a connection ended with an error.
#[derive(Debug)]
pub(crate) struct Ended(pub String);

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn ended(e: impl std::fmt::Display) -> Ended {
    Ended(e.to_string())
}

/// Serves requests on the connection until it closes: `Ok` when the client ended it (or an
/// answer did, with `connection: close`), an error for a broken request or socket.
pub(crate) async fn serve<S, F, B>(shared: Arc<Shared>, mut service: S) -> Result<(), Ended>
where
    S: FnMut(Request<ReqBody>) -> F,
    F: Future<Output = Response<B>>,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut wbuf = Vec::new();
    // Whether the next request was already here when the one before it was answered: such a
    // pipelined request is answered even if the client closes its side meanwhile (it sent all
    // it meant to).
    let mut pipelined = false;
    loop {
        let head = match read_head(&shared).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err((status, why)) => {
                refuse(&shared, status, why).await;
                return Err(Ended(why.to_string()));
            }
        };
        let Incoming {
            request,
            keep_alive,
        } = head;
        let method = request.method().clone();
        let version = request.version();
        let answered = {
            let handled = std::pin::pin!(service(request));
            let mut handled = handled;
            poll_fn(|cx| {
                if let Poll::Ready(resp) = handled.as_mut().poll(cx) {
                    return Poll::Ready(Some(resp));
                }
                if pipelined {
                    return Poll::Pending;
                }
                shared.poll_gone(cx).map(|()| None)
            })
            .await
        };
        // The client went away before its answer: dropping the handler cancels the request.
        let Some(resp) = answered else {
            return Ok(());
        };
        let (unread, torn) = {
            let mut side = shared.lock();
            side.waiter = None;
            // A `100 Continue` begun is finished before the answer; one never begun is not
            // sent (the client then still holds its body, and the connection closes below).
            let torn = side.continue_owed.take().filter(|&at| at > 0);
            let unread = !matches!(side.body, BodyState::Done);
            if side.buf.is_empty() {
                // Nothing read ahead: the buffer is not held through a long answer.
                side.buf = BytesMut::new();
            }
            (unread, torn)
        };
        if let Some(at) = torn {
            shared
                .write_all(&mut [&CONTINUE[at..]])
                .await
                .map_err(ended)?;
        }
        let keep = keep_alive
            && !unread
            && !shared.closing.load(Ordering::Acquire)
            && !has_token(resp.headers(), "close");
        let keep = write_answer(
            &shared,
            &mut wbuf,
            (&method, version),
            resp,
            (keep, !pipelined),
        )
        .await?;
        if wbuf.capacity() > KEEP_WBUF {
            wbuf = Vec::new();
        }
        pipelined = !shared.lock().buf.is_empty();
        if pipelined {
            // Bytes of the next head came while this one was answered: its head timer runs
            // from now (the request counted as active until its answer was out).
            shared.conn.read_some();
        }
        if !keep {
            shared.shutdown_write();
            return Ok(());
        }
    }
}

/// A request head read, with what it says of its connection.
struct Incoming {
    request: Request<ReqBody>,
    keep_alive: bool,
}

type Refusal = (StatusCode, &'static str);

/// Waits for the next request head; `None` when the client closed between requests (or a
/// shutdown came while none was begun).
async fn read_head(shared: &Arc<Shared>) -> Result<Option<Incoming>, Refusal> {
    poll_fn(|cx| {
        let mut side = shared.lock();
        let side = &mut *side;
        loop {
            if !side.buf.is_empty() {
                shared.idle.store(false, Ordering::Release);
                if let Some(head) = parse_request(shared, side)? {
                    return Poll::Ready(Ok(Some(head)));
                }
            } else if shared.closing.load(Ordering::Acquire) {
                return Poll::Ready(Ok(None));
            } else {
                shared.idle.store(true, Ordering::Release);
            }
            if side.eof {
                shared.idle.store(false, Ordering::Release);
                if side.buf.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err((
                    StatusCode::BAD_REQUEST,
                    "the request head ended early",
                )));
            }
            match ready!(shared.poll_fill(cx, &mut side.buf)) {
                Ok(0) => side.eof = true,
                Ok(_) => {}
                Err(_) => return Poll::Ready(Ok(None)),
            }
        }
    })
    .await
}

/// Parses a request head at the start of the buffer, takes it off, and sets up its body.
fn parse_request(shared: &Arc<Shared>, side: &mut ReadSide) -> Result<Option<Incoming>, Refusal> {
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        &side.buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(too_long()),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if side.buf.len() > MAX_HEAD => return Err(too_long()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request head has too many header fields",
            ))
        }
        Err(_) => return Err(bad("the request head is not HTTP/1.1")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("the request method is invalid"))?;
    let uri = http::Uri::try_from(parsed.path.unwrap_or(""))
        .map_err(|_| bad("the request target is invalid"))?;
    let version = http1::version(parsed.version);
    let fields = read_fields(parsed.headers).map_err(|e| match e {
        BadField::Name => bad("a request header name is invalid"),
        BadField::Value => bad("a request header value is invalid"),
    })?;
    let keep_alive = fields.keep_alive(version);
    let body = if fields.transfer_encoding {
        if fields.content_length
            || version == Version::HTTP_10
            || !last_coding_is_chunked(&fields.headers)
        {
            return Err(bad(
                "the request body's framing is ambiguous (transfer-encoding)",
            ));
        }
        BodyState::Chunked(Box::default())
    } else if fields.content_length {
        match fields.length.get() {
            Some(0) => BodyState::Done,
            Some(n) => BodyState::Length(n),
            None => return Err(bad("the request's content-length is invalid")),
        }
    } else {
        BodyState::Done
    };
    let headers = fields.headers;
    let expects_continue = fields.expect
        && version == Version::HTTP_11
        && !matches!(body, BodyState::Done)
        && crate::intake::expects_continue(&headers);
    let hint = match body {
        BodyState::Length(n) => Some(n),
        BodyState::Done => Some(0),
        _ => None,
    };
    side.buf.advance(len);
    side.body = body;
    side.continue_owed = expects_continue.then_some(0);
    let mut request = Request::new(ReqBody {
        shared: shared.clone(),
        hint,
    });
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Incoming {
        request,
        keep_alive,
    }))
}

fn bad(why: &'static str) -> Refusal {
    (StatusCode::BAD_REQUEST, why)
}

fn too_long() -> Refusal {
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "the request head is too long",
    )
}

/// Answers a request that could not be read, then closes: the write side first, and what the
/// client still sends is read away for a moment, so the close does not reset the answer away.
async fn refuse(shared: &Shared, status: StatusCode, why: &str) {
    let body =
        tollgate_core::error::openai_error_body(why, "invalid_request_error", None, "bad_request");
    let mut head = Vec::with_capacity(160);
    status_line(&mut head, status);
    head.extend_from_slice(b"content-type: application/json\r\nconnection: close\r\n");
    length_line(&mut head, body.len() as u64);
    date_line(&mut head);
    head.extend_from_slice(b"\r\n");
    if shared.write_all(&mut [&head, &body]).await.is_err() {
        return;
    }
    shared.shutdown_write();
    let drain = async {
        let mut left = 64 * 1024usize;
        let mut sink = BytesMut::new();
        while left > 0 {
            sink.clear();
            match poll_fn(|cx| shared.poll_fill(cx, &mut sink)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// How an answer's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes one answer; whether the connection may carry the next request.
async fn write_answer<B>(
    shared: &Shared,
    wbuf: &mut Vec<u8>,
    (method, version): (&Method, Version),
    resp: Response<B>,
    (mut keep, watch_gone): (bool, bool),
) -> Result<bool, Ended>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let given = || {
        parts
            .headers
            .contains_key(CONTENT_LENGTH)
            .then(|| content_length(&parts.headers))
            .flatten()
    };
    // The body's own length wins; a HEAD answer has none, and says what a GET's would be.
    let declared = if *method == Method::HEAD {
        given().or(body.size_hint().exact())
    } else {
        body.size_hint().exact().or_else(given)
    };
    let out = if bodiless_status {
        Out::None
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if version == Version::HTTP_10 {
        keep = false;
        Out::UntilClose
    } else {
        Out::Chunked
    };
    wbuf.clear();
    status_line(wbuf, status);
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION || name == DATE
        {
            continue;
        }
        wbuf.extend_from_slice(name.as_str().as_bytes());
        wbuf.extend_from_slice(b": ");
        wbuf.extend_from_slice(value.as_bytes());
        wbuf.extend_from_slice(b"\r\n");
    }
    match out {
        Out::Length(n) if !bodiless_status => length_line(wbuf, n),
        Out::Chunked => wbuf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !keep {
        wbuf.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        wbuf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    date_line(wbuf);
    wbuf.extend_from_slice(b"\r\n");
    // A HEAD answer says what a GET would have sent, and sends none of it.
    let out = if *method == Method::HEAD {
        Out::None
    } else {
        out
    };
    if out == Out::None {
        drop(body);
        shared.write_all(&mut [wbuf]).await.map_err(ended)?;
        return Ok(keep);
    }
    let mut sent = 0u64;
    loop {
        // Everything ready now goes in one write: small pieces copied after the head, a large
        // one written from its own buffer.
        let mut large: Option<Bytes> = None;
        let step = poll_fn(|cx| loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    if let Out::Length(n) = out {
                        if sent > n {
                            return Poll::Ready(Step::Fail(
                                "the answer ran past its length".into(),
                            ));
                        }
                    }
                    if out == Out::Chunked {
                        chunk_head(wbuf, data.len());
                    }
                    if data.len() > COPY_AT_MOST {
                        large = Some(data);
                        return Poll::Ready(Step::More);
                    }
                    wbuf.extend_from_slice(&data);
                    if out == Out::Chunked {
                        wbuf.extend_from_slice(b"\r\n");
                    }
                    if wbuf.len() >= MAX_COALESCED {
                        return Poll::Ready(Step::More);
                    }
                }
                Poll::Ready(None) => return Poll::Ready(Step::End),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Step::Fail(e.to_string())),
                Poll::Pending if !wbuf.is_empty() => return Poll::Ready(Step::More),
                Poll::Pending => {
                    if !watch_gone {
                        return Poll::Pending;
                    }
                    return match shared.poll_gone(cx) {
                        Poll::Ready(()) => Poll::Ready(Step::Fail("the client went away".into())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        })
        .await;
        match step {
            Step::More => {
                let tail: &[u8] = if large.is_some() && out == Out::Chunked {
                    b"\r\n"
                } else {
                    b""
                };
                let large = large.take().unwrap_or_default();
                shared
                    .write_all(&mut [wbuf, &large, tail])
                    .await
                    .map_err(ended)?;
                wbuf.clear();
            }
            Step::End => {
                if let Out::Length(n) = out {
                    if sent != n {
                        let _ = shared.write_all(&mut [wbuf]).await;
                        return Err(Ended("the answer ended short of its length".into()));
                    }
                }
                if out == Out::Chunked {
                    wbuf.extend_from_slice(LAST_CHUNK);
                }
                shared.write_all(&mut [wbuf]).await.map_err(ended)?;
                wbuf.clear();
                return Ok(keep && out != Out::UntilClose);
            }
            Step::Fail(why) => {
                // What was ready goes out; the missing end tells the client the answer broke.
                let _ = shared.write_all(&mut [wbuf]).await;
                wbuf.clear();
                return Err(Ended(why));
            }
        }
    }
}

enum Step {
    /// Write what was gathered, then look for more.
    More,
    End,
    Fail(String),
}

fn status_line(dst: &mut Vec<u8>, status: StatusCode) {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

fn length_line(dst: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(b"content-length: ");
    dst.extend_from_slice(&digits[i..]);
    dst.extend_from_slice(b"\r\n");
}

/// `date: <IMF-fixdate>\r\n`, rendered once a second per thread.
fn date_line(dst: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE_LINE: RefCell<(u64, [u8; 37])> = const { RefCell::new((u64::MAX, [0; 37])) };
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE_LINE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            cell.1 = render_date(secs);
            cell.0 = secs;
        }
        dst.extend_from_slice(&cell.1);
    });
}

/// `date: Sun, 06 Nov 1994 08:49:37 GMT\r\n` for `secs` since the Unix epoch (RFC 9110 §5.6.7).
fn render_date(secs: u64) -> [u8; 37] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let weekday = DAYS[(days % 7) as usize];
    // Days to a civil date (proleptic Gregorian), counted from 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u64;
    let mut out = *b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    out[6..9].copy_from_slice(weekday);
    let two = |out: &mut [u8; 37], at: usize, n: u64| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 11, u64::from(day));
    out[14..17].copy_from_slice(MONTHS[month - 1]);
    two(&mut out, 18, year / 100);
    two(&mut out, 20, year % 100);
    two(&mut out, 23, rem / 3600);
    two(&mut out, 26, rem / 60 % 60);
    two(&mut out, 29, rem % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the test service saw of each request: method, path, body (or the body's error).
    type Seen = Arc<StdMutex<Vec<(String, String, Result<Vec<u8>, String>)>>>;

    /// A client connected to a server side not served yet.
    async fn connected() -> (tokio::net::TcpStream, Arc<Shared>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, Shared::new(server, Arc::new(ConnState::new(false))))
    }

    /// A connection served by `serve` with a service that reads each body whole (unless the
    /// path is `/noread`) and answers its length; `/stream` answers in three frames.
    async fn served() -> (
        tokio::net::TcpStream,
        Seen,
        tokio::task::JoinHandle<Result<(), Ended>>,
    ) {
        let (client, shared) = connected().await;
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(serve(shared, move |req: Request<ReqBody>| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let path = parts.uri.path().to_string();
                let got = if path == "/noread" {
                    Ok(Vec::new())
                } else {
                    body.collect()
                        .await
                        .map(|b| b.to_bytes().to_vec())
                        .map_err(|e| e.to_string())
                };
                let len = got.as_ref().map_or(0, Vec::len);
                log.lock()
                    .expect("lock")
                    .push((parts.method.to_string(), path.clone(), got));
                let body: Pin<
                    Box<dyn http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send>,
                > = if path == "/stream" {
                    let frames = ["data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"]
                        .map(|f| Ok(Frame::data(Bytes::from_static(f.as_bytes()))));
                    Box::pin(StreamBody::new(futures_util::stream::iter(frames)))
                } else {
                    Box::pin(Full::new(Bytes::from(format!("len={len}"))))
                };
                Response::new(body)
            }
        }));
        (client, seen, task)
    }

    /// Reads answers until `n` have arrived whole (or the connection closes); their text.
    async fn read_answers(c: &mut tokio::net::TcpStream, n: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if complete_answers(&text) >= n {
                return text;
            }
            match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return text,
                Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
            }
        }
    }

    /// Everything the server writes until it closes (at most 5 s).
    async fn read_to_close(c: &mut tokio::net::TcpStream) -> String {
        let mut got = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut got)).await;
        got
    }

    /// How many whole answers `text` holds (by content-length, or chunked to the last chunk).
    fn complete_answers(mut text: &str) -> usize {
        let mut n = 0;
        while let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end].to_ascii_lowercase();
            let rest = &text[end + 4..];
            let len = if head.starts_with("http/1.1 100 ") {
                Some(0)
            } else if head.contains("transfer-encoding: chunked") {
                rest.find("0\r\n\r\n").map(|i| i + 5)
            } else {
                head.lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
            };
            match len {
                Some(len) if rest.len() >= len => {
                    n += usize::from(!head.starts_with("http/1.1 100 "));
                    text = &rest[len..];
                }
                _ => break,
            }
        }
        n
    }

    #[tokio::test]
    async fn pipelined_requests_with_length_and_chunked_bodies_are_answered_in_order() {
        let (mut c, seen, _task) = served().await;
        c.write_all(
            b"POST /a HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello\
              POST /b HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n\
              GET /c HTTP/1.1\r\nhost: t\r\n\r\n",
        )
        .await
        .expect("write");
        let text = read_answers(&mut c, 3).await;
        assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
        let bodies: Vec<&str> = text
            .split("\r\n\r\n")
            .skip(1)
            .map(|b| &b[..b.find("HTTP").unwrap_or(b.len())])
            .collect();
        assert_eq!(bodies, ["len=5", "len=11", "len=0"], "{text}");
        assert!(text.contains("content-length: 5\r\n"));
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(!text.contains("connection: close"));
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], ("POST".into(), "/a".into(), Ok(b"hello".to_vec())));
        assert_eq!(
            seen[1],
            ("POST".into(), "/b".into(), Ok(b"hello world".to_vec()))
        );
        assert_eq!(seen[2], ("GET".into(), "/c".into(), Ok(Vec::new())));
    }

    #[tokio::test]
    async fn requests_read_in_any_pieces_are_read_the_same() {
        let wire: &[u8] = b"POST /a HTTP/1.1\r\ncontent-length: 11\r\n\r\nhello world\
            POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0010;ext=1\r\n0123456789abcdef\r\n0\r\nt: v\r\n\r\n\
            GET /c HTTP/1.1\r\nx-a: 1\r\n\r\n\
            POST /d HTTP/1.1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..24 {
            let (mut c, seen, task) = served().await;
            c.set_nodelay(true).expect("nodelay");
            // Cut the bytes at random places (one byte at a time in the first round).
            let mut at = 0;
            while at < wire.len() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = if round == 0 {
                    1
                } else {
                    1 + (seed % 40) as usize
                };
                let end = (at + n).min(wire.len());
                c.write_all(&wire[at..end]).await.expect("write");
                at = end;
                if seed % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let got = read_to_close(&mut c).await;
            assert_eq!(
                got.matches("HTTP/1.1 200 OK\r\n").count(),
                4,
                "round {round}: {got}"
            );
            let seen = seen.lock().expect("lock").clone();
            let bodies: Vec<_> = seen
                .iter()
                .map(|(_, p, b)| (p.clone(), b.clone()))
                .collect();
            assert_eq!(
                bodies,
                [
                    ("/a".to_string(), Ok(b"hello world".to_vec())),
                    ("/b".to_string(), Ok(b"abc0123456789abcdef".to_vec())),
                    ("/c".to_string(), Ok(Vec::new())),
                    ("/d".to_string(), Ok(b"ok".to_vec())),
                ],
                "round {round}"
            );
            assert!(task.await.expect("joined").is_ok(), "closed as asked");
        }
    }

    #[tokio::test]
    async fn a_large_body_arrives_whole_and_the_request_after_it_too() {
        let (mut c, seen, _task) = served().await;
        let body: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let head = format!(
            "POST /big HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
        let (mut read, mut write) = c.split();
        let writing = async { write.write_all(&wire).await.expect("write") };
        let reading = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while complete_answers(&String::from_utf8_lossy(&got)) < 2 {
                let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf))
                    .await
                    .expect("in time")
                    .expect("read");
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&got).to_string()
        };
        let ((), text) = tokio::join!(writing, reading);
        assert!(text.contains(&format!("len={}", body.len())), "{text}");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen[0].2.as_ref().map(Vec::len), Ok(body.len()));
        assert_eq!(seen[0].2.as_deref(), Ok(&body[..]));
        assert_eq!(seen[1].1, "/after");
    }

    #[tokio::test]
    async fn framing_that_could_smuggle_a_request_is_refused_and_closes() {
        for head in [
            &b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            b"POST /x HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /x HTTP/1.1\r\ncontent-length: 5, 6\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\nbad header\r\n\r\n",
            b"POST /x HTTP/2.0\r\n\r\n",
        ] {
            let (mut c, seen, task) = served().await;
            c.write_all(head).await.expect("write");
            let got = read_to_close(&mut c).await;
            assert!(got.starts_with("HTTP/1.1 400 "), "{}: {got}", String::from_utf8_lossy(head));
            assert!(got.contains("connection: close"));
            assert!(seen.lock().expect("lock").is_empty(), "nothing reached the service");
            drop(c);
            assert!(task.await.expect("joined").is_err());
        }
    }

    #[tokio::test]
    async fn a_broken_chunked_body_fails_the_body_and_the_connection() {
        let (mut c, seen, task) = served().await;
        c.write_all(
            b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nGET /b HTTP/1.1\r\n\r\n",
        )
        .await
        .expect("write");
        let text = read_answers(&mut c, 2).await;
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "no second request was read: {text}"
        );
        assert!(text.contains("connection: close"), "{text}");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].2.is_err(), "{seen:?}");
        assert!(task.await.expect("joined").is_ok());
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_when_the_body_is_wanted_and_only_then() {
        let (mut c, seen, _task) = served().await;
        c.write_all(b"POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&buf[..n], CONTINUE);
        c.write_all(b"abc").await.expect("body");
        let text = read_answers(&mut c, 1).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("len=3"),
            "{text}"
        );
        assert_eq!(seen.lock().expect("lock")[0].2, Ok(b"abc".to_vec()));

        // Answered without the body: no 100, and the connection closes (the client would
        // otherwise send the body as if it were the next request).
        let (mut c, _seen, task) = served().await;
        c.write_all(b"POST /noread HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n")
            .await
            .expect("write");
        let got = read_to_close(&mut c).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(!got.contains("100 Continue"));
        assert!(got.contains("connection: close"));
        assert!(task.await.expect("joined").is_ok());
    }

    #[tokio::test]
    async fn head_answers_carry_the_length_but_no_body_and_http10_closes() {
        let (mut c, _seen, _task) = served().await;
        c.write_all(b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let text = read_answers(&mut c, 2).await;
        let (first, second) = text.split_at(text.find("HTTP/1.1 200 OK\r\n").map_or(0, |_| {
            text[1..].find("HTTP/1.1").map_or(text.len(), |i| i + 1)
        }));
        assert!(
            first.contains("content-length: 5\r\n") && first.ends_with("\r\n\r\n"),
            "{text}"
        );
        assert!(second.ends_with("len=0"), "{text}");

        let (mut c, _seen, task) = served().await;
        c.write_all(b"GET /a HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let got = read_to_close(&mut c).await;
        assert!(
            got.contains("connection: close") && got.ends_with("len=0"),
            "{got}"
        );
        assert!(task.await.expect("joined").is_ok());

        let (mut c, _seen, _task) = served().await;
        c.write_all(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await
            .expect("write");
        let text = read_answers(&mut c, 2).await;
        assert_eq!(
            text.matches("connection: keep-alive\r\n").count(),
            2,
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_streamed_answer_is_chunked() {
        let (mut c, _seen, _task) = served().await;
        c.write_all(b"GET /stream HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let text = read_answers(&mut c, 1).await;
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(!head.contains("content-length"));
        assert_eq!(
            body,
            "9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_too_long_head_is_a_431() {
        let (mut c, seen, task) = served().await;
        let mut head = b"GET /a HTTP/1.1\r\nx-big: ".to_vec();
        head.resize(MAX_HEAD + 100, b'a');
        let _ = c.write_all(&head).await;
        let got = read_to_close(&mut c).await;
        assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
        assert!(seen.lock().expect("lock").is_empty());
        assert!(task.await.expect("joined").is_err());
    }

    /// A connection served with `handler` (which gets the request and answers a body).
    async fn served_by<H, F>(
        handler: H,
    ) -> (
        tokio::net::TcpStream,
        tokio::task::JoinHandle<Result<(), Ended>>,
    )
    where
        H: Fn(Request<ReqBody>) -> F + Send + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let (client, shared) = connected().await;
        (client, tokio::spawn(serve(shared, handler)))
    }

    #[tokio::test]
    async fn a_body_sent_before_its_100_continue_keeps_the_connection() {
        let (mut c, seen, _task) = served().await;
        c.write_all(
            b"POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\nabc\
              GET /b HTTP/1.1\r\n\r\n",
        )
        .await
        .expect("write");
        let text = read_answers(&mut c, 2).await;
        assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
        assert!(
            !text.contains("100 Continue") && !text.contains("connection: close"),
            "{text}"
        );
        assert_eq!(seen.lock().expect("lock")[0].2, Ok(b"abc".to_vec()));
    }

    #[tokio::test]
    async fn pipelined_requests_then_a_half_close_are_all_answered() {
        let (mut c, _task) = served_by(|req: Request<ReqBody>| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Response::new(Full::new(Bytes::from(req.uri().path().to_string())))
        })
        .await;
        c.write_all(b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        c.shutdown().await.expect("half-close");
        let got = read_to_close(&mut c).await;
        assert!(
            got.contains("\r\n\r\n/one") && got.ends_with("\r\n\r\n/two"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn a_client_gone_while_another_task_reads_its_body_cancels_the_handler() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let guard = Arc::new(StdMutex::new(Some(dropped_tx)));
        let (mut c, task) = served_by(move |req: Request<ReqBody>| {
            let tx = guard.lock().expect("lock").take();
            async move {
                let _tx = tx;
                // As an upstream connection's task reads a pass-through body.
                let read = tokio::spawn(async move { req.into_body().collect().await.is_ok() });
                assert!(read.await.expect("read task"));
                tokio::time::sleep(Duration::from_secs(60)).await;
                Response::new(Full::new(Bytes::new()))
            }
        })
        .await;
        c.write_all(b"POST /p HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("the handler was dropped in time")
            .expect_err("dropped, not sent");
        assert!(task.await.expect("joined").is_ok());
    }

    #[tokio::test]
    async fn an_answer_of_unknown_length_that_closes_is_still_chunked() {
        let (mut c, shared) = connected().await;
        let _task = tokio::spawn(serve(shared, |_req: Request<ReqBody>| async {
            let frames = ["data: 1\n\n"].map(|f| Ok(Frame::data(Bytes::from_static(f.as_bytes()))));
            let mut resp = Response::new(StreamBody::new(futures_util::stream::iter::<
                [Result<Frame<Bytes>, std::convert::Infallible>; 1],
            >(frames)));
            resp.headers_mut()
                .insert(CONNECTION, http::HeaderValue::from_static("close"));
            resp
        }));
        c.write_all(b"GET /s HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let got = read_to_close(&mut c).await;
        assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
        assert!(got.ends_with("0\r\n\r\n"), "the end is marked: {got}");
    }

    #[tokio::test]
    async fn a_client_gone_while_its_answer_is_made_cancels_the_handler() {
        let (mut client, shared) = connected().await;
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let guard = StdMutex::new(Some(dropped_tx));
        let task = tokio::spawn(serve(shared, move |_req: Request<ReqBody>| {
            // Held by the handler: dropped (and the receiver told) only if it is cancelled.
            let tx = guard.lock().expect("lock").take();
            async move {
                let _tx = tx;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Response::new(Full::new(Bytes::new()))
            }
        }));
        client
            .write_all(b"GET /slow HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("the handler was dropped in time")
            .expect_err("dropped, not sent");
        assert!(task.await.expect("joined").is_ok());
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(&render_date(0), b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
        assert_eq!(
            &render_date(784_111_777),
            b"date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        );
        // A leap day, and the turn of a century.
        assert_eq!(
            &render_date(951_782_400),
            b"date: Tue, 29 Feb 2000 00:00:00 GMT\r\n"
        );
        assert_eq!(
            &render_date(1_798_761_599),
            b"date: Thu, 31 Dec 2026 23:59:59 GMT\r\n"
        );
    }

    #[test]
    fn lengths_are_decimal() {
        let mut v = Vec::new();
        length_line(&mut v, 0);
        length_line(&mut v, 1_234_567);
        assert_eq!(v, b"content-length: 0\r\ncontent-length: 1234567\r\n");
    }
}
