//! What the server asks a store at admission, and what it gets back: the asks, the decision,
//! and the per-scope quotas that become `x-ratelimit-*` headers.

use std::time::Duration;

use crate::error::StoreError;
use crate::reservation::Reservation;

/// The limits of one scope (SPEC §8). `None`: that limit is not enforced, but the scope's
/// requests and tokens are still counted (for the dashboard, and so a reload that adds a limit
/// starts from the real usage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per 60 s window.
    pub rpm: Option<u64>,
    /// Tokens (reserved + settled) per 60 s window.
    pub tpm: Option<u64>,
    /// Tokens (reserved + settled) per UTC calendar day.
    pub tokens_per_day: Option<u64>,
}

/// One scope a request must fit in: its key (`"key:ci"`) or a backend (`"backend:nvidia"`).
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The scope's name. Scopes are independent counters; two asks of one decision must name
    /// different scopes.
    pub scope: &'a str,
    /// The scope's limits, from the configuration in force.
    pub limits: Limits,
    /// Tokens to reserve: the prompt's estimate plus the request's output cap
    /// ([`crate::estimate_tokens`]). Settling replaces them with the real usage.
    pub tokens: u64,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Tokens per UTC day.
    TokensPerDay,
}

impl Limit {
    /// The configuration key of this limit, for the 429 message and the
    /// `tollgate_limit_refusals_total{limit}` label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Rpm => "rpm",
            Limit::Tpm => "tpm",
            Limit::TokensPerDay => "tokens_per_day",
        }
    }
}

/// One limit of one scope after a decision: OpenAI's `x-ratelimit-limit-*`,
/// `x-ratelimit-remaining-*` and `x-ratelimit-reset-*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The configured limit.
    pub limit: u64,
    /// What is left after this decision (requests, or tokens not settled nor reserved).
    pub remaining: u64,
    /// Time until the limit starts over: the window's end, or 00:00 UTC for the daily budget.
    pub reset: Duration,
}

/// The quotas of one scope, for the limits it has. `tokens` is per minute (what OpenAI sends
/// as `-tokens`); `tokens_today` is the daily budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeState {
    /// The rpm quota, when the scope has an rpm limit.
    pub requests: Option<Quota>,
    /// The tpm quota, when the scope has a tpm limit.
    pub tokens: Option<Quota>,
    /// The daily quota, when the scope has a `tokens_per_day` limit.
    pub tokens_today: Option<Quota>,
}

/// The answer to one admission, atomic across all its asks: every scope admitted the request
/// and holds its tokens, or none changed.
#[derive(Debug)]
pub enum Decision {
    /// Admitted: settle the reservation when the request ends (dropping it releases it).
    Admitted {
        /// The tokens held in every asked scope.
        reservation: Reservation,
        /// One state per ask, in the asks' order, after the reservation.
        states: States,
    },
    /// Refused by one limit of one scope; nothing was counted or reserved.
    Refused(Refusal),
}

/// One state per ask, in the asks' order (a slice). A single ask's — the usual decision — is
/// held inline: a `Vec` of one cost an allocation per admitted request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum States {
    One(ScopeState),
    Many(Vec<ScopeState>),
}

impl Default for States {
    fn default() -> Self {
        States::Many(Vec::new())
    }
}

impl std::ops::Deref for States {
    type Target = [ScopeState];

    fn deref(&self) -> &[ScopeState] {
        match self {
            States::One(state) => std::slice::from_ref(state),
            States::Many(states) => states,
        }
    }
}

impl From<Vec<ScopeState>> for States {
    fn from(states: Vec<ScopeState>) -> Self {
        States::Many(states)
    }
}

impl FromIterator<ScopeState> for States {
    fn from_iter<I: IntoIterator<Item = ScopeState>>(states: I) -> Self {
        States::Many(states.into_iter().collect())
    }
}

