//! Retry policy: which failures are retried on the same target, which move on to the next
//! target, and which go straight back to the client; backoff with jitter; and the one retry
//! with a smaller output budget when a request overflows the model's context.

use std::cell::Cell;
use std::time::Duration;

use tollgate_core::config::Backoff;
use tollgate_core::{Endpoint, GatewayError, JsonObject};

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try the same target again (after `after`, when the upstream asked for a wait).
    Retry { after: Option<Duration> },
    /// This target cannot serve the request; try the next one at once.
    NextTarget,
    /// The request itself is at fault: every target would refuse it.
    Stop,
}

/// Sorts a failure: connect errors, timeouts, 408, 429 and 5xx are worth a retry; a
/// backend's own refusals (401/403: its key, 404/410: model gone) move on; the client's own
/// mistakes (400, 422 …) stop.
pub fn judge(e: &GatewayError) -> Verdict {
    match e {
        GatewayError::UpstreamFailed(_) | GatewayError::UpstreamTimeout(_) => {
            Verdict::Retry { after: None }
        }
        GatewayError::Upstream {
            status,
            retry_after,
            ..
        } => match status.as_u16() {
            408 | 429 => Verdict::Retry {
                after: *retry_after,
            },
            s if s >= 500 => Verdict::Retry {
                after: *retry_after,
            },
            401 | 403 | 404 | 410 => Verdict::NextTarget,
            _ => Verdict::Stop,
        },
        GatewayError::BackendUnavailable(_) | GatewayError::Internal(_) => Verdict::NextTarget,
        _ => Verdict::Stop,
    }
}

