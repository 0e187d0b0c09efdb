//! Conversion between Rust types and [`Entity`] through serde, plus helpers
//! for VPy's frozen dict.
//!
//! [`to_entity`] turns any `Serialize` value into an entity and
//! [`from_entity`] / [`from_entity_ref`] turn an entity back into any
//! `Deserialize` type, so typed method arguments and results need no
//! hand-written conversion. The mapping is fixed here:
//!
//! | Rust (serde data model) | entity | back into Rust |
//! |---|---|---|
//! | `bool` | `Bool` | `Bool` only |
//! | `i8`..`i64`, `u8`..`u32`, and `u64`/`i128`/`u128` in `i64` range | `Int` | `Int` or `BigInt`, if the value fits the target type; otherwise an error naming value and type |
//! | `u64`/`i128`/`u128` outside `i64` range | `BigInt` | as above |
//! | `f32`, `f64` | `Float`, base 2, exact ([`VFloat::from_f64`]); NaN and infinities are [`Error::NonFiniteFloat`] | `Float` via [`VFloat::to_f64`] (exact for base 2, nearest for base 10); `Int`/`BigInt` also accepted (nearest `f64`); out of range is an error |
//! | `char`, `str`, `String` | `Str` | `Str` (a `char` needs exactly one character) |
//! | bytes (`serialize_bytes`: [`bytes`] below or `serde_bytes`) | `Bytes` | `Bytes` |
//! | `Vec<u8>`, `[u8; N]` without `#[serde(with)]` | `Tuple` of `Int` (serde treats them as sequences) | `Tuple` of ints, or `Bytes` |
//! | `None` | `None` | `None` |
//! | `Some(x)` | `x` itself | anything but `None` |
//! | `()`, unit struct | `None` | `None` |
//! | newtype struct `S(x)` | `x` itself | as `x` |
//! | sequence, tuple, tuple struct | `Tuple` | `Tuple` of exactly the right length (any length for sequences) |
//! | struct | `Tuple` of the fields in declaration order, names dropped; a field skipped by `skip_serializing_if` is sent as `None` to keep positions | a `Tuple` of exactly as many elements as fields, taken positionally, or a frozen dict keyed by field name |
//! | map | VPy frozen dict (below) | frozen dict only |
//! | enum, unit variant `E::A` | `Str("A")` | `Str("A")` or `Tuple(Str("A"))` |
//! | enum, newtype variant `E::B(x)` | `Tuple(Str("B"), x)` | same shape |
//! | enum, tuple variant `E::C(x, y)` | `Tuple(Str("C"), x, y)` | same shape, exact length |
//! | enum, struct variant `E::D { x, y }` | `Tuple(Str("D"), x, y)` | same shape, exact length |
//!
//! Entities that have no Rust counterpart: an object reference (`Ref`) is
//! refused by every target type with [`Error::RefNotConvertible`]; an
//! exception or a tagged value other than a frozen dict is refused by every
//! typed target ("expected u32, found exception"). Both are readable through
//! `deserialize_any` (below), except references.
//!
//! Lossy corners, by design: `Some(None)` and `Some(())` become `None`, so
//! nested options do not round-trip; a newtype struct is indistinguishable
//! from its content. Duplicate keys in a received frozen dict are not
//! detected here; what happens depends on the target map type (for the std
//! maps, the last one wins).
//!
//! # The frozen dict
//!
//! Maps do not exist on the wire. VPy sends `VFrozenDict` as a tagged value:
//! the value is a flat tuple `(key1, value1, key2, value2, ...)` and the
//! tags are `(21, 1, 2)`, the OID form of its VSE code: `21` means "an OID of
//! 2 arcs, relative to the VSE prefix 1.3.6.1.4.1.38927.1", and the arcs are
//! `1.2`. That is what VPy writes with its default settings, and it is the
//! only form accepted here (VPy's alternative name form is not produced by
//! VPy itself). [`frozen_dict`], [`as_frozen_dict`] and [`into_frozen_dict`]
//! build and read it directly; keys may be any entity.
//!
//! # Self-describing reads (`deserialize_any`) and JSON
//!
//! Types such as `serde_json::Value` ask the entity what it is. The answers:
//!
//! | entity | presented as | in JSON |
//! |---|---|---|
//! | `Int` | `i64` | number |
//! | `BigInt` | `u64` if it fits, otherwise its decimal digits as a string | number, or string |
//! | `Bool` | `bool` | `true`/`false` |
//! | `None` | unit | `null` |
//! | `Float` | `f64`; a float beyond `f64` range as its text `digits*base^exp` | number, or string |
//! | `Bytes` | a sequence of `u8` | array of numbers |
//! | `Str` | string | string |
//! | `Tuple` | sequence | array |
//! | frozen dict whose keys are all scalars (str, int, bool, none, float) | map; non-string keys read as strings turn into their text (`1` → `"1"`, `true` → `"true"`, none → `"null"`), as Python's `json.dumps` does | object |
//! | any other tagged value, including a frozen dict with other keys | a one-entry map `{"tagged": [value, tag...]}` | object |
//! | `Exception` | a one-entry map `{"exception": [arg...]}` | object |
//! | `Ref` | error ([`Error::RefNotConvertible`]) | — |
//!
//! Going the other way (`to_entity(&json_value)`): numbers become `Int`,
//! `BigInt` (u64 above `i64::MAX`) or `Float`, strings `Str`, arrays
//! `Tuple`, objects frozen dicts and `null` becomes `None`. So JSON survives
//! JSON → entity → JSON unchanged, while entity → JSON → entity loses bytes
//! (they come back as a tuple of ints), big integers beyond `u64`, non-base-2
//! floats, exceptions and tagged values.
//!
//! # Depth
//!
//! Both directions refuse values nesting deeper than [`MAX_DEPTH`] levels
//! (counted as the codec counts them: a frozen dict is two levels, the tag
//! and its tuple) with [`Error::EncodeTooDeep`] when converting to an entity
//! and [`Error::TooDeep`] when converting from one, instead of exhausting the
//! stack. Since [`MAX_DEPTH`] equals the codec's default cap, whatever
//! [`to_entity`] returns can be encoded with the default settings.

