//! Two cores wired back to back, driven by hand with a virtual clock: plain
//! tests, no runtime. Time is an `Instant` taken once and moved forward by
//! hand; nothing waits for the real clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;

use super::*;
use crate::info::LinkInfo;
use crate::publish::Published;
use vole_transport::Entity;

struct Side {
    core: LinkCore,
    inbuf: BytesMut,
    events: Vec<Event>,
}

impl Side {
    /// The ids of the peer's objects whose proxies were dropped.
    fn released(&self) -> Vec<i64> {
        self.core.shared.signals.take_released()
    }
}

fn side(config: LinkConfig, gateway: Arc<dyn Object>, now: Instant) -> Side {
    let shared = Arc::new(Shared::new(LinkInfo::default()));
    let mut core = LinkCore::new(config, shared, gateway, now);
    core.start().expect("start");
    Side {
        core,
        inbuf: BytesMut::new(),
        events: Vec::new(),
    }
}

/// Moves bytes and releases until nothing changes. Returns the first error.
fn pump(a: &mut Side, b: &mut Side, now: Instant) -> Result<(), Error> {
    loop {
        let moved = transfer(a, b, now)? | transfer(b, a, now)?;
        if !moved {
            return Ok(());
        }
    }
}

fn transfer(from: &mut Side, to: &mut Side, now: Instant) -> Result<bool, Error> {
    let mut moved = false;
    for id in from.released() {
        from.core.release(id)?;
        moved = true;
    }
    let out = std::mem::take(from.core.output());
    if !out.is_empty() {
        moved = true;
        to.inbuf.extend_from_slice(&out);
        to.core.handle_input(&mut to.inbuf, now)?;
    }
    for s in [from, to] {
        while let Some(e) = s.core.poll_event() {
            s.events.push(e);
        }
    }
    Ok(moved)
}

fn take_gateway(s: &mut Side) -> RemoteObject {
    let pos = s
        .events
        .iter()
        .position(|e| matches!(e, Event::HandshakeDone(_)))
        .expect("handshake done");
    match s.events.remove(pos) {
        Event::HandshakeDone(gw) => gw,
        _ => unreachable!("checked above"),
    }
}

/// Runs the call events of `s` (their futures must be ready at once) and
/// answers them.
fn answer_calls(s: &mut Side) {
    let events = std::mem::take(&mut s.events);
    for e in events {
        match e {
            Event::Call {
                call_id,
                future,
                kind,
                ..
            } => {
                let result = future.now_or_never().expect("ready future");
                s.core.respond(call_id, kind, result).expect("respond");
            }
            other => s.events.push(other),
        }
    }
}

/// The outcomes the core reported, with the reply each is for.
fn completed(s: &mut Side) -> Vec<(Reply, Result<Value, Error>)> {
    let mut done = Vec::new();
    let events = std::mem::take(&mut s.events);
    for e in events {
        match e {
            Event::Completed { reply, result } => done.push((reply, result)),
            other => s.events.push(other),
        }
    }
    done
}

fn echo_gateway() -> Arc<dyn Object> {
    Published::new("G")
        .method(
            "echo",
            "",
            |(v,): (Value,)| async move { Ok::<_, CallError>(v) },
        )
        .into_object()
}

fn connected(a_cfg: LinkConfig, b_cfg: LinkConfig, now: Instant) -> (Side, Side) {
    let mut a = side(a_cfg, echo_gateway(), now);
    let mut b = side(b_cfg, echo_gateway(), now);
    pump(&mut a, &mut b, now).expect("handshake");
    (a, b)
}

#[test]
fn handshake_exchanges_gateways_and_releases_handshake_objects() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    assert!(a.core.is_open() && b.core.is_open());
    let gw_b = take_gateway(&mut a);
    let _gw_a = take_gateway(&mut b);
    // Both handshake objects were released and confirmed: each side holds
    // only its gateway (local) and the peer's gateway (peer).
    pump(&mut a, &mut b, now).expect("derefs");
    assert_eq!(a.core.refs.local.len(), 1);
    assert_eq!(a.core.refs.peer.len(), 1);
    assert_eq!(gw_b.id(), 2, "gateways get id 2 after the handshake object");
}

