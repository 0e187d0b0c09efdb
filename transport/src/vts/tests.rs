//! Replays of VPy-captured transcripts (`transport/tests/fixtures/vts/`,
//! made by `capture.py` there) in both roles, and bad input.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::vec::{encode_to_vec, DecodeConfig, EncodeConfig};
use crate::Entity;

const CASES: [&str; 6] = [
    include_str!("../../tests/fixtures/vts/case-blowfish-cbc.json"),
    include_str!("../../tests/fixtures/vts/case-blowfish-ofb.json"),
    include_str!("../../tests/fixtures/vts/case-blowfish128-cbc.json"),
    include_str!("../../tests/fixtures/vts/case-blowfish128-ofb.json"),
    include_str!("../../tests/fixtures/vts/case-blowfish-cbc-clientkey.json"),
    include_str!("../../tests/fixtures/vts/case-blowfish128-ofb-clientkey.json"),
];
const KEYS: &str = include_str!("../../tests/fixtures/vts/keys.json");

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim_start_matches("0x");
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn key(role: &str) -> Arc<VtsKey> {
    let keys: Value = serde_json::from_str(KEYS).expect("keys.json");
    let part = |p: &str| unhex(keys[role][p].as_str().expect("key part"));
    Arc::new(
        VtsKey::from_components(&part("n"), &part("e"), &part("d"), &part("p"), &part("q"))
            .expect("key"),
    )
}

/// Hands out the recorded draws, checking each has the size asked for;
/// when `.1` is set, also that every draw was used.
struct Replay(VecDeque<Vec<u8>>, bool);

impl Random for Replay {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let next = self.0.pop_front().expect("VPy made no further draw");
        assert_eq!(next.len(), buf.len(), "draw size differs from VPy's");
        buf.copy_from_slice(&next);
        Ok(())
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if self.1 && !std::thread::panicking() {
            assert!(self.0.is_empty(), "{} VPy draws not replayed", self.0.len());
        }
    }
}

struct Case {
    name: String,
    suite: Suite,
    client_key: bool,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    client_draws: Vec<Vec<u8>>,
    server_draws: Vec<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    CASES
        .iter()
        .map(|text| {
            let v: Value = serde_json::from_str(text).expect("case json");
            let draws = |k: &str| {
                v[k].as_array()
                    .expect("draws")
                    .iter()
                    .map(|d| unhex(d.as_str().expect("hex")))
                    .collect()
            };
            let (c, m) = (
                v["cipher"].as_str().expect("cipher"),
                v["mode"].as_str().expect("mode"),
            );
            Case {
                name: format!("{c}-{m} client_key={}", v["client_key"]),
                suite: Suite {
                    cipher: Cipher::from_name(c).expect("cipher"),
                    mode: Mode::from_name(m).expect("mode"),
                },
                client_key: v["client_key"].as_bool().expect("client_key"),
                c2s: unhex(v["c2s"].as_str().expect("c2s")),
                s2c: unhex(v["s2c"].as_str().expect("s2c")),
                client_draws: draws("client_draws"),
                server_draws: draws("server_draws"),
            }
        })
        .collect()
}

/// What a stock VPy client without PyCrypto offers.
fn vpy_offer() -> Vec<Suite> {
    [
        "blowfish-cbc",
        "blowfish-ofb",
        "blowfish128-cbc",
        "blowfish128-ofb",
    ]
    .iter()
    .filter_map(|s| Suite::parse(s))
    .collect()
}

fn server_for(case: &Case) -> Vts {
    let settings = ServerSettings {
        key: key("server"),
        suites: vec![case.suite],
    };
    Vts::server_with(
        Arc::new(settings),
        Box::new(Replay(case.server_draws.clone().into(), true)),
    )
}

fn client_for(case: &Case, trust: VtsTrust) -> Vts {
    let strict =
        matches!(trust, VtsTrust::Pinned(fp) if fp == key("server").public().fingerprint());
    let settings = ClientSettings {
        trust,
        key: case.client_key.then(|| key("client")),
        suites: vpy_offer(),
    };
    Vts::client_with(
        Arc::new(settings),
        Box::new(Replay(case.client_draws.clone().into(), strict)),
    )
}

