//! Entry points for the VOL link fuzz targets in `fuzz/` and for the test
//! that replays their corpora on stable (`link/tests/fuzz_corpus.rs`).
//!
//! [`feed`] builds a service-side `LinkCore` exactly as the driver does,
//! plays a valid client prefix into it (VEC hello, VOL hello, handshake
//! object, the `finish()` exchange; how much of it is chosen by the input),
//! then feeds the rest of the input in chunks, doing what the driver would
//! with each event: run incoming calls that complete at once and answer
//! them, send dereferences for dropped proxies, discard the output as if
//! written. [`feed_client`] does the same for the side that connected: a
//! client's core, holding the service's gateway, with calls of its own in
//! flight whose answers (results, exceptions, errors, references) the
//! input may forge. Each panics only if an invariant is broken. Not part
//! of the API: hidden from the docs and free to change.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use vole_transport::vec::{self, EncodeConfig};
use vole_transport::{Entity, Owner, WireRef};

use crate::calls::Reply;
use crate::core::{Event, LinkConfig, LinkCore};
use crate::info::LinkInfo;
use crate::model::{CallError, Error, Object, RemoteObject, Shared, Value};
use crate::proto::{self, CallKind};
use crate::publish::Published;
use crate::router::Router;

/// The message cap of the fuzzed link: small, so the fuzzer reaches it.
const MAX_MESSAGE: usize = 16 * 1024;

/// How many prefix stages there are (see [`prefix`]).
const STAGES: u8 = 5;

async fn echo((v,): (Value,)) -> Result<Value, CallError> {
    Ok(v)
}

/// The gateway of the fuzzed link: `echo(x)` (sends back whatever arrived,
/// references included) and `urlget(("obj",))`, which makes a new local
/// object each time (so references flow both ways).
fn gateway() -> Arc<dyn Object> {
    let base = Published::new("FuzzGateway").method("echo", "", echo);
    Router::new(base)
        .route(["obj"], |_| {
            Published::new("FuzzObject")
                .method("echo", "", echo)
                .into_object()
        })
        .into_object()
}

fn wire(owner: Owner, id: i64) -> Entity {
    Entity::Ref(WireRef { owner, id })
}

fn message(id: i64, code: i64, payload: Entity) -> Entity {
    Entity::Tuple(vec![Entity::Int(id), Entity::Int(code), payload])
}

/// The first `stage` parts of a well-behaved client's opening:
///
/// 1. the VEC hello;
/// 2. the VOL hello;
/// 3. a reference to the client's handshake object (id 1);
/// 4. the answer to the service's `finish()` call (message 1: the client's
///    gateway, id 2) and the client's own `finish()` call on the service's
///    handshake object (id 1).
///
/// After stage 4 the handshake is complete.
fn prefix(stage: u8) -> Vec<u8> {
    let mut entities: Vec<Entity> = Vec::new();
    if stage >= 2 {
        entities.push(proto::hello());
    }
    if stage >= 3 {
        entities.push(wire(Owner::Sender, 1));
    }
    if stage >= 4 {
        entities.push(message(
            1,
            proto::code::CALL_RESULT,
            Entity::Tuple(vec![Entity::Int(1), wire(Owner::Sender, 2)]),
        ));
        entities.push(message(
            2,
            proto::code::METHOD_CALL,
            Entity::Tuple(vec![
                wire(Owner::Receiver, 1),
                Entity::Tuple(vec![Entity::str("finish")]),
            ]),
        ));
    }
    let mut out = Vec::new();
    if stage >= 1 {
        out.extend_from_slice(&vec::hello::line(Some(vec::Codec::Utf8)));
    }
    for e in &entities {
        // These are fixed, small, valid entities.
        match vec::encode_to_vec(e, EncodeConfig::default()) {
            Ok(bytes) => out.extend(bytes),
            Err(e) => panic!("prefix entity does not encode: {e}"),
        }
    }
    out
}

/// Calls of its own a client harness keeps waiting for answers.
const CLIENT_CALLS: usize = 8;

/// A core and the shared state the driver would hold.
struct Harness {
    core: LinkCore,
    shared: Arc<Shared>,
    /// Everything the core produced, as if written.
    output: usize,
    /// Whether this is the side that connected (it holds the peer's
    /// gateway and calls it).
    client: bool,
    /// The peer's gateway, held by a client.
    peer: Option<RemoteObject>,
    /// This side's calls waiting for an outcome.
    waiting: usize,
    /// This side's calls made so far (they pick the method and kind).
    made: usize,
}

