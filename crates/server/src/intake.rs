//! Reading a client's request body: bounded in size (`server.max_body_bytes`, 413) and in time
//! (`server.body_read_timeout` for the whole body, `server.body_gap_timeout` between two of
//! its pieces, 408), and what is left of a body nobody read.
//!
//! A body left unread (a 401 or 404 answered from the head alone) still sits in the socket:
//! HTTP/1.1 has no way to skip it, so the next request on a keep-alive connection would be
//! read from the middle of it. [`TimedBody`] hands such a body back when it is dropped, and
//! [`settle_unread`] reads it away within a bound or closes the connection.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT};
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tollgate_core::GatewayError;

/// At most this much of an unread body is read away to keep its connection open; more, and
/// the answer carries `Connection: close` instead. Reading is cheaper than a new connection
/// (a TCP and often a TLS handshake) only for a body this small.
const DRAIN_BYTES: u64 = 1024 * 1024;
/// At most this long is spent reading an unread body away, since the answer waits meanwhile.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The time limits of a request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// The whole body, from the moment its head was read.
    pub total: Duration,
    /// The longest pause between two pieces (never longer than `total`).
    pub gap: Duration,
}

impl BodyLimits {
    pub fn new(total: Duration, gap: Duration) -> Self {
        BodyLimits {
            total,
            gap: gap.min(total),
        }
    }
}

/// Which body limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    Total(Duration),
    Gap(Duration),
}

/// A request body that failed to arrive.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("{}", describe(*.0))]
    Timeout(Late),
    #[error("{0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
}

fn describe(late: Late) -> String {
    match late {
        Late::Total(d) => format!(
            "the request body did not arrive within {}s (server.body_read_timeout)",
            d.as_secs()
        ),
        Late::Gap(d) => format!(
            "the request body stalled for {}s (server.body_gap_timeout)",
            d.as_secs()
        ),
    }
}

/// Why an answer closes its connection; the connection's close reason in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// The body was too slow (408, or slow to drain after an early answer).
    BodyTimeout,
    /// The body was left unread and too large, or too slow, to read away.
    UnreadBody,
}

/// What comes back of a body dropped before its end.
pub(crate) struct Unread<B> {
    body: B,
    late: Option<Late>,
    clock: Clock,
}

/// The body of a request being answered: the client's body under [`BodyLimits`]. Dropped
/// before its end, it returns the rest through its channel.
pub(crate) struct TimedBody<B> {
    /// `None` once handed back (in `drop`).
    inner: Option<B>,
    timer: Timer,
    /// The limit that ran out, once one did: the body answers only that error from then on.
    late: Option<Late>,
    ended: bool,
    back: Option<oneshot::Sender<Unread<B>>>,
}

/// The body's deadlines.
#[derive(Debug, Clone, Copy)]
struct Clock {
    limits: BodyLimits,
    deadline: Instant,
    /// When the last piece arrived (or the head).
    last: Instant,
}

impl Clock {
    fn new(limits: BodyLimits) -> Self {
        let now = Instant::now();
        Clock {
            limits,
            deadline: now + limits.total,
            last: now,
        }
    }

    /// The limit that runs out first, and when.
    fn next(&self) -> (Instant, Late) {
        let gap = self.last + self.limits.gap;
        if gap < self.deadline {
            (gap, Late::Gap(self.limits.gap))
        } else {
            (self.deadline, Late::Total(self.limits.total))
        }
    }
}

/// The clock and its sleep. The sleep is made only when the body first has to be waited
/// for: most bodies are already buffered with their head, and pay no timer at all.
struct Timer {
    clock: Clock,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// Ready with the limit that ran out; pending (and armed) otherwise.
    fn poll_late(&mut self, cx: &mut Context<'_>) -> Poll<Late> {
        let (at, late) = self.clock.next();
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(late),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<B> TimedBody<B> {
    /// Wraps `body`; what is left of it when dropped early goes to `back`.
    pub fn new(body: B, limits: BodyLimits, back: oneshot::Sender<Unread<B>>) -> Self {
        TimedBody {
            inner: Some(body),
            timer: Timer {
                clock: Clock::new(limits),
                sleep: None,
            },
            late: None,
            ended: false,
            back: Some(back),
        }
    }
}

impl<B> Drop for TimedBody<B> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let (Some(body), Some(back)) = (self.inner.take(), self.back.take()) {
            // The receiver is gone only when the answer is already out; nothing to settle then.
            let _ = back.send(Unread {
                body,
                late: self.late,
                clock: self.timer.clock,
            });
        }
    }
}

