//! The counting rules every store shares: anchored 60 s windows, the UTC day, what an admission
//! checks and reserves, and what a settlement charges. The Redis scripts (`redis/*.lua`) are the
//! same rules written in Lua; a change here is a change there (docs/limits.md, "The rules").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::decision::{Limit, Limits, Quota, ScopeState, Usage};

/// Length of an rpm/tpm window.
pub(crate) const WINDOW_MS: u64 = 60_000;
/// Length of a UTC day; Unix time has no leap seconds, so every day is exactly this long.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// Milliseconds since the Unix epoch; a clock set before 1970 counts as the epoch itself.
pub(crate) fn millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The UTC calendar day of `ms`, as days since 1970-01-01.
pub(crate) fn day_of(ms: u64) -> u64 {
    ms / DAY_MS
}

/// Milliseconds from `ms` to the next 00:00 UTC.
pub(crate) fn to_midnight(ms: u64) -> u64 {
    (day_of(ms) + 1) * DAY_MS - ms
}

/// One scope's counters, as stored: in a `Mutex` (memory, SQLite) or a Redis hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Start of the open 60 s window (ms since the epoch). `None`: no window open; the next
    /// request opens one. Anchoring at the first request (not at the wall-clock minute) is what
    /// makes a burst admit exactly `rpm` wherever it falls in the minute.
    pub window_start: Option<u64>,
    /// Requests admitted in the open window.
    pub window_requests: u64,
    /// Tokens settled in the open window.
    pub window_tokens: u64,
    /// The UTC day `day_tokens` belongs to (days since the epoch).
    pub day: u64,
    /// Tokens settled on `day`.
    pub day_tokens: u64,
    /// Tokens held by reservations not yet settled. Not tied to a window or a day: while a
    /// request is in flight its estimate counts against every window it spans.
    pub reserved: u64,
}

impl Counters {
    /// The counters as they stand at `now`: an expired window is closed and a past day's tokens
    /// are forgotten. Pure, so a refused admission changes nothing.
    pub(crate) fn rolled(mut self, now: u64) -> Self {
        if self
            .window_start
            .is_some_and(|start| now >= start + WINDOW_MS)
        {
            self.window_start = None;
            self.window_requests = 0;
            self.window_tokens = 0;
        }
        // `<`, not `!=`: a replica whose clock lags behind midnight must not wipe the new day.
        if self.day < day_of(now) {
            self.day = day_of(now);
            self.day_tokens = 0;
        }
        self
    }

    /// Every limit of `limits` that one more request reserving `tokens` would break, with how
    /// long until waiting could help. Called on rolled counters.
    pub(crate) fn broken(&self, limits: &Limits, tokens: u64, now: u64) -> Vec<(Limit, u64)> {
        let mut broken = Vec::new();
        let held = self.reserved.saturating_add(tokens);
        if let Some(rpm) = limits.rpm {
            if self.window_requests + 1 > rpm {
                broken.push((Limit::Rpm, self.window_reset(now)));
            }
        }
        if let Some(tpm) = limits.tpm {
            if self.window_tokens.saturating_add(held) > tpm {
                broken.push((Limit::Tpm, self.window_reset(now)));
            }
        }
        if let Some(tpd) = limits.tokens_per_day {
            if self.day_tokens.saturating_add(held) > tpd {
                broken.push((Limit::TokensPerDay, to_midnight(now)));
            }
        }
        broken
    }

    /// Counts an admitted request and holds its tokens. Called on rolled counters.
    pub(crate) fn admit(&mut self, tokens: u64, now: u64) {
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        self.window_requests += 1;
        self.reserved = self.reserved.saturating_add(tokens);
    }

    /// Lets go of a reservation's `tokens`.
    pub(crate) fn release(&mut self, tokens: u64) {
        self.reserved = self.reserved.saturating_sub(tokens);
    }

    /// Charges `used` tokens, settled at `now`, to the open window and to the day. A window
    /// that expired with no request since has no one left to limit, so it is not reopened by a
    /// settlement; the day always takes the tokens (a request that began before midnight and
    /// ended after counts for the new day, when its tokens were reported).
    pub(crate) fn charge(&mut self, used: u64, now: u64) {
        *self = self.rolled(now);
        if self.window_start.is_some() {
            self.window_tokens = self.window_tokens.saturating_add(used);
        }
        self.day_tokens = self.day_tokens.saturating_add(used);
    }

    /// Milliseconds until the open window closes; a full window when none is open (the next
    /// request would open one now).
    fn window_reset(&self, now: u64) -> u64 {
        self.window_start
            .map_or(WINDOW_MS, |start| (start + WINDOW_MS).saturating_sub(now))
    }

