//! Byte-for-byte compatibility of vole's VEC codec with Versile Python.
//!
//! `fixtures/vpy_entities.json` holds encodings captured from VPy's own
//! encoder by `fixtures/capture_vpy.py` (its header documents the format and
//! how to rerun it). For every entity vector this test builds the expected
//! [`Entity`] from the value description and checks that
//!
//! * vole encodes it to exactly VPy's bytes (unless the vector is marked
//!   `decode_only`: vole always writes UTF-8, so strings VPy sent in UTF-16
//!   are decode-only), and
//! * vole decodes VPy's bytes back to exactly that entity.
//!
//! # How maps travel (for the serde mapping)
//!
//! Lists, dicts and sets do not exist on the wire. VPy sends a dict as VSE
//! `VFrozenDict`, which is a VER tagged value (see the `vse frozendict*`
//! vectors):
//!
//! ```text
//! Tagged(Tuple([k1, v1, k2, v2, ...]), [Int(21), Int(1), Int(2)])
//! bytes: fe 04 f6 <2n> <k1> <v1> ... 16 02 03 <payloads>
//! ```
//!
//! * The value is one flat tuple alternating keys and values, in the dict's
//!   iteration (insertion) order. VPy's decoder rejects an odd length,
//!   duplicate keys and any tag after the type tags.
//! * The tags are VER's OID form: the first tag is `10 * len(oid) + 1`, so
//!   `21` announces two OID arcs relative to the Versile VSE prefix
//!   `1.3.6.1.4.1.38927.1`; `(1, 2)` makes `1.3.6.1.4.1.38927.1.1.2`,
//!   "container/frozendict". (A first tag `10 * len + 0` would carry an
//!   absolute OID.) `VFrozenSet` is the same with `(21, 1, 3)` and a tuple
//!   of elements.
//! * VER also defines a name form, `(-1, ("versile", "container",
//!   "frozendict"), (0, 8))`, which VPy's decoder accepts, but VPy 0.8.5
//!   never sends it (its contexts default to the OID form and its name-form
//!   encoder raises `AttributeError`). vole should send the OID form and may
//!   accept both.

use serde_json::Value;
use vole_transport::vec::{decode_complete, encode_to_vec, Codec, DecodeConfig, EncodeConfig};
use vole_transport::{BigInt, Entity, Owner, VFloat, WireRef};

const FIXTURE: &str = include_str!("fixtures/vpy_entities.json");

/// One entity vector of the fixture.
struct Vector {
    name: String,
    value: Entity,
    codec: Option<Codec>,
    bytes: Vec<u8>,
    decode_only: bool,
    /// Python floats: the `repr` of the float VPy converted.
    floats: Vec<(f64, VFloat)>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} must be a string: {v}"))
}

fn big(v: &Value, what: &str) -> BigInt {
    text(v, what)
        .parse()
        .unwrap_or_else(|_| panic!("{what} must be a decimal integer: {v}"))
}

fn list<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} must be a list: {v}"))
}

/// Builds the entity a value description stands for, collecting the Python
/// floats it contains.
fn build(desc: &Value, floats: &mut Vec<(f64, VFloat)>) -> Entity {
    let obj = desc
        .as_object()
        .unwrap_or_else(|| panic!("description must be an object: {desc}"));
    let (kind, body) = obj
        .iter()
        .find(|(k, _)| k.as_str() != "encoding")
        .unwrap_or_else(|| panic!("empty description: {desc}"));
    match kind.as_str() {
        "int" => Entity::int(big(body, "int")),
        "bool" => Entity::Bool(body.as_bool().expect("bool must be true or false")),
        "none" => {
            assert!(body.is_null(), "none must be null");
            Entity::None
        }
        "float" => {
            let f = VFloat {
                digits: big(&body["digits"], "float digits"),
                base: body["base"].as_u64().expect("float base must be a u64"),
                exp: body["exp"].as_i64().expect("float exp must be an i64"),
            };
            if let Some(repr) = body.get("f64") {
                let v: f64 = text(repr, "f64").parse().expect("f64 repr parses");
                floats.push((v, f.clone()));
            }
            Entity::Float(f)
        }
        "bytes" => Entity::Bytes(hex(text(body, "bytes"))),
        "str" => Entity::Str(text(body, "str").to_owned()),
        "tuple" => Entity::Tuple(build_all(body, "tuple", floats)),
        "exception" => Entity::Exception(build_all(body, "exception", floats)),
        "tagged" => {
            let value = build(&body["value"], floats);
            let tags = build_all(&body["tags"], "tags", floats);
            Entity::Tagged(Box::new(value), tags)
        }
        "ref" => {
            let owner = match text(&body["owner"], "ref owner") {
                "sender" => Owner::Sender,
                "receiver" => Owner::Receiver,
                other => panic!("unknown ref owner {other:?}"),
            };
            let id = body["id"].as_i64().expect("ref id must be an i64");
            Entity::Ref(WireRef { owner, id })
        }
        other => panic!("unknown description kind {other:?}"),
    }
}

