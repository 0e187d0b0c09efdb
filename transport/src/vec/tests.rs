//! Unit tests of the VEC entity codec: round trips, truncation and
//! streaming, the size and depth caps, malformed input, the encoder's own
//! limits, the netbytes vectors captured from VPy, and a property test over
//! arbitrary entities.
//!
//! Byte-for-byte agreement with VPy on whole entities is checked by the
//! integration test `tests/vpy_vectors.rs`; this module reuses the same
//! fixture as a corpus of real encodings.

use bytes::BytesMut;
use num_bigint::{BigInt, BigUint, Sign};
use proptest::prelude::*;
use serde_json::Value;

use super::decode::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_MESSAGE};
use super::netbytes::{self, PosInt};
use super::{
    decode_complete, encode_to_vec, Codec, DecodeConfig, Decoder, EncodeConfig, Encoder, Part,
};
use crate::entity::{Entity, Owner, RawRefs, RefEncoder, VFloat, WireRef};
use crate::Error;

const FIXTURE: &str = include_str!("../../tests/fixtures/vpy_entities.json");

// ---- helpers -----------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn config(codec: Option<Codec>) -> EncodeConfig {
    EncodeConfig {
        str_codec: codec,
        ..Default::default()
    }
}

fn enc(e: &Entity) -> Vec<u8> {
    encode_to_vec(e, EncodeConfig::default()).expect("encodes")
}

fn dec(bytes: &[u8]) -> Result<Entity, Error> {
    decode_complete(bytes, Some(Codec::Utf8), DecodeConfig::default())
}

fn caps(max_message: usize, max_depth: usize) -> DecodeConfig {
    DecodeConfig {
        max_message,
        max_depth,
    }
}

/// Runs a fresh incremental decoder over `bytes`.
fn decode_incremental(
    bytes: &[u8],
    codec: Option<Codec>,
    config: DecodeConfig,
) -> Result<Option<Entity>, Error> {
    let mut decoder = Decoder::new(config);
    decoder.set_peer_codec(codec);
    let mut buf = BytesMut::from(bytes);
    decoder.decode(&mut buf, &mut RawRefs)
}

fn nested(depth: usize) -> Entity {
    let mut e = Entity::Int(1);
    for _ in 1..depth {
        e = Entity::Tuple(vec![e]);
    }
    e
}

fn wire(owner: Owner, id: i64) -> Entity {
    Entity::Ref(WireRef { owner, id })
}

/// One entity of every variant, plus nested mixes.
fn sample() -> Vec<Entity> {
    let float = |v: f64| Entity::float(v).expect("finite");
    let big = BigInt::from(u64::MAX) * BigInt::from(u64::MAX);
    let mixed = Entity::tuple([
        Entity::Int(-2),
        Entity::str("κόσμε"),
        Entity::bytes(vec![0xf4, 0xf5, 0x00]),
        Entity::Exception(vec![Entity::str("err"), Entity::None]),
        Entity::Tagged(
            Box::new(Entity::tuple([Entity::str("k"), Entity::Int(1)])),
            vec![Entity::Int(21), Entity::Int(1), Entity::Int(2)],
        ),
        wire(Owner::Sender, 3),
        Entity::tuple([]),
        Entity::tuple([Entity::str(""), Entity::tuple([Entity::str("deep")])]),
    ]);
    vec![
        Entity::Int(0),
        Entity::Int(-1),
        Entity::Int(237),
        Entity::Int(238),
        Entity::Int(i64::MAX),
        Entity::Int(i64::MIN),
        Entity::int(big.clone()),
        Entity::int(-big),
        Entity::Bool(true),
        Entity::Bool(false),
        Entity::None,
        float(1.5),
        float(-0.1),
        float(f64::MIN_POSITIVE),
        Entity::Float(VFloat::decimal(-125, -2)),
        Entity::Float(VFloat {
            digits: BigInt::from(3),
            base: 5,
            exp: -4,
        }),
        Entity::Float(VFloat {
            digits: BigInt::from(-1),
            base: u64::MAX,
            exp: i64::MIN,
        }),
        Entity::bytes(Vec::new()),
        Entity::bytes((0..=255u8).collect::<Vec<_>>()),
        Entity::str(""),
        Entity::str("hello"),
        Entity::str("😀".repeat(100)),
        Entity::tuple([]),
        Entity::tuple([Entity::Int(1), Entity::str("two")]),
        Entity::Exception(vec![]),
        Entity::Exception(vec![Entity::str("boom"), Entity::Int(42)]),
        Entity::Tagged(Box::new(Entity::Int(20)), vec![]),
        Entity::Tagged(Box::new(Entity::str("v")), vec![Entity::str("t")]),
        wire(Owner::Sender, 1),
        wire(Owner::Receiver, -7),
        wire(Owner::Receiver, i64::MIN),
        mixed.clone(),
        Entity::tuple([mixed.clone(), mixed]),
        nested(40),
    ]
}

/// The entity vectors of the VPy fixture: bytes and sender codec.
fn corpus() -> Vec<(String, Vec<u8>, Option<Codec>)> {
    let all: Vec<Value> = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    let out: Vec<_> = all
        .iter()
        .filter(|e| e.get("value").is_some())
        .map(|e| {
            let codec = e["codec"]
                .as_str()
                .map(|c| Codec::from_name(c.as_bytes()).expect("known codec"));
            (
                e["name"].as_str().expect("name").to_owned(),
                hex(e["hex"].as_str().expect("hex")),
                codec,
            )
        })
        .collect();
    assert!(out.len() >= 150, "fixture has only {} entities", out.len());
    out
}

// ---- round trips ---------------------------------------------------------------

#[test]
fn every_variant_round_trips_with_both_codec_settings() {
    for codec in [Some(Codec::Utf8), None, Some(Codec::Utf16)] {
        for e in sample() {
            let bytes = encode_to_vec(&e, config(codec)).expect("encodes");
            let back = decode_complete(&bytes, codec, DecodeConfig::default())
                .unwrap_or_else(|err| panic!("{e:?} with {codec:?}: {err}"));
            assert_eq!(back, e, "codec {codec:?}");
        }
    }
}

#[test]
fn codec_setting_chooses_the_string_form() {
    let e = Entity::str("hé");
    assert_eq!(enc(&e), hex("f4 03 68 c3 a9"));
    assert_eq!(
        encode_to_vec(&e, config(None)).expect("encodes"),
        hex("f5 04 03 68 c3 a9 75 74 66 38")
    );
    // Not declaring UTF-8 means naming it on every string.
    assert_eq!(
        encode_to_vec(&e, config(Some(Codec::Utf16))).expect("encodes"),
        hex("f5 04 03 68 c3 a9 75 74 66 38")
    );
    // An explicit codec wins over the peer's default.
    let explicit = hex("f5 04 03 68 c3 a9 75 74 66 38");
    for peer in [None, Some(Codec::Utf8), Some(Codec::Utf16)] {
        assert_eq!(
            decode_complete(&explicit, peer, DecodeConfig::default()).expect("decodes"),
            e
        );
    }
}

#[test]
fn float_bases_beyond_64_bits_are_refused() {
    // VPy's VFloat(5, -2, base=2**70); VFloat cannot hold the base.
    let vpy = hex("fb0aff007fffffffffffffff0905");
    assert!(matches!(dec(&vpy), Err(Error::InvalidFloatBase)));
}

// ---- truncation and streaming ----------------------------------------------------

