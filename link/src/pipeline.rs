//! [`Pipeline`]: many calls in flight on one object, their outcomes taken
//! in the order they arrive, through one queue of the link's
//! [`Calls`](crate::calls::Calls).

use std::collections::VecDeque;
use std::task::Poll;

use crate::model::{Call, Error, Outcome, RemoteObject, Value};
use crate::proto::CallKind;
use crate::remote::IntoArgs;

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
