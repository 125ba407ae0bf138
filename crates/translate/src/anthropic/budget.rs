//! The output budget of a Messages body sent to a Messages backend as it is (no translation):
//! a default when the client gave none, a cap, and a thinking budget kept below it.

use serde::Serialize;
use tollgate_core::JsonObject;

use super::request::decode;
use super::text::RawMap;

/// Sets `max_tokens` to `default` when absent and lowers it to `cap` when above. Anthropic
/// refuses a `thinking.budget_tokens` that is not below `max_tokens` (and one under 1 024), so
/// a budget the cap would make invalid is lowered to `max_tokens - 1`, or thinking is turned
/// off when even 1 024 no longer fits.
pub fn clamp_max_tokens(body: &mut JsonObject, default: Option<u64>, cap: Option<u64>) {
    let given = decode::<u64>(body, "max_tokens").ok().flatten();
    let max_tokens = match (given, default) {
        (Some(n), _) => Some(n),
        (None, Some(d)) => Some(d),
        (None, None) => None,
    };
    let Some(mut max_tokens) = max_tokens else {
        return;
    };
    if let Some(cap) = cap {
        max_tokens = max_tokens.min(cap);
    }
    if given != Some(max_tokens) {
        body.insert("max_tokens", &max_tokens);
    }
    keep_thinking_within(body, max_tokens);
}

/// Anthropic's smallest thinking budget.
const MIN_BUDGET: u64 = 1024;

fn keep_thinking_within(body: &mut JsonObject, max_tokens: u64) {
    let rewritten = {
        let Ok(Some(thinking)) = decode::<RawMap<'_>>(body, "thinking") else {
            return;
        };
        let Some(budget) = thinking
            .get("budget_tokens")
            .and_then(|b| serde_json::from_str::<u64>(b.get()).ok())
        else {
            return;
        };
        if budget < max_tokens {
            return;
        }
        (max_tokens > MIN_BUDGET).then(|| {
            serde_json::value::to_raw_value(&WithBudget {
                thinking: &thinking,
                budget: max_tokens - 1,
            })
        })
    };
    match rewritten {
        Some(Ok(thinking)) => body.insert("thinking", &thinking),
        // Serializing members that were just read cannot fail; if it did, the field is left.
        Some(Err(_)) => {}
        None => {
            body.remove("thinking");
        }
    }
}

/// `thinking` with `budget_tokens` replaced, every other member as it was.
struct WithBudget<'x, 'a> {
    thinking: &'x RawMap<'a>,
    budget: u64,
}

impl Serialize for WithBudget<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(None)?;
        for (key, value) in &self.thinking.members {
            if key.as_str() == "budget_tokens" {
                m.serialize_entry(key, &self.budget)?;
            } else {
                m.serialize_entry(key, value)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clamp(json: &str, default: Option<u64>, cap: Option<u64>) -> String {
        let mut body = JsonObject::parse(json.as_bytes()).expect("object");
        clamp_max_tokens(&mut body, default, cap);
        String::from_utf8(body.to_bytes().to_vec()).expect("utf-8")
    }

    #[test]
    fn default_when_absent_and_cap_when_above() {
        assert_eq!(
            clamp(r#"{"model":"m"}"#, Some(4096), None),
            r#"{"model":"m","max_tokens":4096}"#
        );
        assert_eq!(
            clamp(r#"{"model":"m"}"#, None, Some(10)),
            r#"{"model":"m"}"#
        );
        assert_eq!(
            clamp(r#"{"max_tokens":128000}"#, Some(1), Some(8192)),
            r#"{"max_tokens":8192}"#
        );
        assert_eq!(
            clamp(r#"{"max_tokens":100}"#, None, Some(8192)),
            r#"{"max_tokens":100}"#
        );
        assert_eq!(
            clamp(r#"{"model":"m"}"#, Some(90000), Some(8192)),
            r#"{"model":"m","max_tokens":8192}"#
        );
    }

    #[test]
    fn thinking_budget_stays_below_max_tokens() {
        assert_eq!(
            clamp(
                r#"{"max_tokens":32000,"thinking":{"type":"enabled","budget_tokens":31999,"display":"summarized"}}"#,
                None,
                Some(8192)
            ),
            r#"{"max_tokens":8192,"thinking":{"type":"enabled","budget_tokens":8191,"display":"summarized"}}"#
        );
        assert_eq!(
            clamp(
                r#"{"max_tokens":32000,"thinking":{"type":"enabled","budget_tokens":2000}}"#,
                None,
                Some(8192)
            ),
            r#"{"max_tokens":8192,"thinking":{"type":"enabled","budget_tokens":2000}}"#,
            "a budget that fits is left alone"
        );
        assert_eq!(
            clamp(
                r#"{"max_tokens":32000,"thinking":{"type":"enabled","budget_tokens":2000}}"#,
                None,
                Some(1000)
            ),
            r#"{"max_tokens":1000}"#,
            "thinking cannot fit under 1024"
        );
        assert_eq!(
            clamp(
                r#"{"max_tokens":32000,"thinking":{"type":"adaptive"}}"#,
                None,
                Some(500)
            ),
            r#"{"max_tokens":500,"thinking":{"type":"adaptive"}}"#,
            "adaptive thinking has no budget to keep"
        );
    }
}