#[test]
fn every_strict_prefix_of_the_corpus_is_incomplete() {
    for (name, bytes, codec) in corpus() {
        let whole = decode_complete(&bytes, codec, DecodeConfig::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            let mut decoder = Decoder::new(DecodeConfig::default());
            decoder.set_peer_codec(codec);
            let mut buf = BytesMut::from(prefix);
            let got = decoder
                .decode(&mut buf, &mut RawRefs)
                .unwrap_or_else(|e| panic!("{name} cut {cut}: {e}"));
            assert!(got.is_none(), "{name} cut {cut}: decoded early");
            assert_eq!(buf.len(), cut, "{name} cut {cut}: consumed bytes");
            assert!(
                matches!(
                    decode_complete(prefix, codec, DecodeConfig::default()),
                    Err(Error::Truncated(n)) if n == cut
                ),
                "{name} cut {cut}: decode_complete accepted a prefix"
            );
        }
        // One byte at a time through a single decoder.
        let mut decoder = Decoder::new(DecodeConfig::default());
        decoder.set_peer_codec(codec);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decoder
                .decode(&mut buf, &mut RawRefs)
                .unwrap_or_else(|e| panic!("{name} byte {i}: {e}"));
            if i + 1 < bytes.len() {
                assert!(got.is_none(), "{name}: decoded after {} bytes", i + 1);
                assert_eq!(buf.len(), i + 1, "{name}: consumed before complete");
            } else {
                assert_eq!(got.as_ref(), Some(&whole), "{name}: byte-wise result");
            }
        }
        assert!(buf.is_empty(), "{name}: bytes left over");
        assert!(!decoder.is_mid_entity());
        decoder.decode_eof(&buf).expect("clean end");
    }
}

#[test]
fn back_to_back_messages_decode_in_order() {
    let mut entities = sample();
    let corpus = corpus();
    let utf8: Vec<_> = corpus
        .iter()
        .filter(|(_, b, c)| *c == Some(Codec::Utf8) && b.len() < 4096)
        .collect();
    for (_, bytes, _) in &utf8 {
        entities.push(dec(bytes).expect("decodes"));
    }
    let mut stream = Vec::new();
    let encoder = Encoder::new(EncodeConfig::default());
    for e in &entities {
        encoder
            .encode(e, &mut RawRefs, &mut stream)
            .expect("encodes");
    }

    // All at once.
    let mut decoder = Decoder::new(DecodeConfig::default());
    decoder.set_peer_codec(Some(Codec::Utf8));
    let mut buf = BytesMut::from(&stream[..]);
    for (i, e) in entities.iter().enumerate() {
        let got = decoder.decode(&mut buf, &mut RawRefs).expect("decodes");
        assert_eq!(got.as_ref(), Some(e), "message {i}");
    }
    assert!(buf.is_empty());
    assert!(decoder
        .decode(&mut buf, &mut RawRefs)
        .expect("empty is fine")
        .is_none());

    // In odd-sized chunks that straddle message boundaries.
    let mut decoder = Decoder::new(DecodeConfig::default());
    decoder.set_peer_codec(Some(Codec::Utf8));
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for chunk in stream.chunks(7) {
        buf.extend_from_slice(chunk);
        while let Some(e) = decoder.decode(&mut buf, &mut RawRefs).expect("decodes") {
            got.push(e);
        }
    }
    assert_eq!(got, entities);
    decoder.decode_eof(&buf).expect("nothing left");
}

#[test]
fn leftovers_at_end_of_stream_are_reported() {
    let decoder = Decoder::new(DecodeConfig::default());
    assert!(matches!(
        decoder.decode_eof(&BytesMut::from(&[0xf6u8, 0x02][..])),
        Err(Error::Truncated(2))
    ));
    assert!(matches!(
        dec(&hex("02 02")),
        Err(Error::Malformed("trailing bytes after entity"))
    ));
}

// ---- caps ------------------------------------------------------------------------

