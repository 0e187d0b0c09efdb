//! Calls handed from the application to a link's driver, and their outcomes
//! handed back.
//!
//! Every proxy of a link and its driver share one [`Calls`]: a queue of
//! calls waiting to be sent and a table of result slots, behind one mutex.
//! It is generic over what a call (`C`) and an outcome (`O`) are, and knows
//! nothing else of the link: [`crate::remote`] and [`crate::pipeline`] wait
//! on it, the driver feeds it.
//! A caller queues its call with a slot for the outcome and waits on that
//! slot; the driver takes queued calls in batches, sends them, and fills the
//! slot when the outcome arrives. Nothing is allocated per call (slots are
//! reused), and the driver is woken only when it waits for calls.
//!
//! A [`Pipeline`](crate::Pipeline) is the other way to wait: many calls on one object, their
//! outcomes queued for it in the order they arrive, so a client that keeps
//! many calls in flight pays for no future and no wake-up per call.
//!
//! The queue is bounded ([`QUEUE_CAP`]): when it is full callers wait for
//! room, which is how back-pressure from a peer that reads slowly reaches
//! the application (the driver stops taking calls while its output buffer
//! is above its high-water mark).
//!
//! The lock is held only to move a call or an outcome in or out; no user
//! code and no waker runs under it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Calls queued before callers wait for room.
pub(crate) const QUEUE_CAP: usize = 1024;

/// The ticket of a cancel request that stands for every call of a dropped
/// pipeline (see [`Calls::close_pipe`]).
pub(crate) const ALL_TICKETS: u64 = u64::MAX;

/// A call waiting for the driver.
pub(crate) struct Queued<C> {
    /// The call.
    pub(crate) call: C,
    /// Where its outcome goes.
    pub(crate) reply: Reply,
}

/// Where the outcome of a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A result slot, waited on by one caller.
    Slot(usize),
    /// A pipeline's queue of outcomes, with the call's ticket.
    Pipe { pipe: usize, ticket: u64 },
}

/// The shared side of a [`Pipeline`](crate::Pipeline).
struct Pipe<O> {
    /// Outcomes not yet taken, in arrival order.
    done: VecDeque<(u64, O)>,
    /// The pipeline's waker while it waits for outcomes.
    waker: Option<Waker>,
    /// Calls queued or sent whose outcome has not arrived.
    in_flight: usize,
    /// False once the pipeline is dropped: outcomes are discarded, and the
    /// entry is freed when the last one arrives.
    live: bool,
}

enum Slot<O> {
    Free,
    /// Queued or sent; the caller's waker once it has waited.
    Waiting(Option<Waker>),
    /// The outcome, until the caller takes it.
    Done(O),
    /// The caller stopped waiting; freed when the outcome arrives, or
    /// when the driver has cancelled the call.
    Abandoned,
}

struct Inner<C, O> {
    queue: VecDeque<Queued<C>>,
    /// The driver's waker while it waits for calls.
    driver: Option<Waker>,
    /// Callers waiting for room in the queue.
    blocked: Vec<Waker>,
    slots: Vec<Slot<O>>,
    free: Vec<usize>,
    pipes: Vec<Pipe<O>>,
    free_pipes: Vec<usize>,
    /// Calls sent (or taken by the driver) whose caller gave up, for the
    /// driver to cancel, with the outcome a pipeline gets for it.
    cancels: Vec<(Reply, Option<O>)>,
    /// The application asked for a graceful close.
    drain: bool,
    /// Why the link closed, once it has: nothing is queued after that.
    closed: Option<String>,
}

impl<C, O> Default for Inner<C, O> {
    fn default() -> Self {
        Inner {
            queue: VecDeque::new(),
            driver: None,
            blocked: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            pipes: Vec::new(),
            free_pipes: Vec::new(),
            cancels: Vec::new(),
            drain: false,
            closed: None,
        }
    }
}

