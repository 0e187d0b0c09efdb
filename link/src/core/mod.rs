//! The VOL link state machine, without I/O.
//!
//! [`LinkCore`] is fed the bytes read from the connection
//! ([`LinkCore::handle_input`]) and the time ([`LinkCore::handle_timeout`]),
//! and is told what the local side wants (calls, results, dereferences). It
//! appends everything to send to an output buffer ([`LinkCore::output`]) and
//! reports what happened as [`Event`]s ([`LinkCore::poll_event`]). The driver
//! in [`crate::driver`] is a thin tokio task around it.
//!
//! The core does no I/O and reads no clock: the driver passes in the time
//! (a `std::time::Instant`) with every input and timer, so tests drive it
//! with a virtual clock and no runtime. Nothing in it is a tokio type.
//!
//! It owns the parts of VOL that are easy to get wrong:
//!
//! * the VEC hello, the VOL hello and the call-based handshake, in which each
//!   side calls `finish()` on the peer's handshake object and receives the
//!   peer's gateway; `finish()` is answered late if it arrives before this
//!   side is ready;
//! * message ids per direction and the matching of results to calls;
//! * the two object id spaces with send and receive counts, and the
//!   NOTIFY_DEREF / CONFIRM_DEREF protocol, so an object is released exactly
//!   when the peer holds no reference to it and none is in flight;
//! * keep-alive negotiation, sending and expiry.
//!
//! The parts with a state of their own have their own files: [`config`]
//! (the settings), [`handshake`] (the handshake object and the state of the
//! exchange) with [`standard`] (the core's part in the call-based
//! handshake), [`direct`] (the direct handshake between two vole peers,
//! agreed by TLS ALPN), [`refs`] (the id spaces and reference counts), [`keepalive`]
//! (periods, deadlines, flood check) and [`message`] (taking a message
//! apart as it is decoded). This file sequences them.
//!
//! Call order for a driver: [`LinkCore::start`] once; then whenever bytes
//! arrive, [`LinkCore::handle_input`]; drain [`LinkCore::poll_event`]; write out
//! [`LinkCore::output`]; arm a timer for [`LinkCore::poll_timeout`] and call
//! [`LinkCore::handle_timeout`] when it fires.

mod config;
mod direct;
mod handshake;
mod keepalive;
mod message;
mod refs;
mod standard;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use vole_transport::vec::{
    hello as vec_hello, Codec, DecodeConfig, Decoder, EncodeConfig, Encoder, Part,
};

use crate::calls::Reply;
use crate::info::CallContext;
use crate::model::{CallError, CallFuture, Error, Object, ObjectRef, RemoteObject, Shared, Value};
use crate::proto::{self, code, CallKind};
use crate::seqmap::SeqMap;
use crate::violation::ProtocolViolation as V;

pub use config::{LinkConfig, Overload, DEFAULT_MAX_BUFFERED, OVERLOADED};
use handshake::Handshake;
use keepalive::KeepAlive;
use message::{pair, read_message, Incoming, MethodName};
use refs::{object_key, RefTable};

/// What the output buffer is given when it is (re)allocated.
const OUT_CHUNK: usize = 4096;

/// What the core reports to its driver.
pub(crate) enum Event {
    /// The handshake completed; this is the peer's gateway.
    HandshakeDone(RemoteObject),
    /// The peer called one of this side's objects.
    Call {
        call_id: u64,
        future: CallFuture,
        kind: CallKind,
        /// The size of the call's message (what its arguments hold, near
        /// enough), for the buffer budgets.
        bytes: usize,
    },
    /// The peer gave up its call `call_id` (vole's cancel message).
    Cancel { call_id: u64 },
    /// A call this side made has an outcome, for `reply`.
    Completed {
        reply: Reply,
        result: Result<Value, Error>,
    },
    /// No references remain in either direction: the link is done.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    VecHello,
    VolHello,
    /// The standard handshake: the peer's handshake object comes next.
    PeerHandshake,
    /// The direct handshake: the peer's settings come next.
    PeerSettings,
    Running,
}

