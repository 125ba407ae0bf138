//! Prometheus metrics (SPEC §10): one recorder per gateway (not the process-global one, so
//! gateways in one process — tests — stay apart), rendered at `GET /metrics`.
//!
//! Labels stay bounded: backend names and key names come from the configuration, statuses
//! are classes, and models are the routed model names, capped per backend — a client sending
//! random model names to a default backend cannot grow the series without bound.

use std::collections::HashSet;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Key, Label, Metadata, Recorder, SharedString, Unit};
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
    /// `backend\0model` pairs already used as labels, copied on write (new models are rare).
    models: ArcSwap<HashSet<String>>,
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
        let metrics = Metrics {
            recorder,
            handle,
            models: ArcSwap::from_pointee(HashSet::new()),
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
            text("Requests answered, by backend, routed model, status class and client key."),
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
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
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

    fn histogram(&self, name: &'static str, labels: Vec<Label>, value: Duration) {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &META)
            .record(value.as_secs_f64());
    }

    /// A model label value: the model itself while the backend has fewer than
    /// `MODELS_PER_BACKEND` distinct ones, `other` after that.
    fn model_label(&self, backend: &str, model: &str) -> String {
        let id = format!("{backend}\0{model}");
        let known = self.models.load();
        if known.contains(&id) {
            return model.to_owned();
        }
        let prefix = format!("{backend}\0");
        if known.iter().filter(|k| k.starts_with(&prefix)).count() >= MODELS_PER_BACKEND {
            return "other".to_owned();
        }
        self.models.rcu(|set| {
            let mut set = HashSet::clone(set);
            set.insert(id.clone());
            set
        });
        model.to_owned()
    }

    /// Records a finished request.
    pub fn finished(&self, f: &Finished<'_>) {
        let backend = f.backend.unwrap_or("").to_owned();
        let model = match (f.backend, f.model) {
            (Some(b), Some(m)) => self.model_label(b, m),
            _ => String::new(),
        };
        let key = f.key.unwrap_or("").to_owned();
        let class = match f.status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        self.counter(
            "tollgate_requests_total",
            vec![
                Label::new("backend", backend.clone()),
                Label::new("model", model.clone()),
                Label::new("status", class),
                Label::new("key", key.clone()),
            ],
            1,
        );
        let by_backend = || vec![Label::new("backend", backend.clone())];
        self.histogram("tollgate_request_duration_seconds", by_backend(), f.total);
        if let Some(ttft) = f.first_token {
            self.histogram("tollgate_time_to_first_token_seconds", by_backend(), ttft);
        }
        if let Some(up) = f.upstream {
            self.histogram("tollgate_upstream_duration_seconds", by_backend(), up);
            self.histogram(
                "tollgate_gateway_overhead_seconds",
                by_backend(),
                f.total.saturating_sub(up),
            );
        }
        if let Some(usage) = f.usage {
            for (kind, n) in [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
            ] {
                if n > 0 {
                    self.counter(
                        "tollgate_tokens_total",
                        vec![
                            Label::new("backend", backend.clone()),
                            Label::new("model", model.clone()),
                            Label::new("key", key.clone()),
                            Label::new("kind", kind),
                        ],
                        n,
                    );
                }
            }
        }
    }

    pub fn inflight(&self, delta: f64) {
        let gauge = self
            .recorder
            .register_gauge(&Key::from_static_name("tollgate_inflight_requests"), &META);
        if delta >= 0.0 {
            gauge.increment(delta);
        } else {
            gauge.decrement(-delta);
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
        self.counter("tollgate_keepalives_total", Vec::new(), 1);
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
}

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
                r#"tollgate_requests_total{backend="nv",model="llama",status="2xx",key="ci"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tollgate_tokens_total{backend="nv",model="llama",key="ci",kind="completion"} 4"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_request_duration_seconds_bucket{backend="nv",le="0.05"} 1"#),
            "{text}"
        );
        assert!(text.contains("# HELP tollgate_requests_total"), "{text}");
        m.keepalive();
        assert!(m.render().contains("tollgate_keepalives_total 1"));
    }
}
