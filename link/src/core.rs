//! The VOL link state machine, without I/O.
//!
//! [`LinkCore`] is fed the bytes read from the connection
//! ([`LinkCore::handle_input`]) and the time ([`LinkCore::handle_timeout`]),
//! and is told what the local side wants (calls, results, dereferences). It
//! appends everything to send to an output buffer ([`LinkCore::output`]) and
//! reports what happened as [`Event`]s ([`LinkCore::poll_event`]). The driver
//! in [`crate::driver`] is a thin tokio task around it.
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
//! Call order for a driver: [`LinkCore::start`] once; then whenever bytes
//! arrive, [`LinkCore::handle_input`]; drain [`LinkCore::poll_event`]; write out
//! [`LinkCore::output`]; arm a timer for [`LinkCore::poll_timeout`] and call
//! [`LinkCore::handle_timeout`] when it fires.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use vole_transport::vec::{
    hello as vec_hello, Codec, DecodeConfig, Decoder, EncodeConfig, Encoder, Part, Reader,
    RefDecoder,
};
use vole_transport::{Entity, Owner, RefEncoder, WireRef};

use crate::calls::Reply;
use crate::ids::IdMap;
use crate::info::CallContext;
use crate::model::{
    CallError, CallFuture, Error, Object, ObjectRef, RemoteInner, RemoteObject, Shared, Value,
};
use crate::proto::{self, code, CallKind};
use crate::seqmap::SeqMap;
use crate::violation::ProtocolViolation as V;

/// Settings of one link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Keep the peer's gateway after the handshake. A service sets this to
    /// false: it never calls the client's gateway, so it releases it at once
    /// (VPy's `hold_peer=False`).
    pub hold_peer: bool,
    /// The handshake must complete within this time.
    pub handshake_timeout: Duration,
    /// Ask the peer to send keep-alives at this period; the link is closed
    /// if nothing arrives for 1.5 periods.
    pub keep_alive: Option<Duration>,
    /// The shortest keep-alive period this side agrees to send.
    pub keep_alive_min_send: Duration,
    /// Largest accepted message.
    pub max_message: usize,
    /// Deepest accepted entity nesting.
    pub max_depth: usize,
    /// Incoming calls that may run at once; reading pauses beyond this.
    pub max_inflight: usize,
    /// Output buffered beyond this many bytes pauses reading and local calls
    /// until the peer reads.
    pub out_high_water: usize,
    /// If buffered output makes no progress for this long, the peer is
    /// taken to have stopped reading and the link is closed.
    pub write_timeout: Duration,
    /// A graceful close that has not finished after this long is forced.
    pub close_grace: Duration,
    /// A graceful close keeps the connection open (refusing the peer's new
    /// calls as closing) until the link handshake is done and the peer has
    /// made no call for this long, or has closed its side: a call the peer
    /// sent before it could see the close is then refused, never lost on
    /// the wire. Zero closes as soon as running calls are answered. A
    /// service sets it; the link's creation counts as a call, so a link
    /// drained as it is set up still refuses its first call.
    pub drain_quiet: Duration,
    /// Where served-call latencies are recorded, if anywhere.
    pub metrics: Option<std::sync::Arc<crate::metrics::CallMetrics>>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            hold_peer: true,
            handshake_timeout: Duration::from_secs(30),
            keep_alive: None,
            keep_alive_min_send: Duration::from_secs(1),
            max_message: vole_transport::vec::DecodeConfig::default().max_message,
            max_depth: vole_transport::vec::DecodeConfig::default().max_depth,
            max_inflight: 1024,
            out_high_water: 1 << 20,
            write_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(10),
            drain_quiet: Duration::ZERO,
            metrics: None,
        }
    }
}

/// What the core reports to its driver.
pub(crate) enum Event {
    /// The handshake completed; this is the peer's gateway.
    HandshakeDone(RemoteObject),
    /// The peer called one of this side's objects.
    Call {
        call_id: u64,
        future: CallFuture,
        kind: CallKind,
    },
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
    PeerHandshake,
    Running,
}

