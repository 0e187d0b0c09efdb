//! Round trips through the serde mapping, the frozen dict against VPy's bytes,
//! and JSON in both directions.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use ::serde::de::DeserializeOwned;
use ::serde::{Deserialize, Serialize};
use num_bigint::BigInt;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::entity::{Entity, Owner, VFloat, WireRef};
use crate::vec::{decode_complete, encode_to_vec, DecodeConfig, EncodeConfig};

/// Converts `value` to an entity, checks the entity is `expected`, and
/// converts it back, owned and borrowed.
fn round_trip<T>(value: T, expected: Entity)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let entity: Entity = to_entity(&value).expect("to entity");
    assert_eq!(entity, expected, "entity of {value:?}");
    let borrowed: T = from_entity_ref(&entity).expect("from borrowed entity");
    assert_eq!(borrowed, value);
    let owned: T = from_entity(entity).expect("from owned entity");
    assert_eq!(owned, value);
}

fn int(v: i64) -> Entity {
    Entity::Int(v)
}

fn s(v: &str) -> Entity {
    Entity::str(v)
}

fn big(text: &str) -> Entity {
    Entity::int(text.parse::<BigInt>().expect("decimal"))
}

fn err_text<T: DeserializeOwned + Debug>(entity: Entity) -> String {
    from_entity::<T, WireRef>(entity)
        .expect_err("conversion must fail")
        .to_string()
}

#[test]
fn primitives_round_trip() {
    round_trip(true, Entity::Bool(true));
    round_trip(false, Entity::Bool(false));
    round_trip(-5i8, int(-5));
    round_trip(i16::MIN, int(i16::MIN.into()));
    round_trip(i32::MAX, int(i32::MAX.into()));
    round_trip(i64::MIN, int(i64::MIN));
    round_trip(255u8, int(255));
    round_trip(u16::MAX, int(u16::MAX.into()));
    round_trip(u32::MAX, int(u32::MAX.into()));
    round_trip(7u64, int(7));
    round_trip(7i128, int(7));
    round_trip(7u128, int(7));
    round_trip(1.5f64, Entity::float(1.5).expect("finite"));
    round_trip(0.1f32, Entity::float(f64::from(0.1f32)).expect("finite"));
    round_trip('é', s("é"));
    round_trip("hello".to_string(), s("hello"));
}

#[test]
fn big_integers_round_trip() {
    round_trip(u64::MAX, big("18446744073709551615"));
    round_trip(i64::MAX as u64 + 1, big("9223372036854775808"));
    round_trip(i128::MIN, big("-170141183460469231731687303715884105728"));
    round_trip(i128::MAX, big("170141183460469231731687303715884105727"));
    round_trip(u128::MAX, big("340282366920938463463374607431768211455"));
    // Values in i64 range use the fast path whatever the Rust type.
    let e: Entity = to_entity(&(u64::MAX >> 1)).expect("ok");
    assert!(matches!(e, Entity::Int(i64::MAX)));
    let e: Entity = to_entity(&-1i128).expect("ok");
    assert!(matches!(e, Entity::Int(-1)));
}

#[test]
fn integers_out_of_range_name_value_and_type() {
    assert_eq!(
        err_text::<u8>(int(300)),
        "cannot convert: integer 300 does not fit in u8"
    );
    assert_eq!(
        err_text::<u32>(int(-1)),
        "cannot convert: integer -1 does not fit in u32"
    );
    assert_eq!(
        err_text::<i64>(big("18446744073709551615")),
        "cannot convert: integer 18446744073709551615 does not fit in i64"
    );
    assert_eq!(
        err_text::<u128>(big("-170141183460469231731687303715884105728")),
        "cannot convert: integer -170141183460469231731687303715884105728 does not fit in u128"
    );
    // The same check applies inside containers.
    assert!(err_text::<Vec<i8>>(Entity::tuple([int(1), int(128)])).contains("128"));
}