#[test]
fn calls_and_results_match_by_id() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw = take_gateway(&mut a);
    let c1 = a
        .core
        .call(
            &gw,
            vec![Value::str("echo"), Value::Int(1)],
            CallKind::Normal,
            Reply::Slot(1),
        )
        .expect("call")
        .expect("id");
    let c2 = a
        .core
        .call(
            &gw,
            vec![Value::str("echo"), Value::Int(2)],
            CallKind::Normal,
            Reply::Slot(2),
        )
        .expect("call")
        .expect("id");
    assert_eq!(
        a.core
            .call(
                &gw,
                vec![Value::str("echo"), Value::Int(3)],
                CallKind::Oneway,
                Reply::Slot(0),
            )
            .expect("call"),
        None
    );
    pump(&mut a, &mut b, now).expect("pump");
    answer_calls(&mut b);
    pump(&mut a, &mut b, now).expect("pump");
    let mut done = completed(&mut a);
    assert_ne!(c1, c2);
    done.sort_by_key(|(reply, _)| match reply {
        Reply::Slot(i) => *i,
        Reply::Pipe { .. } => usize::MAX,
    });
    assert_eq!(done.len(), 2, "one-way calls get no result");
    assert_eq!(done[0].0, Reply::Slot(1));
    assert_eq!(done[1].0, Reply::Slot(2));
    assert_eq!(done[0].1.as_ref().expect("ok"), &Value::Int(1));
    assert_eq!(done[1].1.as_ref().expect("ok"), &Value::Int(2));
}

#[test]
fn an_object_sent_twice_is_released_only_after_both_receipts() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw_b = take_gateway(&mut a);
    let obj: Arc<dyn Object> = echo_gateway();
    // a sends the same object twice, in two calls to b's echo.
    for _ in 0..2 {
        a.core
            .call(
                &gw_b,
                vec![
                    Value::str("echo"),
                    Value::Ref(ObjectRef::Local(obj.clone())),
                ],
                CallKind::Oneway,
                Reply::Slot(0),
            )
            .expect("call");
    }
    let id = *a
        .core
        .refs
        .local_ids
        .get(&object_key(&obj))
        .expect("registered");
    assert_eq!(a.core.refs.local[&id].sends, 2);
    // b decodes both before its proxies are dropped: one peer entry, two receipts.
    pump(&mut a, &mut b, now).expect("pump");
    answer_calls(&mut b);
    pump(&mut a, &mut b, now).expect("pump");
    assert!(
        !a.core.refs.local.contains_key(&id),
        "released once b's proxy is gone"
    );
    assert!(!b.core.refs.peer.contains_key(&id));
}

#[test]
fn a_deref_crossing_a_resend_does_not_release() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw_b = take_gateway(&mut a);
    let obj: Arc<dyn Object> = echo_gateway();
    let send = |a: &mut Side| {
        a.core
            .call(
                &gw_b,
                vec![
                    Value::str("echo"),
                    Value::Ref(ObjectRef::Local(obj.clone())),
                ],
                CallKind::Oneway,
                Reply::Slot(0),
            )
            .expect("call");
    };
    send(&mut a);
    // Deliver the first copy to b only.
    let out = std::mem::take(a.core.output());
    b.inbuf.extend_from_slice(&out);
    b.core.handle_input(&mut b.inbuf, now).expect("input");
    while let Some(e) = b.core.poll_event() {
        b.events.push(e);
    }
    answer_calls(&mut b); // the one-way echo result is dropped: b's proxy dies
    for id in b.released() {
        b.core.release(id).expect("release");
    }
    let notify = std::mem::take(b.core.output());
    assert!(!notify.is_empty(), "b notified the deref");
    // Meanwhile a sends the object again, before seeing the notice.
    send(&mut a);
    a.inbuf.extend_from_slice(&notify);
    a.core.handle_input(&mut a.inbuf, now).expect("notice");
    let id = *a
        .core
        .refs
        .local_ids
        .get(&object_key(&obj))
        .expect("still registered");
    assert_eq!(
        a.core.refs.local[&id].sends, 2,
        "count mismatch: not released"
    );
    // The second copy reaches b and dies too; now the counts match.
    pump(&mut a, &mut b, now).expect("pump");
    answer_calls(&mut b);
    pump(&mut a, &mut b, now).expect("pump");
    assert!(!a.core.refs.local.contains_key(&id));
    assert!(!b.core.refs.peer.contains_key(&id));
}

