//! Fake OpenAI-compatible upstreams on `127.0.0.1:0` for tollgate's tests.
//!
//! A [`FakeUpstream`] answers each request with the next scripted [`Answer`] (or its default),
//! records what it received (method, path, headers, body, HTTP version) and counts
//! connections, so a test can assert both what the client got and what the upstream was sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// One step of a scripted SSE stream.
#[derive(Debug, Clone)]
pub enum Step {
    /// Raw bytes written as one chunk (usually a whole event, `data: …\n\n`).
    Raw(String),
    /// Silence before the next step.
    Pause(Duration),
}

/// How a scripted stream ends after its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ends cleanly.
    Finish,
    /// The connection is cut mid-body (the chunked encoding never terminates).
    Cut,
    /// The body stays open and silent until the client goes away.
    Hang,
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A whole body with a status and extra headers.
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// `text/event-stream` with scripted steps.
    Sse {
        status: u16,
        steps: Vec<Step>,
        end: StreamEnd,
    },
    /// Wait before answering (nothing, not even the status line, is sent meanwhile).
    Delay(Duration, Box<Answer>),
    /// Never answer.
    Hang,
}

impl Answer {
    /// A 200 chat completion whose message is `content`, with usage.
    pub fn chat(content: &str) -> Answer {
        let body = serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": "fake-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        });
        Answer::json(200, &body.to_string())
    }

    /// A JSON body with `status`.
    pub fn json(status: u16, body: &str) -> Answer {
        Answer::Json {
            status,
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }

    /// An OpenAI-shaped error.
    pub fn error(status: u16, message: &str, code: &str) -> Answer {
        let body = serde_json::json!({
            "error": {"message": message, "type": "fake_error", "param": null, "code": code}
        });
        Answer::json(status, &body.to_string())
    }

    /// Adds a response header (JSON answers only).
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        if let Answer::Json { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// A complete chat stream: one chunk per piece, a finish chunk with usage, `[DONE]`.
    pub fn chat_stream(pieces: &[&str]) -> Answer {
        Answer::Sse {
            status: 200,
            steps: chat_events(pieces, Duration::ZERO),
            end: StreamEnd::Finish,
        }
    }

    /// The events of a chat stream; `gap` of silence between chunks.
    pub fn stream_steps(pieces: &[&str], gap: Duration) -> Vec<Step> {
        chat_events(pieces, gap)
    }

    /// Delays this answer.
    pub fn after(self, delay: Duration) -> Answer {
        Answer::Delay(delay, Box::new(self))
    }
}

/// A `chat.completion.chunk` event carrying `content`.
pub fn chunk_event(content: &str) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    });
    format!("data: {chunk}\n\n")
}

fn chat_events(pieces: &[&str], gap: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            steps.push(Step::Pause(gap));
        }
        steps.push(Step::Raw(chunk_event(piece)));
    }
    let last = serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": pieces.len(), "total_tokens": 5 + pieces.len()}
    });
    steps.push(Step::Raw(format!("data: {last}\n\n")));
    steps.push(Step::Raw("data: [DONE]\n\n".to_owned()));
    steps
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
    /// When the request (headers and body) had arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The body as JSON (panics when it is not: a test helper).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("recorded body is JSON")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decides the answer to a request before the script does (e.g. a strict schema check).
pub type Gate = Arc<dyn Fn(&Recorded) -> Option<Answer> + Send + Sync>;

/// Options for starting a fake.
#[derive(Clone, Default)]
pub struct Options {
    /// Serve HTTP/1.1 only (otherwise HTTP/1.1 and h2c).
    pub http1_only: bool,
    /// Models answered on `GET …/models`.
    pub models: Vec<String>,
    /// Consulted first for every non-`/models` request.
    pub gate: Option<Gate>,
}

struct Shared {
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
    received: Mutex<Vec<Recorded>>,
    models: Mutex<Vec<String>>,
    /// When set, answers `GET …/models` instead of the list.
    models_answer: Mutex<Option<Answer>>,
    gate: Option<Gate>,
    accepted: AtomicUsize,
    closed: AtomicUsize,
    /// Woken whenever a connection closes or a request arrives.
    changed: Notify,
}

