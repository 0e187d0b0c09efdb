//! The peer's calls this side runs: the set of call futures still running,
//! and the counters of one poll of the driver, added to the link's shared
//! counters once per poll (a few atomic additions per poll, not per call).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::metrics::CallMetrics;
use crate::model::{CallError, CallFuture, Value};
use crate::proto::CallKind;
use crate::shared::LinkStats;

struct Inflight {
    call_id: u64,
    kind: CallKind,
    started: Instant,
    future: CallFuture,
}

impl Future for Inflight {
    type Output = (u64, CallKind, Instant, Result<Value, CallError>);

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.future
            .as_mut()
            .poll(cx)
            .map(|r| (this.call_id, this.kind, this.started, r))
    }
}

/// Counters of one poll of the driver (see [`Served::flush`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) calls_out: u64,
    calls_in: u64,
    completed_in: u64,
    errors_in: u64,
    /// Calls answered in the pass that received them (latency zero).
    immediate: u64,
}

/// A call of the peer's that has finished: its id, kind, how long it ran
/// (zero if it finished as it started) and its result.
pub(super) type Finished = (u64, CallKind, Duration, Result<Value, CallError>);

/// The peer's calls running on the driver's task (see the module
/// documentation).
#[derive(Default)]
pub(super) struct Served {
    running: FuturesUnordered<Inflight>,
    /// Counted during this poll.
    pub(super) tally: Tally,
}

impl Served {
    /// Starts a call of the peer's at `now` (inlined: it is on every
    /// call's path, and its result is large). Most methods finish without
    /// waiting: those are returned at once, sparing the set of running
    /// calls (an allocation and a wake-up each). The others go to the set,
    /// which polls them again and so takes over their wake-ups.
    #[inline]
    pub(super) fn start(
        &mut self,
        cx: &mut Context<'_>,
        call_id: u64,
        kind: CallKind,
        future: CallFuture,
        now: Instant,
    ) -> Option<Finished> {
        self.tally.calls_in += 1;
        let mut call = Inflight {
            call_id,
            kind,
            started: now,
            future,
        };
        match Pin::new(&mut call).poll(cx) {
            Poll::Ready((call_id, kind, _, result)) => {
                Some((call_id, kind, Duration::ZERO, result))
            }
            Poll::Pending => {
                self.running.push(call);
                None
            }
        }
    }

    /// The next running call that has finished, if any.
    #[inline]
    pub(super) fn poll_finished(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<Finished> {
        match self.running.poll_next_unpin(cx) {
            Poll::Ready(Some((call_id, kind, started, result))) => Some((
                call_id,
                kind,
                now.saturating_duration_since(started),
                result,
            )),
            Poll::Ready(None) | Poll::Pending => None,
        }
    }

    /// Counts a finished call that ran for `elapsed` and whether it
    /// failed; records its latency in `metrics` unless it finished at once
    /// (those are counted, and recorded in bulk by [`Served::flush`]).
    #[inline]
    pub(super) fn count_finished(
        &mut self,
        elapsed: Duration,
        failed: bool,
        metrics: Option<&CallMetrics>,
    ) {
        if elapsed.is_zero() {
            self.tally.immediate += 1;
        } else if let Some(m) = metrics {
            m.record(elapsed);
        }
        self.tally.completed_in += 1;
        if failed {
            self.tally.errors_in += 1;
        }
    }

    /// How many calls are running.
    #[inline]
    pub(super) fn running(&self) -> usize {
        self.running.len()
    }

    /// Cancels every running call: drops its future (which is how a Rust
    /// future is cancelled; the handler's locals are dropped at its await
    /// point) and counts it as finished, so the link's in-flight count
    /// falls at once. Used when no answer can reach the peer any more (it
    /// closed its side, or the link failed or was aborted). Cancelled calls
    /// are not counted as failed: the service did not fail them.
    pub(super) fn cancel_all(&mut self) {
        let cancelled = self.running.len() as u64;
        if cancelled > 0 {
            self.running = FuturesUnordered::new();
            self.tally.completed_in += cancelled;
        }
    }

    /// Adds the calls counted during this poll to the shared counters.
    pub(super) fn flush(&mut self, stats: &LinkStats, metrics: Option<&CallMetrics>) {
        let t = std::mem::take(&mut self.tally);
        if t == Tally::default() {
            return;
        }
        stats.calls_out.fetch_add(t.calls_out, Ordering::Relaxed);
        // Calls in before calls completed, so a reader never sees more
        // completed than received.
        stats.calls_in.fetch_add(t.calls_in, Ordering::Relaxed);
        stats
            .completed_in
            .fetch_add(t.completed_in, Ordering::Relaxed);
        stats.errors_in.fetch_add(t.errors_in, Ordering::Relaxed);
        if let Some(m) = metrics {
            m.record_immediate(t.immediate);
        }
    }
}