/// The handshake object each side publishes; calls to it never reach user
/// code, the core answers them.
struct HandshakeObject;

impl Object for HandshakeObject {
    fn call(self: Arc<Self>, _cx: CallContext, _args: Vec<Value>) -> CallFuture {
        Box::pin(async { Err(CallError::failed("handshake object called out of band")) })
    }

    fn type_name(&self) -> &str {
        "VHandshake"
    }
}

struct LocalEntry {
    object: Arc<dyn Object>,
    key: usize,
    sends: u64,
}

struct PeerEntry {
    proxy: Weak<RemoteInner>,
    recvs: u64,
    deref_sent: bool,
}

/// The two id spaces of a link.
struct RefTable {
    shared: Arc<Shared>,
    local: IdMap<i64, LocalEntry>,
    local_ids: IdMap<usize, i64>,
    next_id: i64,
    peer: HashMap<i64, PeerEntry>,
    /// Local ids whose send count the current encode raised, to undo on
    /// failure.
    journal: Vec<i64>,
}

impl RefTable {
    fn register_local(&mut self, object: Arc<dyn Object>, key: usize) -> i64 {
        if let Some(id) = self.local_ids.get(&key) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.local_ids.insert(key, id);
        self.local.insert(
            id,
            LocalEntry {
                object,
                key,
                sends: 0,
            },
        );
        id
    }