#[test]
fn keep_alive_is_negotiated_sent_and_expires() {
    let t0 = Instant::now();
    let a_cfg = LinkConfig {
        keep_alive: Some(Duration::from_millis(200)),
        ..LinkConfig::default()
    };
    let b_cfg = LinkConfig {
        keep_alive_min_send: Duration::from_millis(300),
        ..LinkConfig::default()
    };
    let (mut a, mut b) = connected(a_cfg, b_cfg, t0);
    assert_eq!(
        a.core.keep_alive.recv,
        Some(Duration::from_millis(300)),
        "granted the peer's minimum"
    );
    assert_eq!(b.core.keep_alive.send, Some(Duration::from_millis(300)));
    // b sends a keep-alive once idle for a period; a stays up.
    let t1 = t0 + Duration::from_millis(300);
    b.core.handle_timeout(t1).expect("b timer");
    assert!(!b.core.output().is_empty(), "keep-alive sent");
    pump(&mut a, &mut b, t1).expect("pump");
    a.core
        .handle_timeout(t1 + Duration::from_millis(400))
        .expect("within 1.5 periods of the last message");
    // Nothing more from b: a gives up after 1.5 periods of silence.
    match a.core.handle_timeout(t1 + Duration::from_millis(451)) {
        Err(Error::Timeout(what)) => assert_eq!(what, "keep-alive"),
        other => panic!("expected a keep-alive timeout, got {other:?}"),
    }
}

/// Flights until both sides are open: each round carries what `a` has to
/// send to `b`, then what `b` has to send back.
fn rounds_to_open(a_cfg: LinkConfig, b_cfg: LinkConfig) -> usize {
    let now = Instant::now();
    let mut a = side(a_cfg, echo_gateway(), now);
    let mut b = side(b_cfg, echo_gateway(), now);
    for round in 1..=10 {
        transfer(&mut a, &mut b, now).expect("a to b");
        transfer(&mut b, &mut a, now).expect("b to a");
        if a.core.is_open() && b.core.is_open() {
            return round;
        }
    }
    panic!("the handshake did not complete in 10 rounds");
}

#[test]
fn a_keep_alive_request_costs_the_handshake_no_round_trip() {
    let plain = rounds_to_open(LinkConfig::default(), LinkConfig::default());
    let with_keep_alive = |d| LinkConfig {
        keep_alive: Some(Duration::from_millis(d)),
        ..LinkConfig::default()
    };
    // `finish()` goes out with the keep-alive request, not after its answer.
    assert_eq!(
        rounds_to_open(LinkConfig::default(), with_keep_alive(200)),
        plain
    );
    assert_eq!(
        rounds_to_open(with_keep_alive(200), with_keep_alive(300)),
        plain
    );
}