#[test]
fn oversized_bytes_are_refused_from_the_header_alone() {
    let mut header = vec![0xf3];
    netbytes::put_u64(&mut header, 1 << 30);
    let err = decode_incremental(&header, None, DecodeConfig::default())
        .expect_err("1 GiB is over the cap");
    assert!(
        matches!(err, Error::TooLarge { declared, max }
            if declared >= 1 << 30 && max == DEFAULT_MAX_MESSAGE),
        "{err}"
    );
    // The same inside a container, after other payloads.
    let mut header = hex("f6 02 f3 05");
    header.push(0xf3);
    netbytes::put_u64(&mut header, (DEFAULT_MAX_MESSAGE - 8) as u64);
    assert!(matches!(
        decode_incremental(&header, None, DecodeConfig::default()),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn message_cap_is_inclusive() {
    let e = Entity::bytes(vec![7u8; 100]);
    let bytes = enc(&e);
    assert_eq!(bytes.len(), 102);
    let at_cap = decode_complete(&bytes, None, caps(102, 8)).expect("fits exactly");
    assert_eq!(at_cap, e);
    assert!(matches!(
        decode_complete(&bytes, None, caps(101, 8)),
        Err(Error::TooLarge {
            declared: 102,
            max: 101
        })
    ));
    // Headers count too: 50 small ints in a tuple are 52 bytes.
    let t = enc(&Entity::tuple((0..50).map(Entity::Int)));
    assert_eq!(t.len(), 52);
    assert!(decode_complete(&t, None, caps(52, 8)).is_ok());
    assert!(matches!(
        decode_complete(&t, None, caps(51, 8)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn huge_child_counts_are_refused_without_allocating() {
    let mut header = vec![0xf6];
    netbytes::put_u64(&mut header, 1 << 40);
    assert!(matches!(
        decode_incremental(&header, None, DecodeConfig::default()),
        Err(Error::TooLarge { .. })
    ));
    // With no size cap at all, the count is only a counter: the decoder
    // waits for the children instead of reserving room for them.
    let mut decoder = Decoder::new(caps(usize::MAX, 8));
    header.extend_from_slice(&[0x01; 100]);
    let mut buf = BytesMut::from(&header[..]);
    assert!(decoder
        .decode(&mut buf, &mut RawRefs)
        .expect("no error yet")
        .is_none());
    assert!(decoder.is_mid_entity());
}

#[test]
fn length_fields_cannot_make_the_decoder_wait_forever() {
    // A bytes length in netbytes' long form whose own field is 2^56 bytes
    // long: the field alone is over the cap, so it must be refused now,
    // not waited for.
    let mut bytes = hex("f3 ff fe 00 ff ff ff ff ff ff ff");
    let err = decode_incremental(&bytes, None, DecodeConfig::default())
        .expect_err("length field over the cap");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    // And however much junk follows, it stays an error.
    bytes.resize(4096, 0);
    assert!(decode_incremental(&bytes, None, DecodeConfig::default()).is_err());
    // The same for a tuple count and a codec length.
    for prefix in ["f6", "f7", "fe", "f5", "f5 00"] {
        let bytes = hex(&format!("{prefix} ff fe 00 ff ff ff ff ff ff ff"));
        assert!(
            matches!(
                decode_incremental(&bytes, None, DecodeConfig::default()),
                Err(Error::TooLarge { .. })
            ),
            "{prefix}"
        );
    }
}

#[test]
fn field_lengths_near_u64_max_do_not_overflow() {
    // A 0xef integer whose magnitude field declares ~2^64 bytes, after some
    // other elements so that offsets are not zero. Must be an error, not an
    // arithmetic overflow.
    let declared = u64::MAX - 24 - 247;
    let mut bytes = hex("f6 0a");
    bytes.extend_from_slice(&[0x01; 9]);
    bytes.extend_from_slice(&[0xef, 0xff, 0xfe]);
    bytes.extend_from_slice(&declared.to_be_bytes());
    let err = decode_incremental(&bytes, None, caps(usize::MAX, 8)).expect_err("refused");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                declared: u64::MAX,
                ..
            }
        ),
        "{err}"
    );
    // A payload length of u64::MAX with no cap to stop it earlier.
    let mut bytes = hex("f6 02 01 f3");
    netbytes::put_u64(&mut bytes, u64::MAX);
    let err = decode_incremental(&bytes, None, caps(usize::MAX, 8)).expect_err("refused");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                declared: u64::MAX,
                ..
            }
        ),
        "{err}"
    );
    // Two payloads whose lengths sum past u64::MAX.
    let mut bytes = hex("f6 02 f3");
    netbytes::put_u64(&mut bytes, u64::MAX / 2 + 1);
    bytes.push(0xf3);
    netbytes::put_u64(&mut bytes, u64::MAX / 2 + 1);
    let err = decode_incremental(&bytes, None, caps(usize::MAX, 8)).expect_err("refused");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                declared: u64::MAX,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn hostile_nesting_is_refused_quickly_without_recursion() {
    let bytes: Vec<u8> = [0xf6, 0x01].repeat(100_000);
    let start = std::time::Instant::now();
    let err = decode_incremental(&bytes, None, DecodeConfig::default()).expect_err("too deep");
    assert!(
        matches!(err, Error::TooDeep { max } if max == DEFAULT_MAX_DEPTH),
        "{err}"
    );
    assert!(matches!(
        dec(&bytes),
        Err(Error::TooDeep {
            max: DEFAULT_MAX_DEPTH
        })
    ));
    // Also through the other container codes.
    for code in [0xf7u8, 0xfe] {
        let bytes: Vec<u8> = [code, 0x01].repeat(100_000);
        assert!(matches!(dec(&bytes), Err(Error::TooDeep { .. })));
    }
    // Generous bound: the scan stops at the cap, so this is microseconds.
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn depth_exactly_at_the_cap_is_accepted() {
    for max in [1usize, 2, 3, 17, DEFAULT_MAX_DEPTH] {
        let at_cap = nested(max);
        assert_eq!(at_cap.depth(), max);
        let encoder = EncodeConfig {
            max_depth: max,
            ..Default::default()
        };
        let bytes = encode_to_vec(&at_cap, encoder).expect("encoder accepts the cap");
        let back = decode_complete(&bytes, None, caps(DEFAULT_MAX_MESSAGE, max))
            .expect("decoder accepts the cap");
        assert_eq!(back, at_cap);

        let over = Entity::Tuple(vec![at_cap]);
        assert!(matches!(
            encode_to_vec(&over, encoder),
            Err(Error::EncodeTooDeep { max: m }) if m == max
        ));
        let roomy = EncodeConfig {
            max_depth: max + 1,
            ..Default::default()
        };
        let bytes = encode_to_vec(&over, roomy).expect("encodes");
        assert!(matches!(
            decode_complete(&bytes, None, caps(DEFAULT_MAX_MESSAGE, max)),
            Err(Error::TooDeep { max: m }) if m == max
        ));
    }
    // Empty containers are leaves: they do not add a level.
    let bytes = hex("f6 01 f6 00");
    assert!(decode_complete(&bytes, None, caps(100, 2)).is_ok());
}

#[test]
fn decoding_at_the_depth_cap_needs_little_stack() {
    // The builder is iterative: a message nested to the default cap decodes
    // on a thread with a small stack (a recursive builder needed several
    // KiB per level in debug builds and overflowed 2 MiB).
    let mut bytes = [0xf6, 0x01].repeat(DEFAULT_MAX_DEPTH - 1);
    bytes.push(0x02);
    let decoded = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || dec(&bytes).map(|e| e.depth()))
        .expect("thread starts")
        .join()
        .expect("no stack overflow");
    assert_eq!(decoded.expect("decodes"), DEFAULT_MAX_DEPTH);
}

// ---- bad input ---------------------------------------------------------------------

#[test]
fn invalid_code_is_refused() {
    assert!(matches!(
        dec(&[0xff]),
        Err(Error::InvalidCode { code: 0xff })
    ));
    assert!(matches!(
        dec(&hex("f6 02 01 ff")),
        Err(Error::InvalidCode { code: 0xff })
    ));
}

/// After a refused message the stream is out of step: a decoder fed more
/// bytes keeps refusing (with a clear error) rather than read a valid-looking
/// message from the middle of the bad one, or a hostile length from it.
#[test]
fn a_decoder_refuses_everything_after_a_refused_message() {
    for bad in [hex("f6 03 01 ff 02"), hex("f6 02 f6 01 ff")] {
        let mut decoder = Decoder::new(DecodeConfig::default());
        let mut buf = BytesMut::from(&bad[..]);
        assert!(matches!(
            decoder.decode(&mut buf, &mut RawRefs),
            Err(Error::InvalidCode { code: 0xff })
        ));
        // A whole, valid message after it changes nothing.
        buf.extend_from_slice(&enc(&Entity::Int(5)));
        for _ in 0..2 {
            assert!(matches!(
                decoder.decode(&mut buf, &mut RawRefs),
                Err(Error::Malformed(m)) if m.contains("refused message")
            ));
            let read =
                decoder.decode_with::<WireRef, _, _>(&mut buf, &mut RawRefs, |r| Ok(r.int()));
            assert!(matches!(read, Err(Error::Malformed(_))), "{read:?}");
        }
    }
    // A message that is merely incomplete is no refusal.
    let mut decoder = Decoder::new(DecodeConfig::default());
    decoder.set_peer_codec(Some(Codec::Utf8));
    let whole = enc(&Entity::Tuple(vec![Entity::Int(1), Entity::str("ab")]));
    let mut buf = BytesMut::from(&whole[..whole.len() - 1]);
    assert!(decoder
        .decode(&mut buf, &mut RawRefs)
        .expect("no error")
        .is_none());
    buf.extend_from_slice(&whole[whole.len() - 1..]);
    assert!(decoder
        .decode(&mut buf, &mut RawRefs)
        .expect("decodes")
        .is_some());
}

#[test]
fn invalid_utf8_is_refused() {
    assert!(matches!(
        dec(&hex("f4 02 c3 28")),
        Err(Error::InvalidString { codec: "utf8" })
    ));
    assert!(matches!(
        dec(&hex("f5 04 01 ff 75 74 66 38")),
        Err(Error::InvalidString { codec: "utf8" })
    ));
    // Odd-length UTF-16.
    assert!(matches!(
        decode_complete(
            &hex("f4 03 ff fe 68"),
            Some(Codec::Utf16),
            DecodeConfig::default()
        ),
        Err(Error::InvalidString { .. })
    ));
}

#[test]
fn string_without_codec_needs_a_peer_codec() {
    assert!(matches!(
        decode_complete(&hex("f4 01 61"), None, DecodeConfig::default()),
        Err(Error::NoStringCodec)
    ));
    assert_eq!(
        decode_complete(
            &hex("f4 01 61"),
            Some(Codec::Latin1),
            DecodeConfig::default()
        )
        .expect("peer codec applies"),
        Entity::str("a")
    );
}

#[test]
fn unknown_explicit_codec_is_refused() {
    let mut bytes = hex("f5 06 01 78");
    bytes.extend_from_slice(b"koi8-r");
    match dec(&bytes) {
        Err(Error::UnsupportedCodec(name)) => assert_eq!(name, "koi8-r"),
        other => panic!("{other:?}"),
    }
    // Aliases Python accepts are fine.
    let mut bytes = hex("f5 05 01 78");
    bytes.extend_from_slice(b"UTF-8");
    assert_eq!(dec(&bytes).expect("alias"), Entity::str("x"));
}

#[test]
fn tagged_needs_a_value() {
    assert!(matches!(
        dec(&hex("fe 00")),
        Err(Error::Malformed("tagged entity without a value"))
    ));
    assert_eq!(
        dec(&hex("fe 01 15")).expect("value only"),
        Entity::Tagged(Box::new(Entity::Int(20)), vec![])
    );
}

#[test]
fn float_base_must_be_at_least_two() {
    // fb <digits 1> <base> <exp 0>
    for base in ["00", "02", "03", "05", "ff0001ffffffffffffff09"] {
        assert!(
            matches!(
                dec(&hex(&format!("fb 02 {base} 00"))),
                Err(Error::InvalidFloatBase)
            ),
            "base field {base}"
        );
    }
    assert_eq!(
        dec(&hex("fb 02 04 00")).expect("base 2 via fb"),
        Entity::Float(VFloat {
            digits: BigInt::from(1),
            base: 2,
            exp: 0
        })
    );
    // Exponents beyond i64 are refused, not wrapped.
    let mut bytes = hex("fa 02");
    netbytes::put_signed_big(&mut bytes, &(BigInt::from(i64::MAX) + 1));
    assert!(matches!(
        dec(&bytes),
        Err(Error::OutOfRange {
            what: "float exponent"
        })
    ));
}

#[test]
fn netbytes_length_of_length_is_bounded() {
    // 0xff 0xff would nest the length form: refused.
    assert!(matches!(
        dec(&hex("ef ff ff 00")),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        dec(&hex("f3 ff ff 00")),
        Err(Error::OutOfRange { .. })
    ));
    // A length field whose value exceeds u64 is out of range.
    assert!(matches!(
        dec(&hex("f3 fe ff ff ff ff ff ff ff ff")),
        Err(Error::OutOfRange { .. })
    ));
}

#[test]
fn non_minimal_lengths_are_accepted() {
    // 247 as a bytes length in three forms: minimal (f7 00), with a leading
    // zero byte (f8 00 00) and in the nine-byte long form (ff 00, m = 0).
    // VPy accepts all three.
    for length in ["f7 00", "f8 00 00", "ff 00 00 00 00 00 00 00 00 00 00"] {
        let mut bytes = hex(&format!("f3 {length}"));
        bytes.extend_from_slice(&[9u8; 247]);
        assert_eq!(
            dec(&bytes).expect("accepted"),
            Entity::bytes(vec![9u8; 247]),
            "{length}"
        );
    }
    // The same as a tuple count.
    let mut bytes = hex("f6 ff 00 00 00 00 00 00 00 00 00 00");
    bytes.extend_from_slice(&[0x01; 247]);
    let back = dec(&bytes).expect("accepted");
    assert_eq!(back.as_tuple().map(<[Entity]>::len), Some(247));
}

#[test]
fn object_ids_must_fit_i64() {
    let mut bytes = vec![0xfc];
    netbytes::put_signed_big(&mut bytes, &(BigInt::from(i64::MAX) + 1));
    assert!(matches!(
        dec(&bytes),
        Err(Error::OutOfRange { what: "object id" })
    ));
    let mut bytes = vec![0xfd];
    netbytes::put_signed_big(&mut bytes, &(BigInt::from(i64::MIN) - 1));
    assert!(matches!(
        dec(&bytes),
        Err(Error::OutOfRange { what: "object id" })
    ));
    assert_eq!(dec(&hex("fd 0f")).expect("ok"), wire(Owner::Receiver, -7));
}

#[test]
fn malformed_input_never_panics() {
    // Every corpus encoding with one byte changed to each "interesting"
    // value: the decoder may accept or refuse, but must not panic, and what
    // it accepts must survive a round trip.
    for (name, bytes, codec) in corpus().into_iter().filter(|(_, b, _)| b.len() <= 64) {
        for i in 0..bytes.len() {
            for v in [0x00u8, 0x01, 0xef, 0xf0, 0xf3, 0xf5, 0xf6, 0xf7, 0xfe, 0xff] {
                let mut bad = bytes.clone();
                bad[i] = v;
                for config in [DecodeConfig::default(), caps(usize::MAX, 8)] {
                    if let Ok(e) = decode_complete(&bad, codec, config) {
                        let again = encode_to_vec(&e, EncodeConfig::default())
                            .unwrap_or_else(|err| panic!("{name} [{i}]={v:#x}: {err}"));
                        assert_eq!(dec(&again).ok().as_ref(), Some(&e), "{name} [{i}]={v:#x}");
                    }
                }
            }
        }
    }
}

// ---- encoder ---------------------------------------------------------------------

#[test]
fn encoder_depth_cap_leaves_output_untouched() {
    let encoder = Encoder::new(EncodeConfig {
        max_depth: 4,
        ..Default::default()
    });
    let mut out = vec![0xaa, 0xbb];
    let err = encoder
        .encode(&nested(5), &mut RawRefs, &mut out)
        .expect_err("too deep");
    assert!(matches!(err, Error::EncodeTooDeep { max: 4 }));
    assert_eq!(out, vec![0xaa, 0xbb]);
    // Tagged values count as a level too.
    let tagged = Entity::Tagged(Box::new(nested(4)), vec![]);
    assert!(matches!(
        encoder.encode(&tagged, &mut RawRefs, &mut out),
        Err(Error::EncodeTooDeep { max: 4 })
    ));
    encoder
        .encode(&nested(4), &mut RawRefs, &mut out)
        .expect("at the cap");
    assert_eq!(&out[..2], &[0xaa, 0xbb]);
}

#[test]
fn reference_errors_propagate_and_leave_output_untouched() {
    struct Refuse;
    impl RefEncoder<WireRef> for Refuse {
        fn encode_ref(&mut self, r: &WireRef) -> Result<WireRef, Error> {
            Err(Error::BadReference(format!("id {}", r.id)))
        }
    }
    let e = Entity::tuple([Entity::str("x"), wire(Owner::Sender, 9)]);
    let mut out = vec![1, 2, 3];
    let err = Encoder::default()
        .encode(&e, &mut Refuse, &mut out)
        .expect_err("refused");
    assert!(matches!(err, Error::BadReference(ref m) if m == "id 9"));
    assert_eq!(out, vec![1, 2, 3]);
}

/// A VOL-style message `(id, code, (ref, (args...)))` as parts.
fn framed_parts_and_entity(args: &[Entity]) -> (Vec<u8>, Entity) {
    let target = WireRef {
        owner: Owner::Receiver,
        id: 5,
    };
    let payload = [Part::Ref(&target), Part::Items(args)];
    let msg = [Part::Int(300), Part::Int(-7), Part::Tuple(&payload)];
    let mut out = vec![0xee];
    Encoder::default()
        .encode_part(&Part::Tuple(&msg), &mut RawRefs, &mut out)
        .expect("encodes");
    let entity = Entity::tuple([
        Entity::Int(300),
        Entity::Int(-7),
        Entity::tuple([Entity::Ref(target), Entity::Tuple(args.to_vec())]),
    ]);
    (out, entity)
}

#[test]
fn parts_encode_like_the_entity_they_stand_for() {
    let (bytes, entity) = framed_parts_and_entity(&sample());
    assert_eq!(bytes[0], 0xee);
    assert_eq!(&bytes[1..], enc(&entity));
    let (bytes, entity) = framed_parts_and_entity(&[]);
    assert_eq!(&bytes[1..], enc(&entity));
    for e in sample() {
        let mut out = Vec::new();
        Encoder::default()
            .encode_part(&Part::Entity(&e), &mut RawRefs, &mut out)
            .expect("encodes");
        assert_eq!(out, enc(&e));
    }
}

#[test]
fn part_errors_leave_output_untouched() {
    let encoder = Encoder::new(EncodeConfig {
        max_depth: 3,
        ..Default::default()
    });
    let mut out = vec![0xaa];
    // Depth counts through parts and into entities alike.
    let inner = [Part::Entity(&nested(1))];
    let middle = [Part::Tuple(&inner)];
    encoder
        .encode_part(&Part::Tuple(&middle), &mut RawRefs, &mut out)
        .expect("at the cap");
    out.truncate(1);
    let deep = nested(2);
    let inner = [Part::Entity(&deep)];
    let middle = [Part::Tuple(&inner)];
    let err = encoder
        .encode_part(&Part::Tuple(&middle), &mut RawRefs, &mut out)
        .expect_err("too deep");
    assert!(matches!(err, Error::EncodeTooDeep { max: 3 }));
    let items = [nested(3)];
    let wrapped = [Part::Items(&items)];
    assert!(encoder
        .encode_part(&Part::Tuple(&wrapped), &mut RawRefs, &mut out)
        .is_err());
    assert_eq!(out, vec![0xaa]);

    struct Refuse;
    impl RefEncoder<WireRef> for Refuse {
        fn encode_ref(&mut self, r: &WireRef) -> Result<WireRef, Error> {
            Err(Error::BadReference(format!("id {}", r.id)))
        }
    }
    let r = WireRef {
        owner: Owner::Sender,
        id: 4,
    };
    let parts = [Part::Int(1), Part::Ref(&r)];
    let err = Encoder::default()
        .encode_part(&Part::Tuple(&parts), &mut Refuse, &mut out)
        .expect_err("refused");
    assert!(matches!(err, Error::BadReference(ref m) if m == "id 4"));
    assert_eq!(out, vec![0xaa]);
    assert_eq!(
        format!("{:?}", Part::Tuple(&parts)),
        "(1, WireRef { owner: Sender, id: 4 })"
    );
    let items = [Entity::Int(2), Entity::None];
    assert_eq!(format!("{:?}", Part::<WireRef>::Items(&items)), "(2, None)");
}

#[test]
fn non_finite_floats_have_no_entity() {
    assert!(Entity::<WireRef>::float(f64::NAN).is_none());
    assert!(Entity::<WireRef>::float(f64::INFINITY).is_none());
    assert!(Entity::<WireRef>::float(f64::NEG_INFINITY).is_none());
    assert!(Entity::<WireRef>::float(f64::MAX).is_some());
}

// ---- netbytes vectors from VPy -----------------------------------------------------

#[test]
fn netbytes_match_vpy() {
    let all: Vec<Value> = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    let mut checked = 0;
    for e in all.iter().filter_map(|e| Some((e, e.get("netbytes")?))) {
        let (entry, nb) = e;
        let name = entry["name"].as_str().expect("name");
        let expected = hex(entry["hex"].as_str().expect("hex"));
        if let Some(n) = nb.get("posint") {
            let n: BigUint = n.as_str().expect("decimal").parse().expect("integer");
            let mut out = Vec::new();
            netbytes::put_big(&mut out, &n);
            assert_eq!(out, expected, "{name}: put_big");
            if let Ok(small) = u64::try_from(&n) {
                let mut out = Vec::new();
                netbytes::put_u64(&mut out, small);
                assert_eq!(out, expected, "{name}: put_u64");
            }
            let (v, used) = netbytes::read(&expected).expect("valid").expect("complete");
            assert_eq!(used, expected.len(), "{name}: read length");
            assert_eq!(v.to_biguint(), n, "{name}: read value");
            assert_eq!(
                netbytes::field_len(&expected).expect("valid"),
                Some(expected.len() as u64),
                "{name}: field_len"
            );
            for cut in 0..expected.len() {
                assert_eq!(
                    netbytes::read(&expected[..cut]).expect("prefix"),
                    None,
                    "{name} cut {cut}"
                );
            }
        } else {
            let n: BigInt = nb["signed"]
                .as_str()
                .expect("decimal")
                .parse()
                .expect("integer");
            let mut out = Vec::new();
            netbytes::put_signed_big(&mut out, &n);
            assert_eq!(out, expected, "{name}: put_signed_big");
            let (v, _) = netbytes::read(&expected).expect("valid").expect("complete");
            assert_eq!(netbytes::to_signed(&v), n, "{name}: to_signed");
            let small = i64::try_from(&n).ok();
            assert_eq!(netbytes::to_signed_i64(&v), small, "{name}: to_signed_i64");
            if let Some(small) = small {
                let mut out = Vec::new();
                netbytes::put_signed_i64(&mut out, small);
                assert_eq!(out, expected, "{name}: put_signed_i64");
            }
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} netbytes vectors");
}

#[test]
fn long_form_values_that_fit_are_small_enough() {
    let (v, _) = netbytes::read(&hex("ff 00 00 00 00 00 00 00 00 00 05"))
        .expect("valid")
        .expect("complete");
    assert!(matches!(v, PosInt::Big(_)));
    assert_eq!(v.to_u64("n").expect("fits"), 252);
}

// ---- property test -------------------------------------------------------------------

fn arb_bigint() -> impl Strategy<Value = BigInt> {
    prop_oneof![
        any::<i64>().prop_map(BigInt::from),
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(neg, bytes)| {
            let sign = if neg { Sign::Minus } else { Sign::Plus };
            BigInt::from_bytes_be(sign, &bytes)
        }),
    ]
}

fn arb_vfloat() -> impl Strategy<Value = VFloat> {
    prop_oneof![
        any::<f64>().prop_filter_map("finite", VFloat::from_f64),
        (arb_bigint(), any::<i64>()).prop_map(|(digits, exp)| VFloat::decimal(digits, exp)),
        (arb_bigint(), 2u64.., any::<i64>()).prop_map(|(digits, base, exp)| VFloat {
            digits,
            base,
            exp
        }),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Entity> {
    prop_oneof![
        any::<i64>().prop_map(Entity::Int),
        arb_bigint().prop_map(Entity::int),
        any::<bool>().prop_map(Entity::Bool),
        Just(Entity::None),
        arb_vfloat().prop_map(Entity::Float),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(Entity::Bytes),
        any::<String>().prop_map(Entity::Str),
        (any::<bool>(), any::<i64>()).prop_map(|(sender, id)| {
            let owner = if sender {
                Owner::Sender
            } else {
                Owner::Receiver
            };
            wire(owner, id)
        }),
    ]
}

fn arb_entity() -> impl Strategy<Value = Entity> {
    arb_leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Entity::Tuple),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Entity::Exception),
            (inner.clone(), prop::collection::vec(inner, 0..3))
                .prop_map(|(value, tags)| Entity::Tagged(Box::new(value), tags)),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_entities_round_trip(
        e in arb_entity(),
        utf8 in any::<bool>(),
        split in any::<prop::sample::Index>(),
    ) {
        let codec = utf8.then_some(Codec::Utf8);
        let bytes = encode_to_vec(&e, config(codec)).expect("encodes");
        let back = decode_complete(&bytes, codec, DecodeConfig::default()).expect("decodes");
        prop_assert_eq!(&back, &e);
        // The encoding is canonical: re-encoding the decoded value gives
        // the same bytes.
        prop_assert_eq!(encode_to_vec(&back, config(codec)).expect("encodes"), bytes.clone());
        // Split delivery: nothing before the last byte, the entity after.
        let cut = split.index(bytes.len());
        let mut decoder = Decoder::new(DecodeConfig::default());
        decoder.set_peer_codec(codec);
        let mut buf = BytesMut::from(&bytes[..cut]);
        prop_assert!(decoder.decode(&mut buf, &mut RawRefs).expect("prefix").is_none());
        buf.extend_from_slice(&bytes[cut..]);
        let got = decoder.decode(&mut buf, &mut RawRefs).expect("whole");
        prop_assert_eq!(got.as_ref(), Some(&e));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for codec in [None, Some(Codec::Utf8), Some(Codec::Utf16)] {
            for config in [DecodeConfig::default(), caps(usize::MAX, 16), caps(16, 2)] {
                let _ = decode_complete(&bytes, codec, config);
            }
        }
    }
}

// ---- Reader (decode_with) ---------------------------------------------

/// `(1000, 1, (ref, ("echo", "hi")))`, the shape of a VOL call.
fn call_shape() -> Entity {
    Entity::Tuple(vec![
        Entity::Int(1000),
        Entity::Int(1),
        Entity::Tuple(vec![
            wire(Owner::Receiver, 5),
            Entity::Tuple(vec![Entity::str("echo"), Entity::str("hi")]),
        ]),
    ])
}

fn decoder_utf8() -> Decoder {
    let mut d = Decoder::new(DecodeConfig::default());
    d.set_peer_codec(Some(Codec::Utf8));
    d
}

#[test]
fn reader_takes_a_message_apart_level_by_level() {
    let mut buf = BytesMut::from(&enc(&call_shape())[..]);
    // A second message behind the first stays in the buffer.
    buf.extend_from_slice(&enc(&Entity::Int(7)));
    let mut d = decoder_utf8();
    let got = d
        .decode_with(&mut buf, &mut RawRefs, |r| {
            assert_eq!(r.peek(), Some(super::code::TUPLE));
            assert_eq!(r.tuple()?, Some(3));
            assert_eq!(r.remaining(), 3);
            assert_eq!(r.tuple()?, None, "an int is not a tuple");
            let id = r.int();
            let code = r.int();
            assert_eq!(r.tuple()?, Some(2));
            let target: Entity = r.entity()?;
            assert_eq!(r.int(), None, "a tuple is not an int");
            assert_eq!(r.tuple()?, Some(2));
            let method: Entity = r.entity()?;
            let arg: Entity = r.entity()?;
            assert_eq!(r.remaining(), 0);
            assert_eq!(r.peek(), None, "nothing left to read");
            Ok((id, code, target, method, arg))
        })
        .expect("reads")
        .expect("a whole message");
    assert_eq!(
        got,
        (
            Some(1000),
            Some(1),
            wire(Owner::Receiver, 5),
            Entity::str("echo"),
            Entity::str("hi")
        )
    );
    assert_eq!(dec(&buf).expect("the next message"), Entity::Int(7));
}

#[test]
fn reader_ints_cover_the_i64_range_and_no_more() {
    for v in [-1i64, 0, 237, 238, -2, -3, i64::MAX, i64::MIN] {
        let mut buf = BytesMut::from(&enc(&Entity::Int(v))[..]);
        let got = decoder_utf8()
            .decode_with(&mut buf, &mut RawRefs, |r| Ok(r.int()))
            .expect("reads");
        assert_eq!(got, Some(Some(v)), "{v}");
    }
    // Beyond i64: not an int for the reader, but readable as an entity.
    let big = Entity::<WireRef>::int(BigInt::from(i64::MAX) + 1);
    let mut buf = BytesMut::from(&enc(&big)[..]);
    let got = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            assert_eq!(r.int(), None);
            r.entity::<WireRef>()
        })
        .expect("reads");
    assert_eq!(got, Some(big));
}

