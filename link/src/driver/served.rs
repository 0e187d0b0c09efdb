//! The peer's calls this side runs: the set of call futures still running,
//! and the counters of one poll of the driver, added to the link's shared
//! counters once per poll (a few atomic additions per poll, not per call).
//!
//! A call that finishes in its first poll never enters the set and costs
//! nothing more. One that goes on running gets an abort handle, kept by
//! its call id, so that it can be cancelled alone (the peer's cancel
//! message, `max-call-time`); with a `max-call-time` its deadline is
//! queued too (in start order, which is deadline order, as every call gets
//! the same time).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::cancel::CancelTable;
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
    /// Calls cancelled.
    cancelled_in: u64,
}

/// A call of the peer's that has finished: its id, kind, how long it ran
/// (zero if it finished as it started) and its result.
pub(super) type Finished = (u64, CallKind, Duration, Result<Value, CallError>);

/// The peer's calls running on the driver's task (see the module
/// documentation).
#[derive(Default)]
pub(super) struct Served {
    running: FuturesUnordered<Abortable<Inflight>>,
    /// The calls in `running` not cancelled, by id (the peer's ids: a
    /// keyed hasher).
    handles: HashMap<u64, Running>,
    /// With a `max-call-time`: when each running call is due to be
    /// cancelled, in start order (stale entries are skipped).
    deadlines: VecDeque<(Instant, u64)>,
    /// Counted during this poll.
    pub(super) tally: Tally,
}

/// A call in the set of running calls.
struct Running {
    abort: AbortHandle,
    kind: CallKind,
    started: Instant,
}

/// A running call that was cancelled: its id, kind and how long it ran.
pub(super) type Cancelled = (u64, CallKind, Duration);

impl Served {
    /// Starts a call of the peer's at `now` (inlined: it is on every
    /// call's path, and its result is large). Most methods finish without
    /// waiting: those are returned at once, sparing the set of running
    /// calls (an allocation and a wake-up each). The others go to the set,
    /// which polls them again and so takes over their wake-ups.
    ///
    /// `cancels` learns of the call's first poll and of it going on
    /// running (see [`CancelTable`]); `max_call_time` bounds how long it
    /// may run.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        &mut self,
        cx: &mut Context<'_>,
        call_id: u64,
        kind: CallKind,
        future: CallFuture,
        now: Instant,
        cancels: &CancelTable,
        max_call_time: Option<Duration>,
    ) -> Option<Finished> {
        self.tally.calls_in += 1;
        let mut call = Inflight {
            call_id,
            kind,
            started: now,
            future,
        };
        cancels.begin(call_id);
        match Pin::new(&mut call).poll(cx) {
            Poll::Ready((call_id, kind, _, result)) => {
                cancels.end(call_id);
                Some((call_id, kind, Duration::ZERO, result))
            }
            Poll::Pending => {
                cancels.running(call_id);
                let (abort, registration) = AbortHandle::new_pair();
                self.running.push(Abortable::new(call, registration));
                self.handles.insert(
                    call_id,
                    Running {
                        abort,
                        kind,
                        started: now,
                    },
                );
                if let Some(limit) = max_call_time {
                    self.deadlines.push_back((now + limit, call_id));
                }
                None
            }
        }
    }

    /// The next running call that has finished, if any.
    #[inline]
    pub(super) fn poll_finished(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        cancels: &CancelTable,
    ) -> Option<Finished> {
        loop {
            return match self.running.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok((call_id, kind, started, result)))) => {
                    self.handles.remove(&call_id);
                    cancels.end(call_id);
                    Some((
                        call_id,
                        kind,
                        now.saturating_duration_since(started),
                        result,
                    ))
                }
                // A cancelled call, answered when it was cancelled: its
                // future is dropped now.
                Poll::Ready(Some(Err(Aborted))) => continue,
                Poll::Ready(None) | Poll::Pending => None,
            };
        }
    }

    /// Cancels the running call `call_id`: its future is dropped at the
    /// next [`Served::poll_finished`] (the driver's next pass), its token
    /// fires, and it counts as finished at once. Returns the call, for the
    /// driver to answer; `None` if it is not running (it finished, or never
    /// was).
    pub(super) fn cancel(
        &mut self,
        call_id: u64,
        now: Instant,
        cancels: &CancelTable,
    ) -> Option<Cancelled> {
        let running = self.handles.remove(&call_id)?;
        running.abort.abort();
        cancels.end(call_id);
        self.tally.completed_in += 1;
        self.tally.cancelled_in += 1;
        Some((
            call_id,
            running.kind,
            now.saturating_duration_since(running.started),
        ))
    }

    /// The next running call past its `max-call-time` at `now`, if any
    /// (not yet cancelled: see [`Served::cancel`]).
    pub(super) fn overdue(&mut self, now: Instant) -> Option<u64> {
        while let Some(&(deadline, call_id)) = self.deadlines.front() {
            if !self.handles.contains_key(&call_id) {
                self.deadlines.pop_front();
                continue;
            }
            if deadline > now {
                return None;
            }
            self.deadlines.pop_front();
            return Some(call_id);
        }
        None
    }

    /// When the next running call is due to be cancelled for its
    /// `max-call-time` (possibly a call that has finished since: then
    /// [`Served::overdue`] finds nothing, and drops it).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(t, _)| *t)
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

    /// How many calls are running (not counting those cancelled whose
    /// future is still to be dropped).
    #[inline]
    pub(super) fn running(&self) -> usize {
        self.handles.len()
    }

    /// Cancels every running call: drops its future (which is how a Rust
    /// future is cancelled; the handler's locals are dropped at its await
    /// point) and counts it as finished, so the link's in-flight count
    /// falls at once. Used when no answer can reach the peer any more (it
    /// closed its side, or the link failed or was aborted). Cancelled calls
    /// are not counted as failed: the service did not fail them.
    pub(super) fn cancel_all(&mut self, cancels: &CancelTable) {
        let cancelled = self.handles.len() as u64;
        if !self.running.is_empty() {
            self.running = FuturesUnordered::new();
            self.handles = HashMap::new();
            self.deadlines.clear();
            self.tally.completed_in += cancelled;
            self.tally.cancelled_in += cancelled;
        }
        cancels.close();
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
        stats
            .cancelled_in
            .fetch_add(t.cancelled_in, Ordering::Relaxed);
        if let Some(m) = metrics {
            m.record_immediate(t.immediate);
            m.record_cancelled(t.cancelled_in);
        }
    }
}
