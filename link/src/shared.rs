//! [`LinkShared`]: the state one link's driver, its [`Link`](crate::Link)
//! handles and its proxies share, and the signals that pass between them.
//!
//! Plain `std` synchronisation only (mutexes and wakers): the sans-IO core
//! holds this state through its proxies, and it does not depend on tokio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::calls::Calls;
use crate::cancel::CancelTable;
use crate::info::LinkInfo;

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// State shared by the driver, the [`Link`](crate::Link) handles and every
/// proxy of one link. `C` and `O` are what a call and its outcome are (see
/// [`Calls`]).
pub(crate) struct LinkShared<C, O> {
    pub(crate) id: u64,
    pub(crate) info: Arc<LinkInfo>,
    /// Calls made through the link's proxies, and their outcomes.
    pub(crate) calls: Calls<C, O>,
    /// Released proxies, a close at once, and whether the link has closed.
    pub(crate) signals: Signals,
    pub(crate) stats: LinkStats,
    /// The cancellation state of the peer's calls, as their handlers see it.
    pub(crate) cancels: Arc<CancelTable>,
}

impl<C, O> LinkShared<C, O> {
    /// The state of a new link with a new process-unique id, which is also
    /// written into `info`.
    pub(crate) fn new(mut info: LinkInfo) -> Self {
        let id = NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed);
        info.link_id = id;
        LinkShared {
            id,
            info: Arc::new(info),
            calls: Calls::default(),
            signals: Signals::default(),
            stats: LinkStats::default(),
            cancels: Arc::default(),
        }
    }
}

/// Counters of one link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Calls received from the peer.
    pub calls_in: AtomicU64,
    /// Calls received from the peer that have finished.
    pub completed_in: AtomicU64,
    /// Calls received from the peer that ended in an exception or error.
    pub errors_in: AtomicU64,
    /// Calls made to the peer.
    pub calls_out: AtomicU64,
    /// Calls received from the peer that were cancelled before they
    /// finished (by the caller, by `max-call-time`, or as the link closed);
    /// counted as completed too.
    pub cancelled_in: AtomicU64,
    /// The peer's calls refused (or, one-way, dropped) as overloaded: past
    /// `max_inflight` with `overload = "refuse"`. They were never run.
    pub refused_overload: AtomicU64,
    /// Bytes of the peer's calls the link holds now: its input buffer and
    /// the calls it runs (see [`crate::budget`]).
    pub buffered: AtomicU64,
}

impl LinkStats {
    /// Calls from the peer running now.
    pub fn inflight(&self) -> u64 {
        let done = self.completed_in.load(Ordering::Relaxed);
        self.calls_in.load(Ordering::Relaxed).saturating_sub(done)
    }
}

/// What proxies and handles tell the driver (a proxy was dropped; close at
/// once), and what the driver tells them (the link has closed, and why).
#[derive(Default)]
pub(crate) struct Signals {
    to_driver: Mutex<ToDriver>,
    closed: Mutex<Closing>,
}

#[derive(Default)]
struct ToDriver {
    /// Ids of the peer's objects whose last proxy was dropped.
    released: Vec<i64>,
    /// The application asked to close at once.
    abort: bool,
    /// The driver is gone: nothing more is kept for it.
    gone: bool,
    /// The driver's waker while it waits for signals.
    driver: Option<Waker>,
}

#[derive(Default)]
struct Closing {
    /// `Some(reason)` once the link has closed.
    reason: Option<Arc<str>>,
    /// Wakers of those waiting for the close, by key (`None`: free).
    waiters: Vec<Option<Waker>>,
    free: Vec<usize>,
}

