//! Entities to Rust values: [`from_entity`], [`from_entity_ref`] and the
//! serde `Deserializer` behind them.
//!
//! One deserializer serves both: it reads either an owned entity (moving
//! strings and byte strings out) or a borrowed one (lending them).

use std::borrow::Cow;

use ::serde::de::value::{BorrowedStrDeserializer, SeqDeserializer, StrDeserializer};
use ::serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};
use ::serde::{forward_to_deserialize_any, Deserialize};
use num_bigint::BigInt;
use num_traits::ToPrimitive;

use super::depth::MAX_DEPTH;
use super::frozen_dict::{frozen_dict_items, has_frozen_dict_tags};
use crate::entity::Entity;
use crate::Error;

/// Converts an entity into a Rust value (see the [`serde`](super) module doc
/// for the mapping).
///
/// Strings and byte strings are moved out of the entity, not copied.
pub fn from_entity<T: DeserializeOwned, R>(entity: Entity<R>) -> Result<T, Error> {
    T::deserialize(Value::owned(entity))
}

/// Converts a borrowed entity into a Rust value, which may borrow strings and
/// byte strings from it (`&str`, `&[u8]` fields).
pub fn from_entity_ref<'de, T: Deserialize<'de>, R>(entity: &'de Entity<R>) -> Result<T, Error> {
    T::deserialize(Value::borrowed(entity))
}

/// An entity, owned or borrowed.
enum Src<'de, R> {
    Owned(Entity<R>),
    Borrowed(&'de Entity<R>),
}

/// The deserializer: one entity at a known nesting depth (1 = top level).
pub(super) struct Value<'de, R> {
    src: Src<'de, R>,
    depth: usize,
    /// Whether this is a map key: then scalars may be read as strings.
    key: bool,
}

impl<'de, R> Value<'de, R> {
    /// Reads an owned top-level entity.
    pub(super) fn owned(entity: Entity<R>) -> Self {
        Value {
            src: Src::Owned(entity),
            depth: 1,
            key: false,
        }
    }

    /// Reads a borrowed top-level entity.
    pub(super) fn borrowed(entity: &'de Entity<R>) -> Self {
        Value {
            src: Src::Borrowed(entity),
            depth: 1,
            key: false,
        }
    }

    fn entity(&self) -> &Entity<R> {
        match &self.src {
            Src::Owned(e) => e,
            Src::Borrowed(e) => e,
        }
    }

    /// The error for an entity that is not what `expected` needs.
    fn mismatch(&self, expected: &str) -> Error {
        mismatch(self.entity(), expected)
    }

    /// The integer, if it fits `T` (named `target` in errors).
    fn int<T>(&self, target: &str) -> Result<T, Error>
    where
        T: TryFrom<i64> + for<'a> TryFrom<&'a BigInt>,
    {
        let out_of_range = |v: &dyn std::fmt::Display| {
            Error::Convert(format!("integer {v} does not fit in {target}"))
        };
        match self.entity() {
            Entity::Int(v) => T::try_from(*v).map_err(|_| out_of_range(v)),
            Entity::BigInt(v) => T::try_from(v).map_err(|_| out_of_range(v)),
            _ => Err(self.mismatch(target)),
        }
    }