impl Harness {
    fn new(now: Instant, client: bool) -> Harness {
        let shared = Arc::new(Shared::new(LinkInfo::default()));
        let config = LinkConfig {
            hold_peer: client,
            max_message: MAX_MESSAGE,
            max_depth: 64,
            ..LinkConfig::default()
        };
        let core = LinkCore::new(config, shared.clone(), gateway(), now);
        Harness {
            core,
            shared,
            output: 0,
            client,
            peer: None,
            waiting: 0,
            made: 0,
        }
    }

    /// A client keeps [`CLIENT_CALLS`] calls of its own on the peer's
    /// gateway waiting (of every kind), so that forged answers meet calls
    /// that expect them.
    fn call_more(&mut self) -> Result<(), Error> {
        let Some(peer) = self.peer.clone() else {
            return Ok(());
        };
        while self.waiting < CLIENT_CALLS {
            let kind = match self.made % 3 {
                0 => CallKind::Normal,
                1 => CallKind::Void,
                _ => CallKind::Oneway,
            };
            let method = if self.made.is_multiple_of(2) {
                "echo"
            } else {
                "urlget"
            };
            let args = vec![Value::from(method), Value::Int(self.made as i64)];
            let reply = Reply::Slot(self.made);
            self.made += 1;
            if self.core.call(&peer, args, kind, reply)?.is_some() {
                self.waiting += 1;
            }
        }
        Ok(())
    }

    /// Does what the driver does after input: handle events and dropped
    /// proxies until nothing changes, then "write" the output.
    fn pump(&mut self) -> Result<(), Error> {
        loop {
            let mut progress = false;
            for id in self.shared.signals.take_released() {
                self.core.release(id)?;
                progress = true;
            }
            while let Some(event) = self.core.poll_event() {
                progress = true;
                match event {
                    Event::Call {
                        call_id,
                        future,
                        kind,
                        ..
                    } => {
                        // Every method of the fuzz gateway completes at once.
                        if let Some(result) = future.now_or_never() {
                            self.core.respond(call_id, kind, result)?;
                        }
                    }
                    // A service drops the gateway (hold_peer is false); a
                    // client keeps it and starts calling.
                    Event::HandshakeDone(peer) => {
                        if self.client {
                            self.peer = Some(peer);
                            self.call_more()?;
                        }
                    }
                    // The outcome (and any proxies it carries) is dropped
                    // here, as a caller that went away would.
                    Event::Completed { .. } => {
                        self.waiting = self.waiting.saturating_sub(1);
                        self.call_more()?;
                    }
                    Event::Cancel { .. } => {}
                    Event::Idle => self.core.begin_drain(),
                }
            }
            if !progress {
                break;
            }
        }
        let out = self.core.output();
        self.output += out.len();
        out.clear();
        Ok(())
    }
}

/// Feeds `data` to a service-side link core.
///
/// `data[0]`: the low bits (mod 5) say how much of a valid client opening
/// comes first (see `prefix`); the rest seed the chunk sizes. The
/// remaining bytes follow the prefix.
///
/// Returns the error the core refused the input with (the link would
/// close on it), or `Ok` if it took everything.
///
/// Invariants: the core never panics, whatever arrives; a complete valid
/// opening completes the handshake; after every chunk the core's tables
/// hold no more entries than bytes received, the input it keeps buffered
/// is within the message cap, and the output it produced is within a fixed
/// multiple of the input (no amplification, no unbounded growth).
pub fn feed(data: &[u8]) -> Result<(), Error> {
    run(data, false)
}

/// Feeds `data` to a client-side link core: as [`feed`], but the core is
/// the connecting side's. The opening is the same (VOL is symmetric: the
/// service's opening is what a client sends, mirrored); once it completes,
/// the harness holds the service's gateway and keeps calls of every kind
/// (`echo` and `urlget`, normal, void and one-way) waiting on it, making a
/// new one for each outcome, so that the input's forged results,
/// exceptions, errors and references meet calls that wait for them.
///
/// Invariants: those of [`feed`], the core's tables allowing for the calls
/// the harness keeps waiting.
pub fn feed_client(data: &[u8]) -> Result<(), Error> {
    run(data, true)
}