fn pinned() -> VtsTrust {
    VtsTrust::Pinned(key("server").public().fingerprint())
}

/// Runs a vole client against a vole server in memory, both replaying
/// VPy's draws; returns what each sent during the handshake.
fn handshake(client: &mut Vts, server: &mut Vts) -> (Vec<u8>, Vec<u8>) {
    let (mut c_sent, mut s_sent) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let c = client.take_output();
        c_sent.extend_from_slice(&c);
        server.receive(&c).expect("server");
        let s = server.take_output();
        s_sent.extend_from_slice(&s);
        client.receive(&s).expect("client");
        if client.is_established() && server.is_established() && !client.has_output() {
            return (c_sent, s_sent);
        }
    }
    panic!("handshake did not finish");
}

/// Splits decrypted records off `data` with `vts`'s opener.
fn records(vts: &mut Vts, data: &[u8]) -> Vec<Vec<u8>> {
    let recv = vts.recv.as_mut().expect("established");
    recv.push(data);
    let mut out = Vec::new();
    // One record at a time, to keep VPy's record boundaries.
    while let Some(one) = recv.open_one().expect("record") {
        out.push(one);
    }
    assert_eq!(recv.buffered(), 0, "trailing bytes after the last record");
    out
}

#[test]
fn both_roles_reproduce_vpy_transcripts_byte_for_byte() {
    for case in cases() {
        let mut client = client_for(&case, pinned());
        let mut server = server_for(&case);
        let (c_hs, s_hs) = handshake(&mut client, &mut server);
        assert_eq!(
            c_hs,
            case.c2s[..c_hs.len()],
            "client handshake bytes, {}",
            case.name
        );
        assert_eq!(
            s_hs,
            case.s2c[..s_hs.len()],
            "server handshake bytes, {}",
            case.name
        );
        assert_eq!(client.suite(), Some(case.suite));
        assert_eq!(
            client.peer_key().map(PublicKey::fingerprint_hex),
            Some(key("server").public().fingerprint_hex())
        );
        assert_eq!(
            server.peer_key().map(PublicKey::fingerprint_hex),
            case.client_key
                .then(|| key("client").public().fingerprint_hex()),
            "{}",
            case.name
        );

        // Records: each side decrypts VPy's, and encrypting the same
        // plaintexts gives VPy's bytes again.
        let c_recs = records(&mut server, &case.c2s[c_hs.len()..]);
        let s_recs = records(&mut client, &case.s2c[s_hs.len()..]);
        assert!(
            c_recs.len() >= 3 && s_recs.len() >= 3,
            "{}: several records",
            case.name
        );
        assert!(c_recs[0].starts_with(b"VEC_DRAFT-0.8"), "{}", case.name);
        // Each side has "seen" the other's records (through its opener
        // directly), so nothing is held back.
        client.held = None;
        server.held = None;
        for (sender, recs, want) in [
            (&mut client, &c_recs, &case.c2s[c_hs.len()..]),
            (&mut server, &s_recs, &case.s2c[s_hs.len()..]),
        ] {
            for r in recs.iter() {
                sender.send(r).expect("send");
            }
            assert_eq!(sender.take_output(), want, "record bytes, {}", case.name);
        }
    }
}

#[test]
fn byte_at_a_time_input_gives_the_same_result() {
    let case = &cases()[4];
    let mut server = server_for(case);
    let mut out = Vec::new();
    let mut plain = Vec::new();
    for b in &case.c2s {
        server.receive(std::slice::from_ref(b)).expect("server");
        out.extend(server.take_output());
        plain.extend(server.take_plaintext());
    }
    assert!(server.is_established());
    assert_eq!(out, case.s2c[..out.len()]);
    assert!(plain.starts_with(b"VEC_DRAFT-0.8"));
    assert!(
        plain.windows(40000).any(|w| w.iter().all(|&x| x == b'v')),
        "the 40 000-byte value arrived"
    );
    server.receive_eof().expect("clean end");
}

