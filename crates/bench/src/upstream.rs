//! The fake upstream: an OpenAI-compatible server that answers from prebuilt bytes, so that
//! it costs as little as possible and the proxy in front of it is what gets measured.
//!
//! It runs as its own process (`tollgate-bench upstream`) on the load generator's core, and
//! decides what to answer from the request body alone, because the gateway rebuilds the
//! request's headers: `"stream":true` asks for an SSE stream of [`STREAM_CHUNKS`] chunks and
//! `[DONE]`, one write per event (as a model server sends tokens one at a time); the model
//! `burst` asks for the same stream in one write (as a batching server such as vLLM or NIM
//! under load sends what it has buffered); the model `idle` asks for a stream that sends one
//! chunk and then stays silent until the client goes away (the many-idle-streams scenario).
//! The body is all it reads, so a request translated by the gateway from another door
//! (Anthropic Messages, OpenAI Responses) gets the same chat.completions answers.

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Content chunks in a streamed answer (a `[DONE]` event follows them).
pub const STREAM_CHUNKS: usize = 20;

/// The model name that asks for an idle stream.
pub const IDLE_MODEL: &str = "idle";

/// The model name that asks for the whole stream in one write.
pub const BURST_MODEL: &str = "burst";

/// A non-streamed chat completion of a realistic size (~330 bytes).
const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"m","#,
    r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a short "#,
    r#"answer from the benchmark upstream."},"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":24,"completion_tokens":12,"total_tokens":36}}"#
);

const MODELS: &str = r#"{"object":"list","data":[{"id":"m","object":"model","owned_by":"bench"},{"id":"idle","object":"model","owned_by":"bench"},{"id":"burst","object":"model","owned_by":"bench"}]}"#;

/// The events of one streamed answer, built once: content chunks, a final chunk with
/// `finish_reason` and usage, then `[DONE]`.
fn stream_events() -> Vec<Bytes> {
    let mut events = Vec::with_capacity(STREAM_CHUNKS + 1);
    for i in 0..STREAM_CHUNKS {
        let last = i + 1 == STREAM_CHUNKS;
        let finish = if last { r#""stop""# } else { "null" };
        let usage = if last {
            r#","usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44}"#
        } else {
            ""
        };
        events.push(Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\
             \"created\":1700000000,\"model\":\"m\",\"choices\":[{{\"index\":0,\
             \"delta\":{{\"content\":\"tok{i:02} \"}},\"finish_reason\":{finish}}}]{usage}}}\n\n"
        )));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// Runs the upstream on `127.0.0.1:port` (0: any free port) and prints the port it got as
/// the first line of stdout, which the runner waits for. Never returns on success.
pub fn run(port: u16) -> std::io::Result<()> {
    // One thread: the upstream shares the load generator's core and should not spread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let mut out = std::io::stdout();
        writeln!(out, "{port}")?;
        out.flush()?;
        let events: Arc<[Bytes]> = stream_events().into();
        let burst = Bytes::from(events.concat());
        // HTTP/1.1, and h2c for a gateway told to speak HTTP/2 to its backend.
        let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // The idle-streams scenario holds 10,000 streams, which an h2c gateway multiplexes.
        http.http2().max_concurrent_streams(100_000);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors: wait for streams to close instead of spinning.
                    eprintln!("upstream: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (events, burst) = (events.clone(), burst.clone());
            let service =
                hyper::service::service_fn(move |req| answer(req, events.clone(), burst.clone()));
            let conn = http
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}

async fn answer(
    req: Request<Incoming>,
    events: Arc<[Bytes]>,
    burst: Bytes,
) -> Result<Response<UpBody>, Infallible> {
    if req.method() == Method::GET && req.uri().path().ends_with("/models") {
        return Ok(respond(
            UpBody::Full(Some(Bytes::from_static(MODELS.as_bytes()))),
            false,
        ));
    }
    if req.method() != Method::POST || !req.uri().path().ends_with("/chat/completions") {
        let mut resp = respond(UpBody::Full(Some(Bytes::from_static(b"{}"))), false);
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = chat_body(&body, events, burst);
    let sse = !matches!(body, UpBody::Full(_));
    Ok(respond(body, sse))
}

/// The answer to a chat.completions request body.
fn chat_body(body: &[u8], events: Arc<[Bytes]>, burst: Bytes) -> UpBody {
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    let stream = has(br#""stream":true"#);
    if has(br#""model":"idle""#) {
        UpBody::Idle(Some(events[0].clone()))
    } else if stream && has(br#""model":"burst""#) {
        // One data frame of the whole stream: hyper writes it with the response head (or
        // right after it) in one go, as a batching server flushes what it has.
        UpBody::Burst(Some(burst))
    } else if stream {
        UpBody::Events {
            events,
            next: 0,
            flushed: true,
        }
    } else {
        UpBody::Full(Some(Bytes::from_static(COMPLETION.as_bytes())))
    }
}

fn respond(body: UpBody, sse: bool) -> Response<UpBody> {
    let mut resp = Response::new(body);
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

/// The upstream's response bodies.
enum UpBody {
    Full(Option<Bytes>),
    /// A whole SSE stream as one frame, with no length announced (chunked, like a stream).
    Burst(Option<Bytes>),
    /// Each SSE event goes out in its own write, as a model server sends one token at a time:
    /// after an event the body answers `Pending` once (waking itself at once), which makes
    /// hyper flush before the next one.
    Events {
        events: Arc<[Bytes]>,
        next: usize,
        flushed: bool,
    },
    /// One event, then nothing until the connection is dropped (never woken again).
    Idle(Option<Bytes>),
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            UpBody::Full(bytes) | UpBody::Burst(bytes) => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
            UpBody::Events {
                events,
                next,
                flushed,
            } => {
                if !*flushed {
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let event = events.get(*next).cloned();
                *next += 1;
                *flushed = false;
                Poll::Ready(event.map(|b| Ok(Frame::data(b))))
            }
            UpBody::Idle(first) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, UpBody::Full(None) | UpBody::Burst(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            UpBody::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_twenty_chunks_then_done() {
        let events = stream_events();
        assert_eq!(events.len(), STREAM_CHUNKS + 1);
        for e in &events {
            assert!(e.starts_with(b"data: ") && e.ends_with(b"\n\n"));
        }
        assert!(events[STREAM_CHUNKS - 1]
            .windows(6)
            .any(|w| w == b"\"stop\""));
        assert_eq!(&events[STREAM_CHUNKS][..], b"data: [DONE]\n\n");
    }

    #[test]
    fn the_model_decides_paced_or_burst_and_both_carry_the_same_stream() {
        let events: Arc<[Bytes]> = stream_events().into();
        let whole = Bytes::from(events.concat());
        let body = |model: &str| format!(r#"{{"model":"{model}","stream":true}}"#);
        match chat_body(body("burst").as_bytes(), events.clone(), whole.clone()) {
            UpBody::Burst(Some(b)) => assert_eq!(b, whole),
            _ => panic!("model burst: not one burst"),
        }
        assert!(whole.ends_with(b"data: [DONE]\n\n"));
        assert!(matches!(
            chat_body(body("m").as_bytes(), events.clone(), whole.clone()),
            UpBody::Events { next: 0, .. }
        ));
        assert!(matches!(
            chat_body(br#"{"model":"burst"}"#, events, whole),
            UpBody::Full(Some(_))
        ));
    }
}
