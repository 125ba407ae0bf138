//! Scenarios and how one is measured against one target: warm up, snapshot the proxy's CPU
//! time and the load core's, drive the load, snapshot again, read the proxy's memory.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};

use crate::client::{self, Ending, Load, Pool, Tally};
use crate::procfs;
use crate::stats::Summary;
use crate::targets::Target;

/// The front protocol a request is sent in. The fake upstream answers chat.completions
/// whatever the door, so the Messages and Responses doors measure tollgate's translation
/// both ways on top of the same hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `POST /v1/chat/completions`: passed through to an OpenAI-compatible backend.
    Chat,
    /// `POST /v1/messages` (Anthropic Messages), translated to chat.completions and back.
    Messages,
    /// `POST /v1/responses` (OpenAI Responses), translated to chat.completions and back.
    Responses,
}

impl Door {
    pub fn path(self) -> &'static str {
        match self {
            Door::Chat => "/v1/chat/completions",
            Door::Messages => "/v1/messages",
            Door::Responses => "/v1/responses",
        }
    }

    /// How a successful answer of this door ends: a stream's last event, or a field only a
    /// finished whole answer has.
    pub fn ending(self, stream: bool) -> Ending {
        match (self, stream) {
            (Door::Chat, true) => Ending::EndsWith(b"data: [DONE]\n\n"),
            (Door::Chat, false) => Ending::Any,
            (Door::Messages, true) => Ending::Contains(b"event: message_stop"),
            (Door::Messages, false) => Ending::Contains(br#""stop_reason":"end_turn""#),
            (Door::Responses, true) => Ending::Contains(b"event: response.completed"),
            (Door::Responses, false) => Ending::Contains(br#""status":"completed""#),
        }
    }
}

/// One kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Non-streaming requests at a fixed rate; latency from the scheduled send time.
    Open { rate: u64 },
    /// Non-streaming requests on a fixed number of connections, back to back.
    Closed { concurrency: usize, door: Door },
    /// Streams of 20 chunks on a fixed number of connections, back to back: paced (one
    /// upstream write per event) or, with `burst`, the whole stream in one upstream write.
    Stream {
        concurrency: usize,
        door: Door,
        burst: bool,
    },
    /// Streams opened and held silent, to weigh what each open stream costs.
    Idle { count: usize },
}

