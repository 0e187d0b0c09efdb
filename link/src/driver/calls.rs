//! The driver's part in calls: the application's calls going out, the
//! peer's calls started and answered (or refused when overloaded), and
//! cancels both ways (a caller that gave up, a call past its deadline).

use std::collections::VecDeque;
use std::task::Context;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Driver;
use crate::calls::{Queued, Reply, ALL_TICKETS};
use crate::core::{Event, Overload, OVERLOADED};
use crate::model::{error_chain, Call, CallError, Error, Value};
use crate::proto::CallKind;

impl<IO> Driver<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Sends a call the application made.
    pub(super) fn handle_call(&mut self, call: Queued<Call>) -> Result<(), Error> {
        let Queued {
            call: Call { target, args, kind },
            reply: slot,
        } = call;
        self.served.tally.calls_out += 1;
        let calls = &self.shared.calls;
        if !self.core.is_open() {
            let e = Error::Usage("link handshake has not completed".to_owned());
            calls.complete(slot, Err(e), &mut self.wakeups);
            return Ok(());
        }
        match self.core.call(&target, args, kind, slot) {
            Ok(Some(_)) => {}
            Ok(None) => calls.complete(slot, Ok(Value::None), &mut self.wakeups),
            // The arguments could not be encoded: the caller's
            // fault, the link is fine.
            Err(Error::Transport(e)) if !e.is_peer_fault() => {
                calls.complete(slot, Err(Error::Convert(e.to_string())), &mut self.wakeups);
            }
            Err(e) => {
                // The link fails; this call fails with it.
                let closed = Error::Closed(error_chain(&e));
                calls.complete(slot, Err(closed), &mut self.wakeups);
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) fn handle_events(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Result<(), Error> {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::HandshakeDone(gateway) => {
                    if let Some(tx) = self.handshake_tx.take() {
                        let _ = tx.send(Ok(self.config.hold_peer.then_some(gateway)));
                    }
                }
                Event::Call {
                    call_id,
                    future,
                    kind,
                    bytes,
                } => {
                    self.buffered.message_done();
                    if self.config.overload == Overload::Refuse
                        && self.served.running() >= self.config.max_inflight
                    {
                        // Never polled, so never run.
                        drop(future);
                        self.refuse_overloaded(call_id, kind)?;
                        continue;
                    }
                    let started = self.served.start(
                        cx,
                        call_id,
                        kind,
                        future,
                        now,
                        &self.shared.cancels,
                        self.config.max_call_time,
                    );
                    match started {
                        Some((call_id, kind, elapsed, result)) => {
                            self.finished(call_id, kind, elapsed, result)?;
                        }
                        None => self.buffered.started(call_id, bytes),
                    }
                }
                Event::Cancel { call_id } => {
                    if let Some((call_id, kind, elapsed)) =
                        self.served.cancel(call_id, now, &self.shared.cancels)
                    {
                        self.buffered.finished(call_id);
                        tracing::debug!(
                            link = self.shared.id,
                            call = call_id,
                            ?elapsed,
                            "call cancelled by the caller"
                        );
                        if let Some(m) = self.config.metrics.as_deref() {
                            m.record(elapsed);
                        }
                        let e = CallError::cancelled("cancelled by the caller");
                        self.core.respond(call_id, kind, Err(e))?;
                    }
                }
                Event::Completed { reply, result } => {
                    // The caller may have given up waiting; fine.
                    self.shared.calls.complete(reply, result, &mut self.wakeups);
                }
                Event::Idle => {
                    tracing::debug!(link = self.shared.id, "no references remain; closing");
                    self.begin_drain(now);
                }
            }
        }
        Ok(())
    }

    /// Refuses a call of the peer beyond `max_inflight` (with
    /// [`Overload::Refuse`]): a one-way call is dropped, the others are
    /// answered with the exception `("overloaded", reason)`. Both are
    /// counted.
    pub(super) fn refuse_overloaded(&mut self, call_id: u64, kind: CallKind) -> Result<(), Error> {
        self.shared
            .stats
            .refused_overload
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            link = self.shared.id,
            call = call_id,
            ?kind,
            "call refused: overloaded"
        );
        if kind == CallKind::Oneway {
            return Ok(());
        }
        let reason = format!(
            "{} calls of this link are running (max-inflight); the call was not run",
            self.config.max_inflight
        );
        let e = CallError::Exception(vec![Value::str(OVERLOADED), Value::Str(reason)]);
        self.core.respond(call_id, kind, Err(e))
    }

    /// Answers a call of the peer that has finished.
    pub(super) fn finished(
        &mut self,
        call_id: u64,
        kind: CallKind,
        elapsed: Duration,
        result: Result<Value, CallError>,
    ) -> Result<(), Error> {
        let metrics = self.config.metrics.as_deref();
        self.served
            .count_finished(elapsed, result.is_err(), metrics);
        if !elapsed.is_zero() {
            // Only calls that ran a while can end after the last call in.
            self.last_done = Instant::now();
        }
        self.core.respond(call_id, kind, result)
    }

    /// Cancels the calls whose caller gave up (taken from the shared queue
    /// by the last [`Calls::take`](crate::calls::Calls::take), and handled
    /// before any call completes, as it requires): a call sent is cancelled
    /// with the peer, one still in the backlog is dropped unsent. An
    /// abandoned slot is freed; a pipeline's call gets the outcome it was
    /// given up with.
    pub(super) fn cancel_calls(&mut self) -> Result<(), Error> {
        let mut cancels = std::mem::take(&mut self.cancels);
        for (reply, outcome) in cancels.drain(..) {
            if let Reply::Pipe {
                pipe,
                ticket: ALL_TICKETS,
            } = reply
            {
                self.cancel_pipe(pipe)?;
                continue;
            }
            let mut found = self.core.cancel(reply)?;
            if !found {
                if let Some(pos) = self.backlog.iter().position(|q| q.reply == reply) {
                    drop(self.backlog.remove(pos));
                    found = true;
                }
            }
            if !found {
                // Answered already: nothing to cancel.
                continue;
            }
            match (reply, outcome) {
                (Reply::Slot(slot), _) => self.shared.calls.release_abandoned(slot),
                (reply @ Reply::Pipe { .. }, Some(outcome)) => {
                    self.shared
                        .calls
                        .complete(reply, outcome, &mut self.wakeups);
                }
                (Reply::Pipe { .. }, None) => {}
            }
        }
        // The buffer is kept for the next cancels.
        self.cancels = cancels;
        Ok(())
    }

    /// Cancels every call of the dropped pipeline `pipe`: those sent, with
    /// the peer; those in the backlog, unsent. Each is completed (into the
    /// dropped pipeline, which discards it) so the pipeline's entry is
    /// freed once none is left.
    pub(super) fn cancel_pipe(&mut self, pipe: usize) -> Result<(), Error> {
        let mut replies = self.core.cancel_pipe(pipe)?;
        let mine = |q: &Queued<Call>| matches!(q.reply, Reply::Pipe { pipe: p, .. } if p == pipe);
        if self.backlog.iter().any(mine) {
            let backlog = std::mem::take(&mut self.backlog);
            let (unsent, kept) = backlog.into_iter().partition(|q| mine(q));
            self.backlog = kept;
            let unsent: VecDeque<Queued<Call>> = unsent;
            replies.extend(unsent.iter().map(|q| q.reply));
        }
        for reply in replies {
            let dropped = Err(Error::Closed("the pipeline was dropped".to_owned()));
            self.shared
                .calls
                .complete(reply, dropped, &mut self.wakeups);
        }
        Ok(())
    }

    /// Cancels the running calls past the link's `max-call-time`, answering
    /// each with a `vole.cancelled` exception.
    pub(super) fn cancel_overdue(&mut self, now: Instant) -> Result<bool, Error> {
        let mut any = false;
        while let Some(call_id) = self.served.overdue(now) {
            let Some((call_id, kind, elapsed)) =
                self.served.cancel(call_id, now, &self.shared.cancels)
            else {
                continue;
            };
            any = true;
            self.buffered.finished(call_id);
            let limit = self.config.max_call_time.unwrap_or_default();
            tracing::info!(
                link = self.shared.id,
                call = call_id,
                ?elapsed,
                ?limit,
                "call exceeded max-call-time; cancelled"
            );
            // It ran this long: its latency, like any answered call's.
            if let Some(m) = self.config.metrics.as_deref() {
                m.record(elapsed);
            }
            let e = CallError::cancelled(format!(
                "the call ran longer than the service's max-call-time of {limit:?}"
            ));
            self.core.respond(call_id, kind, Err(e))?;
        }
        Ok(any)
    }
}