#[test]
fn floats_convert_from_any_number() {
    // Base 10 converts to the nearest f64.
    let dec = Entity::Float(VFloat::decimal(125, -2));
    assert_eq!(from_entity::<f64, WireRef>(dec.clone()).expect("ok"), 1.25);
    assert_eq!(from_entity::<f32, WireRef>(dec).expect("ok"), 1.25);
    assert_eq!(from_entity::<f64, WireRef>(int(-3)).expect("ok"), -3.0);
    assert_eq!(
        from_entity::<f64, WireRef>(big("18446744073709551616")).expect("ok"),
        18446744073709551616.0
    );
    // Too big for the target.
    assert_eq!(
        err_text::<f32>(Entity::float(1e300).expect("finite")),
        "cannot convert: number 1e300 does not fit in f32"
    );
    let huge = Entity::Float(VFloat::decimal(1, 400));
    assert!(err_text::<f64>(huge).contains("does not fit in f64"));
    let huge_int = Entity::int(BigInt::from(1) << 2000);
    assert!(err_text::<f64>(huge_int).contains("does not fit in f64"));
    // Floats do not turn into integers.
    assert_eq!(
        err_text::<i32>(Entity::float(1.0).expect("finite")),
        "cannot convert: expected i32, found float"
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Unit;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Meters(f64);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Pair(i32, String);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: Option<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Shape {
    name: String,
    points: Vec<Point>,
    origin: Point,
    tags: BTreeMap<String, u8>,
}

#[test]
fn options_units_and_newtypes() {
    round_trip(None::<i32>, Entity::None);
    round_trip(Some(3), int(3));
    round_trip(Some("x".to_string()), s("x"));
    round_trip((), Entity::None);
    round_trip(Unit, Entity::None);
    round_trip(Meters(2.0), Entity::float(2.0).expect("finite"));
    // Documented loss: a nested Some(None) comes back as None.
    let e: Entity = to_entity(&Some(None::<i32>)).expect("ok");
    assert_eq!(from_entity::<Option<Option<i32>>, _>(e).expect("ok"), None);
}

#[test]
fn sequences_tuples_and_structs_are_tuples() {
    round_trip(vec![1u32, 2, 3], Entity::tuple([int(1), int(2), int(3)]));
    round_trip(Vec::<i32>::new(), Entity::tuple([]));
    round_trip(
        (1, "a".to_string(), true),
        Entity::tuple([int(1), s("a"), Entity::Bool(true)]),
    );
    round_trip([7u8, 8], Entity::tuple([int(7), int(8)]));
    round_trip(Pair(4, "b".into()), Entity::tuple([int(4), s("b")]));
    round_trip(
        Point {
            x: 1,
            y: -2,
            label: None,
        },
        Entity::tuple([int(1), int(-2), Entity::None]),
    );
    // Plain Vec<u8> is a tuple of ints under serde.
    round_trip(vec![0u8, 255], Entity::tuple([int(0), int(255)]));
}

#[test]
fn nested_structs_round_trip() {
    let shape = Shape {
        name: "tri".into(),
        points: vec![
            Point {
                x: 0,
                y: 0,
                label: Some("a".into()),
            },
            Point {
                x: 3,
                y: 4,
                label: None,
            },
        ],
        origin: Point {
            x: 9,
            y: 9,
            label: None,
        },
        tags: BTreeMap::from([("k".to_string(), 1)]),
    };
    let expected = Entity::tuple([
        s("tri"),
        Entity::tuple([
            Entity::tuple([int(0), int(0), s("a")]),
            Entity::tuple([int(3), int(4), Entity::None]),
        ]),
        Entity::tuple([int(9), int(9), Entity::None]),
        frozen_dict([(s("k"), int(1))]),
    ]);
    round_trip(shape, expected);
}

#[test]
fn maps_are_frozen_dicts() {
    round_trip(
        BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]),
        frozen_dict([(s("a"), int(1)), (s("b"), int(2))]),
    );
    round_trip(BTreeMap::<i32, i32>::new(), frozen_dict([]));
    // Any key type.
    round_trip(
        BTreeMap::from([((1, 2), vec![true])]),
        frozen_dict([(
            Entity::tuple([int(1), int(2)]),
            Entity::tuple([Entity::Bool(true)]),
        )]),
    );
    let map: HashMap<String, Vec<i64>> =
        HashMap::from([("x".into(), vec![1, 2]), ("y".into(), vec![])]);
    let e: Entity = to_entity(&map).expect("ok");
    assert_eq!(as_frozen_dict(&e).expect("dict").len(), 2);
    assert_eq!(
        from_entity::<HashMap<String, Vec<i64>>, _>(e).expect("ok"),
        map
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Op {
    Stop,
    Move(i32),
    Line(i32, i32),
    Label { text: String, size: u8 },
    Wrap((i32, i32)),
}

#[test]
fn enums_round_trip() {
    round_trip(Op::Stop, s("Stop"));
    round_trip(Op::Move(5), Entity::tuple([s("Move"), int(5)]));
    round_trip(Op::Line(1, 2), Entity::tuple([s("Line"), int(1), int(2)]));
    round_trip(
        Op::Label {
            text: "t".into(),
            size: 3,
        },
        Entity::tuple([s("Label"), s("t"), int(3)]),
    );
    // A newtype variant holding a tuple keeps it nested.
    round_trip(
        Op::Wrap((1, 2)),
        Entity::tuple([s("Wrap"), Entity::tuple([int(1), int(2)])]),
    );
    round_trip(
        vec![Op::Stop, Op::Move(1)],
        Entity::tuple([s("Stop"), Entity::tuple([s("Move"), int(1)])]),
    );
    // A unit variant is also accepted as a one-element tuple.
    assert_eq!(
        from_entity::<Op, WireRef>(Entity::tuple([s("Stop")])).expect("ok"),
        Op::Stop
    );
}

#[test]
fn structs_also_read_from_frozen_dicts() {
    let e = frozen_dict([
        (s("y"), int(2)),
        (s("x"), int(1)),
        (
            s("extra"),
            Entity::Ref(WireRef {
                owner: Owner::Sender,
                id: 1,
            }),
        ),
    ]);
    assert_eq!(
        from_entity::<Point, WireRef>(e).expect("ok"),
        Point {
            x: 1,
            y: 2,
            label: None
        }
    );
}

#[test]
fn bytes_helper_sends_bytes() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Blob {
        #[serde(with = "crate::serde::bytes")]
        data: Vec<u8>,
    }
    round_trip(
        Blob {
            data: vec![0, 1, 255],
        },
        Entity::tuple([Entity::bytes(vec![0, 1, 255])]),
    );
    // A tuple of ints is accepted too.
    let e = Entity::tuple([Entity::tuple([int(9), int(8)])]);
    assert_eq!(
        from_entity::<Blob, WireRef>(e).expect("ok"),
        Blob { data: vec![9, 8] }
    );
    // And Bytes read into a plain Vec<u8> or array.
    assert_eq!(
        from_entity::<Vec<u8>, WireRef>(Entity::bytes(vec![4, 5])).expect("ok"),
        vec![4, 5]
    );
    assert_eq!(
        from_entity::<[u8; 2], WireRef>(Entity::bytes(vec![4, 5])).expect("ok"),
        [4, 5]
    );
}

#[test]
fn borrowed_reads_lend_strings_and_bytes() {
    #[derive(Deserialize)]
    struct View<'a> {
        name: &'a str,
        #[serde(borrow)]
        raw: &'a [u8],
    }
    let e: Entity = Entity::tuple([s("n"), Entity::bytes(vec![1])]);
    let view: View<'_> = from_entity_ref(&e).expect("ok");
    assert_eq!(view.name, "n");
    assert_eq!(view.raw, &[1]);
}