#[test]
fn reader_must_read_the_whole_message() {
    let bytes = enc(&call_shape());
    // Stops after the first two elements.
    let mut buf = BytesMut::from(&bytes[..]);
    let err = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            r.tuple()?;
            r.int();
            r.int();
            Ok(())
        })
        .expect_err("unread elements");
    assert!(matches!(err, Error::Malformed(_)), "{err}");
    assert!(buf.is_empty(), "the message is consumed either way");
    // Reading past the end of a tuple is refused too.
    let mut buf = BytesMut::from(&enc(&Entity::<WireRef>::Tuple(vec![]))[..]);
    let err = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            assert_eq!(r.tuple()?, Some(0));
            r.entity::<WireRef>()
        })
        .expect_err("nothing to read");
    assert!(matches!(err, Error::Malformed(_)), "{err}");
}

#[test]
fn reader_can_skip_what_it_does_not_want() {
    let mut buf = BytesMut::from(&enc(&call_shape())[..]);
    let got = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            r.tuple()?;
            let id = r.int();
            r.skip_rest::<WireRef>()?;
            Ok(id)
        })
        .expect("skipping reads the rest");
    assert_eq!(got, Some(Some(1000)));
    assert!(buf.is_empty());
}

#[test]
fn reader_waits_for_a_whole_message_and_consumes_nothing_before() {
    let bytes = enc(&call_shape());
    let mut d = decoder_utf8();
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        let got = d
            .decode_with(&mut buf, &mut RawRefs, |_| -> Result<(), Error> {
                panic!("called on {cut} of {} bytes", bytes.len())
            })
            .expect("a prefix is not an error");
        assert_eq!(got, None);
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
    // The decoder resumes where its scan left off once the rest arrives.
    let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert_eq!(
        d.decode_with(&mut buf, &mut RawRefs, |r| r.entity::<WireRef>())
            .expect("prefix"),
        None
    );
    buf.extend_from_slice(&bytes[bytes.len() - 1..]);
    let got = d
        .decode_with(&mut buf, &mut RawRefs, |r| r.entity::<WireRef>())
        .expect("reads");
    assert_eq!(got, Some(call_shape()));
}