    fn rollback(&mut self) {
        for id in self.journal.drain(..) {
            if let Some(entry) = self.local.get_mut(&id) {
                entry.sends -= 1;
                if entry.sends == 0 {
                    let key = entry.key;
                    self.local.remove(&id);
                    self.local_ids.remove(&key);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.peer.is_empty()
    }
}

fn object_key(object: &Arc<dyn Object>) -> usize {
    Arc::as_ptr(object) as *const () as usize
}

impl RefEncoder<ObjectRef> for RefTable {
    fn encode_ref(&mut self, r: &ObjectRef) -> Result<WireRef, vole_transport::Error> {
        let id = match r {
            ObjectRef::Remote(remote) if remote.link_id() == self.shared.id => {
                return Ok(WireRef {
                    owner: Owner::Receiver,
                    id: remote.id(),
                });
            }
            ObjectRef::Remote(remote) => {
                // A proxy from another link: serve it as a local object that
                // forwards calls.
                let key = remote.inner_key();
                let forward: Arc<dyn Object> = Arc::new(remote.clone());
                self.register_local(forward, key)
            }
            ObjectRef::Local(object) => self.register_local(object.clone(), object_key(object)),
        };
        if let Some(entry) = self.local.get_mut(&id) {
            entry.sends += 1;
        }
        self.journal.push(id);
        Ok(WireRef {
            owner: Owner::Sender,
            id,
        })
    }
}

impl RefDecoder<ObjectRef> for RefTable {
    fn decode_ref(&mut self, wire: WireRef) -> Result<ObjectRef, vole_transport::Error> {
        match wire.owner {
            Owner::Receiver => self
                .local
                .get(&wire.id)
                .map(|e| ObjectRef::Local(e.object.clone()))
                .ok_or(vole_transport::Error::UnknownObject { id: wire.id }),
            Owner::Sender => {
                let entry = self.peer.entry(wire.id).or_insert(PeerEntry {
                    proxy: Weak::new(),
                    recvs: 0,
                    deref_sent: false,
                });
                entry.recvs += 1;
                let proxy = match RemoteObject::upgrade(&entry.proxy) {
                    Some(p) => p,
                    None => {
                        let p = RemoteObject::new(wire.id, self.shared.clone());
                        entry.proxy = p.downgrade();
                        entry.deref_sent = false;
                        p
                    }
                };
                Ok(ObjectRef::Remote(proxy))
            }
        }
    }
}

#[derive(Default)]
struct Handshake {
    our_id: i64,
    peer_object: Option<RemoteObject>,
    keep_alive_call: Option<i64>,
    finish_call: Option<i64>,
    deferred_finish: Vec<u64>,
    allow_finish: bool,
    sent_gateway: bool,
    got_keep_alive_request: bool,
    peer_gateway: Option<RemoteObject>,
    done: bool,
}

/// What a pending outgoing call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A call of the application's, whose outcome goes to this reply.
    User(Reply),
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
    events: VecDeque<Event>,
    hs: Handshake,
    draining: bool,
    /// The time as last told by the driver.
    now: Instant,
    // Keep-alive and timers.
    handshake_deadline: Instant,
    last_sent: Instant,
    last_recv: Instant,
    /// When the peer last called (or the link was created, or its handshake
    /// completed).
    last_call_in: Instant,
    keep_alive_send: Option<Duration>,
    keep_alive_recv: Option<Duration>,
    keep_alive_times: VecDeque<Instant>,
}

const KEEP_ALIVE_EXPIRE: f64 = 1.5;
const KEEP_ALIVE_SPAM: f64 = 0.5;
const KEEP_ALIVE_WINDOW: usize = 5;

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
            refs: RefTable {
                shared: shared.clone(),
                local: IdMap::default(),
                local_ids: IdMap::default(),
                next_id: 1,
                peer: HashMap::new(),
                journal: Vec::new(),
            },
            out: Vec::with_capacity(4096),
            next_msg_id: 1,
            pending: SeqMap::default(),
            events: VecDeque::new(),
            hs: Handshake::default(),
            draining: false,
            now,
            handshake_deadline: now + config.handshake_timeout,
            last_sent: now,
            last_recv: now,
            last_call_in: now,
            keep_alive_send: None,
            keep_alive_recv: None,
            keep_alive_times: VecDeque::new(),
            phase: Phase::VecHello,
            config,
            shared,
            gateway,
        }
    }

    /// Queues this side's VEC hello and VOL hello.
    pub(crate) fn start(&mut self) -> Result<(), Error> {
        self.out
            .extend_from_slice(&vec_hello::line(Some(Codec::Utf8)));
        self.write_raw(&proto::hello())
    }

    /// Bytes waiting to be written.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
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

    /// Whether calls this side made are still waiting for results.
    pub(crate) fn has_pending_calls(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How many entries the core's tables and queues hold: what it keeps
    /// per message received. The fuzz harness bounds it by the input size.
    pub(crate) fn footprint(&self) -> usize {
        self.refs.local.len()
            + self.refs.peer.len()
            + self.pending.len()
            + self.events.len()
            + self.hs.deferred_finish.len()
            + self.keep_alive_times.len()
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
        self.last_recv = now;
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
                    // Publish the handshake object.
                    let hs: Arc<dyn Object> = Arc::new(HandshakeObject);
                    self.hs.our_id = self.refs.register_local(hs.clone(), object_key(&hs));
                    self.write_raw(&Entity::Ref(ObjectRef::Local(hs)))?;
                    self.phase = Phase::PeerHandshake;
                }
                Phase::PeerHandshake => {
                    let Some(obj) = self.decoder.decode(buf, &mut self.refs)? else {
                        return Ok(());
                    };
                    let Entity::Ref(ObjectRef::Remote(peer_hs)) = obj else {
                        return Err(Error::Protocol(V::NotAHandshakeObject {
                            found: obj.kind(),
                        }));
                    };
                    self.phase = Phase::Running;
                    self.hs.peer_object = Some(peer_hs.clone());
                    match self.config.keep_alive {
                        Some(period) => {
                            let ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
                            let id = self.send_call(
                                &peer_hs,
                                &[Value::str("keep_alive"), Value::Int(ms)],
                                CallKind::Normal,
                            )?;
                            self.pending.insert(id as u64, Pending::KeepAlive);
                            self.hs.keep_alive_call = Some(id);
                        }
                        None => self.can_finish(&peer_hs)?,
                    }
                }
                Phase::Running => {
                    let Some(msg) = self
                        .decoder
                        .decode_with(buf, &mut self.refs, read_message)?
                    else {
                        return Ok(());
                    };
                    tracing::trace!(link = self.shared.id, ?msg, "recv");
                    self.handle_message(msg, now)?;
                }
            }
        }
    }

    /// The peer closed its sending side. Returns the replies of the
    /// application's calls still waiting, which can get no outcome now.
    pub(crate) fn handle_eof(&mut self, buf: &BytesMut) -> Result<Vec<Reply>, Error> {
        if self.decoder.is_mid_entity() || !buf.is_empty() {
            return Err(Error::Transport(vole_transport::Error::Truncated(
                buf.len(),
            )));
        }
        // No answer can come any more: a graceful close must not wait for
        // one (the driver fails the callers).
        let replies = self.pending.drain().filter_map(|(_, p)| match p {
            Pending::User(reply) => Some(reply),
            Pending::KeepAlive | Pending::Finish => None,
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
        self.pending.insert(id as u64, Pending::User(reply));
        Ok(Some(id))
    }

    /// The replies of every call of the application's still waiting for
    /// an outcome, which none will now get; they are forgotten here.
    pub(crate) fn take_user_calls(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut kept = Vec::new();
        for (id, p) in self.pending.drain() {
            match p {
                Pending::User(reply) => replies.push(reply),
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
        let Some(entry) = self.refs.peer.get_mut(&id) else {
            return Ok(());
        };
        if entry.proxy.strong_count() > 0 {
            // A new proxy was made since; its drop will release.
            return Ok(());
        }
        let recvs = entry.recvs as i64;
        entry.deref_sent = true;
        self.send(
            code::NOTIFY_DEREF,
            Part::Tuple(&[Part::Int(id), Part::Int(recvs)]),
        )
    }

    /// When the core next needs [`LinkCore::handle_timeout`].
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.hs.done {
            consider(self.handshake_deadline);
        }
        if let Some(period) = self.keep_alive_send {
            consider(self.last_sent + period);
        }
        if let Some(period) = self.keep_alive_recv {
            consider(self.last_recv + period.mul_f64(KEEP_ALIVE_EXPIRE));
        }
        next
    }

    /// Advances timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.now = now;
        if !self.hs.done && now >= self.handshake_deadline {
            return Err(Error::Timeout("link handshake"));
        }
        if let Some(period) = self.keep_alive_recv {
            if now >= self.last_recv + period.mul_f64(KEEP_ALIVE_EXPIRE) {
                return Err(Error::Timeout("keep-alive"));
            }
        }
        if let Some(period) = self.keep_alive_send {
            if now >= self.last_sent + period {
                self.send(code::KEEP_ALIVE, Part::Entity(&Value::None))?;
            }
        }
        Ok(())
    }

    // ---- internals -----------------------------------------------------

    fn write_raw(&mut self, entity: &Value) -> Result<(), Error> {
        self.write_part(&Part::Entity(entity))
    }

    fn write_part(&mut self, part: &Part<'_, ObjectRef>) -> Result<(), Error> {
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
        self.last_sent = self.now;
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

    fn can_finish(&mut self, peer_hs: &RemoteObject) -> Result<(), Error> {
        self.hs.allow_finish = true;
        for call_id in std::mem::take(&mut self.hs.deferred_finish) {
            self.answer_finish(call_id)?;
        }
        let id = self.send_call(peer_hs, &[Value::str("finish")], CallKind::Normal)?;
        self.pending.insert(id as u64, Pending::Finish);
        self.hs.finish_call = Some(id);
        Ok(())
    }

    fn answer_finish(&mut self, call_id: u64) -> Result<(), Error> {
        let gw = Value::Ref(ObjectRef::Local(self.gateway.clone()));
        self.respond(call_id, CallKind::Normal, Ok(gw))?;
        self.hs.sent_gateway = true;
        self.check_handshake_done();
        Ok(())
    }

    fn check_handshake_done(&mut self) {
        if self.hs.done || !self.hs.sent_gateway || self.hs.peer_gateway.is_none() {
            return;
        }
        self.hs.done = true;
        // The peer calls next: a drain waits for that as for any call.
        self.last_call_in = self.now;
        // Release the peer's handshake object (its proxy drop sends the
        // NOTIFY_DEREF).
        self.hs.peer_object = None;
        if let Some(gw) = self.hs.peer_gateway.take() {
            self.events.push_back(Event::HandshakeDone(gw));
        }
        tracing::debug!(link = self.shared.id, "link handshake completed");
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
                self.keep_alive_received(now)
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
        self.last_call_in = self.now;
        if self.draining {
            return self.respond(
                call_id,
                kind,
                Err(CallError::exception("the link is closing; call refused")),
            );
        }
        let future = match &method {
            Some(m) => object.call_method(self.context.clone(), m.as_str(), args),
            None => object.call(self.context.clone(), args),
        };
        self.events.push_back(Event::Call {
            call_id,
            future,
            kind,
        });
        Ok(())
    }

    fn handshake_call(
        &mut self,
        call_id: u64,
        kind: CallKind,
        args: Vec<Value>,
    ) -> Result<(), Error> {
        match args.as_slice() {
            [Value::Str(m)] if m == "finish" => {
                if self.hs.sent_gateway {
                    return Err(Error::Protocol(V::FinishCalledTwice {
                        msg_id: call_id as i64,
                    }));
                }
                if self.hs.allow_finish {
                    self.answer_finish(call_id)
                } else {
                    self.hs.deferred_finish.push(call_id);
                    Ok(())
                }
            }
            [Value::Str(m), Value::Int(ms)] if m == "keep_alive" => {
                if self.hs.got_keep_alive_request || *ms <= 0 {
                    return Err(Error::Protocol(V::BadKeepAliveRequest {
                        msg_id: call_id as i64,
                        period_ms: *ms,
                    }));
                }
                self.hs.got_keep_alive_request = true;
                let min =
                    i64::try_from(self.config.keep_alive_min_send.as_millis()).unwrap_or(i64::MAX);
                let granted = (*ms).max(min);
                self.keep_alive_send = Some(Duration::from_millis(granted as u64));
                self.last_sent = Instant::now();
                self.respond(call_id, kind, Ok(Value::Int(granted)))
            }
            _ => Err(Error::Protocol(V::UnexpectedHandshakeCall {
                msg_id: call_id as i64,
                call: format!("{args:?}"),
            })),
        }
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
            Pending::User(reply) => {
                self.events.push_back(Event::Completed { reply, result });
                Ok(())
            }
            Pending::KeepAlive => {
                let requested = self.config.keep_alive.unwrap_or_default();
                match result {
                    Ok(Value::Int(ms))
                        if ms > 0 && Duration::from_millis(ms as u64) >= requested =>
                    {
                        self.keep_alive_recv = Some(Duration::from_millis(ms as u64));
                    }
                    other => {
                        return Err(Error::Handshake(format!(
                            "peer refused keep-alive: {:?}",
                            other.map(|v| v.kind())
                        )));
                    }
                }
                let peer_hs = self
                    .hs
                    .peer_object
                    .clone()
                    .ok_or_else(|| Error::Handshake("handshake object missing".to_owned()))?;
                self.can_finish(&peer_hs)
            }
            Pending::Finish => match result {
                Ok(Value::Ref(ObjectRef::Remote(gw))) => {
                    self.hs.peer_gateway = Some(gw);
                    self.check_handshake_done();
                    Ok(())
                }
                Ok(other) => Err(Error::Protocol(V::GatewayNotAnObject {
                    found: other.kind(),
                })),
                Err(e) => Err(Error::Handshake(format!("peer refused finish(): {e}"))),
            },
        }
    }

    fn notify_deref(&mut self, msg_id: i64, id: i64, claimed: i64) -> Result<(), Error> {
        let Some(entry) = self.refs.local.get(&id) else {
            return Err(Error::Protocol(V::DerefOfUnknownObject {
                msg_id,
                object_id: id,
            }));
        };
        let count = match u64::try_from(claimed) {
            Ok(count) if count <= entry.sends => count,
            _ => {
                return Err(Error::Protocol(V::ReferenceUnderflow {
                    msg_id,
                    object_id: id,
                    claimed,
                    sent: entry.sends,
                }))
            }
        };
        if count < entry.sends {
            // More references are in flight to the peer; it will notify again.
            return Ok(());
        }
        let key = entry.key;
        self.refs.local.remove(&id);
        self.refs.local_ids.remove(&key);
        self.send(code::CONFIRM_DEREF, Part::Int(id))?;
        self.check_idle();
        Ok(())
    }

    fn confirm_deref(&mut self, msg_id: i64, id: i64) -> Result<(), Error> {
        match self.refs.peer.get(&id) {
            Some(entry) if entry.deref_sent && entry.proxy.strong_count() == 0 => {
                self.refs.peer.remove(&id);
                self.check_idle();
                Ok(())
            }
            Some(_) => Err(Error::Protocol(V::UnrequestedDerefConfirmation {
                msg_id,
                object_id: id,
            })),
            None => Err(Error::Protocol(V::ConfirmOfUnknownObject {
                msg_id,
                object_id: id,
            })),
        }
    }

    fn check_idle(&mut self) {
        if self.hs.done && self.refs.is_empty() {
            self.events.push_back(Event::Idle);
        }
    }

    fn keep_alive_received(&mut self, now: Instant) -> Result<(), Error> {
        let Some(period) = self.keep_alive_recv else {
            // VPy accepts unrequested keep-alives; so do we.
            return Ok(());
        };
        self.keep_alive_times.push_back(now);
        if self.keep_alive_times.len() > KEEP_ALIVE_WINDOW + 1 {
            self.keep_alive_times.pop_front();
        }
        if self.keep_alive_times.len() == KEEP_ALIVE_WINDOW + 1 {
            let mut gaps: Vec<Duration> = self
                .keep_alive_times
                .iter()
                .zip(self.keep_alive_times.iter().skip(1))
                .map(|(a, b)| b.duration_since(*a))
                .collect();
            gaps.sort();
            let median_gap = gaps[gaps.len() / 2];
            if median_gap < period.mul_f64(KEEP_ALIVE_SPAM) {
                return Err(Error::Protocol(V::KeepAliveFlood {
                    agreed: period,
                    median_gap,
                }));
            }
        }
        Ok(())
    }
}

/// A VOL message as [`read_message`] takes it apart.
#[derive(Debug)]
enum Incoming {
    /// A call of one of this side's objects: `method(args)` if the method
    /// name could be read in place, otherwise the raw argument tuple.
    Call {
        call_id: i64,
        kind: CallKind,
        object: Arc<dyn Object>,
        method: Option<MethodName>,
        args: Vec<Value>,
    },
    /// A result or exception for a call this side made.
    Outcome {
        msg_id: i64,
        code: i64,
        call_id: i64,
        result: Result<Value, Error>,
    },
    /// Any other message, payload whole.
    Other {
        msg_id: i64,
        code: i64,
        payload: Value,
    },
    /// A message of the wrong shape: closes the link.
    Violation(V),
}

/// A method name read from a call, kept inline (no allocation) when short.
#[derive(Clone)]
pub(crate) struct MethodName {
    len: u8,
    bytes: [u8; MethodName::MAX],
}

impl MethodName {
    /// Longest name kept inline.
    const MAX: usize = 46;

    fn new(name: &str) -> Option<Self> {
        let len = u8::try_from(name.len())
            .ok()
            .filter(|n| usize::from(*n) <= Self::MAX)?;
        let mut bytes = [0; Self::MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(MethodName { len, bytes })
    }

    pub(crate) fn as_str(&self) -> &str {
        // Copied from a `&str` whole, so always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Reads a VOL message `(id, code, payload)`. The framing and the payloads
/// of calls and results are taken apart as they are read, so none of their
/// tuples is built; the other payloads are read whole.
fn read_message(r: &mut Reader<'_, RefTable>) -> Result<Incoming, vole_transport::Error> {
    // A message of an unexpected shape is read to its end (so that the
    // decoder agrees it was read) and reported.
    macro_rules! bad {
        ($violation:expr) => {{
            let violation = $violation;
            r.skip_rest::<ObjectRef>()?;
            return Ok(Incoming::Violation(violation));
        }};
    }
    match r.tuple()? {
        Some(3) => {}
        Some(n) => bad!(V::MalformedMessage {
            found: format!("a {n}-tuple")
        }),
        None => {
            let msg: Value = r.entity()?;
            bad!(V::MalformedMessage {
                found: msg.kind().to_owned()
            })
        }
    }
    let (Some(msg_id), Some(msg_code)) = (r.int(), r.int()) else {
        bad!(V::MalformedMessage {
            found: "a non-integer id or code".to_owned()
        })
    };
    let bad_payload = |expected| V::BadPayload {
        msg_id,
        code: msg_code,
        expected,
    };
    let kind = match msg_code {
        code::METHOD_CALL => CallKind::Normal,
        code::METHOD_CALL_VOID_RESULT => CallKind::Void,
        code::METHOD_CALL_NO_RETURN => CallKind::Oneway,
        code::CALL_RESULT | code::CALL_EXCEPTION => {
            if r.tuple()? != Some(2) {
                bad!(bad_payload("a 2-tuple (call id, value)"))
            }
            let Some(call_id) = r.int() else {
                bad!(bad_payload("a 2-tuple (call id, value)"))
            };
            let value: Value = r.entity()?;
            let result = if msg_code == code::CALL_RESULT {
                Ok(value)
            } else {
                Err(Error::Exception(match value {
                    Value::Exception(args) => args,
                    other => vec![other],
                }))
            };
            return Ok(Incoming::Outcome {
                msg_id,
                code: msg_code,
                call_id,
                result,
            });
        }
        _ => {
            let payload = r.entity()?;
            return Ok(Incoming::Other {
                msg_id,
                code: msg_code,
                payload,
            });
        }
    };
    if r.tuple()? != Some(2) {
        bad!(bad_payload("a 2-tuple (object, args)"))
    }
    let object = match r.entity()? {
        Value::Ref(ObjectRef::Local(object)) => object,
        Value::Ref(ObjectRef::Remote(_)) => bad!(V::BadCallTarget {
            msg_id,
            found: "the caller's own object"
        }),
        other => bad!(V::BadCallTarget {
            msg_id,
            found: other.kind()
        }),
    };
    let Some(n) = r.tuple()? else {
        bad!(bad_payload("(object, args) with a tuple of arguments"))
    };
    // The method name, read in place when it is short: most calls then
    // allocate only their arguments.
    let mut args = Vec::with_capacity(n);
    let method = match r.str()? {
        Some(name) => {
            let method = MethodName::new(name);
            if method.is_none() {
                // Too long to keep inline: the first argument, as read.
                args.push(Value::str(name));
            }
            method
        }
        None => {
            if n > 0 {
                // A meta call's None, or anything else: read whole.
                args.push(r.entity()?);
            }
            None
        }
    };
    for _ in 1..n {
        args.push(r.entity()?);
    }
    Ok(Incoming::Call {
        call_id: msg_id,
        kind,
        object,
        method,
        args,
    })
}

/// The two parts of a `(int, value)` payload.
fn pair(payload: Value) -> Option<(i64, Value)> {
    let Value::Tuple(parts) = payload else {
        return None;
    };
    let Ok([Value::Int(id), second]) = <[Value; 2]>::try_from(parts) else {
        return None;
    };
    Some((id, second))
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
