//! Budgets for buffered incoming messages: how many bytes of the peer's
//! calls a link (and all links of a process together) may hold before it
//! stops reading.
//!
//! A link holds the bytes of its input buffer (a message being received
//! stays there until it is whole) and the arguments of the calls it runs.
//! Two limits apply:
//!
//! * **per link** ([`LinkConfig::max_buffered`](crate::LinkConfig::max_buffered)):
//!   a link whose calls hold that much reads no more until they finish.
//!   A link running no call always reads, so one legal message (at most
//!   `max_message`) always fits.
//! * **per process** ([`Budget`], shared by the links of a node): a
//!   ceiling on what the links hold together. Below five eighths of it
//!   every link reads; up to three quarters, links under their fair share
//!   (the budget divided by the links holding more than [`FLOOR`]) read
//!   and the others pause; beyond, only links under [`FLOOR`] read. So a
//!   client that floods the node stalls itself, not a well-behaved client
//!   making small calls. To avoid a deadlock (every link holding half a
//!   message and no call running to free memory), one link at a time may
//!   then read on to finish the message it is receiving (the *finisher*).
//!
//! The policy is [`decide`], a pure function of what a link holds and what
//! the budget says; the driver only applies it. What the links hold then
//! stays under the budget as long as the finisher's message, [`FLOOR`]
//! and a read ([`READ_LIMIT`]) per link, and a message reserved by each
//! link that found room, fit in its last quarter (16 MiB messages and tens
//! of links under the default 256 MiB budget). The last quarter also
//! leaves room for what the process holds besides: a message being decoded
//! is briefly both in its buffer and in its arguments, and the allocator
//! and the runtime have their own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;

/// A link holding at most this much always reads (a well-behaved client's
/// small calls are never paused by others).
pub const FLOOR: usize = 256 * 1024;

/// The most a link reads at a time while a budget applies, so that the
/// total overshoots the budget by at most this much per link.
pub const READ_LIMIT: usize = 256 * 1024;

/// Below this much of `limit` every link reads.
fn open_level(limit: usize) -> usize {
    limit / 8 * 5
}

/// Below this much of `limit` links under their fair share read.
fn share_level(limit: usize) -> usize {
    limit / 4 * 3
}

/// The default per-process budget: 256 MiB.
pub const DEFAULT_NODE_BUDGET: usize = 256 << 20;

/// What the policy decides for one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Read on.
    Read,
    /// Read on as the finisher: only to complete the message being
    /// received.
    Finish,
    /// Stop reading until calls finish (or other links release memory).
    Pause,
}

/// What one link knows about itself, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkView {
    /// Bytes the link holds: its input buffer and its running calls.
    pub held: usize,
    /// Bytes of those held by calls that run.
    pub calls: usize,
    /// A message is partly received (it can complete only by reading).
    pub partial: bool,
    /// The per-link limit.
    pub link_limit: usize,
}

/// What the shared budget says, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetView {
    /// Bytes held by all links together.
    pub total: usize,
    /// The budget.
    pub limit: usize,
    /// Links holding more than [`FLOOR`].
    pub active: usize,
    /// No link is the finisher, or this one is.
    pub finisher_free: bool,
    /// Calls holding memory run on some link (they free it as they end).
    pub calls_running: bool,
}

/// The policy: whether a link may read.
///
/// Per link: a link whose held bytes reach `link_limit` pauses, unless it
/// runs no call (then what it holds is at most one message being received,
/// which must be able to complete). Per process (see the module
/// documentation): a link reads if it holds at most [`FLOOR`], or the
/// total is under five eighths of the budget, or under three quarters
/// and the link under its fair share; otherwise it reads only as the
/// finisher of a partly received message, and only while no call holding
/// memory runs on any link (calls free memory as they end; the finisher is
/// for when only reading can).
pub fn decide(link: LinkView, budget: Option<BudgetView>) -> Decision {
    if link.calls > 0 && link.held >= link.link_limit {
        return Decision::Pause;
    }
    let Some(b) = budget else {
        return Decision::Read;
    };
    if link.held <= FLOOR || b.total <= open_level(b.limit) {
        return Decision::Read;
    }
    let share = b.limit / b.active.max(1);
    if link.held <= share && b.total <= share_level(b.limit) {
        return Decision::Read;
    }
    if link.partial && link.calls == 0 && !b.calls_running && b.finisher_free {
        return Decision::Finish;
    }
    Decision::Pause
}

