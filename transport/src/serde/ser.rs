//! Rust values to entities: [`to_entity`] and the serde `Serializer` behind
//! it.

use std::marker::PhantomData;

use ::serde::ser::{self, Serialize};
use num_bigint::BigInt;

use super::depth::MAX_DEPTH;
use super::frozen_dict::frozen_dict_from_flat;
use crate::entity::{Entity, VFloat};
use crate::Error;

/// Converts a Rust value into an entity (see the [`serde`](super) module doc
/// for the mapping).
///
/// Fails with [`Error::NonFiniteFloat`] for NaN or infinite floats,
/// [`Error::EncodeTooDeep`] beyond [`MAX_DEPTH`] and [`Error::Convert`] when
/// the value's own `Serialize` implementation reports an error.
pub fn to_entity<T: Serialize + ?Sized, R>(value: &T) -> Result<Entity<R>, Error> {
    value.serialize(Serializer::new())
}

/// Builds one entity at a known nesting depth (1 = top level).
pub(super) struct Serializer<R> {
    depth: usize,
    _refs: PhantomData<fn() -> R>,
}

impl<R> Serializer<R> {
    /// A serializer for a top-level value.
    pub(super) fn new() -> Self {
        Serializer::at(1)
    }

    fn at(depth: usize) -> Self {
        Serializer {
            depth,
            _refs: PhantomData,
        }
    }
}

/// A serializer `levels` below `depth`, or the depth error.
fn nested<R>(depth: usize, levels: usize) -> Result<Serializer<R>, Error> {
    let depth = depth + levels;
    if depth > MAX_DEPTH {
        Err(Error::EncodeTooDeep { max: MAX_DEPTH })
    } else {
        Ok(Serializer::at(depth))
    }
}

/// Collects the elements of a tuple-shaped value: sequences, tuples, structs
/// and the payload of enum variants (which start with the variant name).
pub(super) struct TupleBuilder<R> {
    items: Vec<Entity<R>>,
    depth: usize,
}

impl<R> TupleBuilder<R> {
    fn new(depth: usize, len: usize, variant: Option<&'static str>) -> Self {
        // `len` comes from the Rust value, but cap the pre-allocation anyway.
        let mut items = Vec::with_capacity(len.min(4096) + usize::from(variant.is_some()));
        if let Some(name) = variant {
            items.push(Entity::str(name));
        }
        TupleBuilder { items, depth }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let entity = value.serialize(nested::<R>(self.depth, 1)?)?;
        self.items.push(entity);
        Ok(())
    }

    fn finish(self) -> Entity<R> {
        Entity::Tuple(self.items)
    }
}

/// Collects a map into a frozen dict.
pub(super) struct MapBuilder<R> {
    /// `k, v, k, v, ...`; odd length while a key waits for its value.
    items: Vec<Entity<R>>,
    depth: usize,
}

impl<R> MapBuilder<R> {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        // Keys and values sit inside the tuple inside the tagged value.
        let entity = value.serialize(nested::<R>(self.depth, 2)?)?;
        self.items.push(entity);
        Ok(())
    }

    fn waiting_for_value(&self) -> bool {
        self.items.len() % 2 == 1
    }
}

impl<R> ser::Serializer for Serializer<R> {
    type Ok = Entity<R>;
    type Error = Error;
    type SerializeSeq = TupleBuilder<R>;
    type SerializeTuple = TupleBuilder<R>;
    type SerializeTupleStruct = TupleBuilder<R>;
    type SerializeTupleVariant = TupleBuilder<R>;
    type SerializeMap = MapBuilder<R>;
    type SerializeStruct = TupleBuilder<R>;
    type SerializeStructVariant = TupleBuilder<R>;

