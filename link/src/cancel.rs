//! [`CancelTable`]: the cancellation tokens of the peer's calls, as their
//! handlers see them through [`CallContext`](crate::CallContext).
//!
//! A call is cancelled by dropping its handler's future (the driver does
//! that on `vole.cancel`, on `max-call-time` and when the link closes).
//! Work a handler hands elsewhere (a spawned task, a blocking thread) is
//! not dropped with it: it holds a clone of the call's context and asks
//! whether the call is still wanted. This table answers.
//!
//! Most calls finish in their first poll and never ask, so nothing is
//! allocated or locked for them: a token exists only once someone asks
//! for it, and the driver registers a call here only when it goes on
//! running after its first poll (it allocates then anyway). A call asked
//! about that is neither in its first poll nor registered has ended. Every
//! token fires when its call ends, however it ends (as a gRPC context is
//! done once its call is).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// No call is in its first poll.
const NONE: u64 = u64::MAX;

/// The cancellation state of one link's served calls (see the module
/// documentation).
#[derive(Debug)]
pub(crate) struct CancelTable {
    inner: Mutex<Inner>,
    /// Entries of `inner.calls`, plus those about to be inserted: read
    /// without the lock as each call ends.
    entries: AtomicUsize,
    /// The call whose first poll runs now, or [`NONE`].
    first_poll: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Calls running beyond their first poll or asked about, with their
    /// token once one was asked for.
    calls: HashMap<u64, Option<CancellationToken>>,
    /// The link has closed: every call has ended.
    closed: bool,
}

impl Default for CancelTable {
    fn default() -> Self {
        CancelTable {
            inner: Mutex::new(Inner::default()),
            entries: AtomicUsize::new(0),
            first_poll: AtomicU64::new(NONE),
        }
    }
}

impl CancelTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Updates under the lock are single inserts and removals: the data
        // is consistent even if a holder panicked.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Driver: the first poll of call `id` begins.
    #[inline]
    pub(crate) fn begin(&self, id: u64) {
        self.first_poll.store(id, Ordering::SeqCst);
    }

    /// Driver: call `id` goes on running after its first poll.
    pub(crate) fn running(&self, id: u64) {
        let mut inner = self.lock();
        if let std::collections::hash_map::Entry::Vacant(e) = inner.calls.entry(id) {
            e.insert(None);
            self.entries.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Driver: call `id` has ended (answered or cancelled): its token
    /// fires. Costs two atomic operations when nobody asked about it.
    #[inline]
    pub(crate) fn end(&self, id: u64) {
        // First leave the first poll, then look for entries: a handler's
        // task asking at the same time either inserts its entry before the
        // count is read here (and it is removed below), or sees the first
        // poll over (and is told the call ended). Both are SeqCst.
        let _ = self
            .first_poll
            .compare_exchange(id, NONE, Ordering::SeqCst, Ordering::SeqCst);
        if self.entries.load(Ordering::SeqCst) == 0 {
            return;
        }
        let token = {
            let mut inner = self.lock();
            let removed = inner.calls.remove(&id);
            if removed.is_some() {
                self.entries.fetch_sub(1, Ordering::SeqCst);
            }
            removed.flatten()
        };
        if let Some(t) = token {
            t.cancel();
        }
    }

    /// Driver: the link has closed; every token fires.
    pub(crate) fn close(&self) {
        let calls = {
            let mut inner = self.lock();
            inner.closed = true;
            self.entries.store(0, Ordering::SeqCst);
            std::mem::take(&mut inner.calls)
        };
        for t in calls.into_values().flatten() {
            t.cancel();
        }
    }

    /// The token of call `id`, made on the first ask; an already cancelled
    /// one if the call has ended.
    pub(crate) fn token(&self, id: u64) -> CancellationToken {
        let mut inner = self.lock();
        if !inner.closed {
            if let Some(t) = inner.calls.get_mut(&id) {
                return t.get_or_insert_with(CancellationToken::new).clone();
            }
            // Count the entry before looking at the first poll (see `end`).
            self.entries.fetch_add(1, Ordering::SeqCst);
            if self.first_poll.load(Ordering::SeqCst) == id {
                let t = CancellationToken::new();
                inner.calls.insert(id, Some(t.clone()));
                return t;
            }
            self.entries.fetch_sub(1, Ordering::SeqCst);
        }
        drop(inner);
        let t = CancellationToken::new();
        t.cancel();
        t
    }

    /// Whether call `id` has ended or been cancelled; makes no token.
    pub(crate) fn is_cancelled(&self, id: u64) -> bool {
        let inner = self.lock();
        if inner.closed {
            return true;
        }
        match inner.calls.get(&id) {
            Some(Some(t)) => t.is_cancelled(),
            Some(None) => false,
            None => self.first_poll.load(Ordering::SeqCst) != id,
        }
    }

    /// Calls registered or asked about (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_asked_about_in_its_first_poll_fires_when_it_ends() {
        let t = CancelTable::default();
        t.begin(7);
        assert!(!t.is_cancelled(7));
        let token = t.token(7);
        assert!(!token.is_cancelled());
        t.end(7);
        assert!(token.is_cancelled(), "fires at the end");
        assert!(t.is_cancelled(7));
        assert!(t.token(7).is_cancelled(), "an ended call's token");
        assert_eq!(t.len(), 0, "nothing kept for an ended call");
    }

    #[test]
    fn a_running_call_is_not_cancelled_until_it_ends() {
        let t = CancelTable::default();
        t.begin(3);
        t.running(3);
        t.begin(4); // the next call's first poll
        assert!(!t.is_cancelled(3));
        let token = t.token(3);
        assert!(!token.is_cancelled());
        t.end(4);
        assert!(!token.is_cancelled(), "another call's end");
        t.end(3);
        assert!(token.is_cancelled());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn calls_that_never_ask_leave_nothing() {
        let t = CancelTable::default();
        for id in 0..100 {
            t.begin(id);
            t.end(id);
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.entries.load(Ordering::SeqCst), 0);
        assert!(t.is_cancelled(5), "an ended call");
    }

    #[test]
    fn closing_fires_every_token() {
        let t = CancelTable::default();
        t.begin(1);
        t.running(1);
        let token = t.token(1);
        t.close();
        assert!(token.is_cancelled());
        assert!(t.is_cancelled(1));
        t.begin(2);
        assert!(t.token(2).is_cancelled(), "nothing runs on a closed link");
    }
}