/// The encoding of VPy's `VFrozenDict({'a': 1})`, captured by running, in
/// /work/vpy-venv (versile-python3 0.8.5):
///
/// ```python
/// ctx = VIOContext(); ctx.set_codec(b'utf8')
/// w = VEntityWriter(ctx); w.set_entity(VFrozenDict({'a': 1})); w.write().hex()
/// ```
///
/// `_v_as_tagged` gave value `('a', 1)` and tags `(21, 1, 2)`.
const VPY_FROZEN_DICT_A1: &str = "fe04f602f4010216020361";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn frozen_dict_bytes_match_vpy() {
    let from_map: Entity = to_entity(&BTreeMap::from([("a", 1)])).expect("ok");
    let built: Entity = frozen_dict([(s("a"), int(1))]);
    assert_eq!(from_map, built);
    let bytes = encode_to_vec(&from_map, EncodeConfig::default()).expect("encode");
    assert_eq!(hex(&bytes), VPY_FROZEN_DICT_A1);

    // And VPy's bytes read back into a Rust map.
    let decoded = decode_complete(
        &bytes,
        Some(crate::vec::Codec::Utf8),
        DecodeConfig::default(),
    )
    .expect("decode");
    let map: BTreeMap<String, i32> = from_entity(decoded).expect("map");
    assert_eq!(map, BTreeMap::from([("a".to_string(), 1)]));
}

