//! The tokio driver of a link: one task that owns the connection and the
//! [`LinkCore`], reads and writes, runs incoming calls and routes results.
//!
//! The driver is a hand-written future rather than a loop of `select!`s so
//! that reading, writing, running calls and taking commands all happen in
//! one task with no locks and no extra wake-ups: results produced while
//! handling one batch of input are written with one `write` call.
//!
//! Back-pressure: reading pauses while `max_inflight` calls run (or, with
//! `Overload::Refuse`, calls past it are refused), while more than
//! `out_high_water` bytes wait to be written, or while the link holds more
//! of the peer's calls than its buffer budgets allow (see
//! [`crate::budget`]); local calls wait in a bounded channel meanwhile. A
//! peer that stops reading is detected by the write timeout and its link
//! closed.
//!
//! Three parts keep their own state in their own files: [`output`]
//! (writing the core's output, and noticing a stalled peer), [`served`]
//! (the peer's calls running on this task, and their counters) and
//! [`buffered`] (what the link holds of the peer's calls, against its
//! budgets); [`calls`] has the driver's part in calls (sending the
//! application's, starting and answering the peer's, cancels).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

mod buffered;
mod calls;
mod idle;
mod output;
mod served;

use buffered::{Buffered, READ_CHUNK};
#[cfg(test)]
use idle::IDLE_RELEASE;
use idle::{IdleRelease, Seen, Verdict};
use output::Output;
use served::Served;

use crate::calls::{Closing, Queued, Reply, Wakeups};
use crate::core::{LinkConfig, LinkCore, Overload};
use crate::handle::Link;
use crate::info::LinkInfo;
use crate::model::{error_chain, Call, Error, Object, Outcome, RemoteObject, Shared};

/// Everything needed to run a link over a connection.
pub struct LinkSetup {
    /// Protocol settings.
    pub config: LinkConfig,
    /// The object the peer receives as this side's gateway.
    pub gateway: Arc<dyn Object>,
    /// What is known about the connection; the link id is filled in.
    pub info: LinkInfo,
}

/// How a link ended.
#[derive(Debug, Clone)]
pub struct Closed {
    /// Why, in words.
    pub reason: Arc<str>,
    /// False if the link ended on an error (protocol violation, timeout,
    /// I/O failure) rather than a close by either side.
    pub clean: bool,
}

/// Yields the peer's gateway once the handshake completes (`None` when the
/// link does not hold it).
pub type HandshakeReceiver = oneshot::Receiver<Result<Option<RemoteObject>, Error>>;

/// How long a closing link reads (and discards) for the peer's EOF after
/// shutting down its write side, so that closing does not reset the
/// connection while the peer is still sending.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How much a saturated link reads ahead without handing it to the core
/// (see [`Driver::step`]).
const READ_AHEAD: usize = READ_CHUNK;
/// A draining link (with [`LinkConfig::drain_quiet`]) that has refused
/// this many of the peer's calls as closing takes no more calls (it reads
/// ahead a little, as a saturated link does; those calls are refused as it
/// closes, what comes after is dropped unanswered) and closes as soon as
/// none of its calls runs: enough for the calls a pipelining client sent
/// before it saw the first refusal, few for one that ignores them.
pub const DRAIN_REFUSALS: u64 = 64;
/// Iterations of the driver loop before it yields to other tasks.
const BUDGET: usize = 32;

/// The sources that returned `Pending` during the current poll of the
/// driver. Their wakers are registered, so polling them again before the
/// task is woken would find nothing; the later passes of the loop skip
/// them. (A source that stopped for another reason, such as a full output
/// buffer, is polled again.)
#[derive(Debug, Default)]
struct Parked {
    signals: bool,
    commands: bool,
    read: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// No new calls from the peer; waiting for running calls and results.
    Draining {
        deadline: Instant,
    },
    /// Writing what is left, then shutting down the write side.
    Flushing {
        deadline: Instant,
    },
    /// Write side shut down; reading to EOF so the close is not a reset.
    Lingering {
        deadline: Instant,
    },
    Done,
}

