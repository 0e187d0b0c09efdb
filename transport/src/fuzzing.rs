//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their corpora on stable (`transport/tests/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes, runs one piece of the sans-IO wire
//! code on them and panics only if an invariant is broken: the code under
//! test must itself never panic, and whatever it accepts must survive a
//! round trip. Not part of the API: hidden from the docs and free to change.

use bytes::BytesMut;

use crate::entity::{Entity, RawRefs};
use crate::vec::{self, hello, Codec, DecodeConfig, Decoder, EncodeConfig};
use crate::vop::{self, ServerPolicy, Transport};

/// The caps the VEC target decodes with: small, so the fuzzer reaches them.
const FUZZ_DECODE: DecodeConfig = DecodeConfig {
    max_message: 64 * 1024,
    max_depth: 64,
};

/// The peer codec named by the low two bits of a control byte.
fn codec_from(control: u8) -> Option<Codec> {
    match control & 3 {
        0 => None,
        1 | 3 => Some(Codec::Utf8),
        _ => Some(Codec::Utf16),
    }
}

/// A tiny deterministic generator of chunk sizes (xorshift), so that a
/// reproducer replays the same chunking everywhere.
struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    fn new(seed: u8) -> Chunks {
        Chunks {
            state: 0x9e37_79b9 ^ u32::from(seed),
            // Seeds 0..=63 use chunks of up to 1..=64 bytes; 64.. vary
            // more widely. Seed 0 feeds one byte at a time.
            max: if seed < 64 {
                usize::from(seed) + 1
            } else {
                usize::from(seed) * 16
            },
        }
    }

    fn next(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        if self.max == 1 {
            1
        } else {
            1 + (x as usize) % self.max
        }
    }
}

/// Decodes a whole byte stream with `decoder`, feeding it `chunks` at a
/// time (or all at once for `None`). Returns the entities decoded and
/// whether decoding stopped on an error.
fn decode_stream(
    data: &[u8],
    codec: Option<Codec>,
    mut chunks: Option<Chunks>,
) -> (Vec<Entity>, bool) {
    let mut decoder = Decoder::new(FUZZ_DECODE);
    decoder.set_peer_codec(codec);
    let mut buf = BytesMut::new();
    let mut entities = Vec::new();
    let mut fed = 0;
    while fed < data.len() {
        let n = chunks
            .as_mut()
            .map_or(data.len(), Chunks::next)
            .min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        loop {
            match decoder.decode(&mut buf, &mut RawRefs) {
                Ok(Some(e)) => entities.push(e),
                Ok(None) => break,
                Err(_) => return (entities, true),
            }
        }
    }
    (entities, false)
}

/// VEC decoding. `data[0]` picks the peer codec (low two bits) and the
/// chunking seed (the rest); the remaining bytes are the stream.
///
/// Invariants: the decoder never panics; the entities it returns, and
/// whether it fails, do not depend on how the stream is chunked; every
/// returned entity encodes again (within the same depth cap) and that
/// encoding decodes to an equal entity.
pub fn vec_decode(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let codec = codec_from(control);
    let (chunked, chunked_err) = decode_stream(stream, codec, Some(Chunks::new(control >> 2)));
    let (whole, whole_err) = decode_stream(stream, codec, None);
    assert_eq!(chunked, whole, "entities depend on chunking");
    assert_eq!(chunked_err, whole_err, "failure depends on chunking");
    for entity in &whole {
        let config = EncodeConfig {
            str_codec: Some(Codec::Utf8),
            max_depth: FUZZ_DECODE.max_depth,
        };
        let bytes = vec::encode_to_vec(entity, config)
            .unwrap_or_else(|e| panic!("decoded entity does not encode again: {e}: {entity:?}"));
        // The encoding may be longer than the original (a latin-1 string
        // becomes UTF-8), so the size cap is lifted for the round trip.
        let again = vec::decode_complete(
            &bytes,
            Some(Codec::Utf8),
            DecodeConfig {
                max_message: usize::MAX,
                ..FUZZ_DECODE
            },
        )
        .unwrap_or_else(|e| panic!("re-encoded entity does not decode: {e}: {entity:?}"));
        assert_eq!(&again, entity, "round trip changed the entity");
    }
}

