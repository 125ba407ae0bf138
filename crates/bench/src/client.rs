//! The load client: hyper HTTP/1.1 connections with keep-alive, driven closed loop (a fixed
//! number of connections, each sending its next request when the last one is answered),
//! open loop (a fixed rate, whatever the answers do) or as many idle streams held open.
//! A target of several replicas gets its connections spread over their addresses in turn.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::stats::nanos;

/// One keep-alive connection's request half.
pub type Sender = SendRequest<Full<Bytes>>;

/// What every request of a scenario is: where it goes, what it carries, and how a good
/// answer ends.
#[derive(Debug)]
pub struct Load {
    /// One address per replica of the target; connections take them in turn.
    pub addrs: Vec<SocketAddr>,
    /// The door: `/v1/chat/completions`, `/v1/messages` or `/v1/responses`.
    pub path: &'static str,
    /// Sent with every request (a client key, `anthropic-version`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// What a 200 answer must show in its last [`TAIL`] bytes to count as a success.
    pub ending: Ending,
    /// Which address the next new connection goes to.
    next: AtomicUsize,
}

impl Load {
    pub fn new(
        addrs: Vec<SocketAddr>,
        path: &'static str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        ending: Ending,
    ) -> Load {
        assert!(!addrs.is_empty(), "a load needs an address");
        Load {
            addrs,
            path,
            headers,
            body,
            ending,
            next: AtomicUsize::new(0),
        }
    }

    /// The address for a new connection: replicas in turn.
    fn addr(&self) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.addrs[i % self.addrs.len()]
    }
}

/// How many of an answer's last bytes are kept to check its ending: a Responses stream ends
/// with a `response.completed` event that repeats the whole response (~1.5 KiB here).
pub const TAIL: usize = 4096;

/// What a successful answer ends with, in its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Nothing to check beyond the status (a whole chat completion).
    Any,
    /// The answer's last bytes are these (`data: [DONE]` of a chat stream).
    EndsWith(&'static [u8]),
    /// The last [`TAIL`] bytes contain these (`message_stop`, `response.completed`, or a
    /// field of a whole answer).
    Contains(&'static [u8]),
}

impl Ending {
    /// Whether `tail` (an answer's last bytes) shows a success.
    pub fn seen_in(self, tail: &[u8]) -> bool {
        match self {
            Ending::Any => true,
            Ending::EndsWith(end) => tail.ends_with(end),
            Ending::Contains(needle) => memchr::memmem::find(tail, needle).is_some(),
        }
    }
}

/// What one phase of load came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of each successful request, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Open loop only: how late each request left against its schedule (the generator's own
    /// error, already included in `latencies`).
    pub lags: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall time from the first request's (scheduled) start to the last answer.
    pub elapsed: Duration,
}

