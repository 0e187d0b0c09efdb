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
//! A [`Pipeline`] is the other way to wait: many calls on one object, their
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
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::handle::LinkShared;
use crate::proto::CallKind;
use crate::remote::{IntoArgs, RemoteObject};
use crate::{Error, Value};

/// Calls queued before callers wait for room.
pub(crate) const QUEUE_CAP: usize = 1024;

/// A call waiting for the driver.
pub(crate) struct Queued {
    pub(crate) target: RemoteObject,
    pub(crate) args: Vec<Value>,
    pub(crate) kind: CallKind,
    /// Where its outcome goes.
    pub(crate) reply: Reply,
}

/// Where the outcome of a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A result slot, waited on by one [`CallOutcome`].
    Slot(usize),
    /// A pipeline's queue of outcomes, with the call's ticket.
    Pipe { pipe: usize, ticket: u64 },
}

/// The shared side of a [`Pipeline`].
#[derive(Default)]
struct Pipe {
    /// Outcomes not yet taken, in arrival order.
    done: VecDeque<(u64, Result<Value, Error>)>,
    /// The pipeline's waker while it waits for outcomes.
    waker: Option<Waker>,
    /// Calls queued or sent whose outcome has not arrived.
    in_flight: usize,
    /// False once the pipeline is dropped: outcomes are discarded, and the
    /// entry is freed when the last one arrives.
    live: bool,
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
    pipes: Vec<Pipe>,
    free_pipes: Vec<usize>,
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
            let Some((target, args, kind)) = call.take() else {
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
            inner.queue.push_back(Queued {
                target,
                args,
                kind,
                reply,
            });
            (reply, inner.driver.take())
        };
        let (reply, driver) = driver;
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Ready(Ok(reply))
    }

    /// A new pipeline's entry.
    fn open_pipe(&self) -> usize {
        let mut inner = self.lock();
        let pipe = Pipe {
            live: true,
            ..Pipe::default()
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
    fn poll_pipe(
        &self,
        cx: &mut Context<'_>,
        pipe: usize,
        out: &mut VecDeque<(u64, Result<Value, Error>)>,
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
    fn take_pipe(&self, pipe: usize, out: &mut VecDeque<(u64, Result<Value, Error>)>) {
        let mut inner = self.lock();
        if let Some(p) = inner.pipes.get_mut(pipe) {
            std::mem::swap(&mut p.done, out);
        }
    }

    /// The pipeline is dropped.
    fn close_pipe(&self, pipe: usize) {
        let mut inner = self.lock();
        let Some(p) = inner.pipes.get_mut(pipe) else {
            return;
        };
        p.live = false;
        p.waker = None;
        let done = std::mem::take(&mut p.done);
        if p.in_flight == 0 {
            inner.free_pipes.push(pipe);
        }
        drop(inner);
        // Outcomes may hold proxies, whose drop must not run under the lock.
        drop(done);
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

    /// Driver: the outcome of a call.
    pub(crate) fn complete(
        &self,
        reply: Reply,
        result: Result<Value, Error>,
        wakeups: &mut Wakeups,
    ) {
        let mut inner = self.lock();
        let dropped = Self::complete_locked(&mut inner, reply, result, wakeups);
        drop(inner);
        // An outcome nobody waits for may hold proxies: dropped unlocked.
        drop(dropped);
    }

    /// Stores an outcome; returns it if nobody waits for it any more.
    fn complete_locked(
        inner: &mut Inner,
        reply: Reply,
        result: Result<Value, Error>,
        wakeups: &mut Wakeups,
    ) -> Option<Result<Value, Error>> {
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
    /// caller still waiting gets [`Error::Closed`]; nothing is queued from
    /// now on.
    /// `held` are the calls the driver holds (taken or sent); every other
    /// call is in the queue.
    pub(crate) fn close(&self, reason: &str, held: impl IntoIterator<Item = Reply>) {
        let mut wakeups = Wakeups::default();
        let mut dropped = Vec::new();
        {
            let mut inner = self.lock();
            if inner.closed.is_some() {
                return;
            }
            inner.closed = Some(reason.to_owned());
            let queued = std::mem::take(&mut inner.queue);
            // Pipelines get an outcome per call; slots are failed below.
            for reply in held.into_iter().chain(queued.iter().map(|q| q.reply)) {
                if let Reply::Pipe { .. } = reply {
                    let e = Err(Error::Closed(reason.to_owned()));
                    dropped.extend(Self::complete_locked(&mut inner, reply, e, &mut wakeups));
                }
            }
            for p in &mut inner.pipes {
                wakeups.push(p.waker.take());
            }
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
            drop(dropped);
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
                State::Queue(call) => match this.shared.calls.submit(cx, call, None) {
                    Poll::Ready(Ok(Reply::Slot(slot))) => this.state = State::Wait(slot),
                    Poll::Ready(Ok(Reply::Pipe { .. })) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::Usage("call queued wrongly".to_owned())));
                    }
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

/// Many calls in flight on one object, their outcomes taken in the order
/// they arrive.
///
/// For clients that keep many calls going at once (load generators, bulk
/// work): [`Pipeline::call`] queues a call and returns its ticket,
/// [`Pipeline::next`] returns the next outcome with the ticket of its call.
/// Outcomes come back through one queue, so a batch of them costs one
/// wake-up, not one per call. Every call queued gets exactly one outcome,
/// [`Error::Closed`] if the link closes first.
///
/// ```no_run
/// # async fn demo(target: vole_link::RemoteObject) -> Result<(), vole_link::Error> {
/// let mut pipe = target.pipeline();
/// for i in 0..16i64 {
///     pipe.call("echo", (i,)).await?;
/// }
/// while let Some((ticket, outcome)) = pipe.next().await {
///     println!("call {ticket}: {:?}", outcome?);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Pipeline {
    target: RemoteObject,
    pipe: usize,
    next_ticket: u64,
    /// Outcomes moved out of the shared queue, not yet returned.
    local: VecDeque<(u64, Result<Value, Error>)>,
    /// Calls queued whose outcome `next` has not returned.
    outstanding: usize,
}

impl Pipeline {
    pub(crate) fn new(target: RemoteObject) -> Self {
        let pipe = target.shared().calls.open_pipe();
        Pipeline {
            target,
            pipe,
            next_ticket: 0,
            local: VecDeque::new(),
            outstanding: 0,
        }
    }

    /// Queues a call of `method` with `args`, waiting only if the link's
    /// queue is full. Returns the call's ticket (0, 1, 2, ... in order).
    pub async fn call(&mut self, method: &str, args: impl IntoArgs) -> Result<u64, Error> {
        let full = args.into_call(Value::str(method))?;
        self.call_raw(full, CallKind::Normal).await
    }

    /// Queues a call with the raw VOB argument tuple (see
    /// [`RemoteObject::call_raw`]).
    pub async fn call_raw(&mut self, args: Vec<Value>, kind: CallKind) -> Result<u64, Error> {
        let ticket = self.next_ticket;
        let mut call = Some((self.target.clone(), args, kind));
        let calls = &self.target.shared().calls;
        let to = Some((self.pipe, ticket));
        match std::future::poll_fn(|cx| calls.submit(cx, &mut call, to)).await {
            Ok(_) => {
                self.next_ticket += 1;
                self.outstanding += 1;
                Ok(ticket)
            }
            Err(reason) => Err(Error::Closed(reason)),
        }
    }

    /// The next outcome and its call's ticket; `None` once every call
    /// queued has had its outcome returned.
    pub async fn next(&mut self) -> Option<(u64, Result<Value, Error>)> {
        if self.outstanding == 0 {
            return None;
        }
        let outcome = match self.local.pop_front() {
            Some(o) => o,
            None => {
                let calls = &self.target.shared().calls;
                let (pipe, local) = (self.pipe, &mut self.local);
                std::future::poll_fn(|cx| {
                    let closed = calls.poll_pipe(cx, pipe, local);
                    match (local.pop_front(), closed) {
                        (Some(o), _) => Poll::Ready(Some(o)),
                        // Every call has its outcome queued before the
                        // close completes: none left means none can come.
                        (None, Some(_)) => Poll::Ready(None),
                        (None, None) => Poll::Pending,
                    }
                })
                .await?
            }
        };
        self.outstanding -= 1;
        Some(outcome)
    }

    /// The next outcome if one has already arrived, without waiting:
    /// after [`Pipeline::next`] returns, the rest of the batch that came
    /// with it. `None` if no outcome is there yet (or none is due).
    pub fn try_next(&mut self) -> Option<(u64, Result<Value, Error>)> {
        if self.outstanding == 0 {
            return None;
        }
        if self.local.is_empty() {
            self.target
                .shared()
                .calls
                .take_pipe(self.pipe, &mut self.local);
        }
        let outcome = self.local.pop_front()?;
        self.outstanding -= 1;
        Some(outcome)
    }

    /// Calls queued whose outcome [`Pipeline::next`] has not yet returned.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.target.shared().calls.close_pipe(self.pipe);
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("target", &self.target)
            .field("outstanding", &self.outstanding)
            .finish()
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
        calls.complete(Reply::Slot(0), Ok(Value::Int(1)), &mut wakeups);
        calls.abandon(1);
        calls.complete(Reply::Slot(1), Ok(Value::Int(2)), &mut wakeups);
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
        calls.close("gone", []);
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