impl<C, O> Inner<C, O> {
    fn slot_mut(&mut self, slot: usize) -> Option<&mut Slot<O>> {
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
pub(crate) struct Calls<C, O> {
    inner: Mutex<Inner<C, O>>,
}

impl<C, O> Default for Calls<C, O> {
    fn default() -> Self {
        Calls {
            inner: Mutex::new(Inner::default()),
        }
    }
}

/// Wakers to wake once the lock is released.
/// The outcomes of the calls a closing link fails (see [`Calls::close`]).
pub(crate) struct Closing<I, C> {
    /// For a call that was sent and not answered: it may have run.
    pub(crate) interrupted: I,
    /// For a call that was never sent.
    pub(crate) closed: C,
}

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

impl<C, O> Calls<C, O> {
    fn lock(&self) -> MutexGuard<'_, Inner<C, O>> {
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
    pub(crate) fn submit(
        &self,
        cx: &mut Context<'_>,
        call: &mut Option<C>,
        to: Option<(usize, u64)>,
    ) -> Poll<Result<Reply, String>> {
        let driver = {
            let mut inner = self.lock();
            if let Some(reason) = &inner.closed {
                return Poll::Ready(Err(reason.clone()));
            }
            if inner.queue.len() >= QUEUE_CAP {
                inner.blocked.push(cx.waker().clone());
                return Poll::Pending;
            }
            let Some(call) = call.take() else {
                // Polled again after queueing; cannot happen (the caller
                // moves on to waiting), but answer rather than panic.
                return Poll::Ready(Err("call already queued".to_owned()));
            };
            let reply = match to {
                Some((pipe, ticket)) => {
                    if let Some(p) = inner.pipes.get_mut(pipe) {
                        p.in_flight += 1;
                    }
                    Reply::Pipe { pipe, ticket }
                }
                None => Reply::Slot(match inner.free.pop() {
                    Some(i) => {
                        inner.slots[i] = Slot::Waiting(None);
                        i
                    }
                    None => {
                        inner.slots.push(Slot::Waiting(None));
                        inner.slots.len() - 1
                    }
                }),
            };
            inner.queue.push_back(Queued { call, reply });
            (reply, inner.driver.take())
        };
        let (reply, driver) = driver;
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Ready(Ok(reply))
    }

    /// A new pipeline's entry.
    pub(crate) fn open_pipe(&self) -> usize {
        let mut inner = self.lock();
        let pipe = Pipe {
            done: VecDeque::new(),
            waker: None,
            in_flight: 0,
            live: true,
        };
        match inner.free_pipes.pop() {
            Some(i) => {
                inner.pipes[i] = pipe;
                i
            }
            None => {
                inner.pipes.push(pipe);
                inner.pipes.len() - 1
            }
        }
    }

    /// Moves the pipeline's outcomes into `out`; if there are none, keeps
    /// its waker. Returns why the link closed, if it has.
    pub(crate) fn poll_pipe(
        &self,
        cx: &mut Context<'_>,
        pipe: usize,
        out: &mut VecDeque<(u64, O)>,
    ) -> Option<String> {
        let mut inner = self.lock();
        let closed = inner.closed.clone();
        if let Some(p) = inner.pipes.get_mut(pipe) {
            if p.done.is_empty() {
                match &p.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => p.waker = Some(cx.waker().clone()),
                }
            } else {
                std::mem::swap(&mut p.done, out);
            }
        }
        closed
    }

    /// Moves the pipeline's outcomes into `out` (an empty queue), without
    /// keeping a waker.
    pub(crate) fn take_pipe(&self, pipe: usize, out: &mut VecDeque<(u64, O)>) {
        let mut inner = self.lock();
        if let Some(p) = inner.pipes.get_mut(pipe) {
            std::mem::swap(&mut p.done, out);
        }
    }

    /// The pipeline is dropped: its calls still queued are taken back, and
    /// those the driver has are for it to cancel (one request, with the
    /// ticket [`ALL_TICKETS`]); the entry is freed once none is left.
    pub(crate) fn close_pipe(&self, pipe: usize) {
        let mut inner = self.lock();
        if inner.pipes.get(pipe).is_none() {
            return;
        }
        let mut unsent = VecDeque::new();
        if inner.closed.is_none() {
            let queue = std::mem::take(&mut inner.queue);
            let (mine, others) = queue
                .into_iter()
                .partition(|q| matches!(q.reply, Reply::Pipe { pipe: p, .. } if p == pipe));
            inner.queue = others;
            unsent = mine;
        }
        let Some(p) = inner.pipes.get_mut(pipe) else {
            return;
        };
        p.live = false;
        p.waker = None;
        p.in_flight = p.in_flight.saturating_sub(unsent.len());
        let done = std::mem::take(&mut p.done);
        let in_flight = p.in_flight;
        let mut driver = None;
        if in_flight == 0 {
            inner.free_pipes.push(pipe);
        } else if inner.closed.is_none() {
            let all = Reply::Pipe {
                pipe,
                ticket: ALL_TICKETS,
            };
            inner.cancels.push((all, None));
            driver = inner.driver.take();
        }
        drop(inner);
        // Outcomes and calls may hold proxies, whose drop must not run
        // under the lock.
        drop((done, unsent));
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// The outcome in `slot`, or `Pending` (with the waker kept);
    /// `Ready(None)` if the slot holds none (it was taken already).
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>, slot: usize) -> Poll<Option<O>> {
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
                _ => return Poll::Ready(None),
            },
            // Not this caller's slot any more: nothing to free.
            _ => return Poll::Ready(None),
        };
        inner.free.push(slot);
        Poll::Ready(Some(outcome))
    }

    /// The caller of `slot` no longer waits. A call still queued is taken
    /// back (never sent); a call the driver has is cancelled by it (see
    /// [`Calls::take`]), and its slot freed then.
    pub(crate) fn abandon(&self, slot: usize) {
        let mut inner = self.lock();
        match inner.slot_mut(slot) {
            Some(Slot::Waiting(_)) => {}
            Some(Slot::Done(_)) => return inner.release(slot),
            _ => return,
        }
        let reply = Reply::Slot(slot);
        if let Some(pos) = inner.queue.iter().position(|q| q.reply == reply) {
            let unsent = inner.queue.remove(pos);
            inner.release(slot);
            drop(inner);
            // The call may hold proxies: dropped unlocked.
            drop(unsent);
            return;
        }
        if let Some(s) = inner.slot_mut(slot) {
            *s = Slot::Abandoned;
        }
        if inner.closed.is_some() {
            return;
        }
        inner.cancels.push((reply, None));
        let driver = inner.driver.take();
        drop(inner);
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// A pipeline gives up its call `ticket`, which gets `outcome` instead
    /// of its answer (unless the answer has come already). A call still
    /// queued is taken back; the driver cancels one it has.
    pub(crate) fn cancel_pipe_call(&self, pipe: usize, ticket: u64, outcome: O) {
        let reply = Reply::Pipe { pipe, ticket };
        let mut wakeups = Wakeups::default();
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return;
        }
        if let Some(pos) = inner.queue.iter().position(|q| q.reply == reply) {
            let unsent = inner.queue.remove(pos);
            let dropped = Self::complete_locked(&mut inner, reply, outcome, &mut wakeups);
            drop(inner);
            drop((unsent, dropped));
            wakeups.wake();
            return;
        }
        inner.cancels.push((reply, Some(outcome)));
        let driver = inner.driver.take();
        drop(inner);
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// Driver: frees the slot of an abandoned call it has cancelled (or
    /// dropped unsent).
    pub(crate) fn release_abandoned(&self, slot: usize) {
        let mut inner = self.lock();
        if let Some(Slot::Abandoned) = inner.slot_mut(slot) {
            inner.release(slot);
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

    /// Driver: moves the queued calls to `out` (up to the queue's size)
    /// and the calls to cancel to `cancels`, and returns whether a graceful
    /// close was asked for. If nothing is queued, keeps the driver's waker
    /// to be woken by the next call.
    ///
    /// A slot in `cancels` is one still abandoned: its call has had no
    /// outcome, so it is one the driver has (sent, or in its backlog), and
    /// the slot stays reserved for it until the driver frees it
    /// ([`Calls::release_abandoned`]). The driver must handle `cancels`
    /// before it completes any call.
    pub(crate) fn take(
        &self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Queued<C>>,
        cancels: &mut Vec<(Reply, Option<O>)>,
        wakeups: &mut Wakeups,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.cancels.is_empty() {
            let mut taken = std::mem::take(&mut inner.cancels);
            // A slot completed since it was abandoned was freed (and may
            // be another call's now): not to cancel.
            // A dropped pipeline whose calls have all had their outcome
            // may have been freed and reused: nothing to cancel either.
            taken.retain(|(reply, _)| match reply {
                Reply::Slot(slot) => matches!(inner.slots.get(*slot), Some(Slot::Abandoned)),
                Reply::Pipe {
                    pipe,
                    ticket: ALL_TICKETS,
                } => inner
                    .pipes
                    .get(*pipe)
                    .is_some_and(|p| !p.live && p.in_flight > 0),
                Reply::Pipe { .. } => true,
            });
            cancels.append(&mut taken);
        }
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

    /// Driver: the outcome of a call.
    pub(crate) fn complete(&self, reply: Reply, result: O, wakeups: &mut Wakeups) {
        let mut inner = self.lock();
        let dropped = Self::complete_locked(&mut inner, reply, result, wakeups);
        drop(inner);
        // An outcome nobody waits for may hold proxies: dropped unlocked.
        drop(dropped);
    }

    /// Stores an outcome; returns it if nobody waits for it any more.
    fn complete_locked(
        inner: &mut Inner<C, O>,
        reply: Reply,
        result: O,
        wakeups: &mut Wakeups,
    ) -> Option<O> {
        match reply {
            Reply::Slot(slot) => match inner.slot_mut(slot) {
                Some(s @ Slot::Waiting(_)) => {
                    if let Slot::Waiting(w) = std::mem::replace(s, Slot::Done(result)) {
                        wakeups.push(w);
                    }
                    None
                }
                Some(Slot::Abandoned) => {
                    inner.release(slot);
                    Some(result)
                }
                _ => Some(result),
            },
            Reply::Pipe { pipe, ticket } => {
                let Some(p) = inner.pipes.get_mut(pipe) else {
                    return Some(result);
                };
                p.in_flight = p.in_flight.saturating_sub(1);
                if p.live {
                    p.done.push_back((ticket, result));
                    wakeups.push(p.waker.take());
                    None
                } else {
                    if p.in_flight == 0 {
                        inner.free_pipes.push(pipe);
                    }
                    Some(result)
                }
            }
        }
    }

    /// Driver: the link has closed for `reason`. Every queued call and every
    /// caller still waiting gets the outcome `closed()` makes (the link's
    /// closed error); nothing is queued from now on.
    /// `held` are the calls the driver holds (taken or sent); every other
    /// call is in the queue.
    pub(crate) fn close(
        &self,
        reason: &str,
        sent: impl IntoIterator<Item = Reply>,
        unsent: impl IntoIterator<Item = Reply>,
        outcomes: Closing<impl Fn() -> O, impl Fn() -> O>,
    ) {
        let Closing {
            interrupted,
            closed,
        } = outcomes;
        let sent: Vec<Reply> = sent.into_iter().collect();
        let mut sent_slots: Vec<usize> = sent
            .iter()
            .filter_map(|r| match r {
                Reply::Slot(i) => Some(*i),
                Reply::Pipe { .. } => None,
            })
            .collect();
        sent_slots.sort_unstable();
        let in_flight = |i: usize| sent_slots.binary_search(&i).is_ok();
        let mut wakeups = Wakeups::default();
        let mut dropped = Vec::new();
        {
            let mut inner = self.lock();
            if inner.closed.is_some() {
                return;
            }
            inner.closed = Some(reason.to_owned());
            let queued = std::mem::take(&mut inner.queue);
            // Pipelines' calls given up get their outcome below (the link's
            // closed error); abandoned slots are freed.
            dropped.extend(
                std::mem::take(&mut inner.cancels)
                    .into_iter()
                    .filter_map(|c| c.1),
            );
            // Pipelines get an outcome per call; slots are failed below.
            for (reply, was_sent) in sent
                .iter()
                .map(|r| (*r, true))
                .chain(unsent.into_iter().map(|r| (r, false)))
                .chain(queued.iter().map(|q| (q.reply, false)))
            {
                if let Reply::Pipe { .. } = reply {
                    let e = if was_sent { interrupted() } else { closed() };
                    dropped.extend(Self::complete_locked(&mut inner, reply, e, &mut wakeups));
                }
            }
            for p in &mut inner.pipes {
                wakeups.push(p.waker.take());
            }
            for i in 0..inner.slots.len() {
                match &mut inner.slots[i] {
                    s @ Slot::Waiting(_) => {
                        let done = Slot::Done(if in_flight(i) {
                            interrupted()
                        } else {
                            closed()
                        });
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
            drop(dropped);
        }
        wakeups.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outcomes as the tests make them.
    type Outcome = Result<i64, String>;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn slots_are_reused_and_abandoned_ones_freed_on_completion() {
        let calls: Calls<(), Outcome> = Calls::default();
        let mut inner = calls.lock();
        inner.slots.push(Slot::Waiting(None));
        inner.slots.push(Slot::Waiting(None));
        drop(inner);
        let mut wakeups = Wakeups::default();
        // Slot 0 completes while waited for; slot 1 is abandoned first.
        calls.complete(Reply::Slot(0), Ok(1), &mut wakeups);
        calls.abandon(1);
        calls.complete(Reply::Slot(1), Ok(2), &mut wakeups);
        let mut cx = noop_cx();
        assert_eq!(calls.poll_outcome(&mut cx, 0), Poll::Ready(Some(Ok(1))));
        let inner = calls.lock();
        assert!(matches!(inner.slots[0], Slot::Free));
        assert!(matches!(inner.slots[1], Slot::Free));
        let mut free = inner.free.clone();
        free.sort_unstable();
        assert_eq!(free, vec![0, 1]);
    }

    #[test]
    fn closing_fails_waiting_slots_and_keeps_finished_ones() {
        let calls: Calls<(), Outcome> = Calls::default();
        let mut inner = calls.lock();
        inner.slots.push(Slot::Waiting(None));
        inner.slots.push(Slot::Done(Ok(5)));
        inner.slots.push(Slot::Abandoned);
        drop(inner);
        calls.close(
            "gone",
            [],
            [],
            Closing {
                interrupted: || Err("cut".to_owned()),
                closed: || Err("gone".to_owned()),
            },
        );
        let mut cx = noop_cx();
        assert_eq!(
            calls.poll_outcome(&mut cx, 0),
            Poll::Ready(Some(Err("gone".to_owned())))
        );
        assert_eq!(calls.poll_outcome(&mut cx, 1), Poll::Ready(Some(Ok(5))));
        // A slot taken once holds nothing more.
        assert_eq!(calls.poll_outcome(&mut cx, 1), Poll::Ready(None));
        assert!(matches!(calls.lock().slots[2], Slot::Free));
        // Nothing is queued after the close.
        calls.request_drain();
        assert!(!calls.lock().drain);
    }

    fn queue_call(calls: &Calls<u32, Outcome>, call: u32, to: Option<(usize, u64)>) -> Reply {
        let mut call = Some(call);
        match calls.submit(&mut noop_cx(), &mut call, to) {
            Poll::Ready(Ok(reply)) => reply,
            other => panic!("not queued: {other:?}"),
        }
    }

    #[test]
    fn a_call_given_up_while_queued_is_taken_back_unsent() {
        let calls: Calls<u32, Outcome> = Calls::default();
        let Reply::Slot(slot) = queue_call(&calls, 1, None) else {
            panic!("a slot");
        };
        let _kept = queue_call(&calls, 2, None);
        calls.abandon(slot);
        assert_eq!(calls.queued(), 1, "the given-up call left the queue");
        assert!(matches!(calls.lock().slots[slot], Slot::Free));
        let (mut out, mut cancels) = (VecDeque::new(), Vec::new());
        calls.take(
            &mut noop_cx(),
            &mut out,
            &mut cancels,
            &mut Wakeups::default(),
        );
        assert_eq!(out.iter().map(|q| q.call).collect::<Vec<_>>(), [2]);
        assert!(cancels.is_empty(), "nothing to cancel with the peer");
    }

    #[test]
    fn a_call_given_up_after_the_driver_took_it_is_for_the_driver_to_cancel() {
        let calls: Calls<u32, Outcome> = Calls::default();
        let a = queue_call(&calls, 1, None);
        let b = queue_call(&calls, 2, None);
        let (mut out, mut cancels) = (VecDeque::new(), Vec::new());
        let mut wakeups = Wakeups::default();
        calls.take(&mut noop_cx(), &mut out, &mut cancels, &mut wakeups);
        let (Reply::Slot(sa), Reply::Slot(sb)) = (a, b) else {
            panic!("slots");
        };
        calls.abandon(sa);
        calls.abandon(sb);
        // b's answer comes before the driver looks: nothing to cancel, and
        // its slot is free (and may be reused) at once.
        calls.complete(b, Ok(2), &mut wakeups);
        assert!(matches!(calls.lock().slots[sb], Slot::Free));
        calls.take(&mut noop_cx(), &mut out, &mut cancels, &mut wakeups);
        assert_eq!(cancels.len(), 1, "only the call still unanswered");
        assert_eq!(cancels[0].0, a);
        assert!(
            matches!(calls.lock().slots[sa], Slot::Abandoned),
            "reserved until the driver has cancelled it"
        );
        calls.release_abandoned(sa);
        assert!(matches!(calls.lock().slots[sa], Slot::Free));
    }

    #[test]
    fn a_pipeline_call_given_up_while_queued_gets_its_outcome_at_once() {
        let calls: Calls<u32, Outcome> = Calls::default();
        let pipe = calls.open_pipe();
        queue_call(&calls, 1, Some((pipe, 0)));
        queue_call(&calls, 2, Some((pipe, 1)));
        calls.cancel_pipe_call(pipe, 0, Err("deadline".to_owned()));
        assert_eq!(calls.queued(), 1);
        let mut got = VecDeque::new();
        calls.take_pipe(pipe, &mut got);
        assert_eq!(got, [(0, Err("deadline".to_owned()))]);
        // The other, taken by the driver, is handed to it to cancel.
        let (mut out, mut cancels) = (VecDeque::new(), Vec::new());
        calls.take(
            &mut noop_cx(),
            &mut out,
            &mut cancels,
            &mut Wakeups::default(),
        );
        calls.cancel_pipe_call(pipe, 1, Err("deadline".to_owned()));
        calls.take(
            &mut noop_cx(),
            &mut out,
            &mut cancels,
            &mut Wakeups::default(),
        );
        assert_eq!(
            cancels,
            [(
                Reply::Pipe { pipe, ticket: 1 },
                Some(Err("deadline".to_owned()))
            )]
        );
    }

    #[test]
    fn a_dropped_pipeline_takes_back_its_queued_calls_and_asks_to_cancel_the_rest() {
        let calls: Calls<u32, Outcome> = Calls::default();
        let pipe = calls.open_pipe();
        let sent = queue_call(&calls, 1, Some((pipe, 0)));
        let (mut out, mut cancels) = (VecDeque::new(), Vec::new());
        let mut wakeups = Wakeups::default();
        calls.take(&mut noop_cx(), &mut out, &mut cancels, &mut wakeups);
        queue_call(&calls, 2, Some((pipe, 1)));
        queue_call(&calls, 3, None);
        calls.close_pipe(pipe);
        assert_eq!(calls.queued(), 1, "only the other caller's call is left");
        calls.take(&mut noop_cx(), &mut out, &mut cancels, &mut wakeups);
        let all = Reply::Pipe {
            pipe,
            ticket: ALL_TICKETS,
        };
        assert_eq!(cancels, [(all, None)]);
        // Once the call sent has its outcome, the entry is free, and a
        // request for it that comes late is dropped.
        calls.complete(sent, Ok(1), &mut wakeups);
        assert_eq!(calls.lock().free_pipes, [pipe]);
        calls.lock().cancels.push((all, None));
        cancels.clear();
        calls.take(&mut noop_cx(), &mut out, &mut cancels, &mut wakeups);
        assert!(cancels.is_empty(), "{cancels:?}");
    }
}