/// What a pending outgoing call is for.
#[derive(Debug)]
enum Pending {
    /// A call of the application's, whose outcome goes to this reply, made
    /// on this object (kept for a cancel message).
    User(Reply, RemoteObject),
    /// A call of the application's that its caller gave up: its answer is
    /// discarded.
    Cancelled,
    KeepAlive,
    Finish,
}

/// The sans-IO VOL link.
pub(crate) struct LinkCore {
    config: LinkConfig,
    shared: Arc<Shared>,
    context: CallContext,
    gateway: Arc<dyn Object>,
    phase: Phase,
    encoder: Encoder,
    decoder: Decoder,
    refs: RefTable,
    out: Vec<u8>,
    next_msg_id: i64,
    pending: SeqMap<Pending>,
    /// Entries of `pending` that are [`Pending::Cancelled`].
    cancelled: usize,
    events: VecDeque<Event>,
    hs: Handshake,
    draining: bool,
    /// Calls refused as closing since the drain began, and when the first
    /// was (the driver bounds how long a draining link goes on refusing).
    refused: Refused,
    /// The time as last told by the driver.
    now: Instant,
    handshake_deadline: Instant,
    /// When the peer last called (or the link was created, or its handshake
    /// completed).
    last_call_in: Instant,
    keep_alive: KeepAlive,
    /// The size of the message being handled.
    msg_len: usize,
}

/// The peer's calls a draining link refused as closing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Refused {
    /// How many.
    pub(crate) count: u64,
    /// When the first was.
    pub(crate) first: Option<Instant>,
}