#[test]
fn reader_refuses_framing_nested_deeper_than_it_tracks() {
    let mut buf = BytesMut::from(&enc(&nested(12))[..]);
    let err = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            while r.tuple()?.is_some() {}
            Ok(())
        })
        .expect_err("too deep for a reader");
    assert!(matches!(err, Error::Malformed(_)), "{err}");
}

#[test]
fn reader_borrows_strings_in_a_utf8_peer_codec_only() {
    let msg = Entity::<WireRef>::Tuple(vec![Entity::str("echo"), Entity::Int(1)]);
    let bytes = enc(&msg);
    let mut buf = BytesMut::from(&bytes[..]);
    let got = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            r.tuple()?;
            assert_eq!(r.int(), None, "a string is not an int");
            let name = r.str()?.map(str::to_owned);
            assert_eq!(r.str()?, None, "an int is not a string");
            let n = r.int();
            Ok((name, n))
        })
        .expect("reads");
    assert_eq!(got, Some((Some("echo".to_owned()), Some(1))));
    // With another peer codec the string is read as an entity instead.
    let mut d = Decoder::new(DecodeConfig::default());
    d.set_peer_codec(Some(Codec::Latin1));
    let mut buf = BytesMut::from(&bytes[..]);
    let got = d
        .decode_with(&mut buf, &mut RawRefs, |r| {
            r.tuple()?;
            assert_eq!(r.str()?, None);
            let e: Entity = r.entity()?;
            r.int();
            Ok(e)
        })
        .expect("reads");
    assert_eq!(got, Some(Entity::str("echo")));
    // Invalid UTF-8 is refused, as by the entity decoder.
    let mut bad = enc(&Entity::<WireRef>::str("ab"));
    let last = bad.len() - 1;
    bad[last] = 0xff;
    let mut buf = BytesMut::from(&bad[..]);
    let err = decoder_utf8()
        .decode_with(&mut buf, &mut RawRefs, |r| {
            r.str().map(|s| s.map(str::to_owned))
        })
        .expect_err("invalid UTF-8");
    assert!(matches!(err, Error::InvalidString { .. }), "{err}");
}

