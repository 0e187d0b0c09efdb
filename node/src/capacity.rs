//! How many connections a node can hold within its descriptor limit, and
//! the gate its accept and receive loops wait at.
//!
//! A node that runs out of descriptors loses connections: an `accept` at
//! `EMFILE` leaves the connection queued (harmless), but a `recvmsg` of a
//! `dispatch` frame at a full table makes the kernel install only the
//! descriptors that fit and close the rest (`MSG_CTRUNC`), so connections
//! the controller already gave away are lost. So a node keeps a reserve:
//! it counts its open connections, takes new ones only while they leave
//! [`FD_RESERVE`] descriptors free (enough for the largest `dispatch`
//! frame, [`MAX_FDS`], plus [`FD_MARGIN`] for whatever else the process
//! opens meanwhile), and tells the controller how many it can hold
//! ([`FdBudget::capacity`]), which then grants or dispatches no more than
//! that ([`vole_control::control`]'s `capacity`).
//!
//! The budget is sampled again every [`RESAMPLE_EVERY`]
//! ([`Capacity::resample`]): a limit changed at run time or descriptors
//! the hosted service keeps open change the capacity, which the node tells
//! the controller again.
//!
//! Should the table fill all the same (the hosted service opened files, the
//! limit was lowered at run time), every accept and receive error backs
//! off for [`BACKOFF`] and retries, logging at most once a second
//! ([`Capacity::backoff`]); the node reports itself full meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vole_control::fdpass::MAX_FDS;

use crate::lograte::LogRate;

/// Descriptors kept free besides a whole `dispatch` frame.
pub const FD_MARGIN: u64 = 16;

/// Descriptors a node keeps free while it takes connections: a whole
/// `dispatch` frame always fits.
pub const FD_RESERVE: u64 = MAX_FDS as u64 + FD_MARGIN;

/// How long an accept or receive loop pauses after an error that is not
/// about one connection (no descriptors, no buffers, no memory).
pub const BACKOFF: Duration = Duration::from_millis(100);

/// How far the baseline may seem to move before a new sample counts (see
/// [`FdBudget::resampled`]): well inside [`FD_MARGIN`].
pub const BASELINE_SLACK: u64 = 4;

/// How often a node samples its limit and open descriptors again (see
/// [`Capacity::resample`]).
pub const RESAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long a node counts as full after it ran out of descriptors.
pub const EXHAUSTED_FOR: Duration = Duration::from_secs(1);