/// VEC hello parsing.
///
/// Invariants: never panics; an accepted line is within [`hello::MAX_HELLO`]
/// bytes, every shorter prefix of it is "need more", and the line vole
/// would send for the codec found parses to the same codec.
pub fn vec_hello(data: &[u8]) {
    let Ok(Some((codec, used))) = hello::parse(data) else {
        return;
    };
    assert!((1..=hello::MAX_HELLO).contains(&used) && used <= data.len());
    assert_eq!(data[used - 1], b'\n');
    for cut in 0..used {
        assert!(
            matches!(hello::parse(&data[..cut]), Ok(None)),
            "prefix of {cut} bytes of an accepted line is not 'need more'"
        );
    }
    let line = hello::line(codec);
    assert_eq!(
        hello::parse(&line).ok().flatten(),
        Some((codec, line.len()))
    );
}

/// The server policies the VOP target tries every offer against.
fn policies() -> [ServerPolicy; 4] {
    [
        ServerPolicy::new(true, true),
        ServerPolicy::new(true, false),
        ServerPolicy::new(false, true),
        ServerPolicy::new(false, false),
    ]
}

/// VOP server side: parsing a client's offer and choosing a transport.
///
/// Invariants: never panics; an accepted line is within [`vop::MAX_LINE`]
/// bytes and offers at least one transport, none twice; vole's own line for
/// that offer parses the same; the choice under any policy is offered,
/// enabled and implemented, and the reply for it is accepted by a client
/// that made the offer.
pub fn vop_server(data: &[u8]) {
    let Ok(Some((offered, used))) = vop::parse_client_line(data) else {
        return;
    };
    assert!((1..=vop::MAX_LINE).contains(&used) && used <= data.len());
    assert!(!offered.is_empty());
    for cut in 0..used {
        assert!(
            matches!(vop::parse_client_line(&data[..cut]), Ok(None)),
            "prefix of {cut} bytes of an accepted line is not 'need more'"
        );
    }
    for (i, t) in offered.iter().enumerate() {
        assert!(!offered[..i].contains(t), "transport offered twice");
    }
    let line = vop::client_line(&offered);
    assert_eq!(
        vop::parse_client_line(&line).ok().flatten(),
        Some((offered.clone(), line.len()))
    );
    for policy in policies() {
        match vop::choose(&offered, &policy) {
            Ok(t) => {
                assert!(offered.contains(&t) && policy.allows(t) && t.is_implemented());
                let reply = vop::server_reply(t);
                assert_eq!(
                    vop::parse_server_reply(&reply, &offered).ok().flatten(),
                    Some((t, reply.len()))
                );
            }
            Err(e) => assert!(matches!(e, crate::Error::NoCommonTransport { .. })),
        }
    }
}

/// VOP client side: parsing the server's reply. The low three bits of
/// `data[0]` say which transports were offered (VTS, TLS, PLAIN); the rest
/// is the reply.
///
/// Invariants: never panics; an accepted reply is within [`vop::MAX_LINE`]
/// bytes, names an offered transport, and is exactly the reply a server
/// sends for that transport.
pub fn vop_client(data: &[u8]) {
    let Some((&control, reply)) = data.split_first() else {
        return;
    };
    let offered: Vec<Transport> = [Transport::Vts, Transport::Tls, Transport::Plain]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| control & (1 << i) != 0)
        .map(|(_, t)| t)
        .collect();
    let Ok(Some((t, used))) = vop::parse_server_reply(reply, &offered) else {
        return;
    };
    assert!(used <= vop::MAX_LINE && used <= reply.len());
    assert!(offered.contains(&t));
    assert_eq!(&reply[..used], vop::server_reply(t).as_slice());
}