    /// The number as an `f64`: floats, and integers rounded to nearest.
    fn float(&self, target: &str) -> Result<f64, Error> {
        let out_of_range = |v: &dyn std::fmt::Display| {
            Error::Convert(format!("number {v} does not fit in {target}"))
        };
        match self.entity() {
            Entity::Float(f) => f.to_f64().ok_or_else(|| out_of_range(f)),
            // i64 to f64 rounds to nearest, which is the documented behavior.
            Entity::Int(v) => Ok(*v as f64),
            Entity::BigInt(v) => v
                .to_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| out_of_range(v)),
            _ => Err(self.mismatch(target)),
        }
    }

    /// Visits a string, moving or lending it.
    fn visit_text<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.src {
            Src::Owned(Entity::Str(s)) => visitor.visit_string(s),
            Src::Borrowed(Entity::Str(s)) => visitor.visit_borrowed_str(s),
            _ if self.key => match key_text(self.entity()) {
                Some(text) => visitor.visit_string(text),
                None => Err(self.mismatch("str")),
            },
            _ => Err(self.mismatch("str")),
        }
    }

    /// Visits a byte string, moving or lending it.
    fn visit_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.src {
            Src::Owned(Entity::Bytes(b)) => visitor.visit_byte_buf(b),
            Src::Borrowed(Entity::Bytes(b)) => visitor.visit_borrowed_bytes(b),
            _ => Err(self.mismatch("bytes")),
        }
    }

    /// The elements of a tuple, or `Err(self)` if it is not one.
    fn into_tuple(self) -> Result<Items<'de, R>, Self> {
        match self.src {
            Src::Owned(Entity::Tuple(items)) => Ok(Items::Owned(items.into_iter())),
            Src::Borrowed(Entity::Tuple(items)) => Ok(Items::borrowed(None, items)),
            src => Err(Value { src, ..self }),
        }
    }

    /// The elements of a well-formed frozen dict (`k, v, k, v, ...`), or
    /// `Err(self)` if it is not one.
    fn into_frozen_dict(self) -> Result<Items<'de, R>, Self> {
        match self.src {
            Src::Borrowed(e) => match frozen_dict_items(e) {
                Some(items) => Ok(Items::borrowed(None, items)),
                None => Err(Value {
                    src: Src::Borrowed(e),
                    ..self
                }),
            },
            Src::Owned(Entity::Tagged(value, tags)) if has_frozen_dict_tags(&tags) => {
                match *value {
                    Entity::Tuple(items) if items.len() % 2 == 0 => {
                        Ok(Items::Owned(items.into_iter()))
                    }
                    other => Err(Value {
                        src: Src::Owned(Entity::Tagged(Box::new(other), tags)),
                        ..self
                    }),
                }
            }
            src => Err(Value { src, ..self }),
        }
    }

    /// Visits a tuple (or byte string) of exactly `len` elements; `expected`
    /// names the target for type errors, `what` for length errors.
    fn visit_fixed<V: Visitor<'de>>(
        self,
        len: usize,
        expected: &str,
        what: &str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let depth = self.depth;
        if let Entity::Bytes(b) = self.entity() {
            return if b.len() == len {
                self.visit_byte_seq(visitor)
            } else {
                Err(arity(len, what, b.len()))
            };
        }
        match self.into_tuple() {
            Ok(items) if items.len() == len => visit_items(items, depth + 1, visitor),
            Ok(items) => Err(arity(len, what, items.len())),
            Err(me) => Err(me.mismatch(expected)),
        }
    }

    /// Visits a byte string as a sequence of `u8`.
    fn visit_byte_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.src {
            Src::Owned(Entity::Bytes(b)) => {
                let mut seq = SeqDeserializer::<_, Error>::new(b.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Src::Borrowed(Entity::Bytes(b)) => {
                let mut seq = SeqDeserializer::<_, Error>::new(b.iter().copied());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            _ => Err(self.mismatch("bytes")),
        }
    }
}

/// "expected X, found Y", or the reference error.
fn mismatch<R>(entity: &Entity<R>, expected: &str) -> Error {
    match entity {
        Entity::Ref(_) => Error::RefNotConvertible(expected.to_owned()),
        e => Error::Convert(format!("expected {expected}, found {}", found(e))),
    }
}

/// What an entity is, for error messages.
fn found<R>(entity: &Entity<R>) -> &'static str {
    match entity {
        Entity::Tagged(_, tags) if has_frozen_dict_tags(tags) => {
            if frozen_dict_items(entity).is_some() {
                "frozen dict"
            } else {
                "malformed frozen dict"
            }
        }
        e => e.kind(),
    }
}

/// A tuple of the wrong length.
fn arity(expected: usize, what: &str, found: usize) -> Error {
    Error::Convert(format!(
        "expected {expected} elements for {what}, found {found}"
    ))
}