#[test]
fn frozen_dict_helpers() {
    let e: Entity = frozen_dict([(s("a"), int(1)), (int(2), s("b"))]);
    let Entity::Tagged(value, tags) = &e else {
        panic!("not tagged: {e:?}")
    };
    assert_eq!(**value, Entity::tuple([s("a"), int(1), int(2), s("b")]));
    assert_eq!(tags, &frozen_dict_tags::<WireRef>());

    let view = as_frozen_dict(&e).expect("dict");
    assert_eq!(view.len(), 2);
    assert!(!view.is_empty());
    assert_eq!(view.get_str("a"), Some(&int(1)));
    assert_eq!(view.get_str("b"), None);
    let pairs: Vec<_> = view.iter().collect();
    assert_eq!(pairs, vec![(&s("a"), &int(1)), (&int(2), &s("b"))]);
    assert_eq!(format!("{view:?}"), r#"{"a": 1, 2: "b"}"#);

    assert_eq!(
        into_frozen_dict(e).expect("dict"),
        vec![(s("a"), int(1)), (int(2), s("b"))]
    );

    // Not frozen dicts: wrong tags, residual tags, odd length, no tuple.
    let bad = [
        Entity::Tagged(Box::new(Entity::tuple([])), vec![int(21), int(1), int(3)]),
        Entity::Tagged(
            Box::new(Entity::tuple([])),
            vec![int(21), int(1), int(2), int(0)],
        ),
        Entity::Tagged(Box::new(Entity::tuple([s("k")])), frozen_dict_tags()),
        Entity::Tagged(Box::new(s("k")), frozen_dict_tags()),
        Entity::tuple([]),
    ];
    for entity in bad {
        assert!(as_frozen_dict(&entity).is_none(), "{entity:?}");
        assert_eq!(
            into_frozen_dict(entity.clone()).expect_err("not a dict"),
            entity
        );
    }
}

#[test]
fn json_from_every_entity_variant() {
    let cases: Vec<(Entity, serde_json::Value)> = vec![
        (int(-7), json!(-7)),
        (big("18446744073709551615"), json!(u64::MAX)),
        (big("-9223372036854775809"), json!("-9223372036854775809")),
        (Entity::Bool(true), json!(true)),
        (Entity::None, json!(null)),
        (Entity::float(0.5).expect("finite"), json!(0.5)),
        (Entity::Float(VFloat::decimal(25, -1)), json!(2.5)),
        (Entity::Float(VFloat::decimal(1, 400)), json!("1*10^400")),
        (Entity::bytes(vec![1, 2]), json!([1, 2])),
        (s("x"), json!("x")),
        (Entity::tuple([int(1), Entity::tuple([])]), json!([1, []])),
        (frozen_dict([(s("a"), int(1))]), json!({"a": 1})),
        (
            frozen_dict([
                (int(1), s("x")),
                (Entity::Bool(false), Entity::None),
                (Entity::None, int(0)),
                (Entity::float(1.5).expect("finite"), int(2)),
            ]),
            json!({"1": "x", "false": null, "null": 0, "1.5": 2}),
        ),
        (
            frozen_dict([(Entity::tuple([]), int(1))]),
            json!({"tagged": [[[], 1], 21, 1, 2]}),
        ),
        (
            Entity::Tagged(Box::new(s("v")), vec![int(-1), s("t")]),
            json!({"tagged": ["v", -1, "t"]}),
        ),
        (
            Entity::Exception(vec![s("boom"), int(3)]),
            json!({"exception": ["boom", 3]}),
        ),
    ];
    for (entity, expected) in cases {
        let borrowed: serde_json::Value = from_entity_ref(&entity).expect("borrowed");
        assert_eq!(borrowed, expected, "{entity:?}");
        let owned: serde_json::Value = from_entity(entity.clone()).expect("owned");
        assert_eq!(owned, expected, "{entity:?}");
    }
}

#[test]
fn json_back_to_entities() {
    // The lossless cases come back as the same entity.
    let lossless: Vec<Entity> = vec![
        int(-7),
        big("18446744073709551615"),
        Entity::Bool(false),
        Entity::None,
        Entity::float(0.5).expect("finite"),
        s("x"),
        Entity::tuple([int(1), Entity::tuple([s("y")])]),
        frozen_dict([(s("a"), Entity::tuple([int(1)])), (s("b"), frozen_dict([]))]),
    ];
    for entity in lossless {
        let json: serde_json::Value = from_entity_ref(&entity).expect("to json");
        let back: Entity = to_entity(&json).expect("to entity");
        assert_eq!(back, entity, "via {json}");
    }
    // The documented lossy ones.
    let lossy: Vec<(Entity, Entity)> = vec![
        (Entity::bytes(vec![1]), Entity::tuple([int(1)])),
        (
            Entity::Exception(vec![int(1)]),
            frozen_dict([(s("exception"), Entity::tuple([int(1)]))]),
        ),
        (
            Entity::Float(VFloat::decimal(25, -1)),
            Entity::float(2.5).expect("finite"),
        ),
    ];
    for (entity, expected) in lossy {
        let json: serde_json::Value = from_entity_ref(&entity).expect("to json");
        assert_eq!(to_entity::<_, WireRef>(&json).expect("to entity"), expected);
    }
}

#[test]
fn json_objects_become_frozen_dicts() {
    let e: Entity =
        to_entity(&json!({"n": null, "l": [1, 2.5, "s"], "big": u64::MAX})).expect("ok");
    // serde_json orders keys.
    assert_eq!(
        e,
        frozen_dict([
            (s("big"), big("18446744073709551615")),
            (
                s("l"),
                Entity::tuple([int(1), Entity::float(2.5).expect("finite"), s("s")])
            ),
            (s("n"), Entity::None),
        ])
    );
}

#[test]
fn references_are_refused() {
    let r = || {
        Entity::Ref(WireRef {
            owner: Owner::Receiver,
            id: 4,
        })
    };
    assert_eq!(
        err_text::<u32>(r()),
        "object reference cannot be converted to u32"
    );
    assert_eq!(
        err_text::<serde_json::Value>(Entity::tuple([int(1), r()])),
        "object reference cannot be converted to a plain value"
    );
    assert!(matches!(
        from_entity::<Point, WireRef>(r()),
        Err(Error::RefNotConvertible(t)) if t == "tuple (struct Point)"
    ));
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn json_survives_entity_round_trip(value in json_value()) {
        let entity: Entity = to_entity(&value).expect("to entity");
        let bytes = encode_to_vec(&entity, EncodeConfig::default()).expect("encode");
        let decoded = decode_complete(&bytes, Some(crate::vec::Codec::Utf8), DecodeConfig::default())
            .expect("decode");
        prop_assert_eq!(&decoded, &entity);
        let back: serde_json::Value = from_entity(decoded).expect("to json");
        prop_assert_eq!(back, value);
    }
}