// ---- the encoder against its plain form ---------------------------------

/// The encoder as it was before its fast paths: a recursive walk for the
/// headers, another for the payloads, netbytes pushed byte by byte. The
/// fast encoder must agree with it byte for byte, and fail where it fails.
mod plain {
    use super::super::{code, netbytes, Codec};
    use crate::entity::{Entity, Owner, VFloat, WireRef};

    pub fn put_u64(out: &mut Vec<u8>, n: u64) {
        if n <= 246 {
            out.push(n as u8);
            return;
        }
        let m = n - 247;
        let len = (8 - (m.leading_zeros() / 8) as usize).max(1);
        out.push(246 + len as u8);
        for b in &m.to_be_bytes()[8 - len..] {
            out.push(*b);
        }
    }

    fn put_signed(out: &mut Vec<u8>, v: i64) {
        if v >= 0 {
            put_u64(out, (v as u64) << 1);
        } else if v > i64::MIN {
            put_u64(out, ((-v) as u64) << 1 | 1);
        } else {
            netbytes::put_signed_big(out, &num_bigint::BigInt::from(v));
        }
    }

    fn put_int(out: &mut Vec<u8>, v: i64) {
        if (-1..=237).contains(&v) {
            out.push((v + 1) as u8);
        } else if v >= 238 {
            out.push(code::INT_POS);
            put_u64(out, (v - 238) as u64);
        } else {
            out.push(code::INT_NEG);
            put_u64(out, (-(v + 2)) as u64);
        }
    }