#[test]
fn handshake_times_out() {
    let t0 = Instant::now();
    let mut a = side(
        LinkConfig {
            handshake_timeout: Duration::from_secs(1),
            ..LinkConfig::default()
        },
        echo_gateway(),
        t0,
    );
    assert_eq!(a.core.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    a.core
        .handle_timeout(t0 + Duration::from_millis(999))
        .expect("not yet");
    assert!(matches!(
        a.core.handle_timeout(t0 + Duration::from_secs(1)),
        Err(Error::Timeout("link handshake"))
    ));
}

#[test]
fn calls_arriving_while_draining_get_an_exception() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw = take_gateway(&mut a);
    b.core.begin_drain();
    a.core
        .call(
            &gw,
            vec![Value::str("echo"), Value::Int(1)],
            CallKind::Normal,
            Reply::Slot(0),
        )
        .expect("call");
    pump(&mut a, &mut b, now).expect("pump");
    assert!(
        !b.events.iter().any(|e| matches!(e, Event::Call { .. })),
        "not run"
    );
    match completed(&mut a).pop() {
        Some((_, Err(e @ Error::Closing(_)))) => assert!(e.never_ran()),
        other => panic!(
            "expected a closing refusal, got {:?}",
            other.map(|(id, r)| (id, r.map(|v| v.kind())))
        ),
    }
}

#[test]
fn protocol_violations_are_errors() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let _gw = take_gateway(&mut a);
    use crate::violation::ProtocolViolation as V;
    let msg =
        |code: i64, payload: Value| Value::Tuple(vec![Value::Int(100), Value::Int(code), payload]);
    let bad: Vec<(Value, V)> = vec![
        (
            msg(42, Value::None),
            V::UnknownMessageCode {
                msg_id: 100,
                code: 42,
            },
        ),
        (
            Value::Int(5),
            V::MalformedMessage {
                found: "int".to_owned(),
            },
        ),
        (
            Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
            V::MalformedMessage {
                found: "a 2-tuple".to_owned(),
            },
        ),
        (
            msg(4, Value::Tuple(vec![Value::Int(999), Value::None])),
            V::ResultForUnknownCall {
                msg_id: 100,
                code: 4,
                call_id: 999,
            },
        ),
        (
            msg(6, Value::Int(998)),
            V::ResultForUnknownCall {
                msg_id: 100,
                code: 6,
                call_id: 998,
            },
        ),
        (
            msg(4, Value::Int(1)),
            V::BadPayload {
                msg_id: 100,
                code: 4,
                expected: "a 2-tuple (call id, value)",
            },
        ),
        (
            msg(7, Value::Tuple(vec![Value::Int(77), Value::Int(1)])),
            V::DerefOfUnknownObject {
                msg_id: 100,
                object_id: 77,
            },
        ),
        (
            // The gateway (id 2) was sent once.
            msg(7, Value::Tuple(vec![Value::Int(2), Value::Int(2)])),
            V::ReferenceUnderflow {
                msg_id: 100,
                object_id: 2,
                claimed: 2,
                sent: 1,
            },
        ),
        (
            msg(7, Value::Tuple(vec![Value::Int(2), Value::Int(-1)])),
            V::ReferenceUnderflow {
                msg_id: 100,
                object_id: 2,
                claimed: -1,
                sent: 1,
            },
        ),
        (
            msg(8, Value::Int(2)),
            V::UnrequestedDerefConfirmation {
                msg_id: 100,
                object_id: 2,
            },
        ),
        (
            msg(8, Value::Int(55)),
            V::ConfirmOfUnknownObject {
                msg_id: 100,
                object_id: 55,
            },
        ),
        (
            msg(9, Value::Int(1)),
            V::BadPayload {
                msg_id: 100,
                code: 9,
                expected: "None",
            },
        ),
        (
            msg(1, Value::Int(1)),
            V::BadPayload {
                msg_id: 100,
                code: 1,
                expected: "a 2-tuple (object, args)",
            },
        ),
        (
            msg(1, Value::Tuple(vec![Value::Int(1), Value::Tuple(vec![])])),
            V::BadCallTarget {
                msg_id: 100,
                found: "int",
            },
        ),
    ];
    for (msg, expected) in bad {
        b.core.write_raw(&msg).expect("encode");
        let out = std::mem::take(b.core.output());
        let mut buf = BytesMut::from(&out[..]);
        match a.core.handle_input(&mut buf, now) {
            Err(Error::Protocol(v)) => assert_eq!(v, expected),
            other => panic!("{msg:?}: expected {expected}, got {other:?}"),
        }
        // A fresh pair for the next case: the failed core is done.
        let (na, nb) = connected(LinkConfig::default(), LinkConfig::default(), now);
        a = na;
        b = nb;
        let _ = take_gateway(&mut a);
    }
}

