//! A circuit breaker per backend: after `failures` consecutive failures the backend is
//! skipped for `cooldown`, then one probe request is let through; its success closes the
//! circuit, its failure opens it again.
//!
//! Lock-free: a request that finds the circuit closed pays one atomic load, and a success
//! writes only when there were failures to forget.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tollgate_core::config::CircuitBreaker;

/// Milliseconds since the first use of the clock, so instants fit in an atomic. Starts at 1:
/// 0 means "not set" below.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

#[derive(Debug)]
pub struct Breaker {
    settings: CircuitBreaker,
    consecutive: AtomicU32,
    /// When the circuit opened (ms), 0 while closed.
    opened_at: AtomicU64,
    /// When the current half-open probe started (ms), 0 when none is in flight.
    probe_at: AtomicU64,
}

/// What the breaker says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go ahead.
    Go,
    /// Half-open: this request is the probe.
    Probe,
    /// Open: skip this backend.
    Refused,
}

impl Breaker {
    pub fn new(settings: CircuitBreaker) -> Self {
        Breaker {
            settings,
            consecutive: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probe_at: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> CircuitBreaker {
        self.settings
    }

    fn cooldown_ms(&self) -> u64 {
        self.settings.cooldown.saturating_mul(1000)
    }

    /// Whether a request may go to this backend now.
    pub fn permit(&self) -> Permit {
        // A closed circuit (nearly always) needs no clock read.
        if self.opened_at.load(Ordering::Acquire) == 0 || self.settings.failures == 0 {
            return Permit::Go;
        }
        self.permit_at(now_ms())
    }

    fn permit_at(&self, now: u64) -> Permit {
        let opened = self.opened_at.load(Ordering::Acquire);
        if opened == 0 || self.settings.failures == 0 {
            return Permit::Go;
        }
        if now < opened + self.cooldown_ms() {
            return Permit::Refused;
        }
        // Half-open: one probe at a time. A probe that never reports (its client left) is
        // given up after one more cooldown, so the circuit cannot stick half-open.
        let probe = self.probe_at.load(Ordering::Acquire);
        if probe != 0 && now < probe + self.cooldown_ms() {
            return Permit::Refused;
        }
        match self
            .probe_at
            .compare_exchange(probe, now, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Permit::Probe,
            Err(_) => Permit::Refused,
        }
    }

    /// The backend answered. Returns true when this closed an open circuit.
    pub fn succeeded(&self) -> bool {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.opened_at.load(Ordering::Relaxed) != 0 {
            self.opened_at.store(0, Ordering::Release);
            self.probe_at.store(0, Ordering::Release);
            return true;
        }
        false
    }

    /// The backend failed in a way that is its own (connect error, timeout, 5xx …).
    /// Returns true when this failure opened the circuit.
    pub fn failed(&self, permit: Permit) -> bool {
        self.failed_at(permit, now_ms())
    }

    fn failed_at(&self, permit: Permit, now: u64) -> bool {
        if self.settings.failures == 0 {
            return false;
        }
        if permit == Permit::Probe {
            // The probe failed: a new cooldown starts now.
            self.opened_at.store(now, Ordering::Release);
            self.probe_at.store(0, Ordering::Release);
            return true;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.settings.failures && self.opened_at.load(Ordering::Acquire) == 0 {
            self.opened_at.store(now, Ordering::Release);
            return true;
        }
        false
    }

    /// Whether the circuit is open (or half-open) now.
    pub fn is_open(&self) -> bool {
        self.settings.failures > 0 && self.opened_at.load(Ordering::Acquire) != 0
    }

    /// Time until a probe may go, while open.
    pub fn retry_in(&self) -> Option<Duration> {
        let opened = self.opened_at.load(Ordering::Acquire);
        if opened == 0 {
            return None;
        }
        let due = opened + self.cooldown_ms();
        Some(Duration::from_millis(due.saturating_sub(now_ms())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cooldown: u64) -> Breaker {
        Breaker::new(CircuitBreaker { failures, cooldown })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 30);
        assert!(!b.failed(Permit::Go));
        assert!(!b.failed(Permit::Go));
        assert!(!b.succeeded(), "nothing to close");
        assert!(!b.failed(Permit::Go));
        assert!(!b.failed(Permit::Go));
        assert_eq!(b.permit(), Permit::Go);
        assert!(b.failed(Permit::Go), "third in a row opens");
        assert!(b.is_open());
        assert_eq!(b.permit(), Permit::Refused);
    }

    #[test]
    fn one_probe_after_cooldown() {
        let b = breaker(1, 60);
        let t0 = 1_000;
        assert!(b.failed_at(Permit::Go, t0));
        assert_eq!(
            b.permit_at(t0 + 59_999),
            Permit::Refused,
            "open during the cooldown"
        );
        let t1 = t0 + 60_000;
        assert_eq!(b.permit_at(t1), Permit::Probe);
        assert_eq!(
            b.permit_at(t1 + 1),
            Permit::Refused,
            "only one probe at a time"
        );
        assert!(
            b.failed_at(Permit::Probe, t1 + 10),
            "a failed probe reopens"
        );
        assert_eq!(b.permit_at(t1 + 20), Permit::Refused);
        let t2 = t1 + 10 + 60_000;
        assert_eq!(b.permit_at(t2), Permit::Probe);
        assert!(b.succeeded(), "the probe's success closes the circuit");
        assert!(!b.is_open());
        assert_eq!(b.permit_at(t2 + 1), Permit::Go);
    }

    #[test]
    fn a_probe_that_never_reports_is_given_up() {
        let b = breaker(1, 10);
        assert!(b.failed_at(Permit::Go, 1));
        assert_eq!(b.permit_at(10_001), Permit::Probe);
        assert_eq!(b.permit_at(15_000), Permit::Refused);
        assert_eq!(b.permit_at(20_001), Permit::Probe, "stale probe replaced");
    }

    #[test]
    fn zero_failures_disables() {
        let b = breaker(0, 30);
        for _ in 0..100 {
            assert!(!b.failed(Permit::Go));
        }
        assert_eq!(b.permit(), Permit::Go);
    }
}