/// PROXY protocol header (v1 or v2) at the start of a connection.
///
/// Invariants: never panics; a header is at most [`crate::proxy::MAX_HEADER`]
/// bytes and within the input, parses the same without what follows it,
/// and every shorter prefix of it asks for more; "need more" is only
/// answered below the cap.
pub fn proxy_header(data: &[u8]) {
    use crate::proxy::{self, Parsed};
    match proxy::parse(data) {
        Ok(Parsed::Header { header, len }) => {
            assert!(len <= data.len() && len <= proxy::MAX_HEADER);
            assert_eq!(
                proxy::parse(&data[..len]).ok(),
                Some(Parsed::Header { header, len }),
                "the header alone parses differently"
            );
            for cut in [0, len / 2, len.saturating_sub(1)] {
                if cut < len {
                    assert_eq!(
                        proxy::parse(&data[..cut]).ok(),
                        Some(Parsed::NeedMore),
                        "a prefix of {cut} of a {len}-byte header"
                    );
                }
            }
        }
        Ok(Parsed::NeedMore) => assert!(data.len() < proxy::MAX_HEADER),
        Err(e) => assert!(matches!(e, crate::Error::ProxyHeader(_))),
    }
}

/// Counter-mode bytes: deterministic "randomness" for the VTS targets, so
/// a reproducer replays exactly.
struct CountingRandom(u64);

impl crate::vts::Random for CountingRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), crate::Error> {
        for b in buf {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.0 >> 56) as u8;
        }
        Ok(())
    }
}

/// The fixture server key of `transport/tests/fixtures/vts/` (a public
/// test key), preferring the suite of the VPy transcripts the corpus seeds
/// come from, so that they get past the key exchange.
fn vts_fuzz_server() -> std::sync::Arc<crate::vts::ServerSettings> {
    use std::sync::{Arc, OnceLock};
    static SETTINGS: OnceLock<Option<Arc<crate::vts::ServerSettings>>> = OnceLock::new();
    let settings = SETTINGS.get_or_init(|| {
        let pem = include_str!("../tests/fixtures/vts/server-key.pem");
        let key = crate::vts::VtsKey::from_pem(pem).ok()?;
        let mut settings = crate::vts::ServerSettings::new(Arc::new(key));
        let first = crate::vts::Suite::parse("blowfish128-ofb")?;
        settings.suites.retain(|s| *s != first);
        settings.suites.insert(0, first);
        Some(Arc::new(settings))
    });
    // The fixture key parses (checked by the tests below); a harness
    // without it has nothing to fuzz.
    settings.clone().expect("the fixture VTS key parses")
}

/// What a VTS core made of a byte stream: plaintext, output, whether it
/// stopped on an error, and whether the handshake finished.
#[derive(Debug, PartialEq)]
struct VtsRun {
    plain: Vec<u8>,
    out: Vec<u8>,
    failed: bool,
    established: bool,
}

fn vts_run(mut vts: crate::vts::Vts, data: &[u8], mut chunks: Option<Chunks>) -> VtsRun {
    let mut run = VtsRun {
        plain: Vec::new(),
        out: vts.take_output(),
        failed: false,
        established: false,
    };
    let mut fed = 0;
    while fed < data.len() {
        let n = chunks
            .as_mut()
            .map_or(data.len() - fed, |c| c.next().min(data.len() - fed));
        let result = vts.receive(&data[fed..fed + n]);
        fed += n;
        run.out.extend(vts.take_output());
        run.plain.extend(vts.take_plaintext());
        if result.is_err() {
            run.failed = true;
            break;
        }
    }
    run.established = vts.is_established();
    run
}

/// Checks what every VTS run must satisfy, then that chunking changes
/// nothing.
fn vts_check(make: impl Fn() -> crate::vts::Vts, data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let whole = vts_run(make(), data, None);
    // A handshake sends a few hundred bytes (the line, a reply with a
    // public key of at most 4096 bits, an RSA-sealed secret); nothing is
    // sent after it unless the application sends.
    assert!(
        whole.out.len() <= 4096,
        "{} bytes of output",
        whole.out.len()
    );
    assert!(whole.plain.len() <= data.len());
    let chunked = vts_run(make(), data, Some(Chunks::new(seed)));
    assert_eq!(whole, chunked, "chunking changed the outcome");
}