/// The core reads no clock: a link set up an hour "from now" on the
/// virtual clock dates its keep-alives from then, not from the wall clock.
#[test]
fn timers_follow_the_time_the_driver_passes_in() {
    let t0 = Instant::now() + Duration::from_secs(3600);
    let a_cfg = LinkConfig {
        keep_alive: Some(Duration::from_millis(200)),
        ..LinkConfig::default()
    };
    let b_cfg = LinkConfig {
        keep_alive_min_send: Duration::from_millis(300),
        ..LinkConfig::default()
    };
    let (a, b) = connected(a_cfg, b_cfg, t0);
    // b sends its first keep-alive one period after the handshake; a gives
    // up on b 1.5 periods after it last heard from it.
    assert_eq!(b.core.poll_timeout(), Some(t0 + Duration::from_millis(300)));
    assert_eq!(a.core.poll_timeout(), Some(t0 + Duration::from_millis(450)));
}

/// A call that takes `call` from `a` to `b`'s gateway, and the call id
/// the peer sees.
fn call_echo(a: &mut Side, gw: &RemoteObject, slot: usize) -> i64 {
    a.core
        .call(
            gw,
            vec![Value::str("echo"), Value::Int(slot as i64)],
            CallKind::Normal,
            Reply::Slot(slot),
        )
        .expect("call")
        .expect("id")
}

#[test]
fn a_cancelled_call_tells_the_peer_and_its_late_answer_is_discarded() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw = take_gateway(&mut a);
    let _ = take_gateway(&mut b);
    let id = call_echo(&mut a, &gw, 1);
    let kept = call_echo(&mut a, &gw, 2);
    pump(&mut a, &mut b, now).expect("calls reach b");
    assert!(a.core.has_pending_calls());

    assert!(
        a.core.cancel(Reply::Slot(1)).expect("cancel"),
        "was waiting"
    );
    assert!(
        !a.core.cancel(Reply::Slot(1)).expect("cancel"),
        "cancelled once"
    );
    assert!(
        !a.core.cancel(Reply::Slot(9)).expect("cancel"),
        "no such call"
    );
    pump(&mut a, &mut b, now).expect("cancel reaches b");
    let cancels: Vec<u64> = b
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Cancel { call_id } => Some(*call_id),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, [id as u64], "b is told which call");

    // b answers both anyway (as VPy would): the cancelled call's answer is
    // dropped without complaint, the other is delivered.
    answer_calls(&mut b);
    pump(&mut a, &mut b, now).expect("a late answer is no protocol error");
    let done = completed(&mut a);
    assert_eq!(
        done.len(),
        1,
        "{:?}",
        done.iter().map(|d| d.0).collect::<Vec<_>>()
    );
    assert_eq!(done[0].0, Reply::Slot(2));
    assert!(!a.core.has_pending_calls(), "call {kept} answered");
}

