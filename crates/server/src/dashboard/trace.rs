//! The trace handle the request path carries (in `Outcome`, and through `Job` into dispatch)
//! while the dashboard is enabled, and the one-line hooks it calls. Every hook is a no-op on
//! `None`, so a gateway with the dashboard off pays one branch per hook.
//!
//! What a trace records is names and numbers only: the door, the client key's *name*, model
//! names, statuses, error codes, counts and times — never a body, a header or a key. Upstream
//! error *messages* are left out too: some upstreams echo the request's content in them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tollgate_core::{ClientRequest, GatewayError, Target};

use super::state::Board;
use crate::outcome::Outcome;

/// Timeline marks kept per request (documented in docs/dashboard.md). Beyond it, marks other
/// than the last event and the end are counted in `omitted`, not stored: a long stream's
/// keepalives cannot grow a record without bound.
pub const MARKS_PER_REQUEST: usize = 64;

/// The longest requested model name kept (client text, so bounded).
const MODEL_CHARS: usize = 200;

/// One request's trace; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Trace {
    pub(crate) live: Arc<Live>,
    board: Arc<Board>,
}

/// A request as the dashboard sees it, from its start until it leaves the finished ring.
pub(crate) struct Live {
    /// The dashboard's own sequence number: ids in its API and the shard it lives in.
    pub seq: u64,
    pub request_id: String,
    pub door: &'static str,
    pub endpoint: &'static str,
    pub started: Instant,
    /// Wall clock at the start, in Unix milliseconds, for the page.
    pub started_ms: u64,
    /// Upstream events taken in, and when the last one came (µs after the start). Atomics:
    /// the relay bumps them for every event, and they must cost no lock there.
    pub events: AtomicU64,
    pub last_event_us: AtomicU64,
    pub keepalives: AtomicU64,
    /// The order in which requests finished (0 while in flight), so the event channel can
    /// send each finished request once whatever order they started in.
    pub finish_no: AtomicU64,
    /// Everything else, behind a lock only this request's own hooks (and a reader making a
    /// snapshot) take.
    pub record: Mutex<Record>,
}

#[derive(Default)]
pub(crate) struct Record {
    pub key: Option<String>,
    /// The model the client asked for (a route name, a `claude-*` name …).
    pub model: Option<String>,
    pub stream: bool,
    /// The target tried last, as `backend:model`.
    pub target: Option<String>,
    pub attempts: u32,
    /// Moves to another target after a failure.
    pub fallbacks: u32,
    pub marks: Vec<Mark>,
    pub omitted: u32,
    pub end: Option<End>,
}

/// How a request ended.
#[derive(Clone, Copy)]
pub(crate) struct End {
    /// The status sent (499 when the client left first).
    pub status: u16,
    /// The status it is counted under: a stream broken after its 200 counts as its failure.
    pub counted: u16,
    pub error: Option<&'static str>,
    pub completed: bool,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One point of a request's timeline.
#[derive(Clone, Serialize)]
pub(crate) struct Mark {
    /// Milliseconds after the request was received.
    pub t: f64,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Clone, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub(crate) enum What {
    Received,
    /// Attempt `n` (over all targets) starts at `target`.
    Attempt {
        n: u32,
        target: String,
    },
    /// It failed with `status`; `kind` as in `tollgate_upstream_errors_total`.
    Failed {
        n: u32,
        status: u16,
        kind: &'static str,
    },
    /// It answered (for a stream: its first event arrived).
    Answered {
        n: u32,
    },
    /// A target passed over without an attempt (`circuit_open`, `over_limit`, `store_down`).
    Skipped {
        target: String,
        why: &'static str,
    },
    /// A stream's status line is held for its first event, up to this long.
    Held {
        up_to_ms: u64,
    },
    /// The status line went out: after the first event, or before it (the upstream was
    /// slower than the keepalive interval).
    Committed {
        status: u16,
        before_first_event: bool,
    },
    FirstEvent,
    Keepalive,
    LastEvent {
        events: u64,
    },
    End {
        status: u16,
        error: Option<&'static str>,
        completed: bool,
    },
}

impl Trace {
    pub(crate) fn new(live: Arc<Live>, board: Arc<Board>) -> Trace {
        Trace { live, board }
    }

    fn mark(&self, what: What) {
        let t = ms(self.live.started.elapsed());
        self.live.lock().push(Mark { t, what });
    }
}

impl Live {
    pub fn new(seq: u64, outcome: &Outcome) -> Live {
        let mut record = Record::default();
        record.push(Mark {
            t: 0.0,
            what: What::Received,
        });
        Live {
            seq,
            request_id: outcome.request_id.clone(),
            door: outcome.door.label(),
            endpoint: outcome.endpoint,
            started: outcome.started,
            started_ms: unix_ms(SystemTime::now())
                .saturating_sub(outcome.started.elapsed().as_millis() as u64),
            events: AtomicU64::new(0),
            last_event_us: AtomicU64::new(0),
            keepalives: AtomicU64::new(0),
            finish_no: AtomicU64::new(0),
            record: Mutex::new(record),
        }
    }