/// A lock whose data stays consistent if a holder panicked (every update
/// under these locks is a single assignment or push).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Signals {
    /// A proxy for the peer's object `id` was dropped.
    pub(crate) fn release(&self, id: i64) {
        let driver = {
            let mut s = lock(&self.to_driver);
            if s.gone {
                return;
            }
            s.released.push(id);
            s.driver.take()
        };
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// Asks the driver to close the link at once.
    pub(crate) fn abort(&self) {
        let driver = {
            let mut s = lock(&self.to_driver);
            s.abort = true;
            s.driver.take()
        };
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// Driver: moves the released ids to `out` and returns whether a close
    /// at once was asked for. If there is neither, keeps the driver's waker
    /// to be woken by the next signal.
    pub(crate) fn poll_driver(&self, cx: &mut Context<'_>, out: &mut Vec<i64>) -> bool {
        let mut s = lock(&self.to_driver);
        if s.released.is_empty() && !s.abort {
            match &s.driver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.driver = Some(cx.waker().clone()),
            }
        } else {
            out.append(&mut s.released);
        }
        s.abort
    }

    /// The released ids, without a waker (for cores driven by hand: the
    /// tests and the fuzz harness).
    pub(crate) fn take_released(&self) -> Vec<i64> {
        std::mem::take(&mut lock(&self.to_driver).released)
    }

    /// Driver: the link has closed for `reason` (the first reason given
    /// stands). Wakes everyone waiting for the close; from now on released
    /// proxies are not kept.
    pub(crate) fn set_closed(&self, reason: Arc<str>) {
        {
            let mut s = lock(&self.to_driver);
            s.gone = true;
            s.released = Vec::new();
            s.driver = None;
        }
        let waiters = {
            let mut c = lock(&self.closed);
            if c.reason.is_some() {
                return;
            }
            c.reason = Some(reason);
            c.free.clear();
            std::mem::take(&mut c.waiters)
        };
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }

    /// Why the link closed, if it has.
    pub(crate) fn closed_reason(&self) -> Option<Arc<str>> {
        lock(&self.closed).reason.clone()
    }

    /// Why the link closed, or `Pending` with the waker kept under `key`
    /// (allocated on the first wait; see [`Signals::forget_waiter`]).
    pub(crate) fn poll_closed(
        &self,
        cx: &mut Context<'_>,
        key: &mut Option<usize>,
    ) -> Poll<Arc<str>> {
        let mut c = lock(&self.closed);
        if let Some(reason) = &c.reason {
            return Poll::Ready(reason.clone());
        }
        match *key {
            Some(k) => match c.waiters.get_mut(k) {
                Some(Some(w)) if w.will_wake(cx.waker()) => {}
                Some(slot) => *slot = Some(cx.waker().clone()),
                None => {}
            },
            None => {
                let w = Some(cx.waker().clone());
                let k = match c.free.pop() {
                    Some(k) => {
                        c.waiters[k] = w;
                        k
                    }
                    None => {
                        c.waiters.push(w);
                        c.waiters.len() - 1
                    }
                };
                *key = Some(k);
            }
        }
        Poll::Pending
    }

    /// A waiter for the close stopped waiting.
    pub(crate) fn forget_waiter(&self, key: usize) {
        let mut c = lock(&self.closed);
        if c.reason.is_some() {
            return;
        }
        if let Some(slot) = c.waiters.get_mut(key) {
            *slot = None;
            c.free.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn the_driver_is_woken_by_releases_and_aborts() {
        let s = Signals::default();
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(!s.poll_driver(&mut cx, &mut out));
        s.release(3);
        s.release(4);
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "woken once");
        assert!(!s.poll_driver(&mut cx, &mut out));
        assert_eq!(out, [3, 4]);
        assert!(!s.poll_driver(&mut cx, &mut out));
        s.abort();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(s.poll_driver(&mut cx, &mut out));
        // Once closed, releases are dropped, not kept for nobody.
        s.set_closed(Arc::from("done"));
        s.release(5);
        assert!(s.take_released().is_empty());
    }

    #[test]
    fn waiters_for_the_close_are_woken_and_forgotten() {
        let s = Signals::default();
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let (mut a, mut b) = (None, None);
        assert!(s.poll_closed(&mut cx, &mut a).is_pending());
        assert!(s.poll_closed(&mut cx, &mut b).is_pending());
        assert!(s.poll_closed(&mut cx, &mut a).is_pending());
        assert_eq!((a, b), (Some(0), Some(1)), "one key per waiter");
        s.forget_waiter(0);
        let mut c = None;
        assert!(s.poll_closed(&mut cx, &mut c).is_pending());
        assert_eq!(c, Some(0), "a forgotten key is reused");
        assert_eq!(s.closed_reason(), None);
        s.set_closed(Arc::from("first"));
        s.set_closed(Arc::from("second"));
        assert_eq!(count.0.load(Ordering::Relaxed), 2, "both live waiters");
        match s.poll_closed(&mut cx, &mut b) {
            Poll::Ready(r) => assert_eq!(&*r, "first"),
            Poll::Pending => panic!("closed"),
        }
        assert_eq!(s.closed_reason().as_deref(), Some("first"));
    }
}
