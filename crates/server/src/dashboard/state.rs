//! The board: requests in flight, the ring of finished ones, each backend's five-minute window
//! and each key's counts for the day, in shards so that concurrent requests rarely meet on a
//! lock. A request takes its shard's lock twice — when it starts and when it ends — and its
//! own record's lock for its marks; nothing else on the request path.
//!
//! Sizes (docs/dashboard.md): `SHARDS` × `FINISHED_PER_SHARD` finished requests are kept
//! (requests go to shards in turn, so that is about the last 256), at most
//! `MARKS_PER_REQUEST` marks each; one five-minute window per backend per shard.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tollgate_core::Target;

use super::trace::{ms, Live, Record, What};
use super::window::{self, Merged, Sample, Window};

pub const SHARDS: usize = 8;
/// Finished requests kept per shard.
pub const FINISHED_PER_SHARD: usize = 32;
/// In-flight requests listed in a snapshot or an event (the newest); the total is always given.
pub const INFLIGHT_SHOWN: usize = 50;
/// The key counted for requests without a client key.
pub const ANONYMOUS: &str = "anonymous";

#[derive(Default)]
struct Shard {
    inflight: HashMap<u64, Arc<Live>>,
    finished: VecDeque<Arc<Live>>,
    /// By backend name.
    windows: HashMap<Arc<str>, Window>,
    /// By key name (`anonymous` without keys).
    keys: HashMap<String, KeyDay>,
}

