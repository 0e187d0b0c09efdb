//! Recording what the workers measure: per-worker [`Recorder`]s (an HDR
//! histogram and counts, no lock), the shared [`Counters`] of the progress
//! line, the measured [`Window`], and the [`Watchdog`] that bounds waiting
//! on one link or connection without a timer per call.
//!
//! A call counts in the measured window if it *completes* inside it; a
//! failure counts if it happens after the window has begun.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Instant, Sleep};

/// Latencies above this (nanoseconds) are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Totals over every link, for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls that succeeded, warm-up included.
    pub calls: AtomicU64,
    /// Calls that failed, warm-up included.
    pub errors: AtomicU64,
}

/// The measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When measuring begins (the warm-up ends).
    pub start: Instant,
    /// When measuring ends; no call starts after this.
    pub end: Instant,
}

impl Window {
    /// Whether something that completed at `done` counts.
    pub fn contains(&self, done: Instant) -> bool {
        done >= self.start && done <= self.end
    }
}

/// What one link measured.
#[derive(Debug)]
pub struct Recorder {
    /// Latencies of the calls counted, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Successful calls completed inside the window.
    pub calls: u64,
    /// Failed calls since the window began.
    pub errors: u64,
    window: Window,
    counters: Arc<Counters>,
}

impl Recorder {
    /// An empty recorder for `window`.
    pub fn new(window: Window, counters: Arc<Counters>) -> Recorder {
        Recorder {
            hist: new_histogram(),
            calls: 0,
            errors: 0,
            window,
            counters,
        }
    }

    /// Records a call sent at `sent` and finished at `done`.
    pub fn record(&mut self, sent: Instant, done: Instant, ok: bool) {
        if ok {
            self.counters.calls.fetch_add(1, Ordering::Relaxed);
            if self.window.contains(done) {
                self.calls += 1;
                let ns = u64::try_from(done.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
                self.hist.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
            }
        } else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if done >= self.window.start {
                self.errors += 1;
            }
        }
    }
}

/// An empty latency histogram (nanoseconds).
pub fn new_histogram() -> Histogram<u64> {
    // Bounds and precision are constants that `new_with_bounds` accepts
    // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// When a link (or connection) last made progress, shared by everything
/// working on it.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last_ns: AtomicU64,
}

impl Progress {
    /// Progress as of now.
    pub fn new() -> Progress {
        Progress {
            origin: Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    /// Notes progress at `now`.
    pub fn note(&self, now: Instant) {
        let ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.last_ns.store(ns, Ordering::Relaxed);
    }

    /// The last progress noted.
    pub fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Bounds waiting without a timer per call: one timer per link that is
/// re-armed only when it fires, from the time of the last progress.
pub struct Watchdog {
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Watchdog {
    /// A watchdog that fires `limit` after the last progress.
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }

    /// Resolves once `limit` has passed without `progress`.
    pub async fn expired(&mut self, progress: &Progress) {
        loop {
            self.sleep.as_mut().await;
            let due = progress.last() + self.limit;
            if Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::bounded;

    fn window(start_in_ms: u64, len_ms: u64) -> (Instant, Window) {
        let now = Instant::now();
        let start = now + Duration::from_millis(start_in_ms);
        (
            now,
            Window {
                start,
                end: start + Duration::from_millis(len_ms),
            },
        )
    }

    #[test]
    fn records_only_inside_the_window() {
        let counters = Arc::new(Counters::default());
        let (now, w) = window(100, 100);
        let ms = Duration::from_millis;
        let mut rec = Recorder::new(w, counters.clone());
        rec.record(now, now + ms(50), true); // warm-up
        rec.record(now, now + ms(50), false); // warm-up error
        rec.record(now + ms(90), now + ms(120), true); // counted
        rec.record(now + ms(150), now + ms(250), true); // after the end
        rec.record(now + ms(150), now + ms(250), false); // error after start
        assert_eq!((rec.calls, rec.errors), (1, 1));
        assert_eq!(rec.hist.len(), 1);
        let v = rec.hist.value_at_quantile(0.5);
        assert!(rec.hist.equivalent(v, 30_000_000), "{v}");
        assert_eq!(counters.calls.load(Ordering::Relaxed), 3);
        assert_eq!(counters.errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn huge_latencies_are_clamped() {
        let counters = Arc::new(Counters::default());
        let (now, w) = window(0, 200_000);
        let mut rec = Recorder::new(w, counters);
        rec.record(now, now + Duration::from_secs(100), true);
        rec.record(now, now, true);
        assert_eq!(rec.hist.len(), 2);
        assert!(rec.hist.max() >= MAX_LATENCY_NS);
        assert_eq!(rec.hist.min(), 1);
    }

    #[tokio::test]
    async fn watchdog_fires_after_the_last_progress() {
        bounded(async {
            let limit = Duration::from_millis(40);
            let start = Instant::now();
            let progress = Progress::new();
            let mut w = Watchdog::new(limit);
            tokio::time::sleep(Duration::from_millis(25)).await;
            progress.note(Instant::now());
            w.expired(&progress).await;
            assert!(
                start.elapsed() >= Duration::from_millis(65),
                "{:?}",
                start.elapsed()
            );
        })
        .await;
    }
}