impl Tally {
    fn error(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.lags.extend(other.lags);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Opens one HTTP/1.1 connection; its driver runs as its own task until the sender is dropped.
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A live connection: the one given when it can still send, else a new one. A server may
/// close a kept-alive connection between requests; that is not an error of the request.
async fn usable(sender: Option<Sender>, load: &Load) -> Result<Sender, String> {
    if let Some(mut s) = sender {
        if s.ready().await.is_ok() {
            return Ok(s);
        }
    }
    connect(load.addr()).await
}

/// Sends the load's request; resolves with the response head.
async fn send(
    sender: &mut Sender,
    load: &Load,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(load.path)
        .header(HOST, "127.0.0.1")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(load.body.clone()))
        .map_err(|e| e.to_string())?;
    for (name, value) in &load.headers {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

/// Sends one request and reads its whole answer. `Ok(Err)` is a wrong answer on a healthy
/// connection; `Err` a broken connection.
async fn exchange(sender: &mut Sender, load: &Load) -> Result<Result<(), String>, String> {
    let resp = send(sender, load).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    // The last bytes seen, to check the answer ended as a success does (a stream's last event,
    // not an error event after a 200).
    let mut tail = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            tail.extend_from_slice(&data);
            if tail.len() > TAIL {
                let cut = tail.len() - TAIL;
                let _ = tail.split_to(cut);
            }
        }
    }
    let shown = |tail: &[u8]| {
        let text = String::from_utf8_lossy(tail);
        let start = text.len().saturating_sub(300);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_owned()
    };
    if status != StatusCode::OK {
        return Ok(Err(format!("status {status}: {}", shown(&tail))));
    }
    if !load.ending.seen_in(&tail) {
        return Ok(Err(format!(
            "the answer did not end as a success ({:?}): …{}",
            load.ending,
            shown(&tail)
        )));
    }
    Ok(Ok(()))
}

/// Closed loop: `concurrency` connections (kept in `conns` across phases), each sending its
/// next request as soon as the last was answered, for `duration` — or, with `per_conn`, until
/// each connection sent that many (a fixed amount of work, for instruction counts).
pub async fn closed(
    load: &Arc<Load>,
    conns: &mut Vec<Option<Sender>>,
    concurrency: usize,
    duration: Duration,
    per_conn: Option<usize>,
) -> Tally {
    conns.resize_with(concurrency.max(conns.len()), || None);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for slot in conns.iter_mut().take(concurrency) {
        let mut sender = slot.take();
        let load = load.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut sent = 0;
            while Instant::now() < deadline && per_conn.is_none_or(|n| sent < n) {
                sent += 1;
                let mut s = match usable(sender.take(), &load).await {
                    Ok(s) => s,
                    Err(e) => {
                        tally.error(e);
                        // A refused connection fails at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let t0 = Instant::now();
                match exchange(&mut s, &load).await {
                    Ok(Ok(())) => tally.latencies.push(nanos(t0.elapsed())),
                    Ok(Err(e)) => tally.error(e),
                    Err(e) => {
                        tally.error(e);
                        continue; // the connection is gone; the next round opens one
                    }
                }
                sender = Some(s);
            }
            (sender, tally)
        });
    }
    let mut total = Tally::default();
    let mut back = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (sender, tally) = joined.expect("a closed-loop worker panicked");
        back.push(sender);
        total.merge(tally);
    }
    total.elapsed = started.elapsed();
    for (slot, sender) in conns.iter_mut().zip(back) {
        *slot = sender;
    }
    total
}

/// Idle connections shared by the requests of an open loop.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    fn take(&self) -> Option<Sender> {
        self.idle.lock().expect("pool lock").pop()
    }

    fn put(&self, sender: Sender) {
        self.idle.lock().expect("pool lock").push(sender);
    }
}

/// Open loop: requests leave on a fixed schedule, `rate` per second for `duration`, each on
/// an idle pooled connection or a new one (at most `max_conns` at once). Latency counts from
/// the *scheduled* send time, so a stalled server is charged for every request it delayed
/// (no coordinated omission). The schedule is kept by a plain thread sleeping with
/// `nanosleep`: tokio's timer has millisecond ticks, far coarser than the latencies measured.
pub async fn open(
    load: &Arc<Load>,
    pool: &Arc<Pool>,
    rate: u64,
    duration: Duration,
    max_conns: usize,
) -> Tally {
    let count = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    // Starts a little ahead so the first requests are not late by the thread's start-up.
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = std::thread::spawn(move || {
        for i in 0..count {
            let at = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                break;
            }
        }
    });

    let tally = Arc::new(Mutex::new(Tally::default()));
    let permits = Arc::new(Semaphore::new(max_conns));
    let mut requests = JoinSet::new();
    while let Some(scheduled) = rx.recv().await {
        // Reap finished tasks as we go so the set stays small.
        while requests.try_join_next().is_some() {}
        let (load, pool, tally, permits) =
            (load.clone(), pool.clone(), tally.clone(), permits.clone());
        requests.spawn(async move {
            let _permit = permits.acquire().await.expect("semaphore closed");
            let sent = Instant::now();
            let result = match usable(pool.take(), &load).await {
                Ok(mut s) => {
                    let r = exchange(&mut s, &load).await;
                    if r.is_ok() {
                        pool.put(s);
                    }
                    r
                }
                Err(e) => Err(e),
            };
            let done = Instant::now();
            let mut t = tally.lock().expect("tally lock");
            match result {
                Ok(Ok(())) => {
                    t.latencies.push(nanos(done - scheduled));
                    t.lags
                        .push(nanos(sent.saturating_duration_since(scheduled)));
                }
                Ok(Err(e)) | Err(e) => t.error(e),
            }
        });
    }
    pacer.join().expect("the pacer thread panicked");
    // Requests still out a few seconds after the schedule ended count as errors.
    let drain = tokio::time::timeout(Duration::from_secs(5), async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    let unfinished = requests.len() as u64;
    requests.abort_all();
    let mut total = std::mem::take(&mut *tally.lock().expect("tally lock"));
    if drain.is_err() {
        total.errors += unfinished;
        total
            .first_error
            .get_or_insert_with(|| format!("{unfinished} requests unanswered after 5s"));
    }
    total.elapsed = start.elapsed();
    total
}