/// One key's requests and tokens on one UTC day, as this process saw them.
#[derive(Clone, Copy, Default, Serialize)]
pub struct KeyDay {
    /// Days since 1970-01-01 (UTC).
    #[serde(skip)]
    pub day: u64,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

pub struct Board {
    next_seq: AtomicU64,
    finishes: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            next_seq: AtomicU64::new(1),
            finishes: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

fn today() -> u64 {
    super::trace::unix_ms(SystemTime::now()) / 86_400_000
}

impl Board {
    fn shard(&self, seq: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(seq % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new sequence number.
    pub fn seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn start(&self, live: Arc<Live>) {
        self.shard(live.seq).inflight.insert(live.seq, live);
    }

    /// Moves a request to the finished ring and adds it to its backends' windows and its
    /// key's day. `record` is the request's own (locked by the caller).
    pub fn finish(&self, live: &Arc<Live>, record: &Record, target: Option<&Target>) {
        let Some(end) = record.end else { return };
        live.finish_no.store(
            self.finishes.fetch_add(1, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        let now = window::now_secs();
        let day = today();
        let mut shard = self.shard(live.seq);
        shard.inflight.remove(&live.seq);
        if shard.finished.len() >= FINISHED_PER_SHARD {
            shard.finished.pop_front();
        }
        shard.finished.push_back(live.clone());

        // Attempts by backend: one target in the common case, so a short scan beats a map.
        let mut current: Option<&str> = None;
        let mut samples: Vec<(&str, Sample)> = Vec::new();
        for mark in &record.marks {
            match &mark.what {
                What::Attempt { target, .. } => {
                    let backend = target.split_once(':').map_or(target.as_str(), |(b, _)| b);
                    current = Some(backend);
                    sample_for(&mut samples, backend).attempts += 1;
                }
                What::Failed { .. } => {
                    if let Some(backend) = current {
                        sample_for(&mut samples, backend).failed += 1;
                    }
                }
                _ => {}
            }
        }
        if let Some(target) = target {
            let sample = sample_for(&mut samples, &target.backend);
            sample.request = true;
            let answered = end.status < 400;
            if answered {
                sample.latency = Some(end.duration);
                sample.ttft = end.ttft;
            }
            // A stream that broke after its answer started is the backend's failure too.
            if answered && end.counted >= 500 {
                sample.failed += 1;
            }
        }
        for (backend, sample) in &samples {
            match shard.windows.get_mut(*backend) {
                Some(w) => w.record(now, sample),
                None => {
                    let mut w = Window::default();
                    w.record(now, sample);
                    shard.windows.insert(Arc::from(*backend), w);
                }
            }
        }

        let key = record.key.as_deref().unwrap_or(ANONYMOUS);
        let counts = match shard.keys.get_mut(key) {
            Some(c) => c,
            None => shard.keys.entry(key.to_owned()).or_default(),
        };
        if counts.day != day {
            *counts = KeyDay {
                day,
                ..KeyDay::default()
            };
        }
        counts.requests += 1;
        counts.prompt_tokens += end.prompt_tokens;
        counts.completion_tokens += end.completion_tokens;
    }

    /// Requests in flight (newest first, at most `INFLIGHT_SHOWN`) and how many there are.
    pub fn inflight(&self) -> (Vec<Arc<Live>>, usize) {
        let mut all = Vec::new();
        for i in 0..SHARDS {
            all.extend(self.shard(i as u64).inflight.values().cloned());
        }
        let total = all.len();
        all.sort_unstable_by_key(|l| std::cmp::Reverse(l.seq));
        all.truncate(INFLIGHT_SHOWN);
        (all, total)
    }

    /// Finished requests, the latest to finish first; only those after `after` (a finish
    /// number), at most `limit`.
    pub fn finished(&self, after: u64, limit: usize) -> Vec<Arc<Live>> {
        let mut all = Vec::new();
        for i in 0..SHARDS {
            let shard = self.shard(i as u64);
            all.extend(
                shard
                    .finished
                    .iter()
                    .filter(|l| l.finish_no.load(Ordering::Relaxed) > after)
                    .cloned(),
            );
        }
        all.sort_unstable_by_key(|l| std::cmp::Reverse(l.finish_no.load(Ordering::Relaxed)));
        all.truncate(limit);
        all
    }

    /// One request, in flight or still in the finished ring.
    pub fn find(&self, seq: u64) -> Option<Arc<Live>> {
        let shard = self.shard(seq);
        shard
            .inflight
            .get(&seq)
            .cloned()
            .or_else(|| shard.finished.iter().find(|l| l.seq == seq).cloned())
    }

    /// Every backend's window, merged over the shards.
    pub fn windows(&self) -> HashMap<String, Merged> {
        let now = window::now_secs();
        let mut out: HashMap<String, Merged> = HashMap::new();
        for i in 0..SHARDS {
            let shard = self.shard(i as u64);
            for (name, w) in &shard.windows {
                out.entry(name.to_string()).or_default().add(w, now);
            }
        }
        out
    }

    /// Each key's counts for today (UTC), merged over the shards.
    pub fn keys(&self) -> HashMap<String, KeyDay> {
        let day = today();
        let mut out: HashMap<String, KeyDay> = HashMap::new();
        for i in 0..SHARDS {
            let shard = self.shard(i as u64);
            for (name, c) in shard.keys.iter().filter(|(_, c)| c.day == day) {
                let sum = out.entry(name.clone()).or_default();
                sum.requests += c.requests;
                sum.prompt_tokens += c.prompt_tokens;
                sum.completion_tokens += c.completion_tokens;
            }
        }
        out
    }
}

fn sample_for<'a, 'b>(samples: &'a mut Vec<(&'b str, Sample)>, backend: &'b str) -> &'a mut Sample {
    let at = match samples.iter().position(|(b, _)| *b == backend) {
        Some(i) => i,
        None => {
            samples.push((backend, Sample::default()));
            samples.len() - 1
        }
    };
    &mut samples[at].1
}

/// A request as the page lists it: names and numbers only.
#[derive(Serialize)]
pub struct Summary {
    pub seq: u64,
    pub request_id: String,
    pub door: &'static str,
    pub endpoint: &'static str,
    pub key: Option<String>,
    pub model: Option<String>,
    /// The target tried last, `backend:model`.
    pub target: Option<String>,
    pub stream: bool,
    pub started_at: u64,
    pub attempts: u32,
    pub fallbacks: u32,
    pub events: u64,
    pub keepalives: u64,
    /// The last mark's name: where an in-flight request is now.
    pub phase: &'static str,
    /// Milliseconds since the start of the last upstream event (streams).
    pub last_event_ms: Option<f64>,
    pub status: Option<u16>,
    pub counted_status: Option<u16>,
    pub error: Option<&'static str>,
    pub completed: Option<bool>,
    pub duration_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub marks: usize,
}

impl Live {
    pub fn summary(&self) -> Summary {
        let r = self.lock();
        let events = self.events.load(Ordering::Relaxed);
        let end = r.end;
        Summary {
            seq: self.seq,
            request_id: self.request_id.clone(),
            door: self.door,
            endpoint: self.endpoint,
            key: r.key.clone(),
            model: r.model.clone(),
            target: r.target.clone(),
            stream: r.stream,
            started_at: self.started_ms,
            attempts: r.attempts,
            fallbacks: r.fallbacks,
            events,
            keepalives: self.keepalives.load(Ordering::Relaxed),
            phase: r.marks.last().map_or("received", |m| m.what.name()),
            last_event_ms: (events > 0)
                .then(|| self.last_event_us.load(Ordering::Relaxed) as f64 / 1000.0),
            status: end.map(|e| e.status),
            counted_status: end.map(|e| e.counted),
            error: end.and_then(|e| e.error),
            completed: end.map(|e| e.completed),
            duration_ms: end.map(|e| ms(e.duration)),
            ttft_ms: end.and_then(|e| e.ttft).map(ms),
            prompt_tokens: end.map(|e| e.prompt_tokens),
            completion_tokens: end.map(|e| e.completion_tokens),
            marks: r.marks.len() + r.omitted as usize,
        }
    }

    /// The whole timeline, with the summary.
    pub fn detail(&self) -> serde_json::Value {
        let summary = self.summary();
        let r = self.lock();
        serde_json::json!({
            "request": summary,
            "marks": r.marks,
            "omitted_marks": r.omitted,
            "elapsed_ms": ms(self.started.elapsed()),
            "in_flight": r.end.is_none(),
        })
    }
}

impl What {
    pub fn name(&self) -> &'static str {
        match self {
            What::Received => "received",
            What::Attempt { .. } => "attempt",
            What::Failed { .. } => "failed",
            What::Answered { .. } => "answered",
            What::Skipped { .. } => "skipped",
            What::Held { .. } => "held",
            What::Committed { .. } => "committed",
            What::FirstEvent => "first_event",
            What::Keepalive => "keepalive",
            What::LastEvent { .. } => "last_event",
            What::End { .. } => "end",
        }
    }
}