// `TimedBody` pins nothing of its own: the sleep is boxed and the inner body is polled
// through `Pin::new`, which needs it `Unpin` (hyper's `Incoming` and every test body are).
impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(late) = this.late {
            return Poll::Ready(Some(Err(BodyError::Timeout(late))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.clock.last = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(Box::new(e))))),
            Poll::Pending => match this.timer.poll_late(cx) {
                Poll::Ready(late) => {
                    this.late = Some(late);
                    Poll::Ready(Some(Err(BodyError::Timeout(late))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Reads the request body, refusing more than `limit` bytes with 413 — from
/// `content-length` before reading, or while reading a chunked body — and a body too slow to
/// arrive with 408.
pub(crate) async fn read_body<B>(req: http::Request<B>, limit: u64) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::RequestTooLarge { limit });
    }
    // Read frame by frame, not through a general collector: most bodies arrive as one frame,
    // which is then the body itself, with no list and no copy.
    let mut body = std::pin::pin!(req.into_body());
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut total = 0u64;
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            let e: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
            match e.downcast_ref::<BodyError>() {
                Some(BodyError::Timeout(late)) => GatewayError::RequestTimeout(describe(*late)),
                _ => GatewayError::invalid(format!("could not read the request body: {e}")),
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limit {
            return Err(GatewayError::RequestTooLarge { limit });
        }
        match (&mut joined, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(head)) => {
                let mut all = bytes::BytesMut::with_capacity(head.len() + data.len());
                all.extend_from_slice(&head);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(match joined {
        Some(all) => all.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// After an answer was made: reads away what is left of the request body, so the connection
/// can take its next request, or marks the answer `Connection: close` when that cannot be done
/// within [`DRAIN_BYTES`] and [`DRAIN_TIME`] (and the body's own limits). Only HTTP/1.x needs
/// this: an HTTP/2 stream ends on its own, without touching the connection's other streams.
pub(crate) async fn settle_unread<B, R>(
    unread: &mut oneshot::Receiver<Unread<B>>,
    http1: bool,
    expects_continue: bool,
    resp: &mut http::Response<R>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let rest = match unread.try_recv() {
        Ok(rest) => rest,
        // The body reached its end (or never had one): nothing is left in the socket.
        Err(oneshot::error::TryRecvError::Closed) => return,
        // Still held somewhere: its bytes may yet be read, so this connection is not safe
        // to reuse.
        Err(oneshot::error::TryRecvError::Empty) => {
            if http1 {
                close(resp, Closing::UnreadBody);
            }
            return;
        }
    };
    if !http1 || rest.body.is_end_stream() {
        return;
    }
    if rest.late.is_some() {
        close(resp, Closing::BodyTimeout);
        return;
    }
    // A client waiting for `100 Continue` has sent no body: reading would only ask for it.
    let too_big = rest.body.size_hint().lower() > DRAIN_BYTES;
    if expects_continue || too_big {
        close(resp, Closing::UnreadBody);
        return;
    }
    let Unread {
        mut body,
        mut clock,
        ..
    } = rest;
    // Within the drain time and the body's own limits (the gap one moves with each piece).
    let until = Instant::now() + DRAIN_TIME;
    let mut read = 0u64;
    let why = loop {
        let by = until.min(clock.next().0);
        let next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(by, next).await {
            Err(_) => break Closing::BodyTimeout,
            Ok(None) => return,
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                clock.last = Instant::now();
                if read > DRAIN_BYTES {
                    break Closing::UnreadBody;
                }
            }
            Ok(Some(Err(_))) => break Closing::UnreadBody,
        }
    };
    close(resp, why);
}

/// Whether a request waits for `100 Continue` before sending its body.
pub(crate) fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn close<R>(resp: &mut http::Response<R>, why: Closing) {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp.extensions_mut().insert(why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    fn limits(total_ms: u64, gap_ms: u64) -> BodyLimits {
        BodyLimits::new(
            Duration::from_millis(total_ms),
            Duration::from_millis(gap_ms),
        )
    }

    #[tokio::test]
    async fn a_body_that_arrives_is_read_whole() {
        let (back, mut unread) = oneshot::channel();
        let body = TimedBody::new(chunks(&["ab", "cd"]), limits(1000, 1000), back);
        let got = read_body(http::Request::new(body), 10).await.expect("read");
        assert_eq!(&got[..], b"abcd");
        assert!(matches!(
            unread.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    /// A body whose next piece comes after `pause`.
    fn stalling(pause: Duration) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin {
        let s = stream::unfold(0u8, move |n| async move {
            match n {
                0 => Some((Ok(Frame::data(Bytes::from_static(b"{"))), 1)),
                1 => {
                    tokio::time::sleep(pause).await;
                    Some((Ok(Frame::data(Bytes::from_static(b"}"))), 2))
                }
                _ => None,
            }
        });
        StreamBody::new(Box::pin(s))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_a_408_naming_the_limit() {
        let (back, _unread) = oneshot::channel();
        let body = TimedBody::new(
            stalling(Duration::from_secs(5)),
            limits(60_000, 2_000),
            back,
        );
        let e = read_body(http::Request::new(body), 10)
            .await
            .expect_err("stalled");
        assert_eq!(e.status().as_u16(), 408);
        assert_eq!(e.code(), "request_timeout");
        assert!(e.to_string().contains("body_gap_timeout"), "{e}");

        // Each piece within the gap, but the whole too slow.
        let (back, _unread) = oneshot::channel();
        let body = TimedBody::new(stalling(Duration::from_secs(5)), limits(3_000, 4_000), back);
        let e = read_body(http::Request::new(body), 10)
            .await
            .expect_err("too slow");
        assert!(e.to_string().contains("body_read_timeout"), "{e}");
    }

    #[tokio::test]
    async fn an_unread_body_is_drained_or_the_connection_closed() {
        // Small and ready: read away, no `Connection: close`.
        let (back, mut unread) = oneshot::channel();
        drop(TimedBody::new(chunks(&["x"; 10]), limits(1000, 1000), back));
        let mut resp = http::Response::new(());
        settle_unread(&mut unread, true, false, &mut resp).await;
        assert!(resp.headers().get(CONNECTION).is_none());

        // Larger than the bound: closed.
        let big: &'static str = Box::leak("y".repeat(64 * 1024).into_boxed_str());
        let (back, mut unread) = oneshot::channel();
        drop(TimedBody::new(chunks(&[big; 17]), limits(1000, 1000), back));
        let mut resp = http::Response::new(());
        settle_unread(&mut unread, true, false, &mut resp).await;
        assert_eq!(resp.headers()[CONNECTION], "close");
        assert_eq!(resp.extensions().get(), Some(&Closing::UnreadBody));

        // Waiting for 100 Continue: nothing was sent, so nothing is read; closed.
        let (back, mut unread) = oneshot::channel();
        drop(TimedBody::new(chunks(&["z"]), limits(1000, 1000), back));
        let mut resp = http::Response::new(());
        settle_unread(&mut unread, true, true, &mut resp).await;
        assert_eq!(resp.headers()[CONNECTION], "close");

        // HTTP/2: the stream's own business.
        let (back, mut unread) = oneshot::channel();
        drop(TimedBody::new(chunks(&["z"]), limits(1000, 1000), back));
        let mut resp = http::Response::new(());
        settle_unread(&mut unread, false, false, &mut resp).await;
        assert!(resp.headers().get(CONNECTION).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_unread_body_closes_within_the_drain_time() {
        let (back, mut unread) = oneshot::channel();
        drop(TimedBody::new(
            stalling(Duration::from_secs(30)),
            limits(60_000, 60_000),
            back,
        ));
        let mut resp = http::Response::new(());
        let started = Instant::now();
        settle_unread(&mut unread, true, false, &mut resp).await;
        assert!(started.elapsed() <= DRAIN_TIME + Duration::from_millis(10));
        assert_eq!(resp.headers()[CONNECTION], "close");
        assert_eq!(resp.extensions().get(), Some(&Closing::BodyTimeout));
    }
}