/// The task that runs one link. Await it (or spawn it) to run the link.
pub struct Driver<IO> {
    io: IO,
    core: LinkCore,
    shared: Arc<Shared>,
    config: LinkConfig,
    /// Calls taken from the shared queue and not yet sent.
    backlog: VecDeque<Queued<Call>>,
    /// Calls whose caller gave up, taken from the shared queue and not yet
    /// cancelled (see [`Driver::cancel_calls`]).
    cancels: Vec<(Reply, Option<Outcome>)>,
    /// Callers to wake once this poll is done with the shared state.
    wakeups: Wakeups,
    /// The peer's calls running, and the calls counted during this poll.
    served: Served,
    /// What the link holds of the peer's calls, against its budgets.
    buffered: Buffered,
    /// Ids of the peer's objects whose proxies were dropped, taken from
    /// the shared signals and not yet released.
    released: Vec<i64>,
    inbuf: BytesMut,
    /// `inbuf` holds bytes read ahead while saturated, not yet handed to
    /// the core.
    unread: bool,
    output: Output,
    read_closed: bool,
    handshake_tx: Option<oneshot::Sender<Result<Option<RemoteObject>, Error>>>,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    outcome: Option<Closed>,
    /// When a call of the peer's last finished (for `idle_timeout`).
    last_done: Instant,
    /// When an idle link gives back its buffers.
    idle: IdleRelease,
}

