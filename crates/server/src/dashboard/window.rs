//! Five-minute windows per backend: attempts, failures, and latency and time-to-first-token
//! histograms in 15-second slots, so "p95 over the last 5 minutes" needs no list of samples
//! and costs the same at 10 or 30,000 requests a second.
//!
//! Histograms are log-scaled: four bins per doubling from 100 µs, so a percentile read from
//! one is within about 12 % of the true value (it reports the middle of its bin).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Seconds one slot covers.
pub const SLOT_SECS: u64 = 15;
/// Slots in a window: 20 × 15 s = the last 5 minutes (to within one slot).
pub const SLOTS: usize = 20;
/// Bins per histogram: 100 µs units, four per doubling, up to about 28 minutes.
const BINS: usize = 96;

/// Seconds on a monotonic clock (the wall clock may jump; windows must not).
pub fn now_secs() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs()
}

#[derive(Clone)]
struct Hist {
    bins: [u32; BINS],
}

impl Default for Hist {
    fn default() -> Self {
        Hist { bins: [0; BINS] }
    }
}

/// The bin of a duration: below 400 µs one bin per 100 µs, then four per doubling.
fn bin(d: Duration) -> usize {
    let units = (d.as_micros() / 100) as u64;
    if units < 4 {
        return units as usize;
    }
    let exp = 63 - units.leading_zeros() as usize;
    let quarter = ((units >> (exp - 2)) & 3) as usize;
    (exp * 4 + quarter - 4).min(BINS - 1)
}

/// The middle of a bin, in milliseconds.
fn bin_ms(b: usize) -> f64 {
    let units = if b < 4 {
        b as f64 + 0.5
    } else {
        let (exp, quarter) = ((b + 4) / 4, (b + 4) % 4);
        let low = ((4 + quarter) as u64) << (exp - 2);
        let width = 1u64 << (exp - 2);
        low as f64 + width as f64 / 2.0
    };
    units / 10.0
}

impl Hist {
    fn add(&mut self, d: Duration) {
        let b = bin(d);
        self.bins[b] = self.bins[b].saturating_add(1);
    }

    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.bins.iter_mut().zip(other.bins.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    fn count(&self) -> u64 {
        self.bins.iter().map(|&n| u64::from(n)).sum()
    }

    /// The `q` quantile (0..1), in milliseconds; `None` without samples.
    fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (b, &count) in self.bins.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(bin_ms(b));
            }
        }
        None
    }
}

#[derive(Clone, Default)]
struct Slot {
    /// Which 15-second period this slot holds (`now_secs() / SLOT_SECS`).
    period: u64,
    requests: u32,
    attempts: u32,
    failed: u32,
    latency: Hist,
    ttft: Hist,
}

/// One backend's last five minutes (as seen by one shard: a snapshot merges the shards').
pub struct Window {
    slots: Box<[Slot]>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
        }
    }
}

/// What happened at one backend, for its window.
#[derive(Default)]
pub struct Sample {
    /// A request whose answer came from this backend (or that was tried there last).
    pub request: bool,
    pub attempts: u32,
    /// Failed attempts, plus a stream that broke there after its answer started.
    pub failed: u32,
    /// The whole request time, for requests this backend answered.
    pub latency: Option<Duration>,
    pub ttft: Option<Duration>,
}

impl Window {
    fn slot(&mut self, now: u64) -> &mut Slot {
        let period = now / SLOT_SECS;
        let slot = &mut self.slots[(period % SLOTS as u64) as usize];
        if slot.period != period {
            *slot = Slot {
                period,
                ..Slot::default()
            };
        }
        slot
    }

    pub fn record(&mut self, now: u64, sample: &Sample) {
        let slot = self.slot(now);
        slot.requests += u32::from(sample.request);
        slot.attempts += sample.attempts;
        slot.failed += sample.failed;
        if let Some(d) = sample.latency {
            slot.latency.add(d);
        }
        if let Some(d) = sample.ttft {
            slot.ttft.add(d);
        }
    }
}

