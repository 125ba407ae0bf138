//! Prometheus metrics (SPEC §10): one recorder per gateway (not the process-global one, so
//! gateways in one process — tests — stay apart), rendered at `GET /metrics`.
//!
//! Labels stay bounded: backend names and key names come from the configuration, statuses
//! are classes, and models are the routed model names, capped per backend — a client sending
//! random model names to a default backend cannot grow the series without bound.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tollgate_core::Usage;

/// Distinct model label values kept per backend; later ones are counted as `other`.
const MODELS_PER_BACKEND: usize = 100;

/// Buckets for LLM request times: from a cached answer to a long reasoning stream.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];
/// Buckets for the gateway's own share of a request: tens of microseconds and up.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

static META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// What one finished request reports.
pub struct Finished<'a> {
    /// The client's protocol (`chat`, `responses`, `anthropic`).
    pub door: &'static str,
    /// The endpoint (`chat`, `messages`, … or `unknown` for a path that is none).
    pub endpoint: &'static str,
    pub backend: Option<&'a str>,
    pub model: Option<&'a str>,
    pub key: Option<&'a str>,
    pub status: u16,
    pub total: Duration,
    pub first_token: Option<Duration>,
    pub upstream: Option<Duration>,
    pub usage: Option<Usage>,
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Handles of the per-request series, by `endpoint\0backend\0key\0model`, so a request pays a
    /// hash lookup instead of building and registering six metric keys. Copied on write:
    /// new combinations are rare, and bounded by the model cap.
    series: ArcSwap<HashMap<String, Arc<Series>, BuildHasherDefault<Fnv>>>,
    /// Model label values admitted per backend (at most `MODELS_PER_BACKEND` each).
    models: Mutex<HashMap<String, HashSet<String>>>,
    inflight: Gauge,
    keepalives: Counter,
    store_up: Gauge,
    /// `tollgate_budget_remaining_tokens` handles by scope, copied on write like `series`:
    /// scopes are the configured keys and backends, so the map stays small.
    budgets: ArcSwap<HashMap<String, Gauge, BuildHasherDefault<Fnv>>>,
}

/// The series cache hashes a short key once per request (capped keys, not chosen by clients).
pub use tollgate_store::Fnv;

/// The handles one (backend, model label, key) combination records into, each registered
/// on first use so that series nobody recorded into (a class never answered, tokens of a
/// backend that reports none) do not appear.
struct Series {
    door: &'static str,
    endpoint: &'static str,
    backend: String,
    model: String,
    key: String,
    /// By status class: 2xx, 4xx, 5xx, other.
    requests: [OnceLock<Counter>; 4],
    prompt: OnceLock<Counter>,
    completion: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    overhead: OnceLock<Histogram>,
}

