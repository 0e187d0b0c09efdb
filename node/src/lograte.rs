//! Rate limiting of repeated log lines: a flood of bad connections must not
//! become a flood of log lines (5,000 refused handshakes once wrote 1.17 MB
//! in 0.4 s). Per kind of line, at most [`LogRate::burst`] lines a window;
//! the rest are counted and reported in one line when the window ends.
//!
//! [`LogRate`] is pure and clock-free: the caller passes the time, and
//! schedules the report (see [`Hit::Suppressed`]). [`log_limited`] does both
//! on the current tokio runtime.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with one occurrence of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// Log it.
    Log,
    /// Do not log it; it is counted.
    Suppressed {
        /// The first line suppressed since the last report: the caller
        /// arranges for [`LogRate::take_suppressed`] to be called at
        /// `report_at` and logs the count it returns.
        first: bool,
        /// When the window ends.
        report_at: Instant,
    },
}

#[derive(Debug)]
struct Window {
    kind: &'static str,
    start: Instant,
    logged: u32,
    suppressed: u64,
    report_pending: bool,
}

/// At most `burst` lines of each kind per `window`.
#[derive(Debug)]
pub struct LogRate {
    burst: u32,
    window: Duration,
    // A handful of kinds: a list beats a map (and `Vec::new` is const).
    kinds: Mutex<Vec<Window>>,
}

impl LogRate {
    /// A limit of `burst` lines of each kind per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        LogRate {
            burst,
            window,
            kinds: Mutex::new(Vec::new()),
        }
    }

    /// The lines of one kind logged per window.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// One occurrence of a line of `kind` at `now`.
    pub fn hit(&self, kind: &'static str, now: Instant) -> Hit {
        let Ok(mut kinds) = self.kinds.lock() else {
            return Hit::Log;
        };
        let w = match kinds.iter().position(|w| w.kind == kind) {
            Some(i) => &mut kinds[i],
            None => {
                kinds.push(Window {
                    kind,
                    start: now,
                    logged: 0,
                    suppressed: 0,
                    report_pending: false,
                });
                kinds.last_mut().expect("just pushed")
            }
        };
        if now.saturating_duration_since(w.start) >= self.window {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < self.burst {
            w.logged += 1;
            return Hit::Log;
        }
        w.suppressed += 1;
        let first = !w.report_pending;
        w.report_pending = true;
        Hit::Suppressed {
            first,
            report_at: w.start + self.window,
        }
    }

    /// The lines of `kind` suppressed since the last report (`None` if
    /// none); the next suppressed line asks for a new report.
    pub fn take_suppressed(&self, kind: &'static str) -> Option<u64> {
        let mut kinds = self.kinds.lock().ok()?;
        let w = kinds.iter_mut().find(|w| w.kind == kind)?;
        w.report_pending = false;
        Some(std::mem::take(&mut w.suppressed)).filter(|n| *n > 0)
    }
}

/// Logs one occurrence of a line of `kind` with `log`, unless `rate`
/// suppresses it; the first one suppressed in a window schedules
/// `report(count)` for the window's end, on the current tokio runtime.
pub fn log_limited(
    rate: &'static LogRate,
    kind: &'static str,
    log: impl FnOnce(),
    report: impl FnOnce(u64) + Send + 'static,
) {
    match rate.hit(kind, Instant::now()) {
        Hit::Log => log(),
        Hit::Suppressed {
            first: true,
            report_at,
        } => {
            tokio::spawn(async move {
                tokio::time::sleep_until(report_at.into()).await;
                if let Some(n) = rate.take_suppressed(kind) {
                    report(n);
                }
            });
        }
        Hit::Suppressed { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_per_window_then_one_report_of_the_rest() {
        let rate = LogRate::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let mut logged = 0;
        let mut reports = Vec::new();
        // 5,000 in 0.4 s.
        for i in 0..5000u32 {
            match rate.hit("bad_vop", t0 + i * 80 * MS / 1000) {
                Hit::Log => logged += 1,
                Hit::Suppressed { first, report_at } => {
                    if first {
                        reports.push(report_at);
                    }
                }
            }
        }
        assert_eq!(logged, 3);
        assert_eq!(reports, [t0 + Duration::from_secs(1)], "one report");
        assert_eq!(rate.take_suppressed("bad_vop"), Some(4997));
        assert_eq!(rate.take_suppressed("bad_vop"), None, "taken");
        // The next window logs again.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(rate.hit("bad_vop", t1), Hit::Log);
    }

    #[test]
    fn kinds_are_limited_apart() {
        let rate = LogRate::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(rate.hit("tls", t0), Hit::Log);
        assert_eq!(rate.hit("timeout", t0), Hit::Log);
        assert!(matches!(
            rate.hit("tls", t0 + MS),
            Hit::Suppressed { first: true, .. }
        ));
        assert_eq!(rate.take_suppressed("timeout"), None);
        assert_eq!(rate.take_suppressed("tls"), Some(1));
    }

    #[test]
    fn a_report_is_asked_for_again_after_one_is_taken() {
        let rate = LogRate::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(rate.hit("k", t0), Hit::Log);
        assert_eq!(
            rate.hit("k", t0 + MS),
            Hit::Suppressed {
                first: true,
                report_at: t0 + Duration::from_secs(1)
            }
        );
        assert!(matches!(
            rate.hit("k", t0 + 2 * MS),
            Hit::Suppressed { first: false, .. }
        ));
        // The report is taken at the window's end; a flood that goes on
        // gets one line logged and one more report per window.
        assert_eq!(rate.take_suppressed("k"), Some(2));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(rate.hit("k", t1), Hit::Log);
        assert_eq!(
            rate.hit("k", t1 + MS),
            Hit::Suppressed {
                first: true,
                report_at: t1 + Duration::from_secs(1)
            }
        );
        assert_eq!(rate.take_suppressed("k"), Some(1));
        // Quiet for a while: the next line is logged.
        assert_eq!(rate.hit("k", t1 + Duration::from_secs(5)), Hit::Log);
    }
}