/// VTS server side: the bytes a client sends after VOP (`data[0]` picks
/// the chunking), into a server with the fixture key.
///
/// Invariants: never panics; the server sends at most a handshake's worth
/// of bytes and yields no more plaintext than it got ciphertext; the
/// outcome (plaintext, output, error, handshake state) does not depend on
/// how the bytes are chunked.
pub fn vts_server(data: &[u8]) {
    let settings = vts_fuzz_server();
    vts_check(
        || crate::vts::Vts::server_with(settings.clone(), Box::new(CountingRandom(1))),
        data,
    );
}

/// VTS client side: the bytes a server sends after VOP (`data[0]` picks
/// the chunking), into a client that trusts any key. Same invariants as
/// [`vts_server`].
pub fn vts_client(data: &[u8]) {
    let settings = std::sync::Arc::new(crate::vts::ClientSettings::new(
        crate::vts::VtsTrust::Insecure,
    ));
    vts_check(
        || crate::vts::Vts::client_with(settings.clone(), Box::new(CountingRandom(2))),
        data,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vts_server_seed_from_vpy_gets_past_the_handshake() {
        let case: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/vts/case-blowfish128-ofb-clientkey.json"
        ))
        .expect("fixture");
        let hex = case["c2s"].as_str().expect("c2s");
        let data: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let settings = vts_fuzz_server();
        let make = || crate::vts::Vts::server_with(settings.clone(), Box::new(CountingRandom(1)));
        let run = vts_run(make(), &data, None);
        // Its own nonces differ from VPy's, so VPy's records do not open
        // (a MAC failure, or a garbled length still waiting for bytes):
        // the record decoder is reached.
        assert!(
            run.established && run.plain.is_empty(),
            "{:?}",
            (run.established, run.failed, run.plain.len(), run.out.len())
        );
        vts_server(&[&[9u8][..], &data].concat());
    }

    #[test]
    fn vts_targets_take_empty_and_short_input() {
        for f in [vts_server, vts_client] {
            f(b"");
            f(b"\x00");
            f(b"\x05VTS_DRAFT-0.8\n");
            f(b"\x00VTS_DRAFT-0.9\n");
        }
    }

    #[test]
    fn vec_decode_accepts_a_hello_in_tiny_chunks() {
        let mut data = vec![1u8]; // UTF-8, one byte at a time
        let hello: Entity = Entity::Tuple(vec![
            Entity::Bytes(b"VOL_DRAFT".to_vec()),
            Entity::str("x"),
            Entity::Int(1000),
        ]);
        data.extend(vec::encode_to_vec(&hello, EncodeConfig::default()).expect("encodes"));
        let (entities, err) = decode_stream(&data[1..], Some(Codec::Utf8), Some(Chunks::new(0)));
        assert_eq!(entities, vec![hello]);
        assert!(!err);
        vec_decode(&data);
    }

    #[test]
    fn chunks_cover_their_range() {
        let mut c = Chunks::new(0);
        assert!((0..100).all(|_| c.next() == 1));
        let mut c = Chunks::new(7);
        let sizes: Vec<usize> = (0..1000).map(|_| c.next()).collect();
        assert!(sizes.iter().all(|n| (1..=8).contains(n)));
        assert!(sizes.contains(&1) && sizes.contains(&8));
    }

    #[test]
    fn targets_take_empty_and_valid_input() {
        for f in [vec_decode, vec_hello, vop_server, vop_client] {
            f(b"");
        }
        vec_hello(b"VEC_DRAFT-0.8-utf8\n");
        vop_server(b"VOP_DRAFT-0.8 TRANSPORTS:TLS:PLAIN\n");
        vop_client(b"\x07VOP_DRAFT-0.8 USE_TRANSPORT:TLS\n");
    }
}