impl Series {
    fn labels(&self, extra: &[(&'static str, &str)]) -> Vec<Label> {
        let mut l = vec![
            Label::new("door", self.door),
            Label::new("backend", self.backend.clone()),
            Label::new("model", self.model.clone()),
        ];
        l.extend(extra.iter().map(|(k, v)| Label::new(*k, v.to_string())));
        l
    }

    fn requests(&self, r: &PrometheusRecorder, class: usize) -> &Counter {
        const CLASSES: [&str; 4] = ["2xx", "4xx", "5xx", "other"];
        self.requests[class].get_or_init(|| {
            let labels = self.labels(&[
                ("endpoint", self.endpoint),
                ("status", CLASSES[class]),
                ("key", &self.key),
            ]);
            r.register_counter(&Key::from_parts("tollgate_requests_total", labels), &META)
        })
    }

    fn tokens(&self, r: &PrometheusRecorder, kind: &'static str) -> &Counter {
        let cell = if kind == "prompt" {
            &self.prompt
        } else {
            &self.completion
        };
        cell.get_or_init(|| {
            let labels = self.labels(&[("key", &self.key), ("kind", kind)]);
            r.register_counter(&Key::from_parts("tollgate_tokens_total", labels), &META)
        })
    }

    fn histogram<'a>(
        &self,
        r: &PrometheusRecorder,
        cell: &'a OnceLock<Histogram>,
        name: &'static str,
    ) -> &'a Histogram {
        cell.get_or_init(|| {
            let labels = vec![
                Label::new("door", self.door),
                Label::new("backend", self.backend.clone()),
            ];
            r.register_histogram(&Key::from_parts(name, labels), &META)
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            ("tollgate_request_duration_seconds", LATENCY_BUCKETS),
            ("tollgate_time_to_first_token_seconds", LATENCY_BUCKETS),
            ("tollgate_upstream_duration_seconds", LATENCY_BUCKETS),
            ("tollgate_gateway_overhead_seconds", OVERHEAD_BUCKETS),
        ] {
            // Non-empty static bucket lists cannot be refused.
            builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets) {
                Ok(b) => b,
                Err(_) => unreachable!("bucket lists are non-empty"),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let inflight =
            recorder.register_gauge(&Key::from_static_name("tollgate_inflight_requests"), &META);
        let keepalives =
            recorder.register_counter(&Key::from_static_name("tollgate_keepalives_total"), &META);
        let store_up =
            recorder.register_gauge(&Key::from_static_name("tollgate_state_store_up"), &META);
        // Up until a decision says otherwise (the memory store always is).
        store_up.set(1.0);
        let metrics = Metrics {
            recorder,
            handle,
            series: ArcSwap::from_pointee(HashMap::default()),
            models: Mutex::new(HashMap::new()),
            inflight,
            keepalives,
            store_up,
            budgets: ArcSwap::from_pointee(HashMap::default()),
        };
        metrics.describe();
        metrics
    }

    fn describe(&self) {
        let r = &self.recorder;
        let text = |s: &'static str| SharedString::from(s);
        r.describe_counter(
            "tollgate_requests_total".into(),
            None,
            text("Requests answered, by door, endpoint, backend, routed model, status class and client key."),
        );
        r.describe_histogram(
            "tollgate_request_duration_seconds".into(),
            Some(Unit::Seconds),
            text("Whole request time, as the client saw it (streams until their last byte)."),
        );
        r.describe_histogram(
            "tollgate_time_to_first_token_seconds".into(),
            Some(Unit::Seconds),
            text("Time to the first upstream event of a stream."),
        );
        r.describe_histogram(
            "tollgate_upstream_duration_seconds".into(),
            Some(Unit::Seconds),
            text("Time from the first upstream attempt to the end of the answer."),
        );
        r.describe_histogram(
            "tollgate_gateway_overhead_seconds".into(),
            Some(Unit::Seconds),
            text("Request time not spent waiting on an upstream: reading, parsing, routing."),
        );
        r.describe_counter("tollgate_tokens_total".into(), None, text("Tokens reported by upstreams, by backend, model, client key and kind (prompt, completion)."));
        r.describe_gauge(
            "tollgate_inflight_requests".into(),
            None,
            text("Requests being answered now."),
        );
        r.describe_counter(
            "tollgate_upstream_errors_total".into(),
            None,
            text("Failed upstream attempts, by backend and kind."),
        );
        r.describe_counter(
            "tollgate_retries_total".into(),
            None,
            text("Retries of a target after a failed attempt."),
        );
        r.describe_counter(
            "tollgate_fallbacks_total".into(),
            None,
            text("Moves from a failed target to the next one of a route."),
        );
        r.describe_counter(
            "tollgate_keepalives_total".into(),
            None,
            text("Keepalive frames sent while an upstream was silent."),
        );
        r.describe_gauge(
            "tollgate_circuit_open".into(),
            None,
            text("1 while a backend's circuit breaker is open."),
        );
        r.describe_counter(
            "tollgate_config_reloads_total".into(),
            None,
            text("Configuration reloads, by result."),
        );
        r.describe_counter(
            "tollgate_limit_refusals_total".into(),
            None,
            text("Requests (or backend attempts) refused by a limit, by limit and scope."),
        );
        r.describe_gauge(
            "tollgate_budget_remaining_tokens".into(),
            None,
            text("Tokens left today in a scope with a tokens_per_day budget."),
        );
        r.describe_gauge(
            "tollgate_state_store_up".into(),
            None,
            text("1 while the limits store (state.store) answers, 0 while it cannot be reached."),
        );
        r.describe_gauge(
            "tollgate_connections".into(),
            None,
            text("Client connections: open (accepted, not yet closed) and active (with a request in flight)."),
        );
        r.describe_counter(
            "tollgate_connections_closed_total".into(),
            None,
            text("Client connections closed, by reason: client, idle, header_timeout, body_timeout, unread_body, ping_timeout, shutdown, error, over_capacity (refused with 503)."),
        );
        r.describe_counter(
            "tollgate_accept_errors_total".into(),
            None,
            text("Failed accepts of new connections (out of file descriptors and the like); each backs off."),
        );
        r.describe_counter(
            "tollgate_log_lines_dropped_total".into(),
            None,
            text("Log lines dropped because the log writer fell behind (logging never blocks serving)."),
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.refresh_process_wide();
        self.handle.render()
    }

    /// Folds buffered histogram samples; run periodically so an unscraped gateway does not grow.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>, n: u64) {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
            .increment(n);
    }

    /// A model label value: the model itself while the backend has fewer than
    /// `MODELS_PER_BACKEND` distinct ones, `other` after that.
    fn model_label(&self, backend: &str, model: &str) -> String {
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let known = models.entry(backend.to_owned()).or_default();
        if known.contains(model) {
            return model.to_owned();
        }
        if known.len() >= MODELS_PER_BACKEND {
            return "other".to_owned();
        }
        known.insert(model.to_owned());
        model.to_owned()
    }

    /// The series of one combination, registered on first use.
    fn series(
        &self,
        endpoint: &'static str,
        door: &'static str,
        backend: &str,
        model: &str,
        key: &str,
    ) -> Arc<Series> {
        thread_local! {
            static ID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let cached = ID.with(|id| {
            let mut id = id.borrow_mut();
            id.clear();
            // The endpoint decides the door: it is enough to tell series apart.
            for part in [endpoint, "\0", backend, "\0", key, "\0", model] {
                id.push_str(part);
            }
            self.series.load().get(id.as_str()).cloned()
        });
        if let Some(series) = cached {
            return series;
        }
        // Slow path, once per combination (the lock only guards the model cap).
        let label = match backend {
            "" => String::new(),
            b => self.model_label(b, model),
        };
        let admitted = label == model;
        let series = Arc::new(Series {
            door,
            endpoint,
            backend: backend.to_owned(),
            model: label,
            key: key.to_owned(),
            requests: Default::default(),
            prompt: OnceLock::new(),
            completion: OnceLock::new(),
            duration: OnceLock::new(),
            ttft: OnceLock::new(),
            upstream: OnceLock::new(),
            overhead: OnceLock::new(),
        });
        // A model past the cap is not cached under its own name: random names must not grow
        // the cache either. They take this slow path each time.
        if admitted {
            let id = format!("{endpoint}\0{backend}\0{key}\0{model}");
            let added = series.clone();
            self.series.rcu(|map| {
                let mut map = HashMap::clone(map);
                map.insert(id.clone(), added.clone());
                map
            });
        }
        series
    }

    /// Records a finished request.
    pub fn finished(&self, f: &Finished<'_>) {
        let series = self.series(
            f.endpoint,
            f.door,
            f.backend.unwrap_or(""),
            f.model.filter(|_| f.backend.is_some()).unwrap_or(""),
            f.key.unwrap_or(""),
        );
        let class = match f.status {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        };
        let r = &self.recorder;
        series.requests(r, class).increment(1);
        series
            .histogram(r, &series.duration, "tollgate_request_duration_seconds")
            .record(f.total.as_secs_f64());
        if let Some(ttft) = f.first_token {
            series
                .histogram(r, &series.ttft, "tollgate_time_to_first_token_seconds")
                .record(ttft.as_secs_f64());
        }
        if let Some(up) = f.upstream {
            series
                .histogram(r, &series.upstream, "tollgate_upstream_duration_seconds")
                .record(up.as_secs_f64());
            series
                .histogram(r, &series.overhead, "tollgate_gateway_overhead_seconds")
                .record(f.total.saturating_sub(up).as_secs_f64());
        }
        if let Some(usage) = f.usage {
            if usage.prompt_tokens > 0 {
                series.tokens(r, "prompt").increment(usage.prompt_tokens);
            }
            if usage.completion_tokens > 0 {
                series
                    .tokens(r, "completion")
                    .increment(usage.completion_tokens);
            }
        }
    }

    pub fn inflight(&self, delta: f64) {
        if delta >= 0.0 {
            self.inflight.increment(delta);
        } else {
            self.inflight.decrement(-delta);
        }
    }

    pub fn upstream_error(&self, backend: &str, kind: &'static str) {
        self.counter(
            "tollgate_upstream_errors_total",
            vec![
                Label::new("backend", backend.to_owned()),
                Label::new("kind", kind),
            ],
            1,
        );
    }

    pub fn retry(&self, backend: &str) {
        self.counter(
            "tollgate_retries_total",
            vec![Label::new("backend", backend.to_owned())],
            1,
        );
    }

    pub fn fallback(&self, from: &str) {
        self.counter(
            "tollgate_fallbacks_total",
            vec![Label::new("from", from.to_owned())],
            1,
        );
    }

    pub fn keepalive(&self) {
        self.keepalives.increment(1);
    }

    pub fn circuit(&self, backend: &str, open: bool) {
        self.recorder
            .register_gauge(
                &Key::from_parts(
                    "tollgate_circuit_open",
                    vec![Label::new("backend", backend.to_owned())],
                ),
                &META,
            )
            .set(if open { 1.0 } else { 0.0 });
    }

    pub fn config_reload(&self, result: &'static str) {
        self.counter(
            "tollgate_config_reloads_total",
            vec![Label::new("result", result)],
            1,
        );
    }

    /// A request refused by a limit; `scope` is `key:<name>`, `backend:<name>` or
    /// `anonymous` (bounded by the configuration).
    pub fn limit_refusal(&self, limit: &'static str, scope: &str) {
        self.counter(
            "tollgate_limit_refusals_total",
            vec![
                Label::new("limit", limit),
                Label::new("scope", scope.to_owned()),
            ],
            1,
        );
    }

    /// Tokens left today in a scope with a `tokens_per_day` budget.
    pub fn budget_remaining(&self, scope: &str, remaining: u64) {
        self.budget_gauge(scope).set(remaining as f64);
    }

    /// The `tollgate_budget_remaining_tokens` gauge of `scope`, for a caller that keeps the
    /// handle (the limiter, per configured scope) and so sets it without a lookup.
    pub fn budget_gauge(&self, scope: &str) -> Gauge {
        if let Some(gauge) = self.budgets.load().get(scope) {
            return gauge.clone();
        }
        let gauge = self.recorder.register_gauge(
            &Key::from_parts(
                "tollgate_budget_remaining_tokens",
                vec![Label::new("scope", scope.to_owned())],
            ),
            &META,
        );
        self.budgets.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(scope.to_owned(), gauge.clone());
            map
        });
        gauge
    }

    /// Whether the limits store answered its last decision.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(if up { 1.0 } else { 0.0 });
    }