/// Streams held open by [`hold_idle`] until released.
pub struct IdleStreams {
    pub opened: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Time to open them all.
    pub setup: Duration,
    release: watch::Sender<bool>,
    holders: JoinSet<()>,
}

impl IdleStreams {
    /// Closes every stream (dropping the connections) and waits until they are gone.
    pub async fn release(mut self) {
        let _ = self.release.send(true);
        while self.holders.join_next().await.is_some() {}
    }
}

/// Opens `count` streaming requests, each on its own connection, `parallel` at a time (the
/// listen backlog is finite), and holds every one that got its status and first event.
pub async fn hold_idle(load: &Arc<Load>, count: usize, parallel: usize) -> IdleStreams {
    let started = Instant::now();
    let (release, released) = watch::channel(false);
    let (report, mut reports) = mpsc::channel::<Result<(), String>>(1024);
    let opening = Arc::new(Semaphore::new(parallel));
    let mut holders = JoinSet::new();
    for _ in 0..count {
        let (load, report, opening, mut released) = (
            load.clone(),
            report.clone(),
            opening.clone(),
            released.clone(),
        );
        holders.spawn(async move {
            let permit = opening.acquire().await.expect("semaphore closed");
            let held = open_one(&load).await;
            drop(permit);
            match held {
                Ok(held) => {
                    let _ = report.send(Ok(())).await;
                    let _ = released.wait_for(|r| *r).await;
                    drop(held);
                }
                Err(e) => {
                    let _ = report.send(Err(e)).await;
                }
            }
        });
    }
    drop(report);
    let (mut opened, mut errors, mut first_error) = (0, 0, None);
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = reports.recv().await {
            match r {
                Ok(()) => opened += 1,
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            if opened + errors == count {
                break;
            }
        }
    })
    .await;
    if all.is_err() {
        errors = count - opened;
        first_error.get_or_insert_with(|| "timed out opening streams".into());
    }
    IdleStreams {
        opened,
        errors,
        first_error,
        setup: started.elapsed(),
        release,
        holders,
    }
}

/// One idle stream: its connection and the body, open, after the first event arrived.
async fn open_one(load: &Load) -> Result<(Sender, hyper::body::Incoming), String> {
    let mut sender = connect(load.addr()).await?;
    let resp = send(&mut sender, load).await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.into_body();
    match tokio::time::timeout(Duration::from_secs(30), body.frame()).await {
        Ok(Some(Ok(_))) => Ok((sender, body)),
        Ok(Some(Err(e))) => Err(format!("body: {e}")),
        Ok(None) => Err("the stream ended at once".into()),
        Err(_) => Err("no first event within 30s".into()),
    }
}
