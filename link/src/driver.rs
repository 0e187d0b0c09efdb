//! The tokio driver of a link: one task that owns the connection and the
//! [`LinkCore`], reads and writes, runs incoming calls and routes results.
//!
//! The driver is a hand-written future rather than a loop of `select!`s so
//! that reading, writing, running calls and taking commands all happen in
//! one task with no locks and no extra wake-ups: results produced while
//! handling one batch of input are written with one `write` call.
//!
//! Back-pressure: reading pauses while `max_inflight` calls run or while
//! more than `out_high_water` bytes wait to be written; local calls wait in
//! a bounded channel meanwhile. A peer that stops reading is detected by the
//! write timeout and its link closed.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::calls::{Queued, Wakeups};
use crate::core::{Event, LinkConfig, LinkCore};
use crate::handle::Link;
use crate::info::LinkInfo;
use crate::model::{
    error_chain, Call, CallError, CallFuture, Error, Object, RemoteObject, Shared, Value,
};
use crate::proto::CallKind;

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

/// Read at least this much at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing link reads (and discards) for the peer's EOF after
/// shutting down its write side, so that closing does not reset the
/// connection while the peer is still sending.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
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

struct Inflight {
    call_id: u64,
    kind: CallKind,
    started: Instant,
    future: CallFuture,
}

impl Future for Inflight {
    type Output = (u64, CallKind, Instant, Result<Value, CallError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.future
            .as_mut()
            .poll(cx)
            .map(|r| (this.call_id, this.kind, this.started, r))
    }
}