    fn put_float(out: &mut Vec<u8>, f: &VFloat) {
        out.push(match f.base {
            2 => code::FLOAT_2,
            10 => code::FLOAT_10,
            _ => code::FLOAT_N,
        });
        netbytes::put_signed_big(out, &f.digits);
        if f.base != 2 && f.base != 10 {
            netbytes::put_signed_big(out, &num_bigint::BigInt::from(f.base));
        }
        put_signed(out, f.exp);
    }

    /// `None` where the fast encoder must refuse (too deep).
    pub fn encode(
        e: &Entity<WireRef>,
        str_codec: Option<Codec>,
        max_depth: usize,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        headers(e, str_codec, &mut out, 1, max_depth)?;
        payloads(e, str_codec, &mut out);
        Some(out)
    }

    fn headers(
        e: &Entity<WireRef>,
        codec: Option<Codec>,
        out: &mut Vec<u8>,
        depth: usize,
        max: usize,
    ) -> Option<()> {
        if depth > max {
            return None;
        }
        let children = |out: &mut Vec<u8>, c: u8, items: &[Entity<WireRef>]| {
            out.push(c);
            put_u64(out, items.len() as u64);
            items
                .iter()
                .try_for_each(|i| headers(i, codec, out, depth + 1, max))
        };
        match e {
            Entity::Int(v) => put_int(out, *v),
            Entity::BigInt(v) => {
                use num_traits::ToPrimitive;
                match v.to_i64() {
                    Some(small) => put_int(out, small),
                    // Beyond i64: the BigUint path, which the fast paths
                    // left alone.
                    None => out.extend(super::super::encode_to_vec(e, Default::default()).ok()?),
                }
            }
            Entity::Bool(true) => out.push(code::TRUE),
            Entity::Bool(false) => out.push(code::FALSE),
            Entity::None => out.push(code::NONE),
            Entity::Float(f) => put_float(out, f),
            Entity::Bytes(b) => {
                out.push(code::BYTES);
                put_u64(out, b.len() as u64);
            }
            Entity::Str(s) => {
                if codec == Some(Codec::Utf8) {
                    out.push(code::STRING);
                } else {
                    out.push(code::STRING_CODEC);
                    put_u64(out, 4);
                }
                put_u64(out, s.len() as u64);
            }
            Entity::Tuple(items) => children(out, code::TUPLE, items)?,
            Entity::Exception(items) => children(out, code::EXCEPTION, items)?,
            Entity::Tagged(value, tags) => {
                out.push(code::TAGGED);
                put_u64(out, 1 + tags.len() as u64);
                headers(value, codec, out, depth + 1, max)?;
                for t in tags {
                    headers(t, codec, out, depth + 1, max)?;
                }
            }
            Entity::Ref(r) => {
                out.push(match r.owner {
                    Owner::Sender => code::REF_SENDER,
                    Owner::Receiver => code::REF_RECEIVER,
                });
                put_signed(out, r.id);
            }
        }
        Some(())
    }

    fn payloads(e: &Entity<WireRef>, codec: Option<Codec>, out: &mut Vec<u8>) {
        match e {
            Entity::Bytes(b) => out.extend_from_slice(b),
            Entity::Str(s) => {
                out.extend_from_slice(s.as_bytes());
                if codec != Some(Codec::Utf8) {
                    out.extend_from_slice(b"utf8");
                }
            }
            Entity::Tuple(items) | Entity::Exception(items) => {
                for i in items.iter().rev() {
                    payloads(i, codec, out);
                }
            }
            Entity::Tagged(value, tags) => {
                for t in tags.iter().rev() {
                    payloads(t, codec, out);
                }
                payloads(value, codec, out);
            }
            _ => {}
        }
    }
}

