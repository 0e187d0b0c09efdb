//! [`CallMetrics`]: a latency histogram of served calls, shared by every
//! link of a service.
//!
//! Fixed buckets (upper bounds from 50 µs to 10 s), lock-free counters:
//! recording a call costs a few atomic additions. A node reports the bucket
//! counts to its controller, which exports them (Prometheus).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds; a last, unbounded
/// bucket catches the rest.
pub const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Served-call latency histogram.
#[derive(Debug)]
pub struct CallMetrics {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
    cancelled: AtomicU64,
}

impl Default for CallMetrics {
    fn default() -> Self {
        CallMetrics {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }
}

impl CallMetrics {
    /// Records one call that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records `n` calls answered at once (latency zero, the first bucket).
    pub fn record_immediate(&self, n: u64) {
        if n > 0 {
            self.counts[0].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts per bucket (not cumulative), the last one unbounded.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Counts `n` calls cancelled before they finished (by their caller,
    /// by `max-call-time`, or as their link closed).
    pub fn record_cancelled(&self, n: u64) {
        if n > 0 {
            self.cancelled.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Calls cancelled before they finished, in total.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Sum of all recorded latencies, microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// The latency below which `q` (0..1) of the calls fall, as the upper
    /// bound of the bucket that reaches it (`None` without calls; the last
    /// bound for the unbounded bucket).
    pub fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                let bound = BUCKETS
                    .get(i)
                    .copied()
                    .unwrap_or(BUCKETS[BUCKETS.len() - 1]);
                return Some(Duration::from_secs_f64(bound));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_buckets_and_reads_quantiles() {
        let m = CallMetrics::default();
        for _ in 0..98 {
            m.record(Duration::from_micros(70));
        }
        m.record(Duration::from_millis(3));
        m.record(Duration::from_secs(30));
        let c = m.counts();
        assert_eq!(c.iter().sum::<u64>(), 100);
        assert_eq!(c[1], 98, "70 µs is in the 100 µs bucket");
        assert_eq!(c[BUCKETS.len()], 1, "30 s overflows");
        assert_eq!(
            CallMetrics::quantile(&c, 0.5),
            Some(Duration::from_micros(100))
        );
        assert_eq!(
            CallMetrics::quantile(&c, 0.99),
            Some(Duration::from_millis(5))
        );
        assert_eq!(CallMetrics::quantile(&[0; 17], 0.5), None);
        assert!(m.sum_us() >= 30_000_000);
    }
}
