//! `GET /dashboard/events`: the live side channel, as server-sent events.
//!
//! One publisher task — running only while someone watches — reads the board every
//! `TICK` and, when something changed, sends one `tick` event (the newest requests in flight,
//! up to 50 requests finished since the last tick, and each backend's window when it changed)
//! into a bounded broadcast channel. Each frame is serialized once, whatever the number of viewers, and
//! the request path never sends anything: a viewer's cost is the publisher's, at most four
//! frames a second, however busy the gateway is.
//!
//! A viewer that falls `BUFFER` frames behind (its socket stopped taking bytes, so its body
//! was not polled) is sent `event: dropped` and disconnected instead of being buffered for;
//! its `EventSource` reconnects and the page reloads the snapshot.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::Frame;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use super::state::INFLIGHT_SHOWN;
use super::trace::unix_ms;
use super::Dashboard;

/// How often the publisher looks at the board.
pub const TICK: Duration = Duration::from_millis(250);
/// Frames a viewer may fall behind before it is dropped (4 s of ticks).
pub const BUFFER: usize = 16;
/// Finished requests one frame carries at most (the newest).
const FINISHED_PER_FRAME: usize = 50;
/// A frame goes out at least this often, changed or not, so the page's clock and the
/// connection stay alive behind proxies that close idle ones.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A viewer's last event when the gateway starts draining.
const SHUTTING_DOWN: &[u8] =
    b"event: reset\ndata: {\"reason\":\"the gateway is shutting down\"}\n\n";

pub fn channel() -> broadcast::Sender<Bytes> {
    broadcast::channel(BUFFER).0
}

type Next = Pin<
    Box<
        dyn Future<Output = (Result<Bytes, RecvError>, broadcast::Receiver<Bytes>)>
            + Send
            + 'static,
    >,
>;

fn next(mut rx: broadcast::Receiver<Bytes>) -> Next {
    Box::pin(async move {
        let got = rx.recv().await;
        (got, rx)
    })
}

/// One viewer's event stream: a response body.
pub struct Events {
    dashboard: Arc<Dashboard>,
    /// The dashboard's generation when the viewer logged in: a reload that changes access
    /// ends the stream.
    generation: u64,
    preamble: Option<Bytes>,
    next: Next,
    done: bool,
}