impl Scenario {
    /// Whether the scenario needs a gateway: only tollgate has the Messages and Responses
    /// doors (the upstream, and nginx in front of it, speak chat.completions only).
    pub fn needs_gateway(self) -> bool {
        matches!(
            self,
            Scenario::Closed { door, .. } | Scenario::Stream { door, .. } if door != Door::Chat
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let door = |door: &Door| match door {
            Door::Chat => "",
            Door::Messages => ", Messages door",
            Door::Responses => ", Responses door",
        };
        match self {
            Scenario::Open { rate } => write!(f, "open loop {rate} req/s"),
            Scenario::Closed {
                concurrency,
                door: d,
            } => {
                write!(f, "closed loop c={concurrency}{}", door(d))
            }
            Scenario::Stream {
                concurrency,
                door: d,
                burst,
            } => write!(
                f,
                "stream c={concurrency}, {} chunks{}{}",
                crate::upstream::STREAM_CHUNKS,
                if *burst { " in one burst" } else { "" },
                door(d)
            ),
            Scenario::Idle { count } => write!(f, "{count} idle streams"),
        }
    }
}

/// What one scenario came to on one target.
#[derive(Debug)]
pub struct Measurement {
    pub scenario: Scenario,
    pub target: String,
    pub ok: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Option<Summary>,
    /// Open loop: how late requests left against the schedule (the generator's error).
    pub lag: Option<Summary>,
    /// CPU seconds the proxy used during the measured phase.
    pub proxy_cpu: Option<f64>,
    /// CPU seconds the load generator and the upstream used (both on the load core).
    pub load_cpu: f64,
    /// CPU seconds the proxy's core was busy with anything else than the proxy (other
    /// processes, interrupts): the noise in this measurement.
    pub other_cpu: Option<f64>,
    /// Proxy VmRSS at the end (idle streams: while they are held), KiB.
    pub rss_kib: Option<u64>,
    /// Proxy VmHWM over the scenario, warm-up included, KiB.
    pub peak_kib: Option<u64>,
    /// Idle streams: proxy VmRSS before they were opened, KiB.
    pub baseline_kib: Option<u64>,
    /// How many rounds this measurement sums (see [`Measurement::absorb`]).
    pub rounds: usize,
    /// The raw samples behind `latency` and `lag`, kept until the rounds are merged.
    samples: (Vec<u64>, Vec<u64>),
}

impl Measurement {
    /// Adds a later round of the same scenario on the same target: counts, times and CPU are
    /// summed, latency percentiles are taken over the samples of every round, memory is the
    /// largest seen. Interleaved rounds spread the machine's slow spells over every target.
    pub fn absorb(&mut self, other: Measurement) {
        debug_assert!(self.scenario == other.scenario && self.target == other.target);
        self.ok += other.ok;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.proxy_cpu = match (self.proxy_cpu, other.proxy_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.load_cpu += other.load_cpu;
        self.other_cpu = match (self.other_cpu, other.other_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.rss_kib = self.rss_kib.max(other.rss_kib);
        self.peak_kib = self.peak_kib.max(other.peak_kib);
        self.rounds += other.rounds;
        self.samples.0.extend(other.samples.0);
        self.samples.1.extend(other.samples.1);
        self.latency = Summary::of(&mut self.samples.0);
        self.lag = Summary::of(&mut self.samples.1);
    }

    /// Drops the raw samples once no round is left to merge.
    pub fn settle(&mut self) {
        self.samples = (Vec::new(), Vec::new());
    }

    /// Answers (or streams) per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Proxy CPU time per successful request, in microseconds.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.proxy_cpu?;
        (self.ok > 0).then(|| cpu * 1e6 / self.ok as f64)
    }

    /// Proxy CPU use over the phase, in % of one core.
    pub fn proxy_cpu_percent(&self) -> Option<f64> {
        Some(self.proxy_cpu? * 100.0 / self.elapsed.as_secs_f64().max(1e-9))
    }

    /// Load-core use over the phase, in % of one core: near 100, the generator is the limit.
    pub fn load_cpu_percent(&self) -> f64 {
        self.load_cpu * 100.0 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Work on the proxy's core that was not the proxy's, in % of that core.
    pub fn other_cpu_percent(&self) -> Option<f64> {
        Some(self.other_cpu? * 100.0 / self.elapsed.as_secs_f64().max(1e-9))
    }
}

/// What every measurement shares.
pub struct Bench {
    pub duration: Duration,
    pub warmup: Duration,
    /// Clock ticks per second, to turn `/proc` CPU times into seconds.
    pub hz: f64,
    pub upstream_pid: u32,
    /// The proxy's core, when pinned.
    pub proxy_core: Option<usize>,
    /// Open loop: most connections in use at once.
    pub max_conns: usize,
    /// Idle streams opened at a time.
    pub open_parallel: usize,
}

/// CPU ticks at one instant.
struct Snapshot {
    proxy: Option<u64>,
    load: u64,
    /// Busy ticks of the proxy's core, whoever ran there.
    core: Option<u64>,
}

impl Bench {
    fn snapshot(&self, target: &Target) -> Snapshot {
        let me = procfs::cpu_ticks(std::process::id()).unwrap_or(0);
        let upstream = procfs::cpu_ticks(self.upstream_pid).unwrap_or(0);
        Snapshot {
            proxy: target.cpu_ticks(),
            load: me + upstream,
            core: self.proxy_core.and_then(procfs::cpu_busy_ticks),
        }
    }

    /// Busy time of the proxy's core minus the proxy's own, between two snapshots.
    fn other(&self, before: &Snapshot, after: &Snapshot) -> Option<f64> {
        let core = self.seconds(before.core?, after.core?);
        let proxy = match (before.proxy, after.proxy) {
            (Some(b), Some(a)) => self.seconds(b, a),
            _ => 0.0,
        };
        // Both come in whole ticks, counted at slightly different instants.
        Some((core - proxy).max(0.0))
    }

    fn seconds(&self, before: u64, after: u64) -> f64 {
        after.saturating_sub(before) as f64 / self.hz
    }

    /// Runs `scenario` against `target`.
    pub async fn measure(&self, scenario: Scenario, target: &Target) -> Measurement {
        if let Some(pid) = target.mem_pid {
            procfs::reset_peak(pid);
        }
        let stream = !matches!(scenario, Scenario::Open { .. } | Scenario::Closed { .. });
        let (door, upstream_model) = match scenario {
            Scenario::Idle { .. } => (Door::Chat, crate::upstream::IDLE_MODEL),
            Scenario::Stream {
                door, burst: true, ..
            } => (door, crate::upstream::BURST_MODEL),
            Scenario::Closed { door, .. } | Scenario::Stream { door, .. } => (door, "m"),
            Scenario::Open { .. } => (Door::Chat, "m"),
        };
        let model = format!("{}{upstream_model}", target.prefix);
        let load = Arc::new(Load::new(
            target.addrs.clone(),
            door.path(),
            request_headers(door, target.client_key),
            request_body(door, &model, stream),
            door.ending(stream),
        ));
        if let Scenario::Idle { count } = scenario {
            return self.measure_idle(count, target, &load).await;
        }

        let (before, tally, after) = match scenario {
            Scenario::Open { rate } => {
                let pool = Arc::new(Pool::default());
                client::open(&load, &pool, rate, self.warmup, self.max_conns).await;
                let before = self.snapshot(target);
                let tally = client::open(&load, &pool, rate, self.duration, self.max_conns).await;
                (before, tally, self.snapshot(target))
            }
            Scenario::Closed { concurrency, .. } | Scenario::Stream { concurrency, .. } => {
                let mut conns = Vec::new();
                client::closed(&load, &mut conns, concurrency, self.warmup, None).await;
                let before = self.snapshot(target);
                let tally =
                    client::closed(&load, &mut conns, concurrency, self.duration, None).await;
                (before, tally, self.snapshot(target))
            }
            Scenario::Idle { .. } => unreachable!("handled above"),
        };
        self.finish(scenario, target, tally, before, after)
    }

    fn finish(
        &self,
        scenario: Scenario,
        target: &Target,
        mut tally: Tally,
        before: Snapshot,
        after: Snapshot,
    ) -> Measurement {
        let proxy_cpu = match (before.proxy, after.proxy) {
            (Some(b), Some(a)) => Some(self.seconds(b, a)),
            _ => None,
        };
        Measurement {
            scenario,
            target: target.name.clone(),
            ok: tally.latencies.len(),
            errors: tally.errors,
            first_error: tally.first_error.take(),
            elapsed: tally.elapsed,
            latency: Summary::of(&mut tally.latencies),
            lag: Summary::of(&mut tally.lags),
            proxy_cpu,
            load_cpu: self.seconds(before.load, after.load),
            other_cpu: self.other(&before, &after),
            rss_kib: target.mem_pid.and_then(|p| procfs::status_kib(p, "VmRSS")),
            peak_kib: target.mem_pid.and_then(|p| procfs::status_kib(p, "VmHWM")),
            baseline_kib: None,
            rounds: 1,
            samples: (tally.latencies, tally.lags),
        }
    }

    async fn measure_idle(&self, count: usize, target: &Target, load: &Arc<Load>) -> Measurement {
        let upstream_fds = procfs::open_fds(self.upstream_pid).unwrap_or(0);
        let baseline_kib = target.mem_pid.and_then(|p| procfs::status_kib(p, "VmRSS"));
        let before = self.snapshot(target);
        let held = client::hold_idle(load, count, self.open_parallel).await;
        // Let the proxy settle (allocator caches, timers armed) before reading its memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = self.snapshot(target);
        let rss_kib = target.mem_pid.and_then(|p| procfs::status_kib(p, "VmRSS"));
        let peak_kib = target.mem_pid.and_then(|p| procfs::status_kib(p, "VmHWM"));
        let setup = held.setup;
        let (opened, errors, first_error) = (held.opened, held.errors, held.first_error.clone());
        held.release().await;
        // The next target needs the upstream's descriptors back: wait for the streams to close.
        for _ in 0..200 {
            if procfs::open_fds(self.upstream_pid).unwrap_or(0) <= upstream_fds + 64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Measurement {
            scenario: Scenario::Idle { count },
            target: target.name.clone(),
            ok: opened,
            errors: errors as u64,
            first_error,
            elapsed: setup,
            latency: None,
            lag: None,
            proxy_cpu: match (before.proxy, after.proxy) {
                (Some(b), Some(a)) => Some(self.seconds(b, a)),
                _ => None,
            },
            load_cpu: self.seconds(before.load, after.load),
            other_cpu: self.other(&before, &after),
            rss_kib,
            peak_kib,
            baseline_kib,
            rounds: 1,
            samples: (Vec::new(), Vec::new()),
        }
    }
}

/// A small, realistic request in the door's protocol, the same conversation in each: a
/// system prompt, one user turn, 64 output tokens at most.
pub fn request_body(door: Door, model: &str, stream: bool) -> Bytes {
    let stream = if stream { r#","stream":true"# } else { "" };
    Bytes::from(match door {
        Door::Chat => format!(
            r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Say hello in one short sentence."}}],"max_tokens":64,"temperature":0.2{stream}}}"#
        ),
        Door::Messages => format!(
            r#"{{"model":"{model}","max_tokens":64,"system":"You are a helpful assistant.","messages":[{{"role":"user","content":"Say hello in one short sentence."}}],"temperature":0.2{stream}}}"#
        ),
        Door::Responses => format!(
            r#"{{"model":"{model}","instructions":"You are a helpful assistant.","input":"Say hello in one short sentence.","max_output_tokens":64,"temperature":0.2{stream}}}"#
        ),
    })
}

/// The headers a client of the door sends beyond the body's: Anthropic's SDKs always send
/// `anthropic-version`; a target with client keys gets its key as a bearer token.
pub fn request_headers(door: Door, client_key: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    if door == Door::Messages {
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        ));
    }
    if let Some(key) = client_key {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) {
            headers.push((AUTHORIZATION, value));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(latencies: Vec<u64>, secs: u64, cpu: f64) -> Measurement {
        let mut samples = latencies.clone();
        Measurement {
            scenario: Scenario::Closed {
                concurrency: 1,
                door: Door::Chat,
            },
            target: "t".into(),
            ok: latencies.len(),
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(secs),
            latency: Summary::of(&mut samples),
            lag: None,
            proxy_cpu: Some(cpu),
            load_cpu: 0.5,
            other_cpu: None,
            rss_kib: Some(100),
            peak_kib: Some(200),
            baseline_kib: None,
            rounds: 1,
            samples: (latencies, Vec::new()),
        }
    }

    #[test]
    fn rounds_sum_counts_and_cpu_and_take_percentiles_over_all_samples() {
        let mut m = round(vec![10, 20, 30, 40], 2, 1.0);
        let mut later = round(vec![1000, 2000, 3000, 4000], 2, 3.0);
        later.peak_kib = Some(500);
        m.absorb(later);
        m.settle();
        assert_eq!((m.ok, m.rounds), (8, 2));
        assert_eq!(m.elapsed, Duration::from_secs(4));
        assert_eq!(m.throughput(), 2.0);
        assert_eq!(m.cpu_us_per_request(), Some(4.0 * 1e6 / 8.0));
        let l = m.latency.expect("latency");
        assert_eq!((l.count, l.p50, l.max), (8, 40, 4000));
        assert_eq!(m.peak_kib, Some(500));
        assert!(m.samples.0.is_empty(), "raw samples dropped once settled");
    }

    #[test]
    fn request_bodies_are_json_the_upstream_recognizes() {
        for door in [Door::Chat, Door::Messages, Door::Responses] {
            let body = request_body(door, "up:idle", true);
            let text = std::str::from_utf8(&body).expect("utf-8");
            assert!(text.starts_with('{') && text.ends_with('}'), "{door:?}");
            assert!(text.contains(r#""model":"up:idle""#), "{door:?}");
            assert!(text.contains(r#""stream":true"#), "{door:?}");
            assert!(!std::str::from_utf8(&request_body(door, "m", false))
                .expect("utf-8")
                .contains("stream"));
        }
    }

    #[test]
    fn each_door_checks_its_own_ending() {
        let chat = Door::Chat.ending(true);
        assert!(chat.seen_in(b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(!chat.seen_in(b"data: [DONE]\n\nevent: error\ndata: {}\n\n"));
        let messages = Door::Messages.ending(true);
        assert!(messages.seen_in(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert!(!messages.seen_in(b"event: error\ndata: {}\n\n"));
        let responses = Door::Responses.ending(true);
        assert!(responses.seen_in(b"event: response.completed\ndata: {}\n\n"));
        assert!(!responses.seen_in(b"event: response.failed\ndata: {}\n\n"));
        assert!(Door::Responses
            .ending(false)
            .seen_in(br#"{"object":"response","status":"completed"}"#));
        assert!(!Door::Messages
            .ending(false)
            .seen_in(br#"{"type":"message","stop_reason":"max_tokens"}"#));
    }

    #[test]
    fn only_the_other_doors_need_a_gateway() {
        let chat = Scenario::Stream {
            concurrency: 32,
            door: Door::Chat,
            burst: true,
        };
        let messages = Scenario::Closed {
            concurrency: 64,
            door: Door::Messages,
        };
        assert!(!chat.needs_gateway() && messages.needs_gateway());
        assert!(!Scenario::Open { rate: 1000 }.needs_gateway());
    }
}