/// A node's descriptor budget: its limit and what it uses besides
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE`; `None` if unlimited or unknown.
    pub limit: Option<u64>,
    /// Descriptors open before the first connection (control sockets,
    /// listeners, the runtime's, the hosted service's).
    pub baseline: u64,
}

impl FdBudget {
    /// The budget of this process now: its limit, and what is open now as
    /// the baseline.
    pub fn measure() -> FdBudget {
        FdBudget {
            limit: nofile_limit(),
            baseline: open_fds().unwrap_or(0),
        }
    }

    /// The budget as sampled again: `limit` now, and `open_fds` now of
    /// which `connections` are connections. `None` if it did not change
    /// enough to matter: the limit is the same and the baseline moved by
    /// less than [`BASELINE_SLACK`] (connections opening and closing while
    /// the descriptors are counted make it jitter by a few).
    pub fn resampled(&self, limit: Option<u64>, open_fds: u64, connections: u64) -> Option<Self> {
        let baseline = open_fds.saturating_sub(connections);
        let moved = baseline.abs_diff(self.baseline) >= BASELINE_SLACK;
        (limit != self.limit || moved).then_some(FdBudget { limit, baseline })
    }

    /// Connections the node can hold with [`FD_RESERVE`] descriptors to
    /// spare; `None` without a limit.
    pub fn capacity(&self) -> Option<u64> {
        self.limit
            .map(|l| l.saturating_sub(self.baseline.saturating_add(FD_RESERVE)))
    }

    /// Whether a node with `open` connections may take more (one accept,
    /// or one `dispatch` frame: the reserve covers a whole frame).
    pub fn has_room(&self, open: u64) -> bool {
        self.capacity().is_none_or(|c| open < c)
    }
}

/// This process's soft `RLIMIT_NOFILE`, `None` if unlimited or unknown.
pub fn nofile_limit() -> Option<u64> {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// Descriptors open in this process (`/proc/self/fd`, less the one that
/// reads it).
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Whether `e` says the process (or system) is out of descriptors, buffers
/// or memory, rather than anything about one connection.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accept and receive errors: one line per kind a second; the rest are
/// counted and the count logged when the second ends.
static ERROR_LOG: LogRate = LogRate::new(1, Duration::from_secs(1));

/// Logs an accept or receive error of kind `what`, rate-limited.
pub(crate) fn log_error(what: &'static str, e: &std::io::Error) {
    crate::lograte::log_limited(
        &ERROR_LOG,
        what,
        || tracing::error!(error = %e, "{what} failed; pausing {} ms and retrying", BACKOFF.as_millis()),
        move |n| {
            tracing::error!(
                suppressed = n,
                "{what} failed {n} more times in the last second"
            )
        },
    );
}

/// A node's open connections against its budget: the gate its accept and
/// receive loops wait at. It is told of the service's connections
/// ([`Capacity::opened`], [`Capacity::closed`]).
#[derive(Debug)]
pub struct Capacity {
    /// The limit (`u64::MAX`: none) and baseline of the budget: atomics,
    /// read on every accept; written once a second at most.
    limit: AtomicU64,
    baseline: AtomicU64,
    open: AtomicU64,
    room: Notify,
    exhausted_at: Mutex<Option<Instant>>,
}

impl Capacity {
    /// A gate for `budget`, with no connection open.
    pub fn new(budget: FdBudget) -> Self {
        Capacity {
            limit: AtomicU64::new(budget.limit.unwrap_or(u64::MAX)),
            baseline: AtomicU64::new(budget.baseline),
            open: AtomicU64::new(0),
            room: Notify::new(),
            exhausted_at: Mutex::new(None),
        }
    }

    /// The budget.
    pub fn budget(&self) -> FdBudget {
        let limit = self.limit.load(Ordering::SeqCst);
        FdBudget {
            limit: (limit != u64::MAX).then_some(limit),
            baseline: self.baseline.load(Ordering::SeqCst),
        }
    }

    /// Samples the limit and the descriptors open again, so that a limit
    /// changed at run time (`prlimit`) or descriptors the hosted service
    /// keeps open are taken into account; returns the new budget if it
    /// changed (the controller must be told its capacity again).
    pub fn resample(&self) -> Option<FdBudget> {
        let fds = open_fds()?;
        let new = self.budget().resampled(nofile_limit(), fds, self.open())?;
        // (Read apart from the limit for a moment: either order errs by
        // one sample, which the next check corrects.)
        self.baseline.store(new.baseline, Ordering::SeqCst);
        self.limit
            .store(new.limit.unwrap_or(u64::MAX), Ordering::SeqCst);
        // The capacity may have grown.
        self.room.notify_waiters();
        Some(new)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Whether the node is not taking connections: at its capacity, or ran
    /// out of descriptors within [`EXHAUSTED_FOR`].
    pub fn is_full(&self) -> bool {
        let exhausted = self
            .exhausted_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < EXHAUSTED_FOR);
        exhausted || !self.budget().has_room(self.open())
    }

    /// Waits until the node may take connections.
    pub async fn wait_room(&self) {
        // The usual case, without registering a waiter.
        if self.budget().has_room(self.open()) {
            return;
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check: a close after it wakes us.
            notified.as_mut().enable();
            if self.budget().has_room(self.open()) {
                return;
            }
            notified.await;
        }
    }

    /// An accept or receive of kind `what` failed with `e`: logs it
    /// (rate-limited), marks the node full if it ran out of descriptors,
    /// and pauses [`BACKOFF`].
    pub async fn backoff(&self, what: &'static str, e: &std::io::Error) {
        if is_exhaustion(e) {
            self.exhausted();
        }
        log_error(what, e);
        tokio::time::sleep(BACKOFF).await;
    }

    /// A connection was accepted (the service's observer tells).
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    /// A connection ended: room for another.
    pub fn closed(&self) {
        // Never below zero, whatever the order of events.
        let _ = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.room.notify_waiters();
    }

    /// The node ran out of descriptors now.
    pub fn exhausted(&self) {
        if let Ok(mut at) = self.exhausted_at.lock() {
            *at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_the_reserve_free() {
        let b = FdBudget {
            limit: Some(128),
            baseline: 20,
        };
        assert_eq!(b.capacity(), Some(128 - 20 - FD_RESERVE));
        let cap = b.capacity().unwrap_or(0);
        assert!(b.has_room(cap - 1));
        assert!(!b.has_room(cap));
        // At capacity less one, a whole frame still fits in the table.
        assert!(b.baseline + (cap - 1) + MAX_FDS as u64 + FD_MARGIN <= 128);
        // A limit below what the node needs anyway: no room at all.
        let tiny = FdBudget {
            limit: Some(30),
            baseline: 20,
        };
        assert_eq!(tiny.capacity(), Some(0));
        assert!(!tiny.has_room(0));
        let unlimited = FdBudget {
            limit: None,
            baseline: 20,
        };
        assert_eq!(unlimited.capacity(), None);
        assert!(unlimited.has_room(u64::MAX - 1));
    }

    #[test]
    fn a_new_sample_counts_when_the_limit_changes_or_the_baseline_moves() {
        let b = FdBudget {
            limit: Some(128),
            baseline: 20,
        };
        assert_eq!(b.resampled(Some(128), 20 + 50, 50), None, "the same");
        assert_eq!(
            b.resampled(Some(128), 20 + BASELINE_SLACK - 1 + 50, 50),
            None,
            "jitter"
        );
        let grown = b.resampled(Some(128), 20 + BASELINE_SLACK + 50, 50);
        assert_eq!(
            grown.and_then(|g| g.capacity()),
            Some(128 - 20 - BASELINE_SLACK - FD_RESERVE),
            "the service keeps descriptors open: less room"
        );
        let lowered = b.resampled(Some(100), 70, 50).expect("a new limit");
        assert_eq!(lowered.capacity(), Some(100 - 20 - FD_RESERVE));
        assert_eq!(b.resampled(None, 70, 50).map(|n| n.capacity()), Some(None));
        // More connections counted than descriptors open: baseline 0.
        assert_eq!(b.resampled(Some(128), 10, 50).map(|n| n.baseline), Some(0));
    }

    #[test]
    fn this_process_is_measured() {
        let b = FdBudget::measure();
        assert!(b.baseline >= 3, "stdio at least: {b:?}");
        assert!(b.limit.is_none_or(|l| l > b.baseline), "{b:?}");
    }

    #[test]
    fn exhaustion_errors_are_told_from_others() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_exhaustion(&std::io::Error::from_raw_os_error(errno)));
        }
        assert!(!is_exhaustion(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!is_exhaustion(&std::io::Error::other("x")));
    }

    /// The gate closes at capacity and opens when a connection closes;
    /// running out of descriptors counts as full for a while.
    #[tokio::test(start_paused = true)]
    async fn the_gate_waits_for_room() {
        let cap = std::sync::Arc::new(Capacity::new(FdBudget {
            limit: Some(FD_RESERVE + 2),
            baseline: 0,
        }));
        cap.wait_room().await;
        cap.opened();
        cap.opened();
        assert!(cap.is_full());
        let waiter = {
            let cap = cap.clone();
            tokio::spawn(async move { cap.wait_room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no room: it waits");
        cap.closed();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("a close makes room")
            .expect("task");
        assert!(!cap.is_full());
        cap.closed();
        cap.closed();
        assert_eq!(cap.open(), 0, "never below zero");
        let start = tokio::time::Instant::now();
        cap.backoff("accept", &std::io::Error::from_raw_os_error(libc::EMFILE))
            .await;
        assert_eq!(start.elapsed(), BACKOFF);
        assert!(cap.is_full(), "out of descriptors: full for a while");
    }
}