impl Events {
    /// Subscribes a viewer, starting the publisher if it is not running.
    pub fn subscribe(dashboard: &Arc<Dashboard>) -> Events {
        let rx = dashboard.tx.subscribe();
        dashboard.viewers.fetch_add(1, Ordering::SeqCst);
        if !dashboard.publishing.swap(true, Ordering::SeqCst) {
            tokio::spawn(publish(dashboard.clone()));
        }
        Events {
            dashboard: dashboard.clone(),
            generation: dashboard.generation.load(Ordering::SeqCst),
            // `retry`: how long the browser waits before it reconnects.
            preamble: Some(Bytes::from_static(b"retry: 2000\n: tollgate dashboard\n\n")),
            next: next(rx),
            done: false,
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(preamble) = self.preamble.take() {
            return Poll::Ready(Some(Frame::data(preamble)));
        }
        if self.dashboard.draining.load(Ordering::SeqCst) {
            self.done = true;
            return Poll::Ready(Some(Frame::data(Bytes::from_static(SHUTTING_DOWN))));
        }
        let (got, rx) = match self.next.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(ready) => ready,
        };
        self.next = next(rx);
        if self.dashboard.draining.load(Ordering::SeqCst) {
            self.done = true;
            return Poll::Ready(Some(Frame::data(Bytes::from_static(SHUTTING_DOWN))));
        }
        if self.dashboard.generation.load(Ordering::SeqCst) != self.generation {
            self.done = true;
            return Poll::Ready(Some(Frame::data(Bytes::from_static(
                b"event: reset\ndata: {\"reason\":\"the dashboard's access settings changed\"}\n\n",
            ))));
        }
        match got {
            Ok(frame) => Poll::Ready(Some(Frame::data(frame))),
            Err(RecvError::Lagged(missed)) => {
                self.done = true;
                tracing::info!(
                    missed,
                    "a dashboard viewer fell behind and was disconnected"
                );
                let event = format!(
                    "event: dropped\ndata: {{\"reason\":\"too slow: {missed} updates behind\"}}\n\n"
                );
                Poll::Ready(Some(Frame::data(Bytes::from(event))))
            }
            Err(RecvError::Closed) => Poll::Ready(None),
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.dashboard.viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The publisher: runs while there are viewers.
async fn publish(dashboard: Arc<Dashboard>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_finish = 0;
    let mut last_body = String::new();
    let mut last_backends = String::new();
    let mut last_sent: Option<Instant> = None;
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        if dashboard.viewers.load(Ordering::SeqCst) == 0 {
            dashboard.publishing.store(false, Ordering::SeqCst);
            // A viewer that came in meanwhile either saw `publishing` false and started a
            // publisher of its own, or finds this one going on.
            if dashboard.viewers.load(Ordering::SeqCst) == 0
                || dashboard.publishing.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
        ticks += 1;
        let board = &dashboard.board;
        let (inflight, total) = board.inflight();
        let finished = board.finished(last_finish, FINISHED_PER_FRAME);
        if let Some(newest) = finished.first() {
            last_finish = newest.finish_no.load(Ordering::Relaxed);
        }
        let mut frame = json!({
            "inflight_total": total,
            "inflight": inflight.iter().map(|l| l.summary()).collect::<Vec<_>>(),
            "finished": finished.iter().map(|l| l.summary()).collect::<Vec<_>>(),
        });
        // Windows move slowly: looked at once a second, sent when they changed.
        if ticks % 4 == 1 {
            let backends = super::handlers::windows_json(board).to_string();
            if backends != last_backends {
                frame["backends"] = serde_json::from_str(&backends).unwrap_or_default();
                last_backends = backends;
            }
        }
        let body = frame.to_string();
        let due = last_sent.is_none_or(|t| t.elapsed() >= HEARTBEAT);
        if body == last_body && !due {
            continue;
        }
        debug_assert!(inflight.len() <= INFLIGHT_SHOWN);
        // `now` goes in front of the object: the page's clock for in-flight durations.
        let now = unix_ms(SystemTime::now());
        let event = format!("event: tick\ndata: {{\"now\":{now},{}\n\n", &body[1..]);
        // No receiver left is not an error here: the next tick stops the publisher.
        let _ = dashboard.tx.send(Bytes::from(event));
        last_body = body;
        last_sent = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::poll_fn;

    async fn frame(events: &mut Events) -> Option<String> {
        poll_fn(|cx| events.poll_frame(cx))
            .await
            .map(|f| String::from_utf8_lossy(f.data_ref().expect("data")).into_owned())
    }

    #[tokio::test]
    async fn a_viewer_more_than_the_buffer_behind_is_dropped() {
        let dashboard = Arc::new(Dashboard::new());
        let mut events = Events::subscribe(&dashboard);
        assert!(frame(&mut events)
            .await
            .expect("preamble")
            .starts_with("retry:"));
        for i in 0..=BUFFER {
            let _ = dashboard
                .tx
                .send(Bytes::from(format!("event: tick\ndata: {i}\n\n")));
        }
        let last = frame(&mut events).await.expect("a frame");
        assert!(last.starts_with("event: dropped"), "{last}");
        assert_eq!(frame(&mut events).await, None, "then the stream ends");
        drop(events);
        assert_eq!(dashboard.viewers.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_viewer_within_the_buffer_gets_every_frame() {
        let dashboard = Arc::new(Dashboard::new());
        let mut events = Events::subscribe(&dashboard);
        frame(&mut events).await.expect("preamble");
        for i in 0..BUFFER {
            let _ = dashboard
                .tx
                .send(Bytes::from(format!("event: tick\ndata: {i}\n\n")));
        }
        for i in 0..BUFFER {
            assert_eq!(
                frame(&mut events).await.as_deref(),
                Some(format!("event: tick\ndata: {i}\n\n").as_str())
            );
        }
    }

    #[tokio::test]
    async fn draining_ends_every_viewer_at_once() {
        let dashboard = Arc::new(Dashboard::new());
        let mut events = Events::subscribe(&dashboard);
        frame(&mut events).await.expect("preamble");
        // A viewer waiting for its next frame is woken by the drain, with no tick due.
        let waiting = tokio::spawn(async move {
            // The publisher's first tick may come before the drain.
            let mut last = frame(&mut events).await;
            while last
                .as_deref()
                .is_some_and(|f| f.starts_with("event: tick"))
            {
                last = frame(&mut events).await;
            }
            (last, frame(&mut events).await)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        dashboard.drain();
        let (last, after) = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("woken at once")
            .expect("joined");
        let last = last.expect("a last event");
        assert!(
            last.starts_with("event: reset") && last.contains("shutting down"),
            "{last}"
        );
        assert_eq!(after, None, "then the stream ends");
        // A viewer arriving while draining ends too.
        let mut late = Events::subscribe(&dashboard);
        frame(&mut late).await.expect("preamble");
        assert!(frame(&mut late)
            .await
            .expect("reset")
            .starts_with("event: reset"));
    }
}
