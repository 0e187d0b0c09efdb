//! Calls handed from the application to a link's driver, and their outcomes
//! handed back.
//!
//! Every proxy of a link and its driver share one [`Calls`]: a queue of
//! calls waiting to be sent and a table of result slots, behind one mutex.
//! A caller queues its call with a slot for the outcome and waits on that
//! slot; the driver takes queued calls in batches, sends them, and fills the
//! slot when the outcome arrives. Nothing is allocated per call (slots are
//! reused), and the driver is woken only when it waits for calls.
//!
//! The queue is bounded ([`QUEUE_CAP`]): when it is full callers wait for
//! room, which is how back-pressure from a peer that reads slowly reaches
//! the application (the driver stops taking calls while its output buffer
//! is above its high-water mark).
//!
//! The lock is held only to move a call or an outcome in or out; no user
//! code and no waker runs under it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::handle::LinkShared;
use crate::proto::CallKind;
use crate::remote::RemoteObject;
use crate::{Error, Value};

/// Calls queued before callers wait for room.
pub(crate) const QUEUE_CAP: usize = 1024;

/// A call waiting for the driver.
pub(crate) struct Queued {
    pub(crate) target: RemoteObject,
    pub(crate) args: Vec<Value>,
    pub(crate) kind: CallKind,
    /// Where its outcome goes.
    pub(crate) slot: usize,
}

enum Slot {
    Free,
    /// Queued or sent; the caller's waker once it has waited.
    Waiting(Option<Waker>),
    /// The outcome, until the caller takes it.
    Done(Result<Value, Error>),
    /// The caller stopped waiting; freed when the outcome arrives.
    Abandoned,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Queued>,
    /// The driver's waker while it waits for calls.
    driver: Option<Waker>,
    /// Callers waiting for room in the queue.
    blocked: Vec<Waker>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The application asked for a graceful close.
    drain: bool,
    /// Why the link closed, once it has: nothing is queued after that.
    closed: Option<String>,
}

impl Inner {
    fn slot_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        self.slots.get_mut(slot)
    }

    fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Slot::Free;
            self.free.push(slot);
        }
    }
}

/// The calls of one link (see the module documentation).
#[derive(Default)]
pub(crate) struct Calls {
    inner: Mutex<Inner>,
}

/// Wakers to wake once the lock is released.
#[derive(Default)]
pub(crate) struct Wakeups(Vec<Waker>);

impl Wakeups {
    fn push(&mut self, w: Option<Waker>) {
        if let Some(w) = w {
            self.0.push(w);
        }
    }