/// The text of a scalar map key read as a string (`json.dumps` style).
fn key_text<R>(entity: &Entity<R>) -> Option<String> {
    Some(match entity {
        Entity::Str(s) => s.clone(),
        Entity::Int(v) => v.to_string(),
        Entity::BigInt(v) => v.to_string(),
        Entity::Bool(true) => "true".into(),
        Entity::Bool(false) => "false".into(),
        Entity::None => "null".into(),
        Entity::Float(f) => f.to_string(),
        _ => return None,
    })
}

/// Whether a map key can be presented as a JSON object key.
/// Kept in step with [`key_text`].
fn is_scalar_key<R>(entity: &Entity<R>) -> bool {
    matches!(
        entity,
        Entity::Str(_)
            | Entity::Int(_)
            | Entity::BigInt(_)
            | Entity::Bool(_)
            | Entity::None
            | Entity::Float(_)
    )
}

/// A run of entities, owned or borrowed; the borrowed form may have an extra
/// first element (the value of a tagged entity, before its tags).
enum Items<'de, R> {
    Owned(std::vec::IntoIter<Entity<R>>),
    Borrowed {
        head: Option<&'de Entity<R>>,
        rest: std::slice::Iter<'de, Entity<R>>,
    },
}

impl<'de, R> Items<'de, R> {
    fn borrowed(head: Option<&'de Entity<R>>, rest: &'de [Entity<R>]) -> Self {
        Items::Borrowed {
            head,
            rest: rest.iter(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Items::Owned(it) => it.len(),
            Items::Borrowed { head, rest } => usize::from(head.is_some()) + rest.len(),
        }
    }

    /// The next element as a deserializer at `depth`.
    fn next_value(&mut self, depth: usize, key: bool) -> Option<Result<Value<'de, R>, Error>> {
        let src = match self {
            Items::Owned(it) => Src::Owned(it.next()?),
            Items::Borrowed { head, rest } => Src::Borrowed(match head.take() {
                Some(h) => h,
                None => rest.next()?,
            }),
        };
        Some(if depth > MAX_DEPTH {
            Err(Error::TooDeep { max: MAX_DEPTH })
        } else {
            Ok(Value { src, depth, key })
        })
    }
}

/// Visits `items` (at `depth`) as a sequence that must be read to its end.
fn visit_items<'de, R, V: Visitor<'de>>(
    items: Items<'de, R>,
    depth: usize,
    visitor: V,
) -> Result<V::Value, Error> {
    let total = items.len();
    let mut seq = Seq { items, depth };
    let value = visitor.visit_seq(&mut seq)?;
    let left = seq.items.len();
    if left > 0 {
        return Err(Error::Convert(format!(
            "expected {} elements, found {total}",
            total - left
        )));
    }
    Ok(value)
}

struct Seq<'de, R> {
    items: Items<'de, R>,
    depth: usize,
}

impl<'de, R> SeqAccess<'de> for Seq<'de, R> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next_value(self.depth, false) {
            Some(value) => seed.deserialize(value?).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The pairs of a frozen dict.
struct Map<'de, R> {
    items: Items<'de, R>,
    depth: usize,
}

impl<'de, R> MapAccess<'de> for Map<'de, R> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.items.next_value(self.depth, true) {
            Some(key) => seed.deserialize(key?).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.items.next_value(self.depth, false) {
            Some(value) => seed.deserialize(value?),
            // Not reached for a well-formed dict (even length), which is all
            // this type is built from.
            None => Err(Error::Convert("frozen dict key without a value".into())),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() / 2)
    }
}

/// A one-entry map `{label: [items...]}`, how exceptions and other tagged
/// values present themselves to self-describing targets.
struct Labeled<'de, R> {
    label: Option<&'static str>,
    items: Option<Items<'de, R>>,
    depth: usize,
}