#[test]
fn wrong_pin_is_refused_with_both_fingerprints() {
    let case = &cases()[0];
    let mut client = client_for(case, VtsTrust::Pinned([7; 32]));
    let _ = client.take_output();
    let err = client.receive(&case.s2c).expect_err("wrong pin");
    match err {
        Error::VtsKeyMismatch { got, want } => {
            assert_eq!(got, key("server").public().fingerprint_hex());
            assert_eq!(want, "07".repeat(32));
        }
        e => panic!("{e:?}"),
    }
}

/// The client's handshake messages of a case: line, hello, key exchange.
fn client_messages(case: &Case) -> (Vec<u8>, Entity, Entity) {
    let mut client = client_for(case, pinned());
    let mut server = server_for(case);
    let (c_hs, _) = handshake(&mut client, &mut server);
    let body = &c_hs[VTS_LINE.len()..];
    let mut dec = crate::vec::Decoder::new(DecodeConfig::default());
    let mut buf = bytes::BytesMut::from(body);
    let hello = dec
        .decode(&mut buf, &mut crate::entity::RawRefs)
        .expect("hello")
        .expect("hello");
    let kx = dec
        .decode(&mut buf, &mut crate::entity::RawRefs)
        .expect("kx")
        .expect("kx");
    (VTS_LINE.to_vec(), hello, kx)
}

fn enc(e: &Entity) -> Vec<u8> {
    encode_to_vec(
        e,
        EncodeConfig {
            str_codec: None,
            ..EncodeConfig::default()
        },
    )
    .expect("encode")
}

fn fresh_server(case: &Case) -> Vts {
    // Draws for the reply; a bad message must fail before any later draw.
    let settings = ServerSettings {
        key: key("server"),
        suites: vec![case.suite],
    };
    let draws: VecDeque<Vec<u8>> = case.server_draws.iter().take(1).cloned().collect();
    Vts::server_with(Arc::new(settings), Box::new(Replay(draws, false)))
}

#[test]
fn truncated_handshake_message_is_reported_at_eof() {
    let case = &cases()[0];
    let (line, hello, _) = client_messages(case);
    let hello = enc(&hello);
    let mut server = fresh_server(case);
    server.receive(&line).expect("line");
    server
        .receive(&hello[..hello.len() / 2])
        .expect("half a hello is no error yet");
    assert!(matches!(
        server.receive_eof(),
        Err(Error::ClosedDuring("the VTS client hello"))
    ));
}