/// What the fast encoder writes for `e`, through `encode` and through a
/// VOL-style framing of parts around it; `None` if it refuses.
fn fast_both_ways(e: &Entity, codec: Option<Codec>, max_depth: usize) -> [Option<Vec<u8>>; 2] {
    let encoder = Encoder::new(EncodeConfig {
        str_codec: codec,
        max_depth,
    });
    let mut whole = vec![0x55];
    let whole = encoder
        .encode(e, &mut RawRefs, &mut whole)
        .ok()
        .map(|()| whole[1..].to_vec());
    let target = WireRef {
        owner: Owner::Receiver,
        id: 77,
    };
    let items = match e {
        Entity::Tuple(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    let payload = [Part::Ref(&target), Part::Items(items), Part::Entity(e)];
    let msg = [Part::Int(70_000), Part::Int(1), Part::Tuple(&payload)];
    let mut framed = vec![0x55];
    let framed = encoder
        .encode_part(&Part::Tuple(&msg), &mut RawRefs, &mut framed)
        .ok()
        .map(|()| framed[1..].to_vec());
    [whole, framed]
}

fn plain_both_ways(e: &Entity, codec: Option<Codec>, max_depth: usize) -> [Option<Vec<u8>>; 2] {
    let items = match e {
        Entity::Tuple(items) => items.clone(),
        other => vec![other.clone()],
    };
    let framed = Entity::tuple([
        Entity::Int(70_000),
        Entity::Int(1),
        Entity::tuple([wire(Owner::Receiver, 77), Entity::Tuple(items), e.clone()]),
    ]);
    [
        plain::encode(e, codec, max_depth),
        plain::encode(&framed, codec, max_depth),
    ]
}

#[test]
fn encoder_agrees_with_its_plain_form() {
    let many_strings = Entity::Tuple((0..40).map(|i| Entity::str("s".repeat(i))).collect());
    let mut all = sample();
    all.push(many_strings);
    all.push(Entity::Tuple(
        (0..300).map(|i| Entity::bytes(vec![i as u8; i])).collect(),
    ));
    all.push(Entity::Tuple((-300..300).map(Entity::Int).collect()));
    for e in &all {
        for codec in [Some(Codec::Utf8), None, Some(Codec::Utf16)] {
            for max_depth in [DEFAULT_MAX_DEPTH, 0, 1, 2, 3, 4] {
                assert_eq!(
                    fast_both_ways(e, codec, max_depth),
                    plain_both_ways(e, codec, max_depth),
                    "{e:?} {codec:?} depth cap {max_depth}"
                );
            }
        }
    }
    // Every integer width, both signs.
    for shift in 0..64 {
        for v in [
            1i64 << shift,
            (1i64 << shift).wrapping_sub(1),
            (1i64 << shift).wrapping_neg(),
            237,
            238,
            484,
            485,
        ] {
            for v in [v, v.wrapping_add(238), v.wrapping_sub(2)] {
                let e = Entity::tuple([Entity::Int(v), wire(Owner::Sender, v)]);
                assert_eq!(
                    fast_both_ways(&e, Some(Codec::Utf8), DEFAULT_MAX_DEPTH),
                    plain_both_ways(&e, Some(Codec::Utf8), DEFAULT_MAX_DEPTH),
                    "{v}"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_entities_encode_as_plainly(
        e in arb_entity(),
        codec in prop_oneof![Just(Some(Codec::Utf8)), Just(None), Just(Some(Codec::Utf16))],
        max_depth in prop_oneof![Just(DEFAULT_MAX_DEPTH), 0usize..8],
    ) {
        prop_assert_eq!(
            fast_both_ways(&e, codec, max_depth),
            plain_both_ways(&e, codec, max_depth)
        );
    }
}

// ---- the fast scan against the general one ------------------------------

/// Feeds `bytes` split at `cut` to a decoder with and without the fast
/// scan; both must give the same results and end in the same state.
fn scans_agree(bytes: &[u8], config: DecodeConfig, cut: usize) -> Result<(), String> {
    let run = |general_scan_only: bool| {
        let mut d = Decoder::new(config);
        d.set_peer_codec(Some(Codec::Utf8));
        d.general_scan_only = general_scan_only;
        let shown = |d: &Decoder| {
            let mut d = d.clone();
            d.general_scan_only = false;
            format!("{d:?}")
        };
        let mut buf = BytesMut::from(&bytes[..cut]);
        let first = d.decode(&mut buf, &mut RawRefs);
        let failed = first.is_err();
        let first = format!("{first:?} {} {}", shown(&d), buf.len());
        if failed {
            // A decoder is not used after an error.
            return (first, String::new());
        }
        buf.extend_from_slice(&bytes[cut..]);
        let second = d.decode(&mut buf, &mut RawRefs);
        let second = format!("{second:?} {} {}", shown(&d), buf.len());
        (first, second)
    };
    let run = |general_scan_only| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(general_scan_only)))
            .map_err(|_| format!("panicked, general scan only: {general_scan_only}"))
    };
    let (fast, general) = (run(false)?, run(true)?);
    if fast == general {
        Ok(())
    } else {
        Err(format!(
            "cut {cut}:\n fast    {fast:?}\n general {general:?}"
        ))
    }
}

/// Messages for the scan comparison: the corpus, the samples, and the
/// edges of the fast scan (long-form fields, codes it leaves to the
/// general scan, nesting beyond what it tracks, invalid codes).
fn scan_cases() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = corpus().into_iter().map(|(_, b, _)| b).collect();
    all.extend(sample().iter().map(enc));
    all.push(enc(&call_shape()));
    all.push(enc(&nested(15)));
    all.push(enc(&nested(16)));
    all.push(enc(&nested(17)));
    all.push(enc(&nested(30)));
    all.push(enc(&Entity::tuple([nested(18), Entity::str("x")])));
    all.push(enc(&Entity::Tuple(
        (0..300).map(|i| Entity::bytes(vec![1; i % 7])).collect(),
    )));
    // Long-form length of a string, a non-minimal tuple count, an invalid
    // code inside a tuple, a huge count, a huge payload, a field cut short.
    all.push(hex("f4 ff 00 0000000000000000 05 6162636465"));
    all.push(hex("f6 f800 02 01 02"));
    all.push(hex("f6 02 01 ff"));
    all.push(hex("f6 fe ffffffffffffffff"));
    all.push(hex("f6 02 f3 fe ffffffffffffff00 01"));
    all.push(hex("f6 02 ef fe 01"));
    all.push(hex("f6 01 f6 01 f6 00"));
    all
}

#[test]
fn fast_scan_agrees_with_the_general_one_at_every_cut() {
    for bytes in scan_cases() {
        let n = bytes.len();
        let mut configs = vec![DecodeConfig::default(), caps(usize::MAX, 3)];
        for m in [n / 2, n.saturating_sub(1), n] {
            configs.push(caps(m, DEFAULT_MAX_DEPTH));
        }
        for d in [2, 17] {
            configs.push(caps(DEFAULT_MAX_MESSAGE, d));
        }
        // Every cut of the headers; of a long message's payloads a few.
        let cuts: Vec<usize> = (0..=n)
            .filter(|c| *c < 400 || n - c < 8 || c % 997 == 0)
            .collect();
        for config in configs {
            for &cut in &cuts {
                if let Err(e) = scans_agree(&bytes, config, cut) {
                    panic!("{bytes:02x?} {config:?} {e}");
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn fast_scan_agrees_on_arbitrary_bytes(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), 0xefu8..=0xff, Just(0xf6), Just(0x01)],
            0..48,
        ),
        cut in any::<prop::sample::Index>(),
        max_message in prop_oneof![Just(DEFAULT_MAX_MESSAGE), 0usize..64],
        max_depth in prop_oneof![Just(DEFAULT_MAX_DEPTH), 0usize..20],
    ) {
        let cut = cut.index(bytes.len() + 1);
        let result = scans_agree(&bytes, caps(max_message, max_depth), cut);
        if let Err(e) = result {
            prop_assert!(false, "{:02x?} {}", bytes, e);
        }
    }
}

#[test]
fn short_form_integers_just_beyond_i64_decode_as_big() {
    let edges: [BigInt; 9] = [
        BigInt::from(i64::MIN),
        BigInt::from(i64::MIN) - 1,
        BigInt::from(i64::MIN) - 2,
        -(BigInt::from(u64::MAX) + BigInt::from(1)),
        -(BigInt::from(u64::MAX) + BigInt::from(2)),
        BigInt::from(i64::MAX),
        BigInt::from(i64::MAX) + 1,
        BigInt::from(u64::MAX) + 237,
        BigInt::from(u64::MAX) + 238,
    ];
    for v in edges {
        let e = Entity::int(v.clone());
        let bytes = enc(&e);
        assert_eq!(dec(&bytes).expect("decodes"), e, "{v}");
        let mut buf = BytesMut::from(&bytes[..]);
        let got = decoder_utf8()
            .decode_with(&mut buf, &mut RawRefs, |r| match r.int() {
                Some(i) => Ok(Some(i)),
                None => r.entity::<WireRef>().map(|_| None),
            })
            .expect("reads");
        let fits = i64::try_from(v.clone()).ok();
        assert_eq!(got, Some(fits), "{v}");
    }
}

#[test]
fn the_pending_length_is_known_once_the_headers_are_in() {
    let entity: Entity<WireRef> = Entity::Tuple(vec![
        Entity::Int(7),
        Entity::Bytes(vec![0xab; 100_000]),
        Entity::Bytes(vec![0xcd; 50_000]),
    ]);
    let mut wire = Vec::new();
    Encoder::new(EncodeConfig::default())
        .encode(&entity, &mut RawRefs, &mut wire)
        .expect("encodes");
    let mut decoder = Decoder::new(DecodeConfig::default());
    assert_eq!(decoder.pending_len(), None, "nothing scanned");
    // The headers come first; the payloads follow.
    let mut buf = BytesMut::from(&wire[..64]);
    assert!(decoder
        .decode(&mut buf, &mut RawRefs)
        .expect("ok")
        .is_none());
    assert_eq!(decoder.pending_len(), Some(wire.len()));
    buf.extend_from_slice(&wire[64..]);
    let got = decoder.decode(&mut buf, &mut RawRefs).expect("ok");
    assert_eq!(got.as_ref(), Some(&entity));
    assert_eq!(decoder.pending_len(), None, "taken whole");
    // Headers cut short: not known yet.
    let mut buf = BytesMut::from(&wire[..2]);
    assert!(decoder
        .decode(&mut buf, &mut RawRefs)
        .expect("ok")
        .is_none());
    assert_eq!(decoder.pending_len(), None);
}