#[test]
fn the_cancel_message_is_a_one_way_meta_call_on_the_calls_object() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw = take_gateway(&mut a);
    let id = call_echo(&mut a, &gw, 1);
    pump(&mut a, &mut b, now).expect("call");
    a.core.cancel(Reply::Slot(1)).expect("cancel");
    // Decode what a sent as a plain entity.
    let out = std::mem::take(a.core.output());
    let mut decoder = Decoder::new(DecodeConfig::default());
    decoder.set_peer_codec(Some(Codec::Utf8));
    let mut buf = BytesMut::from(&out[..]);
    let mut refs = vole_transport::entity::RawRefs;
    let msg: Entity<vole_transport::WireRef> = decoder
        .decode(&mut buf, &mut refs)
        .expect("decodes")
        .expect("a whole message");
    let Entity::Tuple(parts) = msg else {
        panic!("a message is a tuple: {msg:?}");
    };
    assert_eq!(parts[1], Entity::Int(code::METHOD_CALL_NO_RETURN));
    let Entity::Tuple(payload) = &parts[2] else {
        panic!("(object, args): {:?}", parts[2]);
    };
    assert!(matches!(payload[0], Entity::Ref(_)), "{:?}", payload[0]);
    assert_eq!(
        payload[1],
        Entity::Tuple(vec![
            Entity::None,
            Entity::str("vole.cancel"),
            Entity::Int(id)
        ])
    );
}

#[test]
fn a_cancel_for_no_running_call_is_harmless() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw = take_gateway(&mut a);
    for id in [-1, 0, 12345] {
        a.core
            .call(
                &gw,
                proto::cancel_args(id),
                CallKind::Oneway,
                Reply::Slot(0),
            )
            .expect("send");
    }
    pump(&mut a, &mut b, now).expect("no protocol error");
    let cancels: Vec<u64> = b
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Cancel { call_id } => Some(*call_id),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, [0, 12345], "a negative id names no call");
    assert!(
        !b.events.iter().any(|e| matches!(e, Event::Call { .. })),
        "the cancel message is not a call of the object"
    );
    // And the link goes on.
    let _ = call_echo(&mut a, &gw, 3);
    pump(&mut a, &mut b, now).expect("call");
    answer_calls(&mut b);
    pump(&mut a, &mut b, now).expect("answer");
    assert_eq!(completed(&mut a).len(), 1);
}