impl<IO> Driver<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Sets up a link over `io` (whose transport is already negotiated).
    ///
    /// Returns the handle, the driver to run, and a receiver that yields the
    /// peer's gateway once the handshake completes (`None` if the link does
    /// not hold it).
    pub fn new(io: IO, setup: LinkSetup) -> (Link, Driver<IO>, HandshakeReceiver) {
        let now = Instant::now();
        let shared = Arc::new(Shared::new(setup.info));
        let mut core = LinkCore::new(
            setup.config.clone(),
            shared.clone(),
            setup.gateway,
            now.into_std(),
        );
        let start = core.start();
        let (hs_tx, hs_rx) = oneshot::channel();
        let buffered = Buffered::new(&setup.config, shared.id);
        let driver = Driver {
            io,
            core,
            shared: shared.clone(),
            config: setup.config,
            backlog: VecDeque::new(),
            cancels: Vec::new(),
            wakeups: Wakeups::default(),
            served: Served::default(),
            buffered,
            released: Vec::new(),
            inbuf: BytesMut::with_capacity(READ_CHUNK),
            unread: false,
            output: Output::default(),
            read_closed: false,
            handshake_tx: Some(hs_tx),
            phase: Phase::Running,
            timer: Box::pin(tokio::time::sleep_until(now)),
            outcome: None,
            last_done: now,
            idle: IdleRelease::new(now),
        };
        let mut driver = driver;
        if let Err(e) = start {
            driver.fail(e);
        }
        (Link::from_shared(shared), driver, hs_rx)
    }

    fn finish(&mut self, reason: impl Into<Arc<str>>, clean: bool) {
        self.finish_logged(reason, clean, false);
    }

    /// [`Driver::finish`]; `vanished`: the peer went away without closing
    /// (a reset, or TLS without `close_notify`, as every client that exits
    /// does), which is no error of ours and is logged at debug.
    fn finish_logged(&mut self, reason: impl Into<Arc<str>>, clean: bool, vanished: bool) {
        if self.phase == Phase::Done {
            return;
        }
        let reason: Arc<str> = reason.into();
        // Mark the link closed before anything else (logging included), so
        // nothing waiting on it can be left hanging.
        self.phase = Phase::Done;
        self.shared.signals.set_closed(reason.clone());
        if clean {
            tracing::debug!(link = self.shared.id, peer = ?self.shared.info.peer_addr, %reason, "link closed");
        } else if vanished {
            tracing::debug!(link = self.shared.id, peer = ?self.shared.info.peer_addr, %reason, "link closed: the peer went away");
        } else {
            tracing::warn!(link = self.shared.id, peer = ?self.shared.info.peer_addr, %reason, "link closed on error");
        }
        self.fail_calls(&reason);
        self.backlog.clear();
        self.wakeups.wake();
        if let Some(tx) = self.handshake_tx.take() {
            let _ = tx.send(Err(Error::Handshake(reason.to_string())));
        }
        self.served.cancel_all(&self.shared.cancels);
        self.buffered.cancelled_all();
        self.outcome = Some(Closed { reason, clean });
    }

    fn fail(&mut self, e: Error) {
        let text = error_chain(&e);
        let vanished = peer_vanished(&e);
        self.finish_logged(text, false, vanished);
    }

    fn begin_drain(&mut self, now: Instant) {
        if self.phase == Phase::Running {
            self.core.begin_drain();
            self.phase = Phase::Draining {
                deadline: now + self.config.close_grace,
            };
        }
    }

    fn out_len(&mut self) -> usize {
        self.output.pending(self.core.output())
    }

    /// One pass over every source of work. Returns whether anything
    /// happened.
    fn step(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        parked: &mut Parked,
    ) -> Result<bool, Error> {
        let mut progress = false;
        // The core keeps std time; tokio's follows the test clock when
        // paused, and converts both ways without cost.
        let now_std = now.into_std();
        self.core.set_now(now_std);

        // Local calls, while there is room to write. Calls are taken from
        // the shared queue only once the last batch is sent, so a full
        // output buffer leaves them queued and callers wait for room.
        if !parked.commands
            && !matches!(self.phase, Phase::Flushing { .. } | Phase::Lingering { .. })
        {
            while self.out_len() < self.config.out_high_water {
                match self.backlog.pop_front() {
                    // A call on an object the peer sent before the link
                    // handshake completed (a callback passed in its first
                    // call, whose answer to our `finish()` is still on its
                    // way): it waits for the handshake.
                    Some(call) if !self.core.is_open() => {
                        self.backlog.push_front(call);
                        break;
                    }
                    Some(call) => {
                        self.handle_call(call)?;
                        progress = true;
                    }
                    None => {
                        let drain = self.shared.calls.take(
                            cx,
                            &mut self.backlog,
                            &mut self.cancels,
                            &mut self.wakeups,
                        );
                        if !self.cancels.is_empty() {
                            self.cancel_calls()?;
                            progress = true;
                        }
                        if drain {
                            self.begin_drain(now);
                            progress = true;
                        }
                        if self.backlog.is_empty() {
                            parked.commands = true;
                            break;
                        }
                    }
                }
            }
        }

        // Finished calls.
        while let Some((call_id, kind, elapsed, result)) =
            self.served.poll_finished(cx, now, &self.shared.cancels)
        {
            self.buffered.finished(call_id);
            self.finished(call_id, kind, elapsed, result)?;
            progress = true;
        }
        if self.cancel_overdue(now)? {
            progress = true;
        }

        // Read, unless the peer has finished. A saturated link (running
        // `max_inflight` calls, or holding `out_high_water` bytes to write)
        // hands nothing more to the core, but still reads ahead a little
        // (up to READ_AHEAD buffered) so that a peer that disconnects is
        // noticed and its calls cancelled, not run to their end.
        // So does a draining link that has refused DRAIN_REFUSALS calls
        // while its running calls finish: the peer has been told.
        let lingering = matches!(self.phase, Phase::Lingering { .. });
        if lingering && self.unread {
            self.unread = false;
            self.inbuf.clear();
        }
        // With `Overload::Refuse`, calls beyond `max_inflight` are read
        // and refused rather than left waiting.
        let saturated = !lingering
            && ((self.config.overload == Overload::Wait
                && self.served.running() >= self.config.max_inflight)
                || self.out_len() >= self.config.out_high_water
                || self.refused_enough());
        if self.unread && !saturated {
            self.unread = false;
            progress = true;
            self.core.handle_input(&mut self.inbuf, now_std)?;
            self.buffered.shrink(&mut self.inbuf, READ_CHUNK);
        }
        // The buffer budgets (see `crate::budget`): a link holding too much
        // of the peer's calls reads only a little ahead, as a saturated
        // one does.
        let within_budget = lingering
            || self.buffered.may_read(
                &self.inbuf,
                self.core.pending_input(),
                self.served.running(),
                &self.shared.stats,
                cx,
            );
        let can_read = !parked.read
            && !self.read_closed
            && ((!saturated && within_budget) || self.inbuf.len() < READ_AHEAD);
        if can_read {
            let full = !saturated && within_budget;
            // Room for the whole message being received, once it may be;
            // reading ahead, only a little.
            let pending = if full {
                self.core.pending_input()
            } else {
                None
            };
            self.buffered
                .make_room(&mut self.inbuf, pending, READ_CHUNK);
            // One read takes at most READ_LIMIT, so that a link overshoots
            // its budgets by no more.
            let limit = if full {
                crate::budget::READ_LIMIT
            } else {
                READ_AHEAD
            };
            let mut limited = tokio::io::AsyncReadExt::take(&mut self.io, limit as u64);
            match tokio_util::io::poll_read_buf(Pin::new(&mut limited), cx, &mut self.inbuf) {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    progress = true;
                    self.on_eof(now)?;
                }
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    if lingering {
                        self.inbuf.clear();
                    } else if saturated {
                        self.unread = true;
                    } else {
                        self.core.handle_input(&mut self.inbuf, now_std)?;
                        self.buffered.shrink(&mut self.inbuf, READ_CHUNK);
                    }
                }
                Poll::Ready(Err(e)) => return Err(Error::Transport(e.into())),
                Poll::Pending => parked.read = true,
            }
        }

        self.handle_events(cx, now)?;

        // Timers, before writing: a keep-alive they queue goes out now,
        // not when other traffic next wakes the driver.
        if self.core.poll_timeout().is_some_and(|t| t <= now_std) {
            self.core.handle_timeout(now_std)?;
        }

        // Dropped proxies, and a close at once: after the input and its
        // events, so that what they released (the handshake objects, a
        // peer gateway not kept) goes out in this write, not another.
        if !parked.signals {
            if self.shared.signals.poll_driver(cx, &mut self.released) {
                return Err(Error::Closed("closed locally".to_owned()));
            }
            if self.released.is_empty() {
                parked.signals = true;
            }
            for id in std::mem::take(&mut self.released) {
                self.core.release(id)?;
                progress = true;
            }
        }

        // Write.
        if self
            .output
            .write(&mut self.io, self.core.output(), cx, now)?
        {
            progress = true;
        }

        // Phase transitions.
        match self.phase {
            Phase::Draining { deadline } => {
                if self.served.running() == 0
                    && !self.core.has_pending_calls()
                    && self.quiet_until(now).is_none()
                {
                    self.phase = Phase::Flushing { deadline };
                    progress = true;
                } else if now >= deadline {
                    return Err(Error::Timeout("graceful close"));
                }
            }
            Phase::Flushing { deadline } => {
                if self.output.is_done(self.core.output()) {
                    match Pin::new(&mut self.io).poll_shutdown(cx) {
                        Poll::Ready(_) => {
                            if self.read_closed {
                                self.finish("closed", true);
                            } else {
                                self.phase = Phase::Lingering {
                                    deadline: now + LINGER,
                                };
                            }
                            progress = true;
                        }
                        Poll::Pending => {}
                    }
                } else if now >= deadline {
                    return Err(Error::Timeout("graceful close"));
                }
            }
            Phase::Lingering { deadline } => {
                if self.read_closed || now >= deadline {
                    self.finish("closed", true);
                    progress = true;
                }
            }
            Phase::Running => {
                if self.idle_until().is_some_and(|t| now >= t) {
                    tracing::debug!(link = self.shared.id, "idle timeout; closing");
                    self.begin_drain(now);
                    progress = true;
                }
            }
            Phase::Done => {}
        }

        if let Some(since) = self.output.stalled_since() {
            if now >= since + self.config.write_timeout {
                return Err(Error::Timeout("writing to the peer (it stopped reading)"));
            }
        }
        Ok(progress)
    }

    fn on_eof(&mut self, now: Instant) -> Result<(), Error> {
        if matches!(self.phase, Phase::Lingering { .. }) {
            return Ok(());
        }
        // Calls read ahead while saturated and never started: the peer
        // that sent them has gone, so they are dropped unread.
        let discard = std::mem::take(&mut self.unread);
        if discard {
            self.inbuf.clear();
        }
        let unanswered = self.core.handle_eof(&self.inbuf, discard)?;
        if !self.core.is_open() {
            return Err(Error::Transport(vole_transport::Error::ClosedDuring(
                "link handshake",
            )));
        }
        // The peer will send nothing more: calls we made cannot complete.
        // They were sent, so they may have run.
        for slot in unanswered {
            let e = Error::Interrupted("peer closed the link".to_owned());
            self.shared.calls.complete(slot, Err(e), &mut self.wakeups);
        }
        // A peer that closes its sending side has gone: a vole link shuts
        // down its side only once its own calls are answered, so calls
        // still running here are the calls of a client that disconnected
        // or quit. They are cancelled at once rather than run for nobody;
        // answers already made are still written.
        if self.served.running() > 0 {
            tracing::debug!(
                link = self.shared.id,
                calls = self.served.running(),
                "peer closed the link; cancelling its running calls"
            );
            self.served.cancel_all(&self.shared.cancels);
            self.buffered.cancelled_all();
        }
        self.begin_drain(now);
        Ok(())
    }

    /// While draining with [`LinkConfig::drain_quiet`]: when the peer will
    /// have been quiet long enough to close, if that is still to come. (A
    /// handshake in progress counts as the peer about to call; so does a
    /// link just created.)
    ///
    /// A peer that goes on calling has been told the link is closing by
    /// the first refusal: the link waits for the calls it sent before it
    /// could know (refusing them too) no longer than `drain_quiet` after
    /// that refusal, nor beyond [`DRAIN_REFUSALS`] refusals, so a client
    /// that keeps calling does not hold the link for the whole grace.
    fn quiet_until(&self, now: Instant) -> Option<Instant> {
        let quiet = self.config.drain_quiet;
        if quiet.is_zero() || self.read_closed {
            return None;
        }
        let mut until = Instant::from_std(self.core.last_call_in()) + quiet;
        if !self.core.is_open() {
            // Waiting for the handshake (its completion counts as a call);
            // the phase deadline bounds the wait.
            return Some(until.max(now + quiet));
        }
        if self.refused_enough() {
            return None;
        }
        if let Some(first) = self.core.refused().first {
            until = until.min(Instant::from_std(first) + quiet);
        }
        (until > now).then_some(until)
    }

    /// When this running link will have been idle for
    /// [`LinkConfig::idle_timeout`]: the peer's last call (or the link's
    /// creation, or the handshake's completion) or the end of its last
    /// call, whichever came later, plus the timeout. `None` while one of
    /// the peer's calls runs, or with no timeout.
    fn idle_until(&self) -> Option<Instant> {
        let idle = self.config.idle_timeout?;
        if self.served.running() > 0 {
            return None;
        }
        let last = Instant::from_std(self.core.last_call_in()).max(self.last_done);
        Some(last + idle)
    }

    /// Whether this draining link has refused enough of the peer's calls
    /// (see [`DRAIN_REFUSALS`]).
    fn refused_enough(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
            && !self.config.drain_quiet.is_zero()
            && self.core.refused().count >= DRAIN_REFUSALS
    }

    /// Gives back an idle link's buffers when [`idle`] says so. Returns
    /// when to look again, if the link still holds them.
    fn idle_release(&mut self, now: Instant, parked: &Parked) -> Option<Instant> {
        let seen = Seen {
            quiet: parked.read && self.served.running() == 0 && !self.core.has_pending_calls(),
            holds_buffers: self.inbuf.capacity() > 0 || self.core.output_capacity() > 0,
            last_call_in: Instant::from_std(self.core.last_call_in()),
        };
        match self.idle.check(now, seen) {
            Verdict::Nothing => None,
            Verdict::LookAt(t) => Some(t),
            Verdict::Release => {
                self.buffered.release_idle(&mut self.inbuf);
                self.core.release_idle_output();
                None
            }
        }
    }

    /// The driver's next timer: the earliest of its deadlines, and
    /// `release` (see [`Driver::idle_release`]).
    fn next_deadline(&self, now: Instant, release: Option<Instant>) -> Option<Instant> {
        let mut next = self.core.poll_timeout().map(Instant::from_std);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(t) = release {
            consider(t);
        }
        if let Some(since) = self.output.stalled_since() {
            consider(since + self.config.write_timeout);
        }
        if let Some(t) = self.served.next_deadline() {
            consider(t);
        }
        if let Phase::Draining { .. } = self.phase {
            if let Some(t) = self.quiet_until(now) {
                consider(t);
            }
        }
        if let (Phase::Running, Some(t)) = (self.phase, self.idle_until()) {
            consider(t);
        }
        match self.phase {
            Phase::Draining { deadline }
            | Phase::Flushing { deadline }
            | Phase::Lingering { deadline } => consider(deadline),
            Phase::Running | Phase::Done => {}
        }
        next
    }
}