/// Why a request was refused. When several limits refuse, the one that lasts longest is named,
/// so a client that waits `retry_after` is not refused at once by the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The refusing scope's name (the server names the limit in its message, never the key).
    pub scope: String,
    /// Index of the refusing scope in the asks.
    pub ask: usize,
    /// The limit that refused.
    pub limit: Limit,
    /// Time until that limit starts over: the window's end, or 00:00 UTC for the daily budget.
    pub retry_after: Duration,
    /// The ask alone is larger than the limit (its tokens exceed tpm or tokens_per_day, or the
    /// limit is 0): no amount of waiting admits it, so the message should say so.
    pub oversized: bool,
    /// One state per ask, in the asks' order, as they stand (unchanged by the refusal).
    pub states: Vec<ScopeState>,
}

impl Refusal {
    /// `retry-after` in whole seconds, rounded up and at least 1: a client told 0 would retry
    /// at once into the same refusal.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(1000).max(1)
    }
}

/// One scope's counters at a moment, for a gauge or the dashboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests admitted in the open 60 s window.
    pub window_requests: u64,
    /// Tokens settled in the open 60 s window.
    pub window_tokens: u64,
    /// Tokens settled today (UTC).
    pub tokens_today: u64,
    /// Tokens held by requests still in flight.
    pub reserved: u64,
}

impl Usage {
    /// What is left of a daily budget of `tokens_per_day`: neither settled today nor reserved.
    pub fn remaining_today(&self, tokens_per_day: u64) -> u64 {
        tokens_per_day.saturating_sub(self.tokens_today.saturating_add(self.reserved))
    }
}

/// Picks the refusal among the broken limits of every ask: the longest wait, the first ask on a
/// tie. `broken` holds `(ask index, limit, ms until it resets)`.
pub(crate) fn refusal(
    asks: &[Ask<'_>],
    broken: &[(usize, Limit, u64)],
    states: Vec<ScopeState>,
) -> Option<Refusal> {
    let mut worst: Option<&(usize, Limit, u64)> = None;
    for b in broken {
        if worst.is_none_or(|w| b.2 > w.2) {
            worst = Some(b);
        }
    }
    let &(ask, limit, wait_ms) = worst?;
    let a = asks.get(ask)?;
    let cap = match limit {
        Limit::Rpm => a.limits.rpm.map(|rpm| rpm == 0),
        Limit::Tpm => a.limits.tpm.map(|tpm| a.tokens > tpm),
        Limit::TokensPerDay => a.limits.tokens_per_day.map(|tpd| a.tokens > tpd),
    };
    Some(Refusal {
        scope: a.scope.to_owned(),
        ask,
        limit,
        retry_after: Duration::from_millis(wait_ms),
        oversized: cap.unwrap_or(false),
        states,
    })
}

/// Each scope is asked once per decision: the same scope twice would be counted twice.
pub(crate) fn check_distinct(asks: &[Ask<'_>]) -> Result<(), StoreError> {
    for (i, a) in asks.iter().enumerate() {
        if asks[..i].iter().any(|b| b.scope == a.scope) {
            return Err(StoreError::DuplicateScope(a.scope.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_a_whole_second() {
        let mut r = Refusal {
            scope: "key:ci".into(),
            ask: 0,
            limit: Limit::Rpm,
            retry_after: Duration::from_millis(1),
            oversized: false,
            states: vec![],
        };
        assert_eq!(r.retry_after_secs(), 1);
        r.retry_after = Duration::from_millis(59_001);
        assert_eq!(r.retry_after_secs(), 60);
        r.retry_after = Duration::ZERO;
        assert_eq!(r.retry_after_secs(), 1);
    }

    #[test]
    fn the_longest_wait_is_named() {
        let limits = Limits {
            rpm: Some(1),
            tpm: None,
            tokens_per_day: Some(10),
        };
        let asks = [
            Ask {
                scope: "key:a",
                limits,
                tokens: 5,
            },
            Ask {
                scope: "backend:b",
                limits,
                tokens: 50,
            },
        ];
        let broken = [(0, Limit::Rpm, 30_000), (1, Limit::TokensPerDay, 3_600_000)];
        let r = refusal(&asks, &broken, vec![]).expect("refused");
        assert_eq!(
            (r.ask, r.limit, r.scope.as_str()),
            (1, Limit::TokensPerDay, "backend:b")
        );
        assert!(r.oversized, "50 tokens never fit a budget of 10");
        assert!(refusal(&asks, &[], vec![]).is_none());
    }
}
