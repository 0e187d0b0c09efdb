//! When an idle link gives back its read and write buffers: a sans-IO
//! policy (the driver says what it sees, with the time; this says when).
//!
//! The buffers are the largest part of an idle link's memory. A link gives
//! them back once it has waited for its peer [`IDLE_RELEASE`] with no call
//! in flight either way, and allocates them again for the next read or
//! message. Not at once: a busy link would free and allocate them at every
//! wake-up. The deadline to look again stays put until it passes, so a busy
//! link does not move its timer at every wake-up but looks once a period.

use std::time::Duration;

use tokio::time::Instant;

/// How long a link waits for its peer, quiet, before it gives back its
/// buffers.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// What a driver tells [`IdleRelease::check`] at the end of a poll.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// Waiting for the peer, with no call in flight either way.
    pub(super) quiet: bool,
    /// Holding a read or write buffer.
    pub(super) holds_buffers: bool,
    /// When the peer last called this side.
    pub(super) last_call_in: Instant,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing to do, no timer needed.
    Nothing,
    /// Look again at this time (a timer).
    LookAt(Instant),
    /// Give the buffers back now.
    Release,
}

/// The policy's state.
#[derive(Debug)]
pub(super) struct IdleRelease {
    /// When the link last had a call in flight (or was not waiting).
    quiet_since: Instant,
    /// When to look again.
    due: Option<Instant>,
}

impl IdleRelease {
    pub(super) fn new(now: Instant) -> Self {
        IdleRelease {
            quiet_since: now,
            due: None,
        }
    }

    /// At the end of a poll at `now`, having seen `seen`.
    pub(super) fn check(&mut self, now: Instant, seen: Seen) -> Verdict {
        if !seen.quiet {
            self.quiet_since = now;
        }
        if !seen.holds_buffers {
            self.due = None;
            return Verdict::Nothing;
        }
        if let Some(due) = self.due.filter(|due| *due > now) {
            return Verdict::LookAt(due);
        }
        let due = seen.last_call_in.max(self.quiet_since) + IDLE_RELEASE;
        if seen.quiet && now >= due {
            self.due = None;
            return Verdict::Release;
        }
        self.due = Some(due);
        Verdict::LookAt(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(quiet: bool, holds_buffers: bool, last_call_in: Instant) -> Seen {
        Seen {
            quiet,
            holds_buffers,
            last_call_in,
        }
    }

    #[test]
    fn a_quiet_link_releases_after_the_period() {
        let t0 = Instant::now();
        let mut p = IdleRelease::new(t0);
        let ms = Duration::from_millis;
        assert_eq!(
            p.check(t0 + ms(10), seen(true, true, t0)),
            Verdict::LookAt(t0 + IDLE_RELEASE)
        );
        // Too early: the same deadline.
        assert_eq!(
            p.check(t0 + ms(500), seen(true, true, t0)),
            Verdict::LookAt(t0 + IDLE_RELEASE)
        );
        assert_eq!(
            p.check(t0 + IDLE_RELEASE, seen(true, true, t0)),
            Verdict::Release
        );
        // Released: no timer.
        assert_eq!(
            p.check(t0 + IDLE_RELEASE + ms(1), seen(true, false, t0)),
            Verdict::Nothing
        );
    }

    #[test]
    fn a_busy_link_keeps_its_buffers_and_its_deadline() {
        let t0 = Instant::now();
        let mut p = IdleRelease::new(t0);
        let ms = Duration::from_millis;
        let first = p.check(t0, seen(false, true, t0));
        assert_eq!(first, Verdict::LookAt(t0 + IDLE_RELEASE));
        // Busy polls do not move the deadline.
        for i in 1..10 {
            assert_eq!(p.check(t0 + ms(i * 90), seen(false, true, t0)), first);
        }
        // At the deadline, busy a moment ago: a new deadline, no release.
        let at = t0 + IDLE_RELEASE;
        assert_eq!(
            p.check(at, seen(false, true, t0)),
            Verdict::LookAt(at + IDLE_RELEASE)
        );
        // A call in from the peer counts as activity too.
        let mut p = IdleRelease::new(t0);
        let call = t0 + ms(900);
        assert_eq!(
            p.check(t0 + IDLE_RELEASE, seen(true, true, call)),
            Verdict::LookAt(call + IDLE_RELEASE)
        );
        assert_eq!(
            p.check(call + IDLE_RELEASE, seen(true, true, call)),
            Verdict::Release
        );
    }
}
