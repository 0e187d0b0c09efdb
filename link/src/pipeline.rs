//! [`Pipeline`]: many calls in flight on one object, their outcomes taken
//! in the order they arrive, through one queue of the link's
//! [`Calls`](crate::calls::Calls).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::model::{Call, Error, Outcome, RemoteObject, Value};
use crate::proto::CallKind;
use crate::remote::{method_name, CallOptions, IntoArgs};

impl RemoteObject {
    /// A [`Pipeline`] of calls on this object: many in flight, outcomes in
    /// the order they arrive.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone())
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
/// Calls can have a deadline: [`Pipeline::set_timeout`] gives every call
/// queued after it one, [`Pipeline::call_with`] one call. A call whose
/// deadline passes while [`Pipeline::next`] waits (or when
/// [`Pipeline::try_next`] looks) is cancelled with the peer, and its outcome
/// is [`Error::DeadlineExceeded`] unless its answer came first. Dropping
/// the pipeline gives up every call whose outcome it has not returned:
/// those not yet sent are not sent, the others are cancelled with the peer.
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
    local: VecDeque<(u64, Outcome)>,
    /// Calls queued whose outcome `next` has not returned.
    outstanding: usize,
    /// The timeout of calls queued without their own.
    default_timeout: Option<Duration>,
    /// Deadlines of the calls that have one, soonest first (entries of
    /// calls that have had their outcome are skipped).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The calls with a deadline and no outcome yet: their method and
    /// timeout, for the error.
    timed: HashMap<u64, (String, Duration)>,
    /// Wakes [`Pipeline::next`] at the soonest deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// The method and timeout of the call being queued, if it has one.
    arming: Option<(String, Duration)>,
}

impl Pipeline {
    fn new(target: RemoteObject) -> Self {
        let pipe = target.shared().calls.open_pipe();
        Pipeline {
            target,
            pipe,
            next_ticket: 0,
            local: VecDeque::new(),
            outstanding: 0,
            default_timeout: None,
            deadlines: BinaryHeap::new(),
            timed: HashMap::new(),
            timer: None,
            arming: None,
        }
    }

    /// Gives every call queued from now on (without a timeout of its own)
    /// this timeout; `None` (the default): no deadline.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.default_timeout = timeout;
    }

    /// [`Pipeline::call`] with `options` (a timeout for this call).
    pub async fn call_with(
        &mut self,
        method: &str,
        args: impl IntoArgs,
        options: CallOptions,
    ) -> Result<u64, Error> {
        let full = args.into_call(Value::str(method))?;
        self.submit(
            full,
            CallKind::Normal,
            options.timeout.or(self.default_timeout),
        )
        .await
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
        self.submit(args, kind, self.default_timeout).await
    }

    async fn submit(
        &mut self,
        args: Vec<Value>,
        kind: CallKind,
        timeout: Option<Duration>,
    ) -> Result<u64, Error> {
        let ticket = self.next_ticket;
        // Kept in the pipeline, not across the wait below: the common call,
        // with no deadline, has a smaller future to move.
        self.arming = match timeout {
            Some(t) if kind != CallKind::Oneway => Some((method_name(&args), t)),
            _ => None,
        };
        let mut call = Some(Call {
            target: self.target.clone(),
            args,
            kind,
        });
        let calls = &self.target.shared().calls;
        let to = Some((self.pipe, ticket));
        match std::future::poll_fn(|cx| calls.submit(cx, &mut call, to)).await {
            Ok(_) => {
                self.next_ticket += 1;
                self.outstanding += 1;
                if let Some((method, timeout)) = self.arming.take() {
                    self.deadlines
                        .push(Reverse((Instant::now() + timeout, ticket)));
                    self.timed.insert(ticket, (method, timeout));
                }
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
                std::future::poll_fn(|cx| {
                    if !self.deadlines.is_empty() {
                        self.expire(Instant::now());
                    }
                    let calls = &self.target.shared().calls;
                    let closed = calls.poll_pipe(cx, self.pipe, &mut self.local);
                    match (self.local.pop_front(), closed) {
                        (Some(o), _) => Poll::Ready(Some(o)),
                        // Every call has its outcome queued before the
                        // close completes: none left means none can come.
                        (None, Some(_)) => Poll::Ready(None),
                        (None, None) => {
                            self.poll_timer(cx);
                            Poll::Pending
                        }
                    }
                })
                .await?
            }
        };
        Some(self.returned(outcome))
    }

    /// Bookkeeping for an outcome returned.
    fn returned(&mut self, outcome: (u64, Outcome)) -> (u64, Outcome) {
        self.outstanding -= 1;
        if !self.timed.is_empty() {
            self.timed.remove(&outcome.0);
        }
        outcome
    }

    /// Cancels the calls whose deadline has passed at `now`: the driver
    /// gives each its [`Error::DeadlineExceeded`] outcome (unless its
    /// answer is there first).
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((deadline, ticket))) = self.deadlines.peek().copied() {
            if !self.timed.contains_key(&ticket) {
                self.deadlines.pop();
                continue;
            }
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some((method, timeout)) = self.timed.remove(&ticket) {
                let e = Error::DeadlineExceeded { method, timeout };
                self.target
                    .shared()
                    .calls
                    .cancel_pipe_call(self.pipe, ticket, Err(e));
            }
        }
    }

    /// Arms the timer for the soonest deadline, so the waiting task wakes
    /// for it.
    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        let Some(Reverse((deadline, _))) = self.deadlines.peek().copied() else {
            return;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            // Due already: look again at once.
            cx.waker().wake_by_ref();
        }
    }

    /// The next outcome if one has already arrived, without waiting:
    /// after [`Pipeline::next`] returns, the rest of the batch that came
    /// with it. `None` if no outcome is there yet (or none is due).
    pub fn try_next(&mut self) -> Option<(u64, Result<Value, Error>)> {
        if self.outstanding == 0 {
            return None;
        }
        if !self.deadlines.is_empty() {
            self.expire(Instant::now());
        }
        if self.local.is_empty() {
            self.target
                .shared()
                .calls
                .take_pipe(self.pipe, &mut self.local);
        }
        let outcome = self.local.pop_front()?;
        Some(self.returned(outcome))
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