impl<IO> Driver<IO> {
    /// Fails every call sent, taken or queued with `reason`: as
    /// interrupted if it was sent (it may have run), else as closed.
    fn fail_calls(&mut self, reason: &Arc<str>) {
        let sent = self.core.take_user_calls();
        let unsent = self.backlog.iter().map(|q| q.reply);
        let outcomes = Closing {
            interrupted: || Err(Error::Interrupted(reason.to_string())),
            closed: || Err(Error::Closed(reason.to_string())),
        };
        self.shared.calls.close(reason, sent, unsent, outcomes);
    }
}

impl<IO> Drop for Driver<IO> {
    /// A driver dropped before it finished (its task was aborted, or a
    /// panic unwound through it) still marks the link closed, so callers
    /// and `Link::closed` never wait on a link nobody drives.
    fn drop(&mut self) {
        if self.outcome.is_none() && self.phase != Phase::Done {
            let reason: Arc<str> = Arc::from("link driver stopped");
            self.shared.signals.set_closed(reason.clone());
            self.fail_calls(&reason);
            self.shared.cancels.close();
        }
    }
}

impl<IO> Future for Driver<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Closed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Closed> {
        let this = self.get_mut();
        let result = this.run(cx);
        let metrics = this.config.metrics.as_deref();
        this.served.flush(&this.shared.stats, metrics);
        // Callers are woken once the driver is done with the shared state.
        this.wakeups.wake();
        result
    }
}