    /// The `tollgate_connections{state}` gauge of one state (`open`, `active`); the caller
    /// keeps the handle, so a connection pays no registry lookup.
    pub fn connections(&self, state: &'static str) -> Gauge {
        self.recorder.register_gauge(
            &Key::from_parts("tollgate_connections", vec![Label::new("state", state)]),
            &META,
        )
    }

    /// The `tollgate_connections_closed_total{reason}` counter of one reason.
    pub fn connections_closed(&self, reason: &'static str) -> Counter {
        self.recorder.register_counter(
            &Key::from_parts(
                "tollgate_connections_closed_total",
                vec![Label::new("reason", reason)],
            ),
            &META,
        )
    }

    /// `tollgate_accept_errors_total`: failed `accept(2)` calls (out of file descriptors …).
    pub fn accept_errors(&self) -> Counter {
        self.recorder.register_counter(
            &Key::from_static_name("tollgate_accept_errors_total"),
            &META,
        )
    }

    /// Counts log lines dropped because the log writer fell behind. Logging is process-wide
    /// and metrics are per gateway, so the count lives in a process-wide atomic that every
    /// gateway's `/metrics` shows.
    pub fn log_lines_dropped(n: u64) {
        LOG_LINES_DROPPED.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Copies process-wide counts into this gateway's recorder, before rendering.
    fn refresh_process_wide(&self) {
        let dropped = LOG_LINES_DROPPED.load(std::sync::atomic::Ordering::Relaxed);
        self.recorder
            .register_counter(
                &Key::from_static_name("tollgate_log_lines_dropped_total"),
                &META,
            )
            .absolute(dropped);
    }
}

/// Log lines dropped since the process started (see [`Metrics::log_lines_dropped`]).
static LOG_LINES_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_capped_per_backend() {
        let m = Metrics::new();
        for i in 0..MODELS_PER_BACKEND {
            assert_eq!(m.model_label("b", &format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.model_label("b", "one-too-many"), "other");
        assert_eq!(
            m.model_label("b", "m3"),
            "m3",
            "known ones keep their label"
        );
        assert_eq!(m.model_label("c", "m0"), "m0", "the cap is per backend");
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.finished(&Finished {
            door: "chat",
            endpoint: "chat",
            backend: Some("nv"),
            model: Some("llama"),
            key: Some("ci"),
            status: 200,
            total: Duration::from_millis(30),
            first_token: Some(Duration::from_millis(10)),
            upstream: Some(Duration::from_millis(29)),
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
            }),
        });
        let text = m.render();
        assert!(
            text.contains(
                r#"tollgate_requests_total{door="chat",backend="nv",model="llama",endpoint="chat",status="2xx",key="ci"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tollgate_tokens_total{door="chat",backend="nv",model="llama",key="ci",kind="completion"} 4"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tollgate_request_duration_seconds_bucket{door="chat",backend="nv",le="0.05"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# HELP tollgate_requests_total"), "{text}");
        m.keepalive();
        assert!(m.render().contains("tollgate_keepalives_total 1"));
    }
}