/// The shared budget of a process's links: an atomic sum of what each
/// holds, the count of links over [`FLOOR`], the finisher, and the links
/// waiting for room. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    total: AtomicUsize,
    /// The part of `total` held by running calls.
    calls: AtomicUsize,
    active: AtomicUsize,
    /// Link id of the finisher, 0 if none.
    finisher: AtomicU64,
    has_waiters: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
    /// Times a link paused reading on this budget.
    pauses: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Budget {
            limit,
            total: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            finisher: AtomicU64::new(0),
            has_waiters: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            pauses: AtomicU64::new(0),
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by all links now.
    pub fn used(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Times a link paused reading because the links together were over
    /// the budget.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// What the policy needs to know, for link `link_id`.
    pub(crate) fn view(&self, link_id: u64) -> BudgetView {
        let finisher = self.finisher.load(Ordering::Acquire);
        BudgetView {
            total: self.total.load(Ordering::Relaxed),
            limit: self.limit,
            active: self.active.load(Ordering::Relaxed),
            finisher_free: finisher == 0 || finisher == link_id,
            calls_running: self.calls.load(Ordering::Relaxed) > 0,
        }
    }

    /// Makes `link_id` the finisher; false if another link is.
    pub(crate) fn take_finisher(&self, link_id: u64) -> bool {
        match self
            .finisher
            .compare_exchange(0, link_id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(current) => current == link_id,
        }
    }

    /// `link_id` is no longer the finisher (if it was).
    pub(crate) fn release_finisher(&self, link_id: u64) {
        if self
            .finisher
            .compare_exchange(link_id, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.wake_waiters();
        }
    }

    /// A link's charge changes from `old` to `new` bytes, of which its
    /// calls hold `old_calls`, then `new_calls`.
    pub(crate) fn recharge(
        &self,
        (old, old_calls): (usize, usize),
        (new, new_calls): (usize, usize),
    ) {
        if new_calls > old_calls {
            self.calls
                .fetch_add(new_calls - old_calls, Ordering::Relaxed);
        } else if old_calls > new_calls {
            self.calls
                .fetch_sub(old_calls - new_calls, Ordering::Relaxed);
        }
        if new > old {
            self.total.fetch_add(new - old, Ordering::Relaxed);
        } else if old > new {
            self.total.fetch_sub(old - new, Ordering::Relaxed);
        }
        match (old > FLOOR, new > FLOOR) {
            (false, true) => {
                self.active.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if new < old {
            self.wake_waiters();
        }
    }

    /// Registers a paused link's waker, to be woken when memory is
    /// released.
    pub(crate) fn wait(&self, waker: &Waker) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.waiters.lock() {
            if !w.iter().any(|x| x.will_wake(waker)) {
                w.push(waker.clone());
            }
            self.has_waiters.store(true, Ordering::Release);
        }
    }

    fn wake_waiters(&self) {
        if !self.has_waiters.load(Ordering::Acquire) {
            return;
        }
        let waiters = match self.waiters.lock() {
            Ok(mut w) => {
                self.has_waiters.store(false, Ordering::Release);
                std::mem::take(&mut *w)
            }
            Err(_) => return,
        };
        for w in waiters {
            w.wake();
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_NODE_BUDGET)
    }
}

/// One link's charge against an optional shared budget: what it last
/// reported, released when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Option<std::sync::Arc<Budget>>,
    link_id: u64,
    /// What it holds, and the part its calls hold.
    charged: (usize, usize),
    finisher: bool,
}

impl Charge {
    pub(crate) fn new(budget: Option<std::sync::Arc<Budget>>, link_id: u64) -> Self {
        Charge {
            budget,
            link_id,
            charged: (0, 0),
            finisher: false,
        }
    }

    /// Reports that the link holds `held` bytes now, `calls` of them in
    /// running calls.
    pub(crate) fn set(&mut self, held: usize, calls: usize) {
        let now = (held, calls);
        if now == self.charged {
            return;
        }
        if let Some(b) = &self.budget {
            b.recharge(self.charged, now);
        }
        self.charged = now;
    }

    /// Applies the policy to `link`; registers `waker` if the link must
    /// pause on the shared budget. Returns whether the link may read.
    pub(crate) fn may_read(&mut self, link: LinkView, waker: &Waker) -> bool {
        let view = self.budget.as_ref().map(|b| b.view(self.link_id));
        let decision = decide(link, view);
        if self.finisher && (decision != Decision::Finish || !link.partial) {
            self.drop_finisher();
        }
        match (decision, &self.budget) {
            (Decision::Read, _) => true,
            (Decision::Finish, Some(b)) => {
                if b.take_finisher(self.link_id) {
                    self.finisher = true;
                    true
                } else {
                    b.wait(waker);
                    false
                }
            }
            (Decision::Finish, None) => true,
            (Decision::Pause, Some(b)) => {
                // Over the per-link limit only: its own calls finishing
                // wake it. Over the shared budget: others releasing do.
                if link.calls == 0 || link.held < link.link_limit {
                    b.wait(waker);
                }
                false
            }
            (Decision::Pause, None) => false,
        }
    }

    /// The message being received was taken whole: a finisher has
    /// finished (and lets another link have its turn).
    pub(crate) fn message_done(&mut self) {
        if self.finisher {
            self.drop_finisher();
        }
    }

    fn drop_finisher(&mut self) {
        if let Some(b) = &self.budget {
            b.release_finisher(self.link_id);
        }
        self.finisher = false;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0, 0);
        if self.finisher {
            self.drop_finisher();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn link(held: usize, calls: usize, partial: bool) -> LinkView {
        LinkView {
            held,
            calls,
            partial,
            link_limit: 64 * MB,
        }
    }

    fn budget(total: usize, active: usize) -> BudgetView {
        BudgetView {
            total,
            limit: 256 * MB,
            active,
            finisher_free: true,
            calls_running: false,
        }
    }

    #[test]
    fn without_a_shared_budget_only_the_link_limit_applies() {
        assert_eq!(decide(link(10 * MB, 5 * MB, false), None), Decision::Read);
        assert_eq!(decide(link(64 * MB, 60 * MB, false), None), Decision::Pause);
        // No call runs: what it holds is one message being received,
        // which must be able to complete.
        assert_eq!(decide(link(64 * MB, 0, true), None), Decision::Read);
    }

    #[test]
    fn under_the_budget_every_link_reads() {
        assert_eq!(
            decide(link(40 * MB, 30 * MB, true), Some(budget(150 * MB, 5))),
            Decision::Read
        );
    }

    #[test]
    fn over_the_budget_only_links_over_their_share_pause() {
        // 20 links over the floor: a share is 12.8 MiB.
        let over = budget(300 * MB, 20);
        assert_eq!(
            decide(link(15 * MB, 15 * MB, false), Some(over)),
            Decision::Pause
        );
        assert_eq!(
            decide(link(12 * MB, 0, true), Some(budget(180 * MB, 20))),
            Decision::Read,
            "under its share, below three quarters"
        );
        assert_eq!(
            decide(link(15 * MB, 0, true), Some(budget(180 * MB, 20))),
            Decision::Finish,
            "over its share"
        );
        assert_eq!(
            decide(link(12 * MB, 12 * MB, true), Some(over)),
            Decision::Pause,
            "under its share, but past three quarters"
        );
        assert_eq!(
            decide(link(64 * 1024, 0, false), Some(over)),
            Decision::Read,
            "a small link is never paused by others"
        );
        assert_eq!(
            decide(link(FLOOR, 0, true), Some(budget(300 * MB, 1000))),
            Decision::Read,
            "under the floor, however small the share"
        );
    }

    #[test]
    fn one_link_over_its_share_may_finish_its_message() {
        let mut over = budget(300 * MB, 20);
        assert_eq!(decide(link(14 * MB, 0, true), Some(over)), Decision::Finish);
        over.finisher_free = false;
        assert_eq!(decide(link(14 * MB, 0, true), Some(over)), Decision::Pause);
        // Calls running elsewhere free memory as they end: no finisher.
        over.finisher_free = true;
        over.calls_running = true;
        assert_eq!(decide(link(14 * MB, 0, true), Some(over)), Decision::Pause);
        // A link with no partial message has nothing to finish.
        assert_eq!(
            decide(link(14 * MB, 14 * MB, false), Some(budget(300 * MB, 20))),
            Decision::Pause
        );
    }

    #[test]
    fn the_budget_sums_charges_and_counts_active_links() {
        let b = std::sync::Arc::new(Budget::new(256 * MB));
        let mut one = Charge::new(Some(b.clone()), 1);
        let mut two = Charge::new(Some(b.clone()), 2);
        one.set(10 * MB, 0);
        two.set(100, 0);
        assert_eq!(b.used(), 10 * MB + 100);
        assert_eq!(b.view(1).active, 1);
        two.set(2 * MB, 0);
        assert_eq!(b.view(1).active, 2);
        one.set(FLOOR, 0);
        assert_eq!(b.view(1).active, 1);
        drop(one);
        drop(two);
        assert_eq!(b.used(), 0);
        assert_eq!(b.view(1).active, 0);
    }

    #[test]
    fn the_finisher_is_one_link_at_a_time_and_a_release_wakes_waiters() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());

        let b = Arc::new(Budget::new(10 * MB));
        let mut others = Charge::new(Some(b.clone()), 9);
        others.set(20 * MB, 0); // over the budget
        let mut one = Charge::new(Some(b.clone()), 1);
        let mut two = Charge::new(Some(b.clone()), 2);
        one.set(8 * MB, 0);
        two.set(8 * MB, 0);
        let partial = |held| LinkView {
            held,
            calls: 0,
            partial: true,
            link_limit: 64 * MB,
        };
        assert!(one.may_read(partial(8 * MB), &waker), "one finishes");
        assert!(!two.may_read(partial(8 * MB), &waker), "two waits");
        assert_eq!(b.pauses(), 1);
        // One's message completes: it is no longer the finisher, and the
        // waiting link is woken.
        let done = LinkView {
            partial: false,
            calls: 8 * MB,
            ..partial(8 * MB)
        };
        assert!(!one.may_read(done, &waker));
        assert!(woken.0.load(Ordering::SeqCst) >= 1);
        assert!(two.may_read(partial(8 * MB), &waker), "two's turn");
        // Releasing memory wakes waiters too.
        let before = woken.0.load(Ordering::SeqCst);
        assert!(!one.may_read(done, &waker));
        others.set(0, 0);
        assert!(woken.0.load(Ordering::SeqCst) > before);
    }
}