impl<IO> Driver<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// One poll of the driver: passes over every source of work until
    /// nothing happens, the budget runs out or the link ends.
    fn run(&mut self, cx: &mut Context<'_>) -> Poll<Closed> {
        let mut parked = Parked::default();
        let now = Instant::now();
        for _ in 0..BUDGET {
            if let Some(outcome) = self.outcome.take() {
                return Poll::Ready(outcome);
            }
            match self.step(cx, now, &mut parked) {
                Ok(true) => continue,
                Ok(false) => {
                    if let Some(outcome) = self.outcome.take() {
                        return Poll::Ready(outcome);
                    }
                    let release = self.idle_release(now, &parked);
                    if let Some(deadline) = self.next_deadline(now, release) {
                        if self.timer.deadline() != deadline {
                            self.timer.as_mut().reset(deadline);
                        }
                        if self.timer.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
                Err(e) => self.fail(e),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Whether `e` says only that the peer went away: the connection was reset
/// or aborted, or ended without TLS `close_notify`.
fn peer_vanished(e: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        cause = c.source();
    }
    false
}

/// Runs a link on the accepting side in the current task until it closes.
///
/// `on_open` receives the link handle at once, so a service can register it
/// (to drain it on stop, or to count it).
pub async fn serve<IO>(io: IO, setup: LinkSetup, on_open: impl FnOnce(Link)) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (link, driver, _handshake) = Driver::new(io, setup);
    on_open(link);
    driver.await
}

/// Runs a link on the connecting side: spawns its driver and waits for the
/// handshake. Returns the link and the peer's gateway.
pub async fn connect<IO>(io: IO, setup: LinkSetup) -> Result<(Link, RemoteObject), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    start_client(io, setup).opened().await
}

/// A connecting side's link whose driver runs, before its handshake has
/// completed.
pub(crate) struct Started {
    link: Link,
    /// On a direct link, the peer's gateway, to call at once (see
    /// `LinkCore::early_gateway`).
    pub(crate) early: Option<RemoteObject>,
    handshake: HandshakeReceiver,
}

impl Started {
    /// Waits for the handshake: the link and the peer's gateway, or why
    /// the link did not open (a server that refused the TLS session is
    /// reported here, not by the calls made early).
    pub(crate) async fn opened(self) -> Result<(Link, RemoteObject), Error> {
        match self.handshake.await {
            Ok(Ok(Some(gateway))) => Ok((self.link, gateway)),
            Ok(Ok(None)) => Err(Error::Handshake("peer gateway was not kept".to_owned())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Handshake(self.link.closed().await.to_string())),
        }
    }
}

/// Starts a link on the connecting side: spawns its driver.
pub(crate) fn start_client<IO>(io: IO, mut setup: LinkSetup) -> Started
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    setup.config.hold_peer = true;
    let (link, driver, handshake) = Driver::new(io, setup);
    let early = driver.core.early_gateway();
    tokio::spawn(driver);
    Started {
        link,
        early,
        handshake,
    }
}

#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod budget_tests;