#[test]
fn oversized_handshake_message_is_refused() {
    let case = &cases()[0];
    let mut server = fresh_server(case);
    server.receive(VTS_LINE).expect("line");
    let big = enc(&Entity::bytes(vec![0; HANDSHAKE_LIMIT + 1]));
    let err = server.receive(&big[..64]).expect_err("too large");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                max: HANDSHAKE_LIMIT,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_protocol_line_is_refused() {
    let case = &cases()[0];
    let mut server = fresh_server(case);
    let err = server.receive(b"VTS_DRAFT-0.9\n").expect_err("version");
    assert!(matches!(err, Error::BadVtsHello(_)), "{err:?}");
    let err = fresh_server(case)
        .receive(&[b'A'; 40])
        .expect_err("no newline");
    assert!(matches!(err, Error::BadVtsHello(_)), "{err:?}");
}

/// Replaces the key exchange's RSA part and feeds it to a server.
fn server_error_for_rsa_part(edit: impl Fn(&mut Vec<u8>)) -> Error {
    let case = &cases()[0];
    let (line, hello, kx) = client_messages(case);
    let Entity::Tuple(mut parts) = kx else {
        panic!("kx")
    };
    let Entity::Bytes(header) = &mut parts[0] else {
        panic!("header")
    };
    edit(header);
    let mut server = fresh_server(case);
    server.receive(&line).expect("line");
    server.receive(&enc(&hello)).expect("hello");
    server
        .receive(&enc(&Entity::Tuple(parts)))
        .expect_err("bad rsa part")
}

#[test]
fn rsa_block_of_the_wrong_size_is_refused() {
    let err = server_error_for_rsa_part(|h| {
        h.pop();
    });
    assert!(
        matches!(
            err,
            Error::BadVtsRsaBlock("ciphertext is not a whole number of rsa blocks")
        ),
        "{err:?}"
    );
}

#[test]
fn rsa_block_out_of_range_or_misframed_is_refused() {
    let err = server_error_for_rsa_part(|h| h.iter_mut().for_each(|b| *b = 0xff));
    assert!(matches!(err, Error::BadVtsRsaBlock(_)), "{err:?}");
    let err = server_error_for_rsa_part(|h| h[100] ^= 1);
    assert!(matches!(err, Error::BadVtsRsaBlock(_)), "{err:?}");
}

#[test]
fn tampered_sealed_key_exchange_fails_its_integrity_check() {
    let case = &cases()[0];
    let (line, hello, kx) = client_messages(case);
    let Entity::Tuple(mut parts) = kx else {
        panic!("kx")
    };
    let Entity::Bytes(msg) = &mut parts[1] else {
        panic!("msg")
    };
    let last = msg.len() - 1;
    msg[last] ^= 1;
    let mut server = fresh_server(case);
    server.receive(&line).expect("line");
    server.receive(&enc(&hello)).expect("hello");
    let err = server
        .receive(&enc(&Entity::Tuple(parts)))
        .expect_err("tampered");
    assert!(matches!(err, Error::VtsBadMac { record: 0 }), "{err:?}");
}

/// An established pair and the first record the client sent VPy.
fn established_pair() -> (Vts, Vec<u8>) {
    let case = &cases()[0];
    let mut client = client_for(case, pinned());
    let mut server = server_for(case);
    let (c_hs, _) = handshake(&mut client, &mut server);
    (server, case.c2s[c_hs.len()..].to_vec())
}

#[test]
fn wrong_record_mac_is_refused() {
    let (mut server, mut records) = established_pair();
    // The VEC hello record is 48 bytes long; its last 8 bytes hold MAC.
    records[47] ^= 0x80;
    let err = server.receive(&records).expect_err("mac");
    assert!(matches!(err, Error::VtsBadMac { record: 0 }), "{err:?}");
}

#[test]
fn flipped_ciphertext_byte_is_refused() {
    let (mut server, mut records) = established_pair();
    records[20] ^= 1;
    let err = server.receive(&records).expect_err("flipped");
    assert!(matches!(err, Error::VtsBadMac { record: 0 }), "{err:?}");
}

#[test]
fn record_cut_short_is_reported_at_eof() {
    let (mut server, records) = established_pair();
    server.receive(&records[..30]).expect("partial");
    assert!(matches!(server.receive_eof(), Err(Error::Truncated(30))));
}

#[test]
fn fresh_keys_complete_a_handshake_with_every_suite() {
    let key = Arc::new(VtsKey::generate(1024).expect("key"));
    for suite in Suite::ALL {
        let mut s = ServerSettings::new(key.clone());
        s.suites = vec![suite];
        let mut server = Vts::server(Arc::new(s));
        let mut client = Vts::client(Arc::new(ClientSettings::new(VtsTrust::Insecure)));
        handshake(&mut client, &mut server);
        assert_eq!(server.suite(), Some(suite));
        // The client sent the last handshake message: it holds its records
        // until the server's first one has arrived.
        client.send(b"early").expect("send");
        assert!(!client.has_output(), "held until the server speaks");
        server.send(b"hello").expect("server speaks first");
        client
            .receive(&server.take_output())
            .expect("client receives");
        assert_eq!(client.take_plaintext(), b"hello");
        server.receive(&client.take_output()).expect("released");
        assert_eq!(server.take_plaintext(), b"early");
        let payload = vec![42u8; 70000];
        client.send(&payload).expect("send");
        server.receive(&client.take_output()).expect("receive");
        assert_eq!(server.take_plaintext(), payload);
    }
}