    pub(crate) fn wake(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code that can panic runs under the lock, so it is never
        // poisoned; if it were, its data is still consistent (every update
        // is a single assignment), so go on with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `call` (its slot is filled in), unless the queue is full
    /// (then the caller's waker is kept and woken when there is room) or
    /// the link has closed.
    fn submit(
        &self,
        cx: &mut Context<'_>,
        call: &mut Option<(RemoteObject, Vec<Value>, CallKind)>,
    ) -> Poll<Result<usize, String>> {
        let driver = {
            let mut inner = self.lock();
            if let Some(reason) = &inner.closed {
                return Poll::Ready(Err(reason.clone()));
            }
            if inner.queue.len() >= QUEUE_CAP {
                inner.blocked.push(cx.waker().clone());
                return Poll::Pending;
            }
            let Some((target, args, kind)) = call.take() else {
                // Polled again after queueing; cannot happen (the caller
                // moves on to waiting), but answer rather than panic.
                return Poll::Ready(Err("call already queued".to_owned()));
            };
            let slot = match inner.free.pop() {
                Some(i) => {
                    inner.slots[i] = Slot::Waiting(None);
                    i
                }
                None => {
                    inner.slots.push(Slot::Waiting(None));
                    inner.slots.len() - 1
                }
            };
            inner.queue.push_back(Queued {
                target,
                args,
                kind,
                slot,
            });
            (slot, inner.driver.take())
        };
        let (slot, driver) = driver;
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Ready(Ok(slot))
    }

    /// The outcome in `slot`, or `Pending` (with the waker kept).
    fn poll_outcome(&self, cx: &mut Context<'_>, slot: usize) -> Poll<Result<Value, Error>> {
        let mut inner = self.lock();
        let outcome = match inner.slot_mut(slot) {
            Some(Slot::Waiting(w)) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            Some(s @ Slot::Done(_)) => match std::mem::replace(s, Slot::Free) {
                Slot::Done(result) => result,
                _ => Err(Error::Closed("call slot lost".to_owned())),
            },
            _ => Err(Error::Closed("call slot lost".to_owned())),
        };
        inner.free.push(slot);
        Poll::Ready(outcome)
    }

    /// The caller of `slot` no longer waits.
    fn abandon(&self, slot: usize) {
        let mut inner = self.lock();
        match inner.slot_mut(slot) {
            Some(s @ Slot::Waiting(_)) => *s = Slot::Abandoned,
            Some(Slot::Done(_)) => inner.release(slot),
            _ => {}
        }
    }

    /// Calls queued and not yet taken by the driver.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Asks the driver for a graceful close.
    pub(crate) fn request_drain(&self) {
        let driver = {
            let mut inner = self.lock();
            if inner.closed.is_some() {
                return;
            }
            inner.drain = true;
            inner.driver.take()
        };
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// Driver: moves the queued calls to `out` (up to the queue's size) and
    /// returns whether a graceful close was asked for. If nothing is
    /// queued, keeps the driver's waker to be woken by the next call.
    pub(crate) fn take(
        &self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Queued>,
        wakeups: &mut Wakeups,
    ) -> bool {
        let mut inner = self.lock();
        if inner.queue.is_empty() {
            match &inner.driver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.driver = Some(cx.waker().clone()),
            }
        } else {
            out.append(&mut inner.queue);
            for w in inner.blocked.drain(..) {
                wakeups.0.push(w);
            }
        }
        std::mem::take(&mut inner.drain)
    }

    /// Driver: the outcome of the call in `slot`.
    pub(crate) fn complete(
        &self,
        slot: usize,
        result: Result<Value, Error>,
        wakeups: &mut Wakeups,
    ) {
        let mut inner = self.lock();
        match inner.slot_mut(slot) {
            Some(s @ Slot::Waiting(_)) => {
                if let Slot::Waiting(w) = std::mem::replace(s, Slot::Done(result)) {
                    wakeups.push(w);
                }
            }
            Some(Slot::Abandoned) => inner.release(slot),
            _ => {}
        }
    }

    /// Driver: the link has closed for `reason`. Every queued call and every
    /// caller still waiting gets [`Error::Closed`]; nothing is queued from
    /// now on.
    pub(crate) fn close(&self, reason: &str) {
        let mut wakeups = Wakeups::default();
        {
            let mut inner = self.lock();
            if inner.closed.is_some() {
                return;
            }
            inner.closed = Some(reason.to_owned());
            // Queued calls hold their slots, which are failed below.
            let queued = std::mem::take(&mut inner.queue);
            for i in 0..inner.slots.len() {
                match &mut inner.slots[i] {
                    s @ Slot::Waiting(_) => {
                        let done = Slot::Done(Err(Error::Closed(reason.to_owned())));
                        if let Slot::Waiting(w) = std::mem::replace(s, done) {
                            wakeups.push(w);
                        }
                    }
                    Slot::Abandoned => inner.release(i),
                    _ => {}
                }
            }
            for w in inner.blocked.drain(..) {
                wakeups.0.push(w);
            }
            inner.driver = None;
            // Dropped after the lock: proxies in them send their derefs.
            drop(inner);
            drop(queued);
        }
        wakeups.wake();
    }
}

/// The future of one call: queues it, then waits for its outcome.
pub(crate) struct CallOutcome {
    shared: Arc<LinkShared>,
    state: State,
}

enum State {
    Queue(Option<(RemoteObject, Vec<Value>, CallKind)>),
    Wait(usize),
    Done,
}

impl CallOutcome {
    pub(crate) fn new(target: RemoteObject, args: Vec<Value>, kind: CallKind) -> Self {
        CallOutcome {
            shared: target.shared().clone(),
            state: State::Queue(Some((target, args, kind))),
        }
    }
}

impl Future for CallOutcome {
    type Output = Result<Value, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Queue(call) => match this.shared.calls.submit(cx, call) {
                    Poll::Ready(Ok(slot)) => this.state = State::Wait(slot),
                    Poll::Ready(Err(reason)) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::Closed(reason)));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Wait(slot) => {
                    let slot = *slot;
                    return match this.shared.calls.poll_outcome(cx, slot) {
                        Poll::Ready(r) => {
                            this.state = State::Done;
                            Poll::Ready(r)
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                State::Done => {
                    return Poll::Ready(Err(Error::Usage(
                        "call polled after it finished".to_owned(),
                    )))
                }
            }
        }
    }
}

impl Drop for CallOutcome {
    fn drop(&mut self) {
        if let State::Wait(slot) = self.state {
            self.shared.calls.abandon(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn slots_are_reused_and_abandoned_ones_freed_on_completion() {
        let calls = Calls::default();
        let mut inner = calls.lock();
        inner.slots.push(Slot::Waiting(None));
        inner.slots.push(Slot::Waiting(None));
        drop(inner);
        let mut wakeups = Wakeups::default();
        // Slot 0 completes while waited for; slot 1 is abandoned first.
        calls.complete(0, Ok(Value::Int(1)), &mut wakeups);
        calls.abandon(1);
        calls.complete(1, Ok(Value::Int(2)), &mut wakeups);
        let mut cx = noop_cx();
        match calls.poll_outcome(&mut cx, 0) {
            Poll::Ready(Ok(Value::Int(1))) => {}
            other => panic!("slot 0: {other:?}"),
        }
        let inner = calls.lock();
        assert!(matches!(inner.slots[0], Slot::Free));
        assert!(matches!(inner.slots[1], Slot::Free));
        let mut free = inner.free.clone();
        free.sort_unstable();
        assert_eq!(free, vec![0, 1]);
    }

    #[test]
    fn closing_fails_waiting_slots_and_keeps_finished_ones() {
        let calls = Calls::default();
        let mut inner = calls.lock();
        inner.slots.push(Slot::Waiting(None));
        inner.slots.push(Slot::Done(Ok(Value::Int(5))));
        inner.slots.push(Slot::Abandoned);
        drop(inner);
        calls.close("gone");
        let mut cx = noop_cx();
        match calls.poll_outcome(&mut cx, 0) {
            Poll::Ready(Err(Error::Closed(r))) => assert_eq!(r, "gone"),
            other => panic!("slot 0: {other:?}"),
        }
        match calls.poll_outcome(&mut cx, 1) {
            Poll::Ready(Ok(Value::Int(5))) => {}
            other => panic!("slot 1: {other:?}"),
        }
        assert!(matches!(calls.lock().slots[2], Slot::Free));
        // Nothing is queued after the close.
        calls.request_drain();
        assert!(!calls.lock().drain);
    }
}