fn run(data: &[u8], client: bool) -> Result<(), Error> {
    let Some((&control, rest)) = data.split_first() else {
        return Ok(());
    };
    let stage = control % STAGES;
    let max_chunk = 1 + usize::from(control / STAGES) * 64;
    let mut input = prefix(stage);
    let prefix_len = input.len();
    input.extend_from_slice(rest);

    let now = Instant::now();
    let mut h = Harness::new(now, client);
    if let Err(e) = h.core.start() {
        panic!("start failed: {e}");
    }
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut state: u32 = 0x2545_f491 ^ u32::from(control);
    let failed = loop {
        if fed == prefix_len && stage == STAGES - 1 {
            assert!(
                h.core.is_open(),
                "a valid opening did not complete the handshake"
            );
            assert!(
                !client || h.waiting > 0,
                "a client with the service's gateway made no calls"
            );
        }
        if fed == input.len() {
            break None;
        }
        // The prefix goes in whole (so the check above sees its end); the
        // rest in pseudo-random chunks.
        let n = if fed < prefix_len {
            prefix_len - fed
        } else {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (1 + state as usize % max_chunk).min(input.len() - fed)
        };
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        if let Err(e) = h.core.handle_input(&mut buf, now).and_then(|()| h.pump()) {
            break Some(e);
        }
        assert!(
            h.core.footprint() <= fed + 8 + CLIENT_CALLS,
            "core holds {} entries after {fed} bytes",
            h.core.footprint()
        );
        assert!(
            buf.len() <= MAX_MESSAGE,
            "{} bytes buffered, over the message cap",
            buf.len()
        );
        assert!(
            h.output <= 16 * fed + 4096,
            "{} bytes of output for {fed} bytes of input",
            h.output
        );
    };
    if let Some(e) = failed {
        assert!(fed > prefix_len, "the valid prefix was refused: {e}");
        return Err(e);
    }
    // End of stream and, much later, the timers: must not panic.
    let eof = h.core.handle_eof(&buf, false).map(drop);
    let _ = h
        .core
        .handle_timeout(now + std::time::Duration::from_secs(3600))
        .and_then(|()| h.pump());
    eof
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_handshake(msg: Entity) -> Vec<u8> {
        let mut data = vec![STAGES - 1];
        data.extend(vec::encode_to_vec(&msg, EncodeConfig::default()).expect("encodes"));
        data
    }

    #[test]
    fn every_prefix_stage_is_accepted() {
        for stage in 0..STAGES {
            feed(&[stage]).expect("a valid opening, then a clean end");
        }
    }

    #[test]
    fn an_echo_after_the_handshake_is_answered() {
        let call = message(
            3,
            proto::code::METHOD_CALL,
            Entity::Tuple(vec![
                wire(Owner::Receiver, 2),
                Entity::Tuple(vec![Entity::str("echo"), wire(Owner::Sender, 9)]),
            ]),
        );
        feed(&after_handshake(call)).expect("accepted");
    }

    #[test]
    fn a_client_takes_forged_answers_to_its_calls() {
        // The client's opening takes message ids 1 to 3 (its finish()
        // call and its answer to the service's among them), so its own
        // calls are 4, 5, ... (normal, void, one-way in turn: 4 normal,
        // 5 void, 7 normal).
        let answers = [
            message(
                3,
                proto::code::CALL_RESULT,
                Entity::Tuple(vec![Entity::Int(4), wire(Owner::Sender, 7)]),
            ),
            message(
                4,
                proto::code::CALL_EXCEPTION,
                Entity::Tuple(vec![Entity::Int(5), Entity::str("no")]),
            ),
            message(5, proto::code::CALL_ERROR, Entity::Int(7)),
        ];
        let mut data = vec![STAGES - 1];
        for a in &answers {
            data.extend(vec::encode_to_vec(a, EncodeConfig::default()).expect("encodes"));
        }
        feed_client(&data).expect("accepted");
        for stage in 0..STAGES {
            feed_client(&[stage]).expect("a valid opening, then a clean end");
        }
    }

    #[test]
    fn a_client_refuses_an_answer_to_a_call_it_never_made() {
        let stray = message(
            3,
            proto::code::CALL_RESULT,
            Entity::Tuple(vec![Entity::Int(999), Entity::None]),
        );
        let mut data = vec![STAGES - 1];
        data.extend(vec::encode_to_vec(&stray, EncodeConfig::default()).expect("encodes"));
        let e = feed_client(&data).expect_err("refused");
        assert!(e.to_string().contains("999"), "{e}");
    }

    #[test]
    fn garbage_after_the_handshake_is_refused() {
        let bad = message(3, 42, Entity::None);
        let e = feed(&after_handshake(bad)).expect_err("refused");
        assert!(e.to_string().contains("unknown message code 42"), "{e}");
        let mut data = vec![STAGES - 1, 0xff];
        data.extend_from_slice(b"junk");
        assert!(feed(&data).is_err());
    }
}