fn build_all(items: &Value, what: &str, floats: &mut Vec<(f64, VFloat)>) -> Vec<Entity> {
    list(items, what).iter().map(|d| build(d, floats)).collect()
}

fn vectors() -> Vec<Vector> {
    let all: Vec<Value> = serde_json::from_str(FIXTURE).expect("fixture is valid JSON");
    all.iter()
        .filter(|e| e.get("value").is_some())
        .map(|e| {
            let name = text(&e["name"], "name").to_owned();
            let codec = match &e["codec"] {
                Value::Null => None,
                c => Some(
                    Codec::from_name(text(c, "codec").as_bytes())
                        .unwrap_or_else(|| panic!("{name}: unknown codec {c}")),
                ),
            };
            let mut floats = Vec::new();
            let value = build(&e["value"], &mut floats);
            Vector {
                value,
                codec,
                bytes: hex(text(&e["hex"], "hex")),
                decode_only: e
                    .get("decode_only")
                    .is_some_and(|d| d.as_bool().expect("decode_only is a bool")),
                floats,
                name,
            }
        })
        .collect()
}

#[test]
fn fixture_covers_the_corpus() {
    let vectors = vectors();
    // The test below must not pass vacuously on an empty or cut fixture.
    assert!(
        vectors.len() >= 150,
        "only {} entity vectors",
        vectors.len()
    );
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    for must in [
        "int -3",
        "int 240",
        "int 485",
        "int -9223372036854775808",
        "int 18446744073709552101",
        "int 200 digits negative",
        "float 5e-324",
        "float 1.7976931348623157e+308",
        "decimal 1E+30",
        "vfloat 3*5^-4",
        "bytes 300",
        "str emoji",
        "str emoji [no codec]",
        "str utf16 explicit",
        "tuple depth 50",
        "exception args",
        "tagged unit",
        "vse frozendict",
        "ref sender 1",
        "ref receiver -7",
        "vol hello vpy",
        "vol hello vole",
    ] {
        assert!(names.contains(&must), "fixture lacks {must:?}");
    }
    let encodable = vectors.iter().filter(|v| !v.decode_only).count();
    assert!(encodable >= 120, "only {encodable} encodable vectors");
}

#[test]
fn vole_encodes_exactly_like_vpy() {
    let mut checked = 0;
    for v in vectors().iter().filter(|v| !v.decode_only) {
        let config = EncodeConfig {
            str_codec: v.codec,
            ..Default::default()
        };
        let ours = encode_to_vec(&v.value, config)
            .unwrap_or_else(|e| panic!("{}: encode failed: {e}", v.name));
        assert_eq!(
            to_hex(&ours),
            to_hex(&v.bytes),
            "{}: encoding differs from VPy",
            v.name
        );
        checked += 1;
    }
    assert!(checked >= 120);
}

#[test]
fn vole_decodes_every_vpy_encoding() {
    let mut checked = 0;
    for v in vectors() {
        let ours = decode_complete(&v.bytes, v.codec, DecodeConfig::default())
            .unwrap_or_else(|e| panic!("{}: decode failed: {e}", v.name));
        assert_eq!(ours, v.value, "{}: decoded value differs", v.name);
        checked += 1;
    }
    assert!(checked >= 150);
}

#[test]
fn python_floats_normalize_like_vpy() {
    let mut checked = 0;
    for v in vectors() {
        for (f, expected) in &v.floats {
            assert_eq!(
                VFloat::from_f64(*f).as_ref(),
                Some(expected),
                "{}: VFloat::from_f64({f:?})",
                v.name
            );
            assert_eq!(expected.to_f64(), Some(*f), "{}: to_f64", v.name);
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} Python floats in the fixture");
}

#[test]
fn vole_hello_is_what_the_fixture_says() {
    // The hello vole sends, built by hand, against VPy's encoding of it.
    let hello: Entity = Entity::tuple([
        Entity::bytes(&b"VOL_DRAFT"[..]),
        Entity::tuple([Entity::Bool(false), Entity::None, Entity::None]),
        Entity::tuple([Entity::Int(0), Entity::Int(8)]),
    ]);
    let v = vectors()
        .into_iter()
        .find(|v| v.name == "vol hello vole")
        .expect("vector present");
    assert_eq!(v.value, hello);
    let ours = encode_to_vec(&hello, EncodeConfig::default()).expect("encodes");
    assert_eq!(to_hex(&ours), to_hex(&v.bytes));
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