impl<'de, R> MapAccess<'de> for Labeled<'de, R> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.label.take() {
            Some(label) => seed
                .deserialize(BorrowedStrDeserializer::<Error>::new(label))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.items.take() {
            Some(items) => seed.deserialize(ItemsDe {
                items,
                depth: self.depth,
            }),
            None => Err(Error::Convert("labeled entity read twice".into())),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.label.is_some()))
    }
}

/// A run of entities read as a sequence.
struct ItemsDe<'de, R> {
    items: Items<'de, R>,
    depth: usize,
}

impl<'de, R> de::Deserializer<'de> for ItemsDe<'de, R> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visit_items(self.items, self.depth, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

macro_rules! deserialize_int {
    ($($method:ident $ty:ident $visit:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.$visit(self.int::<$ty>(stringify!($ty))?)
        }
    )*};
}

impl<'de, R> de::Deserializer<'de> for Value<'de, R> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let depth = self.depth;
        match self.entity() {
            Entity::Int(v) => return visitor.visit_i64(*v),
            Entity::BigInt(v) => {
                return match v.to_u64() {
                    Some(u) => visitor.visit_u64(u),
                    None => visitor.visit_string(v.to_string()),
                }
            }
            Entity::Bool(v) => return visitor.visit_bool(*v),
            Entity::None => return visitor.visit_unit(),
            Entity::Float(f) => {
                return match f.to_f64() {
                    Some(v) => visitor.visit_f64(v),
                    None => visitor.visit_string(f.to_string()),
                }
            }
            Entity::Bytes(_) => return self.visit_byte_seq(visitor),
            Entity::Str(_) => return self.visit_text(visitor),
            Entity::Ref(_) => return Err(self.mismatch("a plain value")),
            Entity::Tuple(_) | Entity::Exception(_) | Entity::Tagged(..) => {}
        }
        let scalar_keyed_dict = frozen_dict_items(self.entity())
            .is_some_and(|items| items.iter().step_by(2).all(is_scalar_key));
        if scalar_keyed_dict {
            return match self.into_frozen_dict() {
                Ok(items) => visitor.visit_map(Map {
                    items,
                    depth: depth + 2,
                }),
                Err(me) => Err(me.mismatch("frozen dict")),
            };
        }
        let (label, items) = match self.src {
            Src::Owned(Entity::Tuple(items)) => {
                return visit_items(Items::Owned(items.into_iter()), depth + 1, visitor)
            }
            Src::Borrowed(Entity::Tuple(items)) => {
                return visit_items(Items::borrowed(None, items), depth + 1, visitor)
            }
            Src::Owned(Entity::Exception(args)) => ("exception", Items::Owned(args.into_iter())),
            Src::Borrowed(Entity::Exception(args)) => ("exception", Items::borrowed(None, args)),
            Src::Owned(Entity::Tagged(value, tags)) => {
                let mut all = Vec::with_capacity(1 + tags.len());
                all.push(*value);
                all.extend(tags);
                ("tagged", Items::Owned(all.into_iter()))
            }
            Src::Borrowed(Entity::Tagged(value, tags)) => {
                ("tagged", Items::borrowed(Some(value.as_ref()), tags))
            }
            // The scalar kinds returned above.
            src => {
                return Err(Value { src, ..self }.mismatch("a plain value"));
            }
        };
        visitor.visit_map(Labeled {
            label: Some(label),
            items: Some(items),
            // The map and its one sequence.
            depth: depth + 2,
        })
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.entity() {
            Entity::Bool(v) => visitor.visit_bool(*v),
            _ => Err(self.mismatch("bool")),
        }
    }

    deserialize_int! {
        deserialize_i8 i8 visit_i8;
        deserialize_i16 i16 visit_i16;
        deserialize_i32 i32 visit_i32;
        deserialize_i64 i64 visit_i64;
        deserialize_i128 i128 visit_i128;
        deserialize_u8 u8 visit_u8;
        deserialize_u16 u16 visit_u16;
        deserialize_u32 u32 visit_u32;
        deserialize_u64 u64 visit_u64;
        deserialize_u128 u128 visit_u128;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let v = self.float("f32")?;
        // Rounds to nearest; only overflow to infinity is refused.
        let narrow = v as f32;
        if narrow.is_finite() {
            visitor.visit_f32(narrow)
        } else {
            Err(Error::Convert(format!("number {v:e} does not fit in f32")))
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(self.float("f64")?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.entity() {
            Entity::Str(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => visitor.visit_char(c),
                    _ => Err(Error::Convert(format!(
                        "expected a single character, found a string of {} characters",
                        s.chars().count()
                    ))),
                }
            }
            _ => Err(self.mismatch("char")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_text(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_text(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.entity() {
            // Lets `Vec<u8>` fields written without `serde(with)` be read by
            // a bytes-aware target.
            Entity::Tuple(_) => self.deserialize_seq(visitor),
            _ => self.visit_bytes(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.entity() {
            Entity::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.entity() {
            Entity::None => visitor.visit_unit(),
            _ => Err(self.mismatch("none")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.entity() {
            Entity::None => visitor.visit_unit(),
            _ => Err(self.mismatch(&format!("none (unit struct {name})"))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let depth = self.depth;
        if let Entity::Bytes(_) = self.entity() {
            return self.visit_byte_seq(visitor);
        }
        match self.into_tuple() {
            Ok(items) => visit_items(items, depth + 1, visitor),
            Err(me) => Err(me.mismatch("tuple")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.visit_fixed(len, "tuple", "a tuple", visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let what = format!("tuple struct {name}");
        self.visit_fixed(len, &format!("tuple ({what})"), &what, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let depth = self.depth;
        match self.into_frozen_dict() {
            Ok(items) => visitor.visit_map(Map {
                items,
                depth: depth + 2,
            }),
            Err(me) => Err(me.mismatch("frozen dict")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let depth = self.depth;
        match self.into_frozen_dict() {
            Ok(items) => visitor.visit_map(Map {
                items,
                depth: depth + 2,
            }),
            Err(me) => match me.into_tuple() {
                Ok(items) if items.len() == fields.len() => visit_items(items, depth + 1, visitor),
                Ok(items) => Err(arity(fields.len(), &format!("struct {name}"), items.len())),
                Err(me) => Err(me.mismatch(&format!("tuple (struct {name})"))),
            },
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let depth = self.depth;
        let named_tuple = matches!(
            self.entity(),
            Entity::Tuple(items) if matches!(items.first(), Some(Entity::Str(_)))
        );
        let (variant, payload, bare) = match self.src {
            Src::Owned(Entity::Str(s)) => {
                (Cow::Owned(s), Items::Owned(Vec::new().into_iter()), true)
            }
            Src::Borrowed(Entity::Str(s)) => {
                (Cow::Borrowed(s.as_str()), Items::borrowed(None, &[]), true)
            }
            Src::Owned(Entity::Tuple(items)) if named_tuple => {
                let mut it = items.into_iter();
                match it.next() {
                    Some(Entity::Str(s)) => (Cow::Owned(s), Items::Owned(it), false),
                    // Not reached: `named_tuple` checked the first element.
                    _ => return Err(Error::Convert(format!("expected enum {name}"))),
                }
            }
            Src::Borrowed(Entity::Tuple(items)) if named_tuple => match items.split_first() {
                Some((Entity::Str(s), rest)) => (
                    Cow::Borrowed(s.as_str()),
                    Items::borrowed(None, rest),
                    false,
                ),
                // Not reached: `named_tuple` checked the first element.
                _ => return Err(Error::Convert(format!("expected enum {name}"))),
            },
            src => {
                return Err(Value { src, ..self }
                    .mismatch(&format!("enum {name} (str or tuple starting with a str)")))
            }
        };
        visitor.visit_enum(Enum {
            variant,
            payload,
            bare,
            depth: depth + 1,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.entity() {
            Entity::Str(_) => self.visit_text(visitor),
            Entity::Int(v) if *v >= 0 => visitor.visit_u64(v.unsigned_abs()),
            _ => Err(self.mismatch("identifier (str)")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // Anything may be skipped, references and exceptions included.
        visitor.visit_unit()
    }
}

/// An enum value: the variant name and its payload elements.
struct Enum<'de, R> {
    variant: Cow<'de, str>,
    payload: Items<'de, R>,
    /// Sent as a bare string rather than a tuple.
    bare: bool,
    depth: usize,
}

impl<'de, R> EnumAccess<'de> for Enum<'de, R> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let value = match &self.variant {
            Cow::Borrowed(s) => seed.deserialize(BorrowedStrDeserializer::<Error>::new(s))?,
            Cow::Owned(s) => seed.deserialize(StrDeserializer::<Error>::new(s))?,
        };
        Ok((value, self))
    }
}

impl<'de, R> Enum<'de, R> {
    fn wrong_payload(&self, expected: usize) -> Error {
        if self.bare {
            Error::Convert(format!(
                "expected a tuple with {expected} payload elements for variant {:?}, found a bare name",
                self.variant
            ))
        } else {
            Error::Convert(format!(
                "expected {expected} payload elements for variant {:?}, found {}",
                self.variant,
                self.payload.len()
            ))
        }
    }
}

impl<'de, R> VariantAccess<'de> for Enum<'de, R> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        if self.payload.len() == 0 {
            Ok(())
        } else {
            Err(self.wrong_payload(0))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(mut self, seed: T) -> Result<T::Value, Error> {
        if self.bare || self.payload.len() != 1 {
            return Err(self.wrong_payload(1));
        }
        match self.payload.next_value(self.depth, false) {
            Some(value) => seed.deserialize(value?),
            None => Err(self.wrong_payload(1)),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        if self.bare || self.payload.len() != len {
            return Err(self.wrong_payload(len));
        }
        visit_items(self.payload, self.depth, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.tuple_variant(fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt;

    use ::serde::de::{self, DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
    use ::serde::Deserialize;

    use crate::entity::{Owner, WireRef};
    use crate::serde::{from_entity, from_entity_ref, frozen_dict, frozen_dict_tags, MAX_DEPTH};
    use crate::{Entity, Error};

    fn int(v: i64) -> Entity {
        Entity::Int(v)
    }

    fn s(v: &str) -> Entity {
        Entity::str(v)
    }

    fn err<T: DeserializeOwned + fmt::Debug>(entity: Entity) -> String {
        let borrowed = from_entity_ref::<T, WireRef>(&entity)
            .expect_err("conversion must fail")
            .to_string();
        let owned = from_entity::<T, WireRef>(entity)
            .expect_err("conversion must fail")
            .to_string();
        assert_eq!(borrowed, owned);
        owned
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Point {
        x: i32,
        y: i32,
        z: i32,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Named(i32, i32);

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Marker;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Op {
        Stop,
        Move(i32),
        Line(i32, i32),
        Label { text: String },
    }

    #[test]
    fn type_mismatches_name_expected_and_found() {
        let cases: Vec<(String, &str)> = vec![
            (err::<String>(int(1)), "expected str, found int"),
            (err::<bool>(Entity::None), "expected bool, found none"),
            (err::<char>(int(1)), "expected char, found int"),
            (err::<()>(int(1)), "expected none, found int"),
            (
                err::<Marker>(int(1)),
                "expected none (unit struct Marker), found int",
            ),
            (err::<Vec<i32>>(s("x")), "expected tuple, found str"),
            (err::<(i32, i32)>(s("x")), "expected tuple, found str"),
            (
                err::<Named>(int(1)),
                "expected tuple (tuple struct Named), found int",
            ),
            (
                err::<Point>(Entity::bytes(vec![1])),
                "expected tuple (struct Point), found bytes",
            ),
            (
                err::<BTreeMap<String, i32>>(Entity::tuple([])),
                "expected frozen dict, found tuple",
            ),
            (
                err::<BTreeMap<String, i32>>(Entity::Tagged(
                    Box::new(Entity::tuple([s("k")])),
                    frozen_dict_tags(),
                )),
                "expected frozen dict, found malformed frozen dict",
            ),
            (
                err::<Op>(int(3)),
                "expected enum Op (str or tuple starting with a str), found int",
            ),
            (
                err::<Op>(Entity::tuple([int(1)])),
                "expected enum Op (str or tuple starting with a str), found tuple",
            ),
            (
                err::<i32>(Entity::Exception(vec![])),
                "expected i32, found exception",
            ),
            (
                err::<String>(Entity::Tagged(Box::new(int(1)), vec![int(5)])),
                "expected str, found tagged",
            ),
            (err::<f64>(s("1.5")), "expected f64, found str"),
        ];
        for (got, want) in cases {
            assert_eq!(got, format!("cannot convert: {want}"));
        }
        // Bytes-aware targets want bytes.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Blob(#[serde(with = "crate::serde::bytes")] Vec<u8>);
        assert_eq!(
            err::<Blob>(s("x")),
            "cannot convert: expected bytes, found str"
        );
        let bytes_of = |e: &Entity| from_entity_ref::<&[u8], WireRef>(e).map(<[u8]>::to_vec);
        assert_eq!(
            bytes_of(&int(1)).expect_err("not bytes").to_string(),
            "cannot convert: expected bytes, found int"
        );
        assert_eq!(bytes_of(&Entity::bytes(vec![3])).expect("bytes"), vec![3]);
    }

    #[test]
    fn arity_errors_name_expected_and_actual() {
        assert_eq!(
            err::<Point>(Entity::tuple([int(1), int(2)])),
            "cannot convert: expected 3 elements for struct Point, found 2"
        );
        assert_eq!(
            err::<Point>(Entity::tuple([int(1), int(2), int(3), int(4)])),
            "cannot convert: expected 3 elements for struct Point, found 4"
        );
        assert_eq!(
            err::<(i32, i32)>(Entity::tuple([int(1)])),
            "cannot convert: expected 2 elements for a tuple, found 1"
        );
        assert_eq!(
            err::<Named>(Entity::tuple([int(1), int(2), int(3)])),
            "cannot convert: expected 2 elements for tuple struct Named, found 3"
        );
        assert_eq!(
            err::<[u8; 3]>(Entity::bytes(vec![1, 2])),
            "cannot convert: expected 3 elements for a tuple, found 2"
        );
    }

    #[test]
    fn enum_payload_errors() {
        let cases: Vec<(Entity, &str)> = vec![
            (
                Entity::tuple([s("Stop"), int(1)]),
                r#"expected 0 payload elements for variant "Stop", found 1"#,
            ),
            (
                s("Move"),
                r#"expected a tuple with 1 payload elements for variant "Move", found a bare name"#,
            ),
            (
                Entity::tuple([s("Move"), int(1), int(2)]),
                r#"expected 1 payload elements for variant "Move", found 2"#,
            ),
            (
                Entity::tuple([s("Line"), int(1)]),
                r#"expected 2 payload elements for variant "Line", found 1"#,
            ),
            (
                s("Label"),
                r#"expected a tuple with 1 payload elements for variant "Label", found a bare name"#,
            ),
            (
                Entity::tuple([s("Nope")]),
                "unknown variant `Nope`, expected one of `Stop`, `Move`, `Line`, `Label`",
            ),
        ];
        for (entity, want) in cases {
            assert_eq!(err::<Op>(entity), format!("cannot convert: {want}"));
        }
    }

    #[test]
    fn char_needs_exactly_one_character() {
        assert_eq!(
            err::<char>(s("ab")),
            "cannot convert: expected a single character, found a string of 2 characters"
        );
        assert_eq!(
            err::<char>(s("")),
            "cannot convert: expected a single character, found a string of 0 characters"
        );
    }

    #[test]
    fn map_keys_read_as_strings_only_when_scalar() {
        let e = frozen_dict([(int(1), s("a")), (Entity::Bool(true), s("b"))]);
        let map: BTreeMap<String, String> = from_entity(e).expect("scalar keys");
        assert_eq!(map["1"], "a");
        assert_eq!(map["true"], "b");
        // Integer keys still read as integers.
        let e = frozen_dict([(int(1), s("a"))]);
        let map: BTreeMap<i64, String> = from_entity(e).expect("int keys");
        assert_eq!(map[&1], "a");

        let e = frozen_dict([(Entity::tuple([]), s("a"))]);
        assert_eq!(
            err::<BTreeMap<String, String>>(e),
            "cannot convert: expected str, found tuple"
        );
        // Outside map keys, no such leniency.
        assert_eq!(
            err::<String>(int(1)),
            "cannot convert: expected str, found int"
        );
    }

    #[test]
    fn identifiers_are_strings_or_indices() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct P {
            x: i32,
        }
        let by_index = frozen_dict([(int(0), int(7))]);
        assert_eq!(from_entity::<P, WireRef>(by_index).expect("ok"), P { x: 7 });
        let bad = frozen_dict([(int(-1), int(7))]);
        assert_eq!(
            err::<P>(bad),
            "cannot convert: expected identifier (str), found int"
        );
    }

    #[test]
    fn ignored_values_may_be_anything() {
        let r = Entity::Ref(WireRef {
            owner: Owner::Sender,
            id: 1,
        });
        from_entity::<IgnoredAny, WireRef>(r.clone()).expect("ignored");
        from_entity::<IgnoredAny, WireRef>(Entity::Exception(vec![r])).expect("ignored");
    }

    /// Reads only the first element of a sequence.
    #[derive(Debug)]
    struct FirstOnly;

    impl<'de> Deserialize<'de> for FirstOnly {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = FirstOnly;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a sequence")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstOnly, A::Error> {
                    seq.next_element::<IgnoredAny>()?;
                    Ok(FirstOnly)
                }
            }
            d.deserialize_seq(V)
        }
    }

    #[test]
    fn unread_elements_are_an_error() {
        from_entity::<FirstOnly, WireRef>(Entity::tuple([int(1)])).expect("all read");
        assert_eq!(
            err::<FirstOnly>(Entity::tuple([int(1), int(2), int(3)])),
            "cannot convert: expected 1 elements, found 3"
        );
        // The same for bytes read as a sequence.
        assert!(err::<FirstOnly>(Entity::bytes(vec![1, 2])).contains("expected"));
    }

    fn nested(depth: usize) -> Entity {
        let mut e = int(1);
        for _ in 1..depth {
            e = Entity::tuple([e]);
        }
        e
    }

    #[test]
    fn depth_is_capped() {
        let ok: serde_json::Value = from_entity(nested(MAX_DEPTH)).expect("at the cap");
        assert!(ok.is_array());
        let too_deep = nested(MAX_DEPTH + 1);
        assert!(matches!(
            from_entity_ref::<serde_json::Value, WireRef>(&too_deep),
            Err(Error::TooDeep { max: MAX_DEPTH })
        ));
        assert!(
            from_entity::<IgnoredAny, WireRef>(too_deep).is_ok(),
            "ignored values are not walked"
        );
        // Through a frozen dict, which is two levels, and an exception.
        let mut e = nested(MAX_DEPTH - 1);
        e = frozen_dict([(s("k"), e)]);
        assert!(matches!(
            from_entity::<serde_json::Value, WireRef>(e),
            Err(Error::TooDeep { .. })
        ));
        let e = Entity::Exception(vec![nested(MAX_DEPTH - 1)]);
        assert!(matches!(
            from_entity::<serde_json::Value, WireRef>(e),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn deep_entities_do_not_overflow_the_stack() {
        // Far past the cap: refused after MAX_DEPTH levels, not recursed into.
        let e = nested(10_000);
        assert!(matches!(
            from_entity_ref::<serde_json::Value, WireRef>(&e),
            Err(Error::TooDeep { .. })
        ));
        // Dropping such an entity recurses too; keep it bounded by
        // dismantling it iteratively.
        let mut e = e;
        while let Entity::Tuple(mut items) = e {
            e = items.pop().unwrap_or(Entity::None);
        }
    }
}