mod de;
mod depth;
mod frozen_dict;
mod ser;

use std::fmt;

pub use de::{from_entity, from_entity_ref};
pub use depth::MAX_DEPTH;
pub use frozen_dict::{
    as_frozen_dict, frozen_dict, frozen_dict_tags, into_frozen_dict, FrozenDict, FrozenDictPairs,
    FROZEN_DICT_TAGS,
};
pub use ser::to_entity;

#[cfg(doc)]
use crate::entity::{Entity, VFloat};
use crate::Error;

/// `#[serde(with = "vole_transport::serde::bytes")]` for a `Vec<u8>` field:
/// sends it as a `Bytes` entity instead of a tuple of ints.
///
/// Reading accepts `Bytes` and, for leniency, a tuple of ints.
pub mod bytes {
    use std::fmt;

    use ::serde::de::{self, SeqAccess, Visitor};
    use ::serde::{Deserializer, Serializer};

    /// Serializes the bytes with `serialize_bytes`.
    pub fn serialize<T: AsRef<[u8]> + ?Sized, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value.as_ref())
    }

    /// Deserializes a byte string into a `Vec<u8>`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

impl ::serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Convert(msg.to_string())
    }
}

impl ::serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Convert(msg.to_string())
    }

    fn invalid_type(unexp: ::serde::de::Unexpected<'_>, exp: &dyn ::serde::de::Expected) -> Self {
        Error::Convert(format!("expected {exp}, found {unexp}"))
    }

    fn invalid_value(unexp: ::serde::de::Unexpected<'_>, exp: &dyn ::serde::de::Expected) -> Self {
        Error::Convert(format!("invalid value: expected {exp}, found {unexp}"))
    }

    fn invalid_length(len: usize, exp: &dyn ::serde::de::Expected) -> Self {
        Error::Convert(format!("expected {exp}, found {len} elements"))
    }
}

#[cfg(test)]
mod tests;