impl LinkCore {
    /// A core for a new connection; `gateway` is what the peer receives from
    /// `finish()`.
    pub(crate) fn new(
        config: LinkConfig,
        shared: Arc<Shared>,
        gateway: Arc<dyn Object>,
        now: Instant,
    ) -> Self {
        let mut decoder = Decoder::new(DecodeConfig {
            max_message: config.max_message,
            max_depth: config.max_depth,
        });
        decoder.set_peer_codec(None);
        LinkCore {
            context: CallContext::new(shared.info.clone()),
            encoder: Encoder::new(EncodeConfig {
                str_codec: Some(Codec::Utf8),
                max_depth: config.max_depth,
            }),
            decoder,
            refs: RefTable::new(shared.clone()),
            out: Vec::with_capacity(OUT_CHUNK),
            next_msg_id: 1,
            pending: SeqMap::default(),
            cancelled: 0,
            events: VecDeque::new(),
            hs: Handshake {
                direct: shared
                    .info
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.alpn.as_deref() == Some(direct::ALPN)),
                ..Handshake::default()
            },
            draining: false,
            refused: Refused::default(),
            now,
            handshake_deadline: now + config.handshake_timeout,
            last_call_in: now,
            keep_alive: KeepAlive::new(now),
            msg_len: 0,
            phase: Phase::VecHello,
            config,
            shared,
            gateway,
        }
    }

    /// Queues this side's VEC hello and VOL hello, and on a link whose
    /// peer agreed on the direct handshake (see [`direct`]), its settings;
    /// calls may then be made at once, on [`LinkCore::early_gateway`].
    pub(crate) fn start(&mut self) -> Result<(), Error> {
        self.out
            .extend_from_slice(&vec_hello::line(Some(Codec::Utf8)));
        self.write_raw(&proto::hello())?;
        if self.hs.direct {
            self.start_direct()?;
        }
        Ok(())
    }

    /// Starts the direct handshake (see [`direct`]): queues this side's
    /// settings and takes both gateways as exchanged, so calls may go at
    /// once ([`LinkCore::early_gateway`]); the peer's gateway is reported
    /// when the peer has said its part.
    fn start_direct(&mut self) -> Result<(), Error> {
        self.write_raw(&direct::settings(&self.config))?;
        let gateway = self.gateway.clone();
        let key = object_key(&gateway);
        let id = self.refs.register_sent(gateway, key);
        if id != direct::GATEWAY_ID {
            // The table is empty when a link starts, so its first object
            // gets id 1; anything else is a bug here, not the peer's.
            return Err(Error::Handshake(format!(
                "direct handshake: gateway got id {id}, not {}",
                direct::GATEWAY_ID
            )));
        }
        self.hs.peer_gateway = Some(self.refs.received(direct::GATEWAY_ID));
        self.hs.done = true;
        self.last_call_in = self.now;
        Ok(())
    }

    /// On a direct link (see [`direct`]) whose peer has not yet sent its
    /// settings: the peer's gateway, to call before the handshake
    /// completes (the calls go out with this side's hellos). It is
    /// reported as usual, by [`Event::HandshakeDone`], once the peer's
    /// settings arrive.
    pub(crate) fn early_gateway(&self) -> Option<RemoteObject> {
        if !self.hs.direct {
            return None;
        }
        self.hs.peer_gateway.clone()
    }

    /// Whether the handshake is still under way: the peer has not yet sent
    /// all it owes (on a direct link, its hellos and settings).
    fn handshaking(&self) -> bool {
        !self.hs.done || !matches!(self.phase, Phase::Running)
    }

    /// Bytes waiting to be written.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The output buffer's capacity.
    pub(crate) fn output_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// Gives back the output buffer's allocation if all of it has been
    /// written, and the table of calls in flight if there are none: for a
    /// driver whose link is idle (the next message or call allocates them
    /// again).
    pub(crate) fn release_idle_output(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = Vec::new();
        }
        self.pending.release_if_empty();
    }

    /// The next event, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the handshake has completed.
    pub(crate) fn is_open(&self) -> bool {
        self.hs.done
    }

    /// When the peer last called one of this side's objects (or the link
    /// was created, or its handshake completed, if later).
    pub(crate) fn last_call_in(&self) -> Instant {
        self.last_call_in
    }

    /// The peer's calls refused as closing since the drain began.
    pub(crate) fn refused(&self) -> Refused {
        self.refused
    }

    /// Whether calls this side made are still waiting for results.
    /// (Calls given up wait for nothing: their answers are discarded.)
    pub(crate) fn has_pending_calls(&self) -> bool {
        self.pending.len() > self.cancelled
    }

    /// How many entries the core's tables and queues hold: what it keeps
    /// per message received. The fuzz harness bounds it by the input size.
    pub(crate) fn footprint(&self) -> usize {
        self.refs.local.len()
            + self.refs.peer.len()
            + self.pending.len()
            + self.events.len()
            + self.hs.deferred_finish.len()
            + self.keep_alive.footprint()
    }

    /// The whole length of the message being received, once its headers
    /// are in (the driver reserves room for it at once).
    pub(crate) fn pending_input(&self) -> Option<usize> {
        match self.phase {
            Phase::Running => self.decoder.pending_len(),
            _ => None,
        }
    }

    /// Stop accepting new calls from the peer: each gets an exception saying
    /// the link is closing. Calls already running finish normally.
    pub(crate) fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Tells the core the time, for what it records when sending (calls
    /// made without input or a timer still date their sending right).
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Feeds bytes read from the connection.
    pub(crate) fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), Error> {
        self.now = now;
        if buf.is_empty() {
            return Ok(());
        }
        self.keep_alive.last_recv = now;
        loop {
            match self.phase {
                Phase::VecHello => match vec_hello::parse(buf)? {
                    None => return Ok(()),
                    Some((codec, used)) => {
                        let _ = buf.split_to(used);
                        self.decoder.set_peer_codec(codec);
                        self.phase = Phase::VolHello;
                    }
                },
                Phase::VolHello => {
                    let Some(hello) = self.decoder.decode(buf, &mut self.refs)? else {
                        return Ok(());
                    };
                    let peer = proto::parse_hello(&hello)
                        .map_err(|reason| Error::Protocol(V::BadHello { reason }))?;
                    if let Some((license, url)) = &peer.copyleft {
                        tracing::debug!(link = self.shared.id, %license, %url, "peer announces copyleft license");
                    }
                    if self.hs.direct {
                        self.phase = Phase::PeerSettings;
                        continue;
                    }
                    self.publish_handshake_object()?;
                    self.phase = Phase::PeerHandshake;
                }
                Phase::PeerHandshake => {
                    let Some(obj) = self.decoder.decode(buf, &mut self.refs)? else {
                        return Ok(());
                    };
                    self.phase = Phase::Running;
                    self.peer_handshake_object(obj)?;
                }
                Phase::PeerSettings => {
                    let Some(settings) = self.decoder.decode(buf, &mut self.refs)? else {
                        return Ok(());
                    };
                    direct::agree(&settings, &self.config, &mut self.keep_alive, self.now)?;
                    if let Some(gateway) = self.hs.peer_gateway.take() {
                        self.events.push_back(Event::HandshakeDone(gateway));
                    }
                    tracing::debug!(link = self.shared.id, "direct link handshake completed");
                    self.phase = Phase::Running;
                }
                Phase::Running => {
                    let before = buf.len();
                    let Some(msg) = self
                        .decoder
                        .decode_with(buf, &mut self.refs, read_message)?
                    else {
                        return Ok(());
                    };
                    self.msg_len = before - buf.len();
                    tracing::trace!(link = self.shared.id, ?msg, "recv");
                    self.handle_message(msg, now)?;
                }
            }
        }
    }

    /// The peer closed its sending side. Returns the replies of the
    /// application's calls still waiting, which can get no outcome now.
    /// `discarded` says the driver dropped input it never handed over (so
    /// a message cut short is no protocol error).
    pub(crate) fn handle_eof(
        &mut self,
        buf: &BytesMut,
        discarded: bool,
    ) -> Result<Vec<Reply>, Error> {
        if !discarded && (self.decoder.is_mid_entity() || !buf.is_empty()) {
            return Err(Error::Transport(vole_transport::Error::Truncated(
                buf.len(),
            )));
        }
        // No answer can come any more: a graceful close must not wait for
        // one (the driver fails the callers).
        self.cancelled = 0;
        let replies = self.pending.drain().filter_map(|(_, p)| match p {
            Pending::User(reply, _) => Some(reply),
            Pending::Cancelled | Pending::KeepAlive | Pending::Finish => None,
        });
        Ok(replies.collect())
    }

    /// Calls `method` on the peer's object `target`; the outcome comes as
    /// an [`Event::Completed`] for `reply`. Returns the call id (none for
    /// one-way calls, which have no outcome).
    pub(crate) fn call(
        &mut self,
        target: &RemoteObject,
        args: Vec<Value>,
        kind: CallKind,
        reply: Reply,
    ) -> Result<Option<i64>, Error> {
        if target.link_id() != self.shared.id {
            return Err(Error::Usage("object belongs to another link".to_owned()));
        }
        let id = self.send_call(target, &args, kind)?;
        if kind == CallKind::Oneway {
            return Ok(None);
        }
        self.pending
            .insert(id as u64, Pending::User(reply, target.clone()));
        Ok(Some(id))
    }

    /// The caller of the call whose outcome goes to `reply` gave up: tells
    /// the peer with vole's cancel message (the one-way meta call
    /// `(None, "vole.cancel", call_id)` on the call's object, see
    /// [`proto::CANCEL`]) and discards the answer if one still comes.
    /// Returns whether such a call was waiting for its answer.
    ///
    /// Finds the call by a scan of the calls waiting: cancelling is rare,
    /// and the common path (sending and answering) keeps no index for it.
    pub(crate) fn cancel(&mut self, reply: Reply) -> Result<bool, Error> {
        let found = self.pending.iter_mut().find_map(|(id, p)| match p {
            Pending::User(r, _) if *r == reply => {
                Some((id, std::mem::replace(p, Pending::Cancelled)))
            }
            _ => None,
        });
        let Some((id, Pending::User(_, target))) = found else {
            return Ok(false);
        };
        self.cancelled += 1;
        let call_id = i64::try_from(id).unwrap_or(i64::MAX);
        self.send_call(&target, &proto::cancel_args(call_id), CallKind::Oneway)?;
        Ok(true)
    }

    /// Cancels every call of the dropped pipeline `pipe` still waiting for
    /// its answer, as [`LinkCore::cancel`] does one; returns their replies.
    pub(crate) fn cancel_pipe(&mut self, pipe: usize) -> Result<Vec<Reply>, Error> {
        let mut found = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if matches!(p, Pending::User(Reply::Pipe { pipe: q, .. }, _) if *q == pipe) {
                if let Pending::User(reply, target) = std::mem::replace(p, Pending::Cancelled) {
                    found.push((id, reply, target));
                }
            }
        }
        self.cancelled += found.len();
        let mut replies = Vec::with_capacity(found.len());
        for (id, reply, target) in found {
            let call_id = i64::try_from(id).unwrap_or(i64::MAX);
            self.send_call(&target, &proto::cancel_args(call_id), CallKind::Oneway)?;
            replies.push(reply);
        }
        Ok(replies)
    }

    /// The replies of every call of the application's still waiting for
    /// an outcome, which none will now get; they are forgotten here.
    pub(crate) fn take_user_calls(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut kept = Vec::new();
        self.cancelled = 0;
        for (id, p) in self.pending.drain() {
            match p {
                Pending::User(reply, _) => replies.push(reply),
                Pending::Cancelled => {}
                other => kept.push((id, other)),
            }
        }
        for (id, p) in kept {
            self.pending.insert(id, p);
        }
        replies
    }

    /// Answers an incoming call.
    pub(crate) fn respond(
        &mut self,
        call_id: u64,
        kind: CallKind,
        result: Result<Value, CallError>,
    ) -> Result<(), Error> {
        let call_id = call_id as i64;
        let result = match (kind, result) {
            (CallKind::Oneway, Ok(_)) => return Ok(()),
            (CallKind::Oneway, Err(e)) => {
                tracing::debug!(link = self.shared.id, call = call_id, error = %e, "one-way call failed");
                return Ok(());
            }
            (CallKind::Void, Ok(_)) => Ok(Value::None),
            (_, r) => r,
        };
        match result {
            Ok(value) => {
                let payload = [Part::Int(call_id), Part::Entity(&value)];
                if let Err(e) = self.send(code::CALL_RESULT, Part::Tuple(&payload)) {
                    // The result cannot be encoded (e.g. nested too deep):
                    // the caller gets a call error, the link stays up.
                    tracing::warn!(link = self.shared.id, call = call_id, error = %e, "result could not be sent");
                    self.send(code::CALL_ERROR, Part::Int(call_id))?;
                }
            }
            Err(CallError::Exception(args)) => {
                let exception = Value::Exception(args);
                let payload = [Part::Int(call_id), Part::Entity(&exception)];
                if let Err(e) = self.send(code::CALL_EXCEPTION, Part::Tuple(&payload)) {
                    tracing::warn!(link = self.shared.id, call = call_id, error = %e, "exception could not be sent");
                    self.send(code::CALL_ERROR, Part::Int(call_id))?;
                }
            }
            Err(CallError::Failed(reason)) => {
                tracing::debug!(link = self.shared.id, call = call_id, %reason, "call failed");
                self.send(code::CALL_ERROR, Part::Int(call_id))?;
            }
        }
        Ok(())
    }

    /// A proxy for the peer's object `id` was dropped.
    pub(crate) fn release(&mut self, id: i64) -> Result<(), Error> {
        match self.refs.release(id) {
            Some(recvs) => self.send(
                code::NOTIFY_DEREF,
                Part::Tuple(&[Part::Int(id), Part::Int(recvs)]),
            ),
            None => Ok(()),
        }
    }

    /// When the core next needs [`LinkCore::handle_timeout`].
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if self.handshaking() {
            consider(self.handshake_deadline);
        }
        if let Some(t) = self.keep_alive.deadline() {
            consider(t);
        }
        next
    }

    /// Advances timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.now = now;
        if self.handshaking() && now >= self.handshake_deadline {
            return Err(Error::Timeout("link handshake"));
        }
        if self.keep_alive.expired(now) {
            return Err(Error::Timeout("keep-alive"));
        }
        if self.keep_alive.send_due(now) {
            self.send(code::KEEP_ALIVE, Part::Entity(&Value::None))?;
        }
        Ok(())
    }

    // ---- internals -----------------------------------------------------

    fn write_raw(&mut self, entity: &Value) -> Result<(), Error> {
        self.write_part(&Part::Entity(entity))
    }

    fn write_part(&mut self, part: &Part<'_, ObjectRef>) -> Result<(), Error> {
        if self.out.capacity() == 0 {
            // Given back while idle (see `release_idle_output`).
            self.out.reserve(OUT_CHUNK);
        }
        self.refs.journal.clear();
        match self
            .encoder
            .encode_part(part, &mut self.refs, &mut self.out)
        {
            Ok(()) => {
                self.refs.journal.clear();
                Ok(())
            }
            Err(e) => {
                self.refs.rollback();
                Err(Error::Transport(e))
            }
        }
    }

    fn send(&mut self, code: i64, payload: Part<'_, ObjectRef>) -> Result<(), Error> {
        self.send_message(code, payload).map(|_| ())
    }

    /// Writes the message `(id, code, payload)`; the framing tuples are
    /// encoded in place, never built.
    fn send_message(&mut self, code: i64, payload: Part<'_, ObjectRef>) -> Result<i64, Error> {
        let id = self.next_msg_id;
        tracing::trace!(link = self.shared.id, id, code, ?payload, "send");
        self.write_part(&Part::Tuple(&[Part::Int(id), Part::Int(code), payload]))?;
        self.next_msg_id += 1;
        self.keep_alive.last_sent = self.now;
        Ok(id)
    }

    fn send_call(
        &mut self,
        target: &RemoteObject,
        args: &[Value],
        kind: CallKind,
    ) -> Result<i64, Error> {
        let target = ObjectRef::Remote(target.clone());
        let payload = [Part::Ref(&target), Part::Items(args)];
        self.send_message(kind.code(), Part::Tuple(&payload))
    }

    fn handle_message(&mut self, msg: Incoming, now: Instant) -> Result<(), Error> {
        match msg {
            Incoming::Call {
                call_id,
                kind,
                object,
                method,
                args,
            } => self.incoming_call(call_id, object, method, args, kind),
            Incoming::Outcome {
                msg_id,
                code,
                call_id,
                result,
            } => self.outcome(msg_id, code, call_id, result),
            Incoming::Other {
                msg_id,
                code,
                payload,
            } => self.other_message(msg_id, code, payload, now),
            Incoming::Violation(v) => Err(Error::Protocol(v)),
        }
    }

    /// The messages that are neither calls nor their outcomes (and call
    /// errors).
    fn other_message(
        &mut self,
        msg_id: i64,
        msg_code: i64,
        payload: Value,
        now: Instant,
    ) -> Result<(), Error> {
        let bad = |expected| {
            Error::Protocol(V::BadPayload {
                msg_id,
                code: msg_code,
                expected,
            })
        };
        match msg_code {
            code::CALL_ERROR => {
                let Value::Int(call_id) = payload else {
                    return Err(bad("a call id"));
                };
                self.outcome(msg_id, msg_code, call_id, Err(Error::CallError))
            }
            code::NOTIFY_DEREF => {
                let Some((id, Value::Int(count))) = pair(payload) else {
                    return Err(bad("(object id, count)"));
                };
                self.notify_deref(msg_id, id, count)
            }
            code::CONFIRM_DEREF => {
                let Value::Int(id) = payload else {
                    return Err(bad("an object id"));
                };
                self.confirm_deref(msg_id, id)
            }
            code::KEEP_ALIVE => {
                if !payload.is_none() {
                    return Err(bad("None"));
                }
                self.keep_alive.received(now).map_err(Error::Protocol)
            }
            other => Err(Error::Protocol(V::UnknownMessageCode {
                msg_id,
                code: other,
            })),
        }
    }

    fn incoming_call(
        &mut self,
        call_id: i64,
        object: Arc<dyn Object>,
        method: Option<MethodName>,
        mut args: Vec<Value>,
        kind: CallKind,
    ) -> Result<(), Error> {
        let msg_id = call_id;
        let call_id =
            u64::try_from(call_id).map_err(|_| Error::Protocol(V::NegativeCallId { msg_id }))?;
        if self
            .refs
            .local
            .get(&self.hs.our_id)
            .is_some_and(|e| Arc::ptr_eq(&e.object, &object))
        {
            if let Some(m) = &method {
                args.insert(0, Value::str(m.as_str()));
            }
            return self.handshake_call(call_id, kind, args);
        }
        if method.is_none() && kind == CallKind::Oneway {
            if let [Value::None, Value::Str(name), Value::Int(id)] = args.as_slice() {
                if name == proto::CANCEL {
                    // Any id is fine: a call that has finished, or that
                    // never was, has nothing to cancel.
                    if let Ok(call_id) = u64::try_from(*id) {
                        self.events.push_back(Event::Cancel { call_id });
                    }
                    return Ok(());
                }
            }
        }
        self.last_call_in = self.now;
        if self.draining {
            self.refused.count += 1;
            self.refused.first.get_or_insert(self.now);
            return self.respond(
                call_id,
                kind,
                Err(CallError::closing("the link is closing; call refused")),
            );
        }
        let cx = self.context.for_call(&self.shared.cancels, call_id);
        let future = match &method {
            Some(m) => object.call_method(cx, m.as_str(), args),
            None => object.call(cx, args),
        };
        self.events.push_back(Event::Call {
            call_id,
            future,
            kind,
            bytes: self.msg_len,
        });
        Ok(())
    }

    /// The outcome `result` of this side's call `call_id`, which message
    /// `msg_id` of code `code` carried.
    fn outcome(
        &mut self,
        msg_id: i64,
        code: i64,
        call_id: i64,
        result: Result<Value, Error>,
    ) -> Result<(), Error> {
        let Some(pending) = self.pending.remove(call_id as u64) else {
            return Err(Error::Protocol(V::ResultForUnknownCall {
                msg_id,
                code,
                call_id,
            }));
        };
        match pending {
            Pending::User(reply, _) => {
                self.events.push_back(Event::Completed { reply, result });
                Ok(())
            }
            Pending::Cancelled => {
                // The caller gave up; the peer answered before it heard.
                self.cancelled = self.cancelled.saturating_sub(1);
                tracing::trace!(
                    link = self.shared.id,
                    call = call_id,
                    "answer to a cancelled call discarded"
                );
                Ok(())
            }
            Pending::KeepAlive => self.keep_alive_answer(result),
            Pending::Finish => self.finish_answer(result),
        }
    }

    fn notify_deref(&mut self, msg_id: i64, id: i64, claimed: i64) -> Result<(), Error> {
        if self
            .refs
            .notify_deref(msg_id, id, claimed)
            .map_err(Error::Protocol)?
        {
            self.send(code::CONFIRM_DEREF, Part::Int(id))?;
            self.check_idle();
        }
        Ok(())
    }

    fn confirm_deref(&mut self, msg_id: i64, id: i64) -> Result<(), Error> {
        self.refs
            .confirm_deref(msg_id, id)
            .map_err(Error::Protocol)?;
        self.check_idle();
        Ok(())
    }

    fn check_idle(&mut self) {
        if self.hs.done && self.refs.is_empty() {
            self.events.push_back(Event::Idle);
        }
    }
}

#[cfg(test)]
mod tests;