    /// The record; a hook that panicked mid-update leaves it readable.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Record {
    fn push(&mut self, mark: Mark) {
        let last = matches!(mark.what, What::LastEvent { .. } | What::End { .. });
        if self.marks.len() < MARKS_PER_REQUEST || last {
            self.marks.push(mark);
        } else {
            self.omitted += 1;
        }
    }
}

/// Milliseconds, rounded to 10 µs.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// The hooks. Each is called on one line of the request path; each is a no-op without a trace.

/// Dispatch is about to start: notes what the request is (key name, requested model, stream)
/// and hands dispatch its copy of the trace.
pub fn dispatching(outcome: &Outcome, request: &ClientRequest) -> Option<Trace> {
    let trace = outcome.trace.as_ref()?;
    let mut r = trace.live.lock();
    r.key = outcome.key.clone();
    r.model = Some(request.model.chars().take(MODEL_CHARS).collect());
    r.stream = outcome.stream;
    drop(r);
    Some(trace.clone())
}

/// Attempt `n` starts at `target`.
pub fn attempt(trace: &Option<Trace>, target: &Target, n: u32) {
    let Some(trace) = trace else { return };
    let name = format!("{}:{}", target.backend, target.model);
    let t = ms(trace.live.started.elapsed());
    let mut r = trace.live.lock();
    if r.target.as_ref().is_some_and(|last| *last != name) {
        r.fallbacks += 1;
    }
    r.attempts = n;
    r.target = Some(name.clone());
    r.push(Mark {
        t,
        what: What::Attempt { n, target: name },
    });
}

/// Attempt `n` came back: answered, or failed with an error's status and kind.
pub fn attempted<T>(trace: &Option<Trace>, n: u32, result: &Result<T, GatewayError>) {
    let Some(trace) = trace else { return };
    trace.mark(match result {
        Ok(_) => What::Answered { n },
        Err(e) => What::Failed {
            n,
            status: e.status().as_u16(),
            kind: crate::dispatch::error_kind(e),
        },
    });
}

/// `target` was passed over without an attempt.
pub fn skipped(trace: &Option<Trace>, target: &Target, why: &'static str) {
    let Some(trace) = trace else { return };
    trace.mark(What::Skipped {
        target: format!("{}:{}", target.backend, target.model),
        why,
    });
}

/// A stream's status line is held for its first event, up to `wait`.
pub fn held(outcome: &Outcome, wait: Duration) {
    let Some(trace) = &outcome.trace else { return };
    trace.mark(What::Held {
        up_to_ms: wait.as_millis() as u64,
    });
}

/// A stream's status line went out (`before_first_event`: the upstream was slower than the
/// keepalive interval, so the 200 went first).
pub fn committed(outcome: &Outcome, before_first_event: bool) {
    let Some(trace) = &outcome.trace else { return };
    trace.mark(What::Committed {
        status: outcome.status,
        before_first_event,
    });
}

/// The stream's first upstream event arrived.
pub fn first_event(outcome: &Outcome) {
    let Some(trace) = &outcome.trace else { return };
    trace.mark(What::FirstEvent);
}

/// One upstream event: two atomic stores, no lock (called for every event of a stream).
pub fn event(outcome: &Outcome) {
    let Some(trace) = &outcome.trace else { return };
    let live = &trace.live;
    live.events.fetch_add(1, Ordering::Relaxed);
    live.last_event_us
        .store(live.started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// A keepalive frame went to the client.
pub fn keepalive(outcome: &Outcome) {
    let Some(trace) = &outcome.trace else { return };
    trace.live.keepalives.fetch_add(1, Ordering::Relaxed);
    trace.mark(What::Keepalive);
}

/// The request ended (called from `Outcome`'s drop): its last marks, then it moves from the
/// in-flight set to the finished ring.
pub fn finish(outcome: &Outcome) {
    let Some(trace) = &outcome.trace else { return };
    let live = &trace.live;
    // As `Outcome`'s drop counts it: 499 for a client that left first; a stream broken after
    // its 200 is counted as its failure.
    let status = if outcome.completed {
        outcome.status
    } else {
        499
    };
    let counted = outcome
        .broken_status
        .filter(|_| outcome.completed)
        .unwrap_or(status);
    let usage = outcome.usage.unwrap_or_default();
    let end = End {
        status,
        counted,
        error: outcome.error,
        completed: outcome.completed,
        duration: outcome.started.elapsed(),
        ttft: outcome.first_event,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
    };
    let events = live.events.load(Ordering::Relaxed);
    let mut r = live.lock();
    if r.key.is_none() {
        r.key = outcome.key.clone();
    }
    if events > 0 {
        let t = live.last_event_us.load(Ordering::Relaxed) as f64 / 1000.0;
        r.push(Mark {
            t,
            what: What::LastEvent { events },
        });
    }
    r.push(Mark {
        t: ms(end.duration),
        what: What::End {
            status,
            error: end.error,
            completed: end.completed,
        },
    });
    r.end = Some(end);
    // The record stays locked while the board takes its shard: readers take a shard's lock
    // and let it go before they lock a record, so the two orders never meet.
    trace.board.finish(live, &r, outcome.target.as_ref());
}