    /// What the `x-ratelimit-*` headers show for these (rolled) counters.
    pub(crate) fn state(&self, limits: &Limits, now: u64) -> ScopeState {
        let window = Duration::from_millis(self.window_reset(now));
        let held_in_window = self.window_tokens.saturating_add(self.reserved);
        let held_today = self.day_tokens.saturating_add(self.reserved);
        ScopeState {
            requests: limits.rpm.map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(self.window_requests),
                reset: window,
            }),
            tokens: limits.tpm.map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(held_in_window),
                reset: window,
            }),
            tokens_today: limits.tokens_per_day.map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(held_today),
                reset: Duration::from_millis(to_midnight(now)),
            }),
        }
    }

    /// The (rolled) counters as a [`Usage`].
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            window_requests: self.window_requests,
            window_tokens: self.window_tokens,
            tokens_today: self.day_tokens,
            reserved: self.reserved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: u64 = 20_000 * DAY_MS + DAY_MS / 2;

    fn limits(rpm: Option<u64>, tpm: Option<u64>, tpd: Option<u64>) -> Limits {
        Limits {
            rpm,
            tpm,
            tokens_per_day: tpd,
        }
    }

    #[test]
    fn a_window_opens_at_the_first_request_and_closes_sixty_seconds_later() {
        let mut c = Counters::default().rolled(NOON + 17_321);
        c.admit(0, NOON + 17_321);
        assert_eq!(c.window_start, Some(NOON + 17_321));
        let just_before = c.rolled(NOON + 17_321 + WINDOW_MS - 1);
        assert_eq!(just_before.window_requests, 1);
        let after = c.rolled(NOON + 17_321 + WINDOW_MS);
        assert_eq!(after.window_requests, 0);
        assert_eq!(after.window_start, None);
    }

    #[test]
    fn reserved_tokens_count_against_minute_and_day() {
        let l = limits(None, Some(100), Some(150));
        let mut c = Counters::default().rolled(NOON);
        c.admit(60, NOON);
        assert!(c.broken(&l, 40, NOON).is_empty());
        assert_eq!(c.broken(&l, 41, NOON), vec![(Limit::Tpm, WINDOW_MS)]);
        c.release(60);
        c.charge(90, NOON + 1);
        // The window has 90 settled; the day too.
        let broken = c.broken(&l, 61, NOON + 2);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert_eq!(broken[1], (Limit::TokensPerDay, DAY_MS / 2 - 2));
    }

    #[test]
    fn a_settlement_after_the_window_expired_charges_only_the_day() {
        let mut c = Counters::default().rolled(NOON);
        c.admit(10, NOON);
        c.release(10);
        c.charge(500, NOON + WINDOW_MS + 5);
        assert_eq!(c.window_start, None);
        assert_eq!(c.window_tokens, 0);
        assert_eq!(c.day_tokens, 500);
    }

    #[test]
    fn midnight_forgets_the_day_but_not_reservations() {
        let mut c = Counters::default().rolled(NOON);
        c.admit(300, NOON);
        c.charge(700, NOON);
        let next = c.rolled(NOON + DAY_MS / 2);
        assert_eq!(next.day_tokens, 0);
        assert_eq!(next.reserved, 300);
        // A clock behind midnight (another replica) does not undo the new day.
        let mut ahead = next;
        ahead.charge(5, NOON + DAY_MS / 2);
        assert_eq!(ahead.rolled(NOON + DAY_MS / 2 - 1).day_tokens, 5);
    }

    #[test]
    fn states_show_what_is_left_and_when_it_comes_back() {
        let l = limits(Some(10), Some(1000), Some(5000));
        let mut c = Counters::default().rolled(NOON);
        c.admit(200, NOON);
        let s = c.state(&l, NOON + 15_000);
        let requests = s.requests.expect("rpm set");
        assert_eq!((requests.limit, requests.remaining), (10, 9));
        assert_eq!(requests.reset, Duration::from_secs(45));
        assert_eq!(s.tokens.map(|q| q.remaining), Some(800));
        let today = s.tokens_today.expect("daily set");
        assert_eq!(today.remaining, 4800);
        assert_eq!(today.reset, Duration::from_millis(DAY_MS / 2 - 15_000));
    }

    #[test]
    fn millis_before_the_epoch_is_zero() {
        assert_eq!(millis(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(millis(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
        assert_eq!(to_midnight(0), DAY_MS);
    }
}
