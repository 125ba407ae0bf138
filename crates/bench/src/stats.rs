//! Latency samples and their summary: nearest-rank percentiles over the sorted samples.
//!
//! Every sample is kept (a few hundred thousand `u64`s per scenario): exact percentiles cost
//! one sort at the end, and there is no bucket width to argue about.

use std::time::Duration;

/// Percentiles of one set of samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Summary {
    /// Sorts `samples` in place and summarizes them; `None` when there are none.
    pub fn of(samples: &mut [u64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Summary {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: samples[samples.len() - 1],
        })
    }
}

/// The nearest-rank percentile `q` (0..=100) of sorted samples: the smallest sample that at
/// least `q`% of the samples are less than or equal to. Never interpolates, so every value
/// reported was really observed.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let n = sorted.len();
    // ceil(q/100 * n) as a 1-based rank, clamped to 1..=n.
    let rank = ((q / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Nanoseconds of a duration, saturating (a bench run never lasts 584 years).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds as a float, for tables.
pub fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!(
            (s.count, s.p50, s.p90, s.p99, s.max),
            (100, 50, 90, 99, 100)
        );

        // 1,000 samples: p99 is the 990th, not an interpolation towards the tail.
        let mut v: Vec<u64> = (1..=1000).collect();
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!((s.p50, s.p90, s.p99, s.max), (500, 900, 990, 1000));
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(Summary::of(&mut []), None);
        let s = Summary::of(&mut [7]).expect("one sample");
        assert_eq!((s.p50, s.p99, s.max), (7, 7, 7));
        // With two samples the median is the lower one, p90 the upper.
        let sorted = [10, 20];
        assert_eq!(percentile(&sorted, 50.0), 10);
        assert_eq!(percentile(&sorted, 90.0), 20);
        assert_eq!(percentile(&sorted, 0.0), 10);
        assert_eq!(percentile(&sorted, 100.0), 20);
    }

    #[test]
    fn a_slow_tail_shows_in_p99_not_p50() {
        let mut v = vec![1_000u64; 990];
        v.extend([50_000_000u64; 10]);
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!(s.p50, 1_000);
        assert_eq!(s.p99, 1_000);
        assert_eq!(s.max, 50_000_000);
        v.push(50_000_000);
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!(s.p99, 50_000_000);
    }
}