/// A running fake upstream. Dropping it stops accepting connections.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl FakeUpstream {
    /// Starts a fake that answers every request with a short chat completion.
    pub async fn start() -> FakeUpstream {
        Self::start_with(Options::default()).await
    }

    /// Starts a fake with `options`.
    pub async fn start_with(options: Options) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Answer::chat("Hello from the fake upstream.")),
            received: Mutex::new(Vec::new()),
            models: Mutex::new(options.models.clone()),
            models_answer: Mutex::new(None),
            gate: options.gate.clone(),
            accepted: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let accept_shared = shared.clone();
        let http1_only = options.http1_only;
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                accept_shared.accepted.fetch_add(1, Ordering::SeqCst);
                let conn_shared = accept_shared.clone();
                tokio::spawn(async move {
                    let svc_shared = conn_shared.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let shared = svc_shared.clone();
                        async move { Ok::<_, Infallible>(answer(shared, req).await) }
                    });
                    let io = TokioIo::new(stream);
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if http1_only {
                        builder = builder.http1_only();
                    }
                    let _ = builder.serve_connection(io, service).await;
                    conn_shared.closed.fetch_add(1, Ordering::SeqCst);
                    conn_shared.changed.notify_waiters();
                });
            }
        });
        FakeUpstream {
            addr,
            shared,
            accept_task,
        }
    }

    /// The API root to configure as a backend's `api_url` (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues answers for the next requests, in order.
    pub fn push(&self, answer: Answer) {
        lock(&self.shared.script).push_back(answer);
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, answer: Answer) {
        *lock(&self.shared.default) = answer;
    }

    /// Replaces the `GET /models` catalogue.
    pub fn set_models(&self, models: &[&str]) {
        *lock(&self.shared.models) = models.iter().map(|m| m.to_string()).collect();
    }

    /// Makes `GET /models` answer `answer` (an error, a delay …); `None` restores the list.
    pub fn set_models_answer(&self, answer: Option<Answer>) {
        *lock(&self.shared.models_answer) = answer;
    }

    /// `GET …/models` requests received so far.
    pub fn model_lists(&self) -> usize {
        lock(&self.shared.received)
            .iter()
            .filter(|r| r.method == Method::GET && r.path.ends_with("/models"))
            .count()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Recorded> {
        lock(&self.shared.received).clone()
    }

    /// Requests other than `GET …/models`.
    pub fn calls(&self) -> Vec<Recorded> {
        self.received()
            .into_iter()
            .filter(|r| !(r.method == Method::GET && r.path.ends_with("/models")))
            .collect()
    }

    /// The last request other than `GET …/models` (panics when there is none).
    pub fn last_call(&self) -> Recorded {
        self.calls().pop().expect("the fake received a request")
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.connections() - self.shared.closed.load(Ordering::SeqCst)
    }

    /// Waits until at most `open` connections remain open; false on timeout.
    pub async fn wait_open_at_most(&self, open: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if self.open_connections() <= open {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.open_connections() <= open;
            }
        }
    }

    /// Waits until `n` requests (other than `/models`) arrived; false on timeout.
    pub async fn wait_calls(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if self.calls().len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.calls().len() >= n;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread may poison a lock; the data is still good for assertions.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn answer(shared: Arc<Shared>, req: Request<Incoming>) -> Response<FakeBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body,
        version: parts.version,
        at: std::time::Instant::now(),
    };
    lock(&shared.received).push(recorded.clone());
    shared.changed.notify_waiters();

    if parts.method == Method::GET && parts.uri.path().ends_with("/models") {
        let scripted = lock(&shared.models_answer).clone();
        if let Some(answer) = scripted {
            return respond(answer).await;
        }
        let data: Vec<serde_json::Value> = lock(&shared.models)
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "fake"}))
            .collect();
        let body = serde_json::json!({"object": "list", "data": data}).to_string();
        return respond(Answer::json(200, &body)).await;
    }
    if let Some(gated) = shared.gate.as_ref().and_then(|g| g(&recorded)) {
        return respond(gated).await;
    }
    let next = lock(&shared.script).pop_front();
    let answer = next.unwrap_or_else(|| lock(&shared.default).clone());
    respond(answer).await
}

async fn respond(mut answer: Answer) -> Response<FakeBody> {
    loop {
        match answer {
            Answer::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                answer = *inner;
            }
            Answer::Hang => std::future::pending::<()>().await,
            Answer::Json {
                status,
                body,
                headers,
            } => {
                let mut resp = Response::new(FakeBody::full(Bytes::from(body)));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let h = resp.headers_mut();
                h.insert("content-type", "application/json".parse().expect("static"));
                for (name, value) in headers {
                    if let (Ok(n), Ok(v)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        http::HeaderValue::from_str(&value),
                    ) {
                        h.append(n, v);
                    }
                }
                return resp;
            }
            Answer::Sse { status, steps, end } => {
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(async move {
                    for step in steps {
                        match step {
                            Step::Pause(d) => tokio::time::sleep(d).await,
                            Step::Raw(s) => {
                                if tx.send(Ok(Bytes::from(s))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    match end {
                        StreamEnd::Finish => {}
                        StreamEnd::Cut => {
                            // Let the events already sent reach the wire before the cut.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let _ = tx.send(Err(std::io::Error::other("scripted cut"))).await;
                        }
                        StreamEnd::Hang => tx.closed().await,
                    }
                });
                let mut resp = Response::new(FakeBody::Channel(rx));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                resp.headers_mut()
                    .insert("content-type", "text/event-stream".parse().expect("static"));
                return resp;
            }
        }
    }
}

/// The fake's response body: whole, or fed by a scripted task.
enum FakeBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl FakeBody {
    fn full(b: Bytes) -> Self {
        FakeBody::Full(Some(b))
    }
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            FakeBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_stream_ends_with_done() {
        let Answer::Sse { steps, .. } = Answer::chat_stream(&["a", "b"]) else {
            panic!("sse");
        };
        let Some(Step::Raw(last)) = steps.last() else {
            panic!("raw");
        };
        assert_eq!(last, "data: [DONE]\n\n");
        assert_eq!(steps.len(), 4);
    }
}

pub mod anthropic;
pub mod client;
pub mod nim;
pub mod redis;