    fn serialize_bool(self, v: bool) -> Result<Entity<R>, Error> {
        Ok(Entity::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v.into()))
    }

    fn serialize_i16(self, v: i16) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v.into()))
    }

    fn serialize_i32(self, v: i32) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v.into()))
    }

    fn serialize_i64(self, v: i64) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Entity<R>, Error> {
        Ok(Entity::int(BigInt::from(v)))
    }

    fn serialize_u8(self, v: u8) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v.into()))
    }

    fn serialize_u16(self, v: u16) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v.into()))
    }

    fn serialize_u32(self, v: u32) -> Result<Entity<R>, Error> {
        Ok(Entity::Int(v.into()))
    }

    fn serialize_u64(self, v: u64) -> Result<Entity<R>, Error> {
        Ok(match i64::try_from(v) {
            Ok(small) => Entity::Int(small),
            Err(_) => Entity::BigInt(BigInt::from(v)),
        })
    }

    fn serialize_u128(self, v: u128) -> Result<Entity<R>, Error> {
        Ok(Entity::int(BigInt::from(v)))
    }

    fn serialize_f32(self, v: f32) -> Result<Entity<R>, Error> {
        // Every f32 is exactly representable as an f64.
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<Entity<R>, Error> {
        VFloat::from_f64(v)
            .map(Entity::Float)
            .ok_or(Error::NonFiniteFloat)
    }

    fn serialize_char(self, v: char) -> Result<Entity<R>, Error> {
        Ok(Entity::Str(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<Entity<R>, Error> {
        Ok(Entity::str(v))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Entity<R>, Error> {
        Ok(Entity::bytes(v))
    }

    fn serialize_none(self) -> Result<Entity<R>, Error> {
        Ok(Entity::None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Entity<R>, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Entity<R>, Error> {
        Ok(Entity::None)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Entity<R>, Error> {
        Ok(Entity::None)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Entity<R>, Error> {
        Ok(Entity::str(variant))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Entity<R>, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Entity<R>, Error> {
        let mut tuple = TupleBuilder::new(self.depth, 1, Some(variant));
        tuple.push(value)?;
        Ok(tuple.finish())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<TupleBuilder<R>, Error> {
        Ok(TupleBuilder::new(self.depth, len.unwrap_or(0), None))
    }

    fn serialize_tuple(self, len: usize) -> Result<TupleBuilder<R>, Error> {
        Ok(TupleBuilder::new(self.depth, len, None))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<TupleBuilder<R>, Error> {
        Ok(TupleBuilder::new(self.depth, len, None))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleBuilder<R>, Error> {
        Ok(TupleBuilder::new(self.depth, len, Some(variant)))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder<R>, Error> {
        Ok(MapBuilder {
            items: Vec::with_capacity(len.unwrap_or(0).min(4096) * 2),
            depth: self.depth,
        })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<TupleBuilder<R>, Error> {
        Ok(TupleBuilder::new(self.depth, len, None))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleBuilder<R>, Error> {
        Ok(TupleBuilder::new(self.depth, len, Some(variant)))
    }
}

impl<R> ser::SerializeSeq for TupleBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }

    fn end(self) -> Result<Entity<R>, Error> {
        Ok(self.finish())
    }
}

impl<R> ser::SerializeTuple for TupleBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }

    fn end(self) -> Result<Entity<R>, Error> {
        Ok(self.finish())
    }
}

impl<R> ser::SerializeTupleStruct for TupleBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }

    fn end(self) -> Result<Entity<R>, Error> {
        Ok(self.finish())
    }
}

impl<R> ser::SerializeTupleVariant for TupleBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }

    fn end(self) -> Result<Entity<R>, Error> {
        Ok(self.finish())
    }
}

impl<R> ser::SerializeStruct for TupleBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.push(value)
    }

    /// Fields are positional, so a skipped field still takes its place.
    fn skip_field(&mut self, _key: &'static str) -> Result<(), Error> {
        self.items.push(Entity::None);
        Ok(())
    }

    fn end(self) -> Result<Entity<R>, Error> {
        Ok(self.finish())
    }
}

impl<R> ser::SerializeStructVariant for TupleBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.push(value)
    }

    /// Fields are positional, so a skipped field still takes its place.
    fn skip_field(&mut self, _key: &'static str) -> Result<(), Error> {
        self.items.push(Entity::None);
        Ok(())
    }

    fn end(self) -> Result<Entity<R>, Error> {
        Ok(self.finish())
    }
}

impl<R> ser::SerializeMap for MapBuilder<R> {
    type Ok = Entity<R>;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        if self.waiting_for_value() {
            return Err(Error::Convert("map key given twice without a value".into()));
        }
        self.push(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.waiting_for_value() {
            return Err(Error::Convert("map value given without a key".into()));
        }
        self.push(value)
    }

    fn end(self) -> Result<Entity<R>, Error> {
        if self.waiting_for_value() {
            return Err(Error::Convert("map key without a value".into()));
        }
        Ok(frozen_dict_from_flat(self.items))
    }
}

#[cfg(test)]
mod tests {
    use ::serde::ser::{SerializeMap, Serializer as _};
    use ::serde::Serialize;

    use super::Serializer;
    use crate::entity::WireRef;
    use crate::serde::{to_entity, MAX_DEPTH};
    use crate::vec::{encode_to_vec, EncodeConfig};
    use crate::{Entity, Error};

    fn ser() -> Serializer<WireRef> {
        Serializer::new()
    }

    #[test]
    fn non_finite_floats_are_refused() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                to_entity::<_, WireRef>(&v),
                Err(Error::NonFiniteFloat)
            ));
        }
        assert!(matches!(
            to_entity::<_, WireRef>(&f32::NAN),
            Err(Error::NonFiniteFloat)
        ));
    }

    #[test]
    fn map_protocol_misuse_is_an_error() {
        let mut m = ser().serialize_map(None).expect("map");
        m.serialize_key(&1).expect("key");
        let twice = m.serialize_key(&2).expect_err("two keys in a row");
        assert!(twice.to_string().contains("twice"), "{twice}");
        assert!(m.end().is_err(), "dangling key");

        let mut m = ser().serialize_map(None).expect("map");
        let err = m.serialize_value(&1).expect_err("value without key");
        assert!(err.to_string().contains("without a key"), "{err}");
    }

    fn nested_vec(depth: usize) -> serde_json::Value {
        let mut v = serde_json::Value::from(1);
        for _ in 1..depth {
            v = serde_json::Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_is_capped_like_the_encoder() {
        // Exactly MAX_DEPTH levels converts and encodes with the default cap.
        let ok: Entity = to_entity(&nested_vec(MAX_DEPTH)).expect("at the cap");
        assert_eq!(ok.depth(), MAX_DEPTH);
        encode_to_vec(&ok, EncodeConfig::default()).expect("encodable");

        let err = to_entity::<_, WireRef>(&nested_vec(MAX_DEPTH + 1)).expect_err("too deep");
        assert!(
            matches!(err, Error::EncodeTooDeep { max: MAX_DEPTH }),
            "{err}"
        );
    }

    #[test]
    fn maps_count_two_levels() {
        // A map at depth MAX_DEPTH - 1 holds its values at depth MAX_DEPTH + 1.
        let mut map = std::collections::BTreeMap::new();
        map.insert("k", 1);
        let mut v = serde_json::to_value(&map).expect("json");
        for _ in 1..MAX_DEPTH - 1 {
            v = serde_json::Value::Array(vec![v]);
        }
        assert!(matches!(
            to_entity::<_, WireRef>(&v),
            Err(Error::EncodeTooDeep { .. })
        ));
        // One level less fits, and the codec agrees.
        let v = v.as_array().expect("array")[0].clone();
        let ok: Entity = to_entity(&v).expect("fits");
        assert_eq!(ok.depth(), MAX_DEPTH);
        encode_to_vec(&ok, EncodeConfig::default()).expect("encodable");
    }

    #[test]
    fn skipped_struct_fields_keep_their_position() {
        #[derive(Serialize)]
        struct S {
            a: i32,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<i32>,
            c: i32,
        }
        let e: Entity = to_entity(&S {
            a: 1,
            b: None,
            c: 3,
        })
        .expect("ok");
        assert_eq!(
            e,
            Entity::tuple([Entity::Int(1), Entity::None, Entity::Int(3)])
        );

        #[derive(Serialize)]
        enum E {
            V {
                #[serde(skip_serializing_if = "Option::is_none")]
                x: Option<i32>,
            },
        }
        let e: Entity = to_entity(&E::V { x: None }).expect("ok");
        assert_eq!(e, Entity::tuple([Entity::str("V"), Entity::None]));
    }

    #[test]
    fn serialize_errors_of_the_value_become_convert() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: ::serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(::serde::ser::Error::custom("nope"))
            }
        }
        let err = to_entity::<_, WireRef>(&(1, Bad)).expect_err("custom error");
        assert!(matches!(&err, Error::Convert(m) if m == "nope"), "{err}");
    }
}