#[test]
fn a_cancelled_exception_is_an_error_of_its_own() {
    let now = Instant::now();
    let (mut a, mut b) = connected(LinkConfig::default(), LinkConfig::default(), now);
    let gw = take_gateway(&mut a);
    let _ = call_echo(&mut a, &gw, 1);
    let _ = call_echo(&mut a, &gw, 2);
    pump(&mut a, &mut b, now).expect("calls");
    let mut ids = Vec::new();
    for e in std::mem::take(&mut b.events) {
        if let Event::Call { call_id, kind, .. } = e {
            ids.push((call_id, kind));
        }
    }
    b.core
        .respond(ids[0].0, ids[0].1, Err(CallError::cancelled("too slow")))
        .expect("respond");
    // Not vole's tag: an ordinary exception.
    let other = CallError::Exception(vec![Value::str("vole.cancelledx"), Value::str("x")]);
    b.core
        .respond(ids[1].0, ids[1].1, Err(other))
        .expect("respond");
    pump(&mut a, &mut b, now).expect("answers");
    let mut done = completed(&mut a);
    done.sort_by_key(|d| match d.0 {
        Reply::Slot(i) => i,
        Reply::Pipe { .. } => usize::MAX,
    });
    match &done[0].1 {
        Err(e @ Error::Cancelled(reason)) => {
            assert_eq!(reason, "too slow");
            assert!(e.is_remote());
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(
        matches!(done[1].1, Err(Error::Exception(_))),
        "{:?}",
        done[1].1
    );
}

/// A side whose TLS peer agreed on the direct handshake.
fn direct_side(config: LinkConfig, now: Instant) -> Side {
    let info = LinkInfo {
        tls: Some(crate::info::TlsInfo {
            alpn: Some(direct::ALPN.to_owned()),
            ..crate::info::TlsInfo::default()
        }),
        ..LinkInfo::default()
    };
    let shared = Arc::new(Shared::new(info));
    let mut core = LinkCore::new(config, shared, echo_gateway(), now);
    core.start().expect("start");
    Side {
        core,
        inbuf: BytesMut::new(),
        events: Vec::new(),
    }
}

#[test]
fn a_direct_handshake_lets_the_first_call_go_with_the_hellos() {
    let now = Instant::now();
    let mut a = direct_side(LinkConfig::default(), now);
    let mut b = direct_side(LinkConfig::default(), now);
    // Both know the peer's gateway before a byte has moved, and may call.
    let early_b = a.core.early_gateway().expect("a has b's gateway");
    assert!(b.core.early_gateway().is_some());
    assert!(a.core.is_open() && b.core.is_open());
    assert_eq!(early_b.id(), 1);
    call_echo(&mut a, &early_b, 7);
    drop(early_b);
    // One flight each way: a's hellos, settings and call; b's hellos,
    // settings and answer. The handshake completes on each side as the
    // peer's settings arrive.
    transfer(&mut a, &mut b, now).expect("a to b");
    let gw_a = take_gateway(&mut b);
    answer_calls(&mut b);
    transfer(&mut b, &mut a, now).expect("b to a");
    let gw_b = take_gateway(&mut a);
    assert_eq!((gw_a.id(), gw_b.id()), (1, 1));
    let done = completed(&mut a);
    assert_eq!(done.len(), 1);
    assert!(matches!(&done[0], (Reply::Slot(7), Ok(Value::Int(7)))));
    assert!(!a.core.handshaking() && !b.core.handshaking());
    assert!(a.core.early_gateway().is_none(), "reported, not kept");
    // Releasing a gateway works as for one that came on the wire.
    drop(gw_a);
    pump(&mut a, &mut b, now).expect("derefs");
    assert_eq!(a.core.refs.local.len(), 0, "b released a's gateway");
    assert_eq!(b.core.refs.peer.len(), 0);
    assert_eq!(b.core.refs.local.len(), 1, "a still holds b's");
}

#[test]
fn a_direct_handshake_agrees_keep_alives_as_the_standard_one_does() {
    let t0 = Instant::now();
    let mut a = direct_side(
        LinkConfig {
            keep_alive: Some(Duration::from_millis(200)),
            ..LinkConfig::default()
        },
        t0,
    );
    let mut b = direct_side(
        LinkConfig {
            keep_alive_min_send: Duration::from_millis(300),
            ..LinkConfig::default()
        },
        t0,
    );
    pump(&mut a, &mut b, t0).expect("handshake");
    assert_eq!(a.core.keep_alive.recv, Some(Duration::from_millis(300)));
    assert_eq!(b.core.keep_alive.send, Some(Duration::from_millis(300)));
    assert_eq!(a.core.keep_alive.send, None);
    assert_eq!(b.core.keep_alive.recv, None);
}

#[test]
fn a_direct_side_refuses_a_standard_peer_and_waits_no_longer_than_the_deadline() {
    let t0 = Instant::now();
    let mut a = direct_side(LinkConfig::default(), t0);
    let mut b = side(LinkConfig::default(), echo_gateway(), t0);
    // The standard peer's handshake object is no settings entity.
    let mut err = None;
    for _ in 0..4 {
        if let Err(e) = transfer(&mut b, &mut a, t0).and_then(|_| transfer(&mut a, &mut b, t0)) {
            err = Some(e);
            break;
        }
    }
    assert!(
        matches!(
            err,
            Some(Error::Protocol(V::BadDirectSettings { .. }))
                | Some(Error::Protocol(V::NotAHandshakeObject { .. }))
        ),
        "{err:?}"
    );
    // A peer that sends nothing: the handshake deadline still holds,
    // though calls could be made at once.
    let mut c = direct_side(
        LinkConfig {
            handshake_timeout: Duration::from_secs(1),
            ..LinkConfig::default()
        },
        t0,
    );
    assert!(c.core.is_open());
    assert_eq!(c.core.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    assert!(matches!(
        c.core.handle_timeout(t0 + Duration::from_secs(1)),
        Err(Error::Timeout("link handshake"))
    ));
}