/// Counters of one poll of the driver (see [`Driver::flush_tally`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    calls_out: u64,
    calls_in: u64,
    completed_in: u64,
    errors_in: u64,
    /// Calls answered in the pass that received them (latency zero).
    immediate: u64,
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
    /// Callers to wake once this poll is done with the shared state.
    wakeups: Wakeups,
    /// Calls counted during this poll, added to the shared counters at its
    /// end (a few atomic additions per poll, not per call).
    tally: Tally,
    /// Ids of the peer's objects whose proxies were dropped, taken from
    /// the shared signals and not yet released.
    released: Vec<i64>,
    inbuf: BytesMut,
    written: usize,
    need_flush: bool,
    read_closed: bool,
    stall_since: Option<Instant>,
    calls: FuturesUnordered<Inflight>,
    handshake_tx: Option<oneshot::Sender<Result<Option<RemoteObject>, Error>>>,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    outcome: Option<Closed>,
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
        let driver = Driver {
            io,
            core,
            shared: shared.clone(),
            config: setup.config,
            backlog: VecDeque::new(),
            wakeups: Wakeups::default(),
            tally: Tally::default(),
            released: Vec::new(),
            inbuf: BytesMut::with_capacity(READ_CHUNK),
            written: 0,
            need_flush: false,
            read_closed: false,
            stall_since: None,
            calls: FuturesUnordered::new(),
            handshake_tx: Some(hs_tx),
            phase: Phase::Running,
            timer: Box::pin(tokio::time::sleep_until(now)),
            outcome: None,
        };
        let mut driver = driver;
        if let Err(e) = start {
            driver.fail(e);
        }
        (Link::from_shared(shared), driver, hs_rx)
    }

    fn finish(&mut self, reason: impl Into<Arc<str>>, clean: bool) {
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
        } else {
            tracing::warn!(link = self.shared.id, peer = ?self.shared.info.peer_addr, %reason, "link closed on error");
        }
        // Every call sent, taken or queued fails with the reason.
        let mut held = self.core.take_user_calls();
        held.extend(self.backlog.iter().map(|q| q.reply));
        let closed = || Err(Error::Closed(reason.to_string()));
        self.shared.calls.close(&reason, held, closed);
        self.backlog.clear();
        self.wakeups.wake();
        if let Some(tx) = self.handshake_tx.take() {
            let _ = tx.send(Err(Error::Handshake(reason.to_string())));
        }
        self.calls = FuturesUnordered::new();
        self.outcome = Some(Closed { reason, clean });
    }

    fn fail(&mut self, e: Error) {
        let text = error_chain(&e);
        self.finish(text, false);
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
        self.core.output().len() - self.written
    }

    /// Sends a call the application made.
    fn handle_call(&mut self, call: Queued<Call>) -> Result<(), Error> {
        let Queued {
            call: Call { target, args, kind },
            reply: slot,
        } = call;
        self.tally.calls_out += 1;
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

    fn handle_events(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<(), Error> {
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
                } => {
                    self.tally.calls_in += 1;
                    let mut call = Inflight {
                        call_id,
                        kind,
                        started: now,
                        future,
                    };
                    // Most methods finish without waiting: answer those at
                    // once, sparing the set of running calls (an allocation
                    // and a wake-up each). The others go to the set, which
                    // polls them again and so takes over their wake-ups.
                    match Pin::new(&mut call).poll(cx) {
                        Poll::Ready((call_id, kind, _, result)) => {
                            self.finished(call_id, kind, Duration::ZERO, result)?
                        }
                        Poll::Pending => self.calls.push(call),
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

    /// Answers a call of the peer that has finished.
    fn finished(
        &mut self,
        call_id: u64,
        kind: CallKind,
        elapsed: Duration,
        result: Result<Value, CallError>,
    ) -> Result<(), Error> {
        if elapsed.is_zero() {
            self.tally.immediate += 1;
        } else if let Some(m) = &self.config.metrics {
            m.record(elapsed);
        }
        self.tally.completed_in += 1;
        if result.is_err() {
            self.tally.errors_in += 1;
        }
        self.core.respond(call_id, kind, result)
    }

    /// Adds the calls counted during this poll to the shared counters.
    fn flush_tally(&mut self) {
        let t = std::mem::take(&mut self.tally);
        if t == Tally::default() {
            return;
        }
        let stats = &self.shared.stats;
        stats.calls_out.fetch_add(t.calls_out, Ordering::Relaxed);
        // Calls in before calls completed, so a reader never sees more
        // completed than received.
        stats.calls_in.fetch_add(t.calls_in, Ordering::Relaxed);
        stats
            .completed_in
            .fetch_add(t.completed_in, Ordering::Relaxed);
        stats.errors_in.fetch_add(t.errors_in, Ordering::Relaxed);
        if let Some(m) = &self.config.metrics {
            m.record_immediate(t.immediate);
        }
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

        // Dropped proxies, and a close at once.
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

        // Local calls, while there is room to write. Calls are taken from
        // the shared queue only once the last batch is sent, so a full
        // output buffer leaves them queued and callers wait for room.
        if !parked.commands
            && !matches!(self.phase, Phase::Flushing { .. } | Phase::Lingering { .. })
        {
            while self.out_len() < self.config.out_high_water {
                match self.backlog.pop_front() {
                    Some(call) => {
                        self.handle_call(call)?;
                        progress = true;
                    }
                    None => {
                        let drain =
                            self.shared
                                .calls
                                .take(cx, &mut self.backlog, &mut self.wakeups);
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
        while let Poll::Ready(Some((call_id, kind, started, result))) =
            self.calls.poll_next_unpin(cx)
        {
            self.finished(
                call_id,
                kind,
                now.saturating_duration_since(started),
                result,
            )?;
            progress = true;
        }

        // Read, unless the peer has finished or we are saturated.
        let can_read = !parked.read
            && !self.read_closed
            && self.calls.len() < self.config.max_inflight
            && self.out_len() < self.config.out_high_water;
        if can_read {
            if self.inbuf.capacity() - self.inbuf.len() < READ_CHUNK / 4 {
                self.inbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.inbuf) {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    progress = true;
                    self.on_eof(now)?;
                }
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    if matches!(self.phase, Phase::Lingering { .. }) {
                        self.inbuf.clear();
                    } else {
                        self.core.handle_input(&mut self.inbuf, now_std)?;
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

        // Write.
        if self.write(cx, now)? {
            progress = true;
        }

        // Phase transitions.
        match self.phase {
            Phase::Draining { deadline } => {
                if self.calls.is_empty()
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
                if self.out_len() == 0 && !self.need_flush {
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
            Phase::Running | Phase::Done => {}
        }

        if let Some(since) = self.stall_since {
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
        let unanswered = self.core.handle_eof(&self.inbuf)?;
        if !self.core.is_open() {
            return Err(Error::Transport(vole_transport::Error::ClosedDuring(
                "link handshake",
            )));
        }
        // The peer will send nothing more: calls we made cannot complete.
        for slot in unanswered {
            let e = Error::Closed("peer closed the link".to_owned());
            self.shared.calls.complete(slot, Err(e), &mut self.wakeups);
        }
        self.begin_drain(now);
        Ok(())
    }

    /// Writes buffered output. Returns whether any byte was written.
    fn write(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<bool, Error> {
        let mut progress = false;
        loop {
            let out = self.core.output();
            if self.written >= out.len() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &out[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Err(Error::Transport(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into(),
                    ))
                }
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.need_flush = true;
                    self.stall_since = None;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(Error::Transport(e.into())),
                Poll::Pending => {
                    if self.stall_since.is_none() {
                        self.stall_since = Some(now);
                    }
                    break;
                }
            }
        }
        let out = self.core.output();
        if self.written > 0 && self.written == out.len() {
            out.clear();
            self.written = 0;
        } else if self.written > 64 * 1024 && self.written * 2 > out.len() {
            out.drain(..self.written);
            self.written = 0;
        }
        if self.need_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => return Err(Error::Transport(e.into())),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// While draining with [`LinkConfig::drain_quiet`]: when the peer will
    /// have been quiet long enough to close, if that is still to come. (A
    /// handshake in progress counts as the peer about to call; so does a
    /// link just created.)
    fn quiet_until(&self, now: Instant) -> Option<Instant> {
        let quiet = self.config.drain_quiet;
        if quiet.is_zero() || self.read_closed {
            return None;
        }
        let until = Instant::from_std(self.core.last_call_in()) + quiet;
        if !self.core.is_open() {
            // Waiting for the handshake (its completion counts as a call);
            // the phase deadline bounds the wait.
            return Some(until.max(now + quiet));
        }
        (until > now).then_some(until)
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut next = self.core.poll_timeout().map(Instant::from_std);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(since) = self.stall_since {
            consider(since + self.config.write_timeout);
        }
        if let Phase::Draining { .. } = self.phase {
            if let Some(t) = self.quiet_until(now) {
                consider(t);
            }
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

impl<IO> Drop for Driver<IO> {
    /// A driver dropped before it finished (its task was aborted, or a
    /// panic unwound through it) still marks the link closed, so callers
    /// and `Link::closed` never wait on a link nobody drives.
    fn drop(&mut self) {
        if self.outcome.is_none() && self.phase != Phase::Done {
            let reason: Arc<str> = Arc::from("link driver stopped");
            self.shared.signals.set_closed(reason.clone());
            let mut held = self.core.take_user_calls();
            held.extend(self.backlog.iter().map(|q| q.reply));
            let closed = || Err(Error::Closed(reason.to_string()));
            self.shared.calls.close(&reason, held, closed);
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
        this.flush_tally();
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
                    if let Some(deadline) = self.next_deadline(now) {
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
pub async fn connect<IO>(io: IO, mut setup: LinkSetup) -> Result<(Link, RemoteObject), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    setup.config.hold_peer = true;
    let (link, driver, handshake) = Driver::new(io, setup);
    tokio::spawn(driver);
    match handshake.await {
        Ok(Ok(Some(gateway))) => Ok((link, gateway)),
        Ok(Ok(None)) => Err(Error::Handshake("peer gateway was not kept".to_owned())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Handshake(link.closed().await.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;
    use crate::publish::Published;

    async fn echo((v,): (Value,)) -> Result<Value, CallError> {
        Ok(v)
    }

    /// A link whose peer asked for keep-alives sends them while idle. The
    /// keep-alive is produced by a timer, with no other traffic to wake the
    /// driver: it must still be written at once (VPy closes a link whose
    /// keep-alives are 1.5 periods late).
    #[tokio::test(start_paused = true)]
    async fn idle_link_writes_requested_keep_alives() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = LinkSetup {
            config: LinkConfig {
                hold_peer: false,
                keep_alive_min_send: Duration::from_millis(100),
                ..LinkConfig::default()
            },
            gateway: Published::new("Server")
                .method("echo", "", echo)
                .into_object(),
            info: LinkInfo::default(),
        };
        let server = tokio::spawn(serve(b, server, |_| {}));
        let client = LinkSetup {
            config: LinkConfig {
                keep_alive: Some(Duration::from_millis(100)),
                ..LinkConfig::default()
            },
            gateway: Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        let (link, gateway) = timeout(Duration::from_secs(10), connect(a, client))
            .await
            .expect("handshake in time")
            .expect("handshake");

        // Ten periods of silence from the application.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !link.is_closed(),
            "client link closed while idle: {}",
            link.closed().await
        );
        let v = timeout(Duration::from_secs(10), gateway.call("echo", (7,)))
            .await
            .expect("call in time")
            .expect("call after an idle second");
        assert_eq!(v, Value::Int(7));

        drop(gateway);
        timeout(Duration::from_secs(10), link.close())
            .await
            .expect("close in time");
        let closed = timeout(Duration::from_secs(10), server)
            .await
            .expect("server in time")
            .expect("server task");
        assert!(closed.clean, "server link: {}", closed.reason);
    }

    /// Calls queue up to the cap while the driver is busy; callers beyond
    /// it wait for room rather than queue without bound, and every queued
    /// call gets its outcome once the driver runs.
    #[tokio::test(start_paused = true)]
    async fn a_full_call_queue_makes_callers_wait() {
        use crate::calls::QUEUE_CAP;
        let (a, _b) = tokio::io::duplex(64 * 1024);
        let setup = LinkSetup {
            config: LinkConfig::default(),
            gateway: Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        let (link, driver, _hs) = Driver::new(a, setup);
        // A proxy for an object of the peer, as the handshake would give.
        let target = RemoteObject::new(1, link.shared().clone());
        let mut calls: Vec<_> = (0..=QUEUE_CAP)
            .map(|i| {
                let target = target.clone();
                tokio::spawn(async move { target.call("m", (i as i64,)).await })
            })
            .collect();
        // Let every caller run; the driver is not running yet.
        for _ in 0..1000 {
            if link.shared().calls.queued() == QUEUE_CAP {
                break;
            }
            tokio::task::yield_now().await;
        }
        // And once more, so the last caller has surely tried.
        tokio::task::yield_now().await;
        let queued = link.shared().calls.queued();
        assert_eq!(queued, QUEUE_CAP, "the queue is capped");
        let last = calls.pop().expect("one more than the cap");
        assert!(!last.is_finished(), "the caller beyond the cap waits");
        // Once the driver runs, every call gets an outcome (the handshake
        // never completed, so each is refused, not lost).
        let driver = tokio::spawn(driver);
        calls.push(last);
        for call in calls {
            let r = timeout(Duration::from_secs(5), call)
                .await
                .expect("an outcome in time")
                .expect("task");
            assert!(matches!(r, Err(Error::Usage(_))), "{r:?}");
        }
        link.abort();
        let _ = timeout(Duration::from_secs(5), driver).await;
    }

    /// A client and a server link over an in-memory pipe; the server's
    /// handle comes from `on_open`.
    async fn pair(server_config: LinkConfig) -> (Link, RemoteObject, Link, JoinHandle<Closed>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let setup = LinkSetup {
            config: server_config,
            gateway: Published::new("Server")
                .method("echo", "", echo)
                .method("stall", "", stall)
                .into_object(),
            info: LinkInfo::default(),
        };
        let server = tokio::spawn(serve(b, setup, move |link| {
            let _ = tx.send(link);
        }));
        let client = LinkSetup {
            config: LinkConfig::default(),
            gateway: Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        let (link, gateway) = timeout(Duration::from_secs(10), connect(a, client))
            .await
            .expect("handshake in time")
            .expect("handshake");
        let server_link = rx.await.expect("server link");
        (link, gateway, server_link, server)
    }

    async fn stall((): ()) -> Result<Value, CallError> {
        std::future::pending().await
    }

    /// With `drain_quiet`, a draining link stays open while the peer keeps
    /// calling (each call refused as closing, none lost on the wire) and
    /// closes once the peer has been quiet for the period.
    #[tokio::test(start_paused = true)]
    async fn a_drain_refuses_calls_until_the_peer_is_quiet() {
        let quiet = Duration::from_millis(200);
        let (link, gw, server_link, server) = pair(LinkConfig {
            hold_peer: false,
            drain_quiet: quiet,
            ..LinkConfig::default()
        })
        .await;
        let v = gw.call("echo", (1,)).await.expect("echo before the drain");
        assert_eq!(v, Value::Int(1));
        let drain = tokio::spawn(async move { server_link.close().await });
        let mut last = tokio::time::Instant::now();
        for _ in 0..5 {
            // Each call comes within the quiet period of the one before.
            tokio::time::sleep(quiet / 2).await;
            match gw.call("echo", (2,)).await {
                Err(e @ Error::Exception(_)) => {
                    assert!(e.to_string().contains("closing"), "{e}");
                }
                other => panic!("expected a closing refusal, got {other:?}"),
            }
            last = tokio::time::Instant::now();
        }
        assert!(!link.is_closed(), "closed while the peer was calling");
        let closed = timeout(Duration::from_secs(5), server)
            .await
            .expect("server closes")
            .expect("server task");
        assert!(closed.clean, "{}", closed.reason);
        let waited = tokio::time::Instant::now() - last;
        assert!(
            waited >= quiet && waited < quiet * 2,
            "closed {waited:?} after the last call"
        );
        timeout(Duration::from_secs(5), drain)
            .await
            .expect("drain returns")
            .expect("drain task");
        timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("the client follows");
    }

    /// With `drain_quiet`, a link drained as it is set up completes its
    /// handshake and refuses the peer's first call as closing, rather than
    /// failing the handshake or losing that call.
    #[tokio::test(start_paused = true)]
    async fn a_link_drained_at_once_still_refuses_its_first_call() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let setup = LinkSetup {
            config: LinkConfig {
                hold_peer: false,
                drain_quiet: Duration::from_millis(200),
                ..LinkConfig::default()
            },
            gateway: Published::new("Server")
                .method("echo", "", echo)
                .into_object(),
            info: LinkInfo::default(),
        };
        let server = tokio::spawn(serve(b, setup, |link| {
            tokio::spawn(async move { link.close().await });
        }));
        let client = LinkSetup {
            config: LinkConfig::default(),
            gateway: Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        let (link, gw) = timeout(Duration::from_secs(10), connect(a, client))
            .await
            .expect("handshake in time")
            .expect("the handshake completes");
        match gw.call("echo", (1,)).await {
            Err(e @ Error::Exception(_)) => assert!(e.to_string().contains("closing"), "{e}"),
            other => panic!("expected a closing refusal, got {other:?}"),
        }
        drop(gw);
        let closed = timeout(Duration::from_secs(5), server)
            .await
            .expect("server closes")
            .expect("server task");
        assert!(closed.clean, "{}", closed.reason);
        timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("the client follows");
    }

    /// Without `drain_quiet`, a drained idle link closes at once.
    #[tokio::test(start_paused = true)]
    async fn a_drain_without_quiet_closes_an_idle_link_at_once() {
        let (link, _gw, server_link, server) = pair(LinkConfig {
            hold_peer: false,
            ..LinkConfig::default()
        })
        .await;
        let started = tokio::time::Instant::now();
        timeout(Duration::from_secs(5), server_link.close())
            .await
            .expect("closes");
        assert!(started.elapsed() < Duration::from_millis(10));
        let closed = server.await.expect("server task");
        assert!(closed.clean, "{}", closed.reason);
        timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("the client follows");
    }

    /// When the peer closes its sending side (still reading, as a closing
    /// link lingers) while a call of ours waits for its answer, the call
    /// fails and the link closes at once: no waiting for an answer that can
    /// no longer come (it used to wait for the close grace).
    #[tokio::test(start_paused = true)]
    async fn peer_eof_with_a_call_pending_closes_without_waiting() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // client <-> proxy <-> server; the proxy can end the server-to-client
        // direction while still reading what the client sends.
        let (client_io, proxy_c) = tokio::io::duplex(64 * 1024);
        let (proxy_s, server_io) = tokio::io::duplex(64 * 1024);
        let (mut c_read, mut c_write) = tokio::io::split(proxy_c);
        let (mut s_read, mut s_write) = tokio::io::split(proxy_s);
        let half_close = Arc::new(tokio::sync::Notify::new());
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut c_read, &mut s_write).await;
        });
        let notified = half_close.clone();
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    n = s_read.read(&mut buf) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    },
                    _ = notified.notified() => break,
                }
            }
            let _ = c_write.shutdown().await;
            // Keep the server's side open.
            std::future::pending::<()>().await;
            drop(s_read);
        });
        let setup = LinkSetup {
            config: LinkConfig {
                hold_peer: false,
                ..LinkConfig::default()
            },
            gateway: Published::new("Server")
                .method("stall", "", stall)
                .into_object(),
            info: LinkInfo::default(),
        };
        let _server = tokio::spawn(serve(server_io, setup, |_| {}));
        let client = LinkSetup {
            config: LinkConfig::default(),
            gateway: Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        let (link, gw) = timeout(Duration::from_secs(10), connect(client_io, client))
            .await
            .expect("handshake in time")
            .expect("handshake");
        let pending = tokio::spawn(async move { gw.call("stall", ()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        half_close.notify_one();
        match timeout(Duration::from_secs(1), pending)
            .await
            .expect("the call ends")
            .expect("call task")
        {
            Err(Error::Closed(_)) => {}
            other => panic!("expected a closed link, got {other:?}"),
        }
        timeout(Duration::from_secs(1), link.closed())
            .await
            .expect("the link closes without waiting for the close grace");
        up.abort();
        down.abort();
    }
}