/// Windows merged (over shards), ready to read.
#[derive(Default)]
pub struct Merged {
    requests: u64,
    attempts: u64,
    failed: u64,
    latency: Hist,
    ttft: Hist,
}

impl Merged {
    /// Adds the slots of `window` that are within the last five minutes of `now`.
    pub fn add(&mut self, window: &Window, now: u64) {
        let current = now / SLOT_SECS;
        for slot in window.slots.iter() {
            if slot.period + (SLOTS as u64) > current && slot.period <= current {
                self.requests += u64::from(slot.requests);
                self.attempts += u64::from(slot.attempts);
                self.failed += u64::from(slot.failed);
                self.latency.merge(&slot.latency);
                self.ttft.merge(&slot.ttft);
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let pair = |h: &Hist| {
            h.quantile(0.5).map(|p50| Percentiles {
                p50,
                p95: h.quantile(0.95).unwrap_or(p50),
            })
        };
        Stats {
            seconds: SLOT_SECS * SLOTS as u64,
            requests: self.requests,
            attempts: self.attempts,
            failed: self.failed,
            error_rate: (self.attempts > 0)
                .then(|| (self.failed as f64 / self.attempts as f64).min(1.0)),
            latency_ms: pair(&self.latency),
            ttft_ms: pair(&self.ttft),
        }
    }
}

/// A backend's last five minutes, as the page shows them.
#[derive(Serialize)]
pub struct Stats {
    pub seconds: u64,
    pub requests: u64,
    pub attempts: u64,
    pub failed: u64,
    /// Failed attempts over attempts.
    pub error_rate: Option<f64>,
    pub latency_ms: Option<Percentiles>,
    pub ttft_ms: Option<Percentiles>,
}

#[derive(Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ordered_and_cover_the_range() {
        let mut last = 0;
        for us in (0..2_000_000u64).step_by(37) {
            let b = bin(Duration::from_micros(us));
            assert!(b >= last, "{us} µs");
            last = b;
        }
        assert_eq!(bin(Duration::from_secs(100_000)), BINS - 1);
        // Each bin's middle falls in the bin.
        for b in 0..BINS - 1 {
            let mid = Duration::from_secs_f64(bin_ms(b) / 1000.0);
            assert_eq!(bin(mid), b, "bin {b}");
        }
    }

    #[test]
    fn percentiles_are_within_a_bin_of_the_truth() {
        let mut w = Window::default();
        for ms in 1..=100u64 {
            w.record(
                1000,
                &Sample {
                    request: true,
                    attempts: 1,
                    failed: u32::from(ms % 10 == 0),
                    latency: Some(Duration::from_millis(ms)),
                    ttft: None,
                },
            );
        }
        let mut m = Merged::default();
        m.add(&w, 1000);
        let s = m.stats();
        assert_eq!((s.requests, s.attempts, s.failed), (100, 100, 10));
        assert_eq!(s.error_rate, Some(0.1));
        let l = s.latency_ms.expect("latency");
        assert!((l.p50 - 50.0).abs() <= 50.0 * 0.13, "{}", l.p50);
        assert!((l.p95 - 95.0).abs() <= 95.0 * 0.13, "{}", l.p95);
        assert!(s.ttft_ms.is_none());
    }

    #[test]
    fn slots_older_than_five_minutes_drop_out() {
        let mut w = Window::default();
        let sample = Sample {
            request: true,
            attempts: 1,
            failed: 1,
            latency: Some(Duration::from_millis(5)),
            ttft: None,
        };
        w.record(1000, &sample);
        w.record(1000 + 200, &sample);
        let at = |w: &Window, now| {
            let mut m = Merged::default();
            m.add(w, now);
            m.stats().requests
        };
        assert_eq!(at(&w, 1000 + 200), 2);
        assert_eq!(at(&w, 1000 + 310), 1, "the first slot is out of the window");
        assert_eq!(at(&w, 1000 + 200 + 310), 0);
        // A slot reused for a later period starts from zero.
        w.record(1000 + SLOT_SECS * SLOTS as u64, &sample);
        assert_eq!(at(&w, 1000 + SLOT_SECS * SLOTS as u64), 2);
    }
}