/// Whether a failure says the backend is unwell (and so counts towards its circuit
/// breaker). Rate limits and refusals do not: the backend is up and answering.
pub fn is_backend_fault(e: &GatewayError) -> bool {
    match e {
        GatewayError::UpstreamFailed(_) | GatewayError::UpstreamTimeout(_) => true,
        GatewayError::Upstream { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// The wait before retry number `n` (1-based): exponential from `initial_ms`, capped at
/// `max_ms`, with jitter in its upper half so that clients retrying together spread out.
/// An upstream's `retry-after` is honoured as a minimum; when it asks for more than
/// `max_ms`, `None`: better the next target than a long wait.
pub fn backoff(settings: Backoff, n: u32, upstream: Option<Duration>) -> Option<Duration> {
    let max = Duration::from_millis(settings.max_ms);
    let exp = settings
        .initial_ms
        .saturating_mul(1u64 << n.saturating_sub(1).min(30));
    let base = Duration::from_millis(exp.min(settings.max_ms));
    let jittered = base / 2 + base.mul_f64(random_unit() / 2.0);
    match upstream {
        Some(after) if after > max => None,
        Some(after) => Some(after.max(jittered)),
        None => Some(jittered),
    }
}

/// A number in [0, 1) from a per-thread xorshift generator (jitter needs spread, not secrecy).
fn random_unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// When `e` says the request overflows the model's context because of its output budget
/// (`max_tokens` / `max_completion_tokens`), the budget that fits. `None` when the prompt
/// alone is too long, the numbers cannot be read, or the body sets no budget.
///
/// Wordings understood: OpenAI and older vLLM ("maximum context length is N tokens …
/// (P in the messages, O in the completion)"), newer vLLM ("… maximum context length is N
/// tokens and your request has P input tokens"), and NVIDIA's hosted NIM ("You passed P
/// input tokens and requested O output tokens. However, the model's context length is only
/// N tokens").
pub fn fitting_budget(e: &GatewayError, body: &JsonObject) -> Option<u64> {
    let GatewayError::Upstream {
        status, body: err, ..
    } = e
    else {
        return None;
    };
    if !matches!(status.as_u16(), 400 | 422) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(err).ok()?;
    let message = v["error"]["message"]
        .as_str()
        .or_else(|| v["message"].as_str())?
        .to_ascii_lowercase();
    let limit = number_after(&message, "context length is only ")
        .or_else(|| number_after(&message, "context length is "))?;
    let prompt = number_before(&message, " in the messages")
        .or_else(|| number_before(&message, " input tokens"))?;
    let requested = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .into_iter()
        .filter_map(|f| body.decode::<u64>(f).ok().flatten())
        .max()?;
    let room = limit.checked_sub(prompt)?;
    (room > 0 && room < requested).then_some(room)
}

/// The output-budget fields of `endpoint`'s bodies; the first is the one to add.
pub fn budget_fields(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::Responses => &["max_output_tokens"],
        Endpoint::Messages => &["max_tokens"],
        _ => &["max_tokens", "max_completion_tokens"],
    }
}

/// Sets every output budget field the body has to `budget`. A Messages body keeps its
/// `thinking.budget_tokens` below the new `max_tokens`.
pub fn apply_budget(body: &mut JsonObject, endpoint: Endpoint, budget: u64) {
    if endpoint == Endpoint::Messages {
        tollgate_translate::anthropic::clamp_max_tokens(body, None, Some(budget));
        return;
    }
    for field in budget_fields(endpoint) {
        if body.contains(field) {
            body.insert(field, &budget);
        }
    }
}

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn number_before(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)?;
    let head = &text[..at];
    let start = head
        .rfind(|c: char| !(c.is_ascii_digit() || c == ','))
        .map_or(0, |i| i + 1);
    let digits: String = head[start..].chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn upstream(status: u16, message: &str) -> GatewayError {
        GatewayError::Upstream {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::from(serde_json::json!({"error": {"message": message}}).to_string()),
            retry_after: None,
        }
    }

    fn body(json: &str) -> JsonObject {
        JsonObject::parse(json.as_bytes()).expect("json")
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(&upstream(503, "x")), Verdict::Retry { after: None });
        assert_eq!(judge(&upstream(429, "x")), Verdict::Retry { after: None });
        assert_eq!(judge(&upstream(408, "x")), Verdict::Retry { after: None });
        assert_eq!(judge(&upstream(401, "x")), Verdict::NextTarget);
        assert_eq!(judge(&upstream(410, "x")), Verdict::NextTarget);
        assert_eq!(judge(&upstream(400, "x")), Verdict::Stop);
        assert_eq!(judge(&upstream(422, "x")), Verdict::Stop);
        assert_eq!(
            judge(&GatewayError::UpstreamFailed("refused".into())),
            Verdict::Retry { after: None }
        );
        assert!(is_backend_fault(&upstream(502, "x")));
        assert!(!is_backend_fault(&upstream(429, "x")));
        assert!(!is_backend_fault(&upstream(400, "x")));
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let s = Backoff {
            initial_ms: 100,
            max_ms: 1000,
        };
        for _ in 0..100 {
            let first = backoff(s, 1, None).expect("wait");
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(s, 3, None).expect("wait");
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let tenth = backoff(s, 10, None).expect("wait");
            assert!(tenth <= Duration::from_millis(1000));
        }
        assert_eq!(
            backoff(s, 1, Some(Duration::from_millis(800))),
            Some(Duration::from_millis(800))
        );
        assert_eq!(backoff(s, 1, Some(Duration::from_secs(30))), None);
    }

    #[test]
    fn backoff_is_jittered_not_constant() {
        let s = Backoff {
            initial_ms: 100,
            max_ms: 10_000,
        };
        // Retry 3: base 400 ms, drawn from [200, 400]. A constant delay (jitter lost) gives
        // one value; spread means clients retrying together do not stay in step.
        let waits: Vec<Duration> = (0..200)
            .map(|_| backoff(s, 3, None).expect("wait"))
            .collect();
        let min = waits.iter().min().copied().unwrap_or_default();
        let max = waits.iter().max().copied().unwrap_or_default();
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "{} distinct waits", distinct.len());
        assert!(
            max - min >= Duration::from_millis(150),
            "spread {:?}..{:?}",
            min,
            max
        );
        // Both halves of the range are used.
        assert!(waits.iter().any(|w| *w < Duration::from_millis(250)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(350)));
    }

    #[test]
    fn backoff_takes_any_retry_number_and_wait_without_panicking() {
        let s = Backoff {
            initial_ms: u64::MAX / 2,
            max_ms: u64::MAX,
        };
        for n in [0, 1, 31, 64, u32::MAX] {
            assert!(backoff(s, n, None).is_some());
            // Longer than max_ms (u64::MAX ms): the next target; shorter: honoured.
            assert_eq!(backoff(s, n, Some(Duration::MAX)), None);
            let long = Duration::from_secs(u64::MAX / 2000);
            assert!(backoff(s, n, Some(long)).is_some_and(|w| w >= long));
        }
        let s = Backoff {
            initial_ms: 1,
            max_ms: 1000,
        };
        assert_eq!(
            backoff(s, 1, Some(Duration::MAX)),
            None,
            "next target instead"
        );
        assert_eq!(
            backoff(s, u32::MAX, Some(Duration::ZERO)).map(|d| d <= Duration::from_secs(1)),
            Some(true)
        );
    }

    #[test]
    fn context_overflow_wordings() {
        let b = body(r#"{"max_tokens":8000}"#);
        let openai = upstream(400, "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (1000 in the messages, 8000 in the completion). Please reduce the length of the messages or completion.");
        assert_eq!(fitting_budget(&openai, &b), Some(7192));
        let vllm = upstream(400, "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 8192 tokens and your request has 1000 input tokens (8000 > 8192 - 1000).");
        assert_eq!(fitting_budget(&vllm, &b), Some(7192));
        let nim = upstream(400, "You passed 170753 input tokens and requested 32000 output tokens. However, the model's context length is only 202752 tokens, resulting in a maximum input length of 170752 tokens.");
        assert_eq!(
            fitting_budget(&nim, &body(r#"{"max_completion_tokens":32000}"#)),
            Some(31999)
        );
        // The prompt alone is too long: shrinking the output cannot help.
        let prompt = upstream(400, "This model's maximum context length is 16385 tokens. However, your messages resulted in 16680 tokens. Please reduce the length of the messages.");
        assert_eq!(fitting_budget(&prompt, &b), None);
        // No budget in the request, another error, another status.
        assert_eq!(fitting_budget(&openai, &body("{}")), None);
        assert_eq!(fitting_budget(&upstream(400, "bad temperature"), &b), None);
        assert_eq!(
            fitting_budget(
                &upstream(
                    500,
                    "maximum context length is 8192 tokens (1 in the messages"
                ),
                &b
            ),
            None
        );
    }

    #[test]
    fn budget_is_applied_to_the_fields_present() {
        let mut b = body(r#"{"max_completion_tokens":10,"model":"m"}"#);
        apply_budget(&mut b, Endpoint::ChatCompletions, 5);
        assert_eq!(
            &b.to_bytes()[..],
            br#"{"max_completion_tokens":5,"model":"m"}"#
        );
    }
}
