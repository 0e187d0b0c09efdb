//! The VEC data model: [`Entity`], its float type [`VFloat`] and wire-level
//! object references [`WireRef`].
//!
//! An entity is what one VOL message or one call argument is made of. The
//! model is VPy's: integers of any size, booleans, none, floats in any base,
//! bytes, strings, tuples, exceptions, tagged values and object references.
//! Lists, maps and sets do not exist on the wire; maps travel as VPy's
//! frozen-dict tagged type (see [`crate::serde`]).
//!
//! `Entity` is generic over the type of object reference it carries. The
//! codec works with any reference type through [`RefEncoder`] and
//! [`RefDecoder`](crate::vec::RefDecoder); the default, [`WireRef`], is the
//! raw `(owner, id)` pair found on the wire, which is what tests, fuzzers and
//! tools that do not run a link use. The link layer plugs in live objects.

use std::fmt;

use num_bigint::{BigInt, Sign};
use num_traits::{ToPrimitive, Zero};

/// A value of the Versile entity model.
///
/// Integers are normalized: a value that fits in an `i64` is always
/// [`Entity::Int`]; [`Entity::BigInt`] holds only values outside that range.
/// Use [`Entity::int`] to build an integer from a [`BigInt`] with that
/// invariant kept. Equality compares integers by value either way.
#[derive(Clone)]
pub enum Entity<R = WireRef> {
    /// An integer that fits in 64 bits (the fast path).
    Int(i64),
    /// An integer outside the `i64` range.
    BigInt(BigInt),
    /// A boolean.
    Bool(bool),
    /// The none value.
    None,
    /// A floating-point number in any base.
    Float(VFloat),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A text string.
    Str(String),
    /// A tuple of entities.
    Tuple(Vec<Entity<R>>),
    /// A VException carrying its arguments.
    Exception(Vec<Entity<R>>),
    /// A tagged value: the value and its tags (VER/VSE custom types).
    Tagged(Box<Entity<R>>, Vec<Entity<R>>),
    /// A reference to a remote or local object.
    Ref(R),
}

impl<R> Entity<R> {
    /// Builds an integer entity, using the `i64` fast path when it fits.
    pub fn int(value: BigInt) -> Self {
        match value.to_i64() {
            Some(v) => Entity::Int(v),
            None => Entity::BigInt(value),
        }
    }

    /// Builds a string entity.
    pub fn str(value: impl Into<String>) -> Self {
        Entity::Str(value.into())
    }

    /// Builds a bytes entity.
    pub fn bytes(value: impl Into<Vec<u8>>) -> Self {
        Entity::Bytes(value.into())
    }

    /// Builds a tuple entity.
    pub fn tuple(items: impl IntoIterator<Item = Entity<R>>) -> Self {
        Entity::Tuple(items.into_iter().collect())
    }

    /// Builds a float entity from an `f64`, exactly (base 2).
    ///
    /// Returns `None` for infinities and NaN, which the wire cannot carry.
    pub fn float(value: f64) -> Option<Self> {
        VFloat::from_f64(value).map(Entity::Float)
    }

    /// A short name of the entity's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Int(_) | Entity::BigInt(_) => "int",
            Entity::Bool(_) => "bool",
            Entity::None => "none",
            Entity::Float(_) => "float",
            Entity::Bytes(_) => "bytes",
            Entity::Str(_) => "str",
            Entity::Tuple(_) => "tuple",
            Entity::Exception(_) => "exception",
            Entity::Tagged(..) => "tagged",
            Entity::Ref(_) => "object",
        }
    }

    /// The integer value, if this is an integer that fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Entity::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Entity::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Entity<R>]> {
        match self {
            Entity::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is the none value.
    pub fn is_none(&self) -> bool {
        matches!(self, Entity::None)
    }

    /// Converts every reference with `f`, keeping the structure.
    ///
    /// Stops at the first error `f` returns.
    pub fn try_map_refs<S, E>(self, f: &mut impl FnMut(R) -> Result<S, E>) -> Result<Entity<S>, E> {
        Ok(match self {
            Entity::Int(v) => Entity::Int(v),
            Entity::BigInt(v) => Entity::BigInt(v),
            Entity::Bool(v) => Entity::Bool(v),
            Entity::None => Entity::None,
            Entity::Float(v) => Entity::Float(v),
            Entity::Bytes(v) => Entity::Bytes(v),
            Entity::Str(v) => Entity::Str(v),
            Entity::Tuple(items) => Entity::Tuple(map_vec(items, f)?),
            Entity::Exception(items) => Entity::Exception(map_vec(items, f)?),
            Entity::Tagged(value, tags) => {
                Entity::Tagged(Box::new(value.try_map_refs(f)?), map_vec(tags, f)?)
            }
            Entity::Ref(r) => Entity::Ref(f(r)?),
        })
    }

    /// Depth of nesting: 1 for a scalar, 1 + the deepest child otherwise.
    pub fn depth(&self) -> usize {
        match self {
            Entity::Tuple(items) | Entity::Exception(items) => {
                1 + items.iter().map(Entity::depth).max().unwrap_or(0)
            }
            Entity::Tagged(value, tags) => {
                1 + tags
                    .iter()
                    .map(Entity::depth)
                    .max()
                    .unwrap_or(0)
                    .max(value.depth())
            }
            _ => 1,
        }
    }
}

fn map_vec<R, S, E>(
    items: Vec<Entity<R>>,
    f: &mut impl FnMut(R) -> Result<S, E>,
) -> Result<Vec<Entity<S>>, E> {
    items.into_iter().map(|e| e.try_map_refs(f)).collect()
}

impl<R: PartialEq> PartialEq for Entity<R> {
    fn eq(&self, other: &Self) -> bool {
        use Entity::*;
        match (self, other) {
            (Int(a), Int(b)) => a == b,
            (BigInt(a), BigInt(b)) => a == b,
            (Int(a), BigInt(b)) | (BigInt(b), Int(a)) => num_bigint::BigInt::from(*a) == *b,
            (Bool(a), Bool(b)) => a == b,
            (None, None) => true,
            (Float(a), Float(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Tuple(a), Tuple(b)) => a == b,
            (Exception(a), Exception(b)) => a == b,
            (Tagged(va, ta), Tagged(vb, tb)) => va == vb && ta == tb,
            (Ref(a), Ref(b)) => a == b,
            _ => false,
        }
    }
}

impl<R: fmt::Debug> fmt::Debug for Entity<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::Int(v) => write!(f, "{v}"),
            Entity::BigInt(v) => write!(f, "{v}"),
            Entity::Bool(true) => f.write_str("True"),
            Entity::Bool(false) => f.write_str("False"),
            Entity::None => f.write_str("None"),
            Entity::Float(v) => write!(f, "{v}"),
            Entity::Bytes(v) => write!(f, "b{:?}", EscapedBytes(v)),
            Entity::Str(v) => write!(f, "{v:?}"),
            Entity::Tuple(items) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item:?}")?;
                }
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Entity::Exception(items) => {
                f.write_str("VException(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item:?}")?;
                }
                f.write_str(")")
            }
            Entity::Tagged(value, tags) => f
                .debug_struct("Tagged")
                .field("value", value)
                .field("tags", tags)
                .finish(),
            Entity::Ref(r) => write!(f, "<object {r:?}>"),
        }
    }
}

struct EscapedBytes<'a>(&'a [u8]);

impl fmt::Debug for EscapedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'")?;
        for &b in self.0 {
            for c in std::ascii::escape_default(b) {
                fmt::Write::write_char(f, char::from(c))?;
            }
        }
        f.write_str("'")
    }
}

impl<R> From<i64> for Entity<R> {
    fn from(v: i64) -> Self {
        Entity::Int(v)
    }
}

impl<R> From<bool> for Entity<R> {
    fn from(v: bool) -> Self {
        Entity::Bool(v)
    }
}

impl<R> From<&str> for Entity<R> {
    fn from(v: &str) -> Self {
        Entity::Str(v.to_owned())
    }
}

impl<R> From<String> for Entity<R> {
    fn from(v: String) -> Self {
        Entity::Str(v)
    }
}

impl<R> From<BigInt> for Entity<R> {
    fn from(v: BigInt) -> Self {
        Entity::int(v)
    }
}

impl<R> From<Vec<u8>> for Entity<R> {
    fn from(v: Vec<u8>) -> Self {
        Entity::Bytes(v)
    }
}

impl<R> From<()> for Entity<R> {
    fn from(_: ()) -> Self {
        Entity::None
    }
}

/// A floating-point number as the wire carries it: `digits * base^exp`.
///
/// VPy sends Python floats in base 2 and `Decimal` values in base 10; other
/// bases are legal and decode too. Conversion to `f64` is exact for base 2
/// and correctly rounded for base 10.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VFloat {
    /// The signed significand.
    pub digits: BigInt,
    /// The base, at least 2.
    pub base: u64,
    /// The exponent.
    pub exp: i64,
}

impl VFloat {
    /// The exact base-2 form of a finite `f64`, normalized the way VPy
    /// normalizes Python floats (the hexadecimal significand with trailing
    /// zero nibbles dropped), so encodings match VPy byte for byte.
    ///
    /// Returns `None` for infinities and NaN. Negative zero becomes zero, as
    /// in VPy.
    pub fn from_f64(value: f64) -> Option<VFloat> {
        if !value.is_finite() {
            return None;
        }
        let bits = value.to_bits();
        let negative = bits >> 63 == 1;
        let biased = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1u64 << 52) - 1);
        // Python's float.hex(): 0x1.<13 nibbles>p<e> for normal numbers,
        // 0x0.<13 nibbles>p-1022 for subnormals and 0x0.0p+0 for zero.
        let (lead, point_exp) = match (biased, fraction) {
            (0, 0) => {
                return Some(VFloat {
                    digits: BigInt::zero(),
                    base: 2,
                    exp: 0,
                })
            }
            (0, _) => (0u64, -1022i64),
            _ => (1u64, biased - 1023),
        };
        let zero_nibbles = if fraction == 0 {
            13
        } else {
            (fraction.trailing_zeros() / 4) as i64
        };
        let kept_nibbles = 13 - zero_nibbles;
        let significand = ((lead << 52) | fraction) >> (4 * zero_nibbles);
        let mut digits = BigInt::from(significand);
        if negative {
            digits = -digits;
        }
        Some(VFloat {
            digits,
            base: 2,
            exp: point_exp - 4 * kept_nibbles,
        })
    }

    /// Builds a decimal float `digits * 10^exp`.
    pub fn decimal(digits: impl Into<BigInt>, exp: i64) -> VFloat {
        VFloat {
            digits: digits.into(),
            base: 10,
            exp,
        }
    }

    /// The nearest `f64`, or `None` if the value is out of `f64` range or in
    /// a base other than 2 or 10 that cannot be converted exactly enough.
    pub fn to_f64(&self) -> Option<f64> {
        match self.base {
            2 => {
                let mag = self.digits.magnitude();
                let m = mag.to_f64()?;
                let signed = if self.digits.sign() == Sign::Minus {
                    -m
                } else {
                    m
                };
                let exp = i32::try_from(self.exp).ok()?;
                let v = scale_pow2(signed, exp);
                v.is_finite().then_some(v)
            }
            10 => {
                let text = format!("{}e{}", self.digits, self.exp);
                let v: f64 = text.parse().ok()?;
                v.is_finite().then_some(v)
            }
            _ => {
                let d = self.digits.to_f64()?;
                let exp = i32::try_from(self.exp).ok()?;
                let v = d * (self.base as f64).powi(exp);
                v.is_finite().then_some(v)
            }
        }
    }

    /// Whether `to_f64` loses nothing: base 2 with at most 53 significant bits
    /// in range.
    pub fn is_exact_f64(&self) -> bool {
        match self.to_f64() {
            Some(v) if self.base == 2 => {
                VFloat::from_f64(v).is_some_and(|back| back.same_value(self))
            }
            _ => false,
        }
    }

    fn same_value(&self, other: &VFloat) -> bool {
        if self.base != other.base {
            return false;
        }
        // Compare digits*2^exp without floating point: align exponents.
        let (a, b) = if self.exp >= other.exp {
            (self, other)
        } else {
            (other, self)
        };
        let shift = (a.exp - b.exp) as u64;
        if shift > 4096 {
            return a.digits.is_zero() && b.digits.is_zero();
        }
        let scaled = &a.digits << shift;
        scaled == b.digits
    }
}

/// `v * 2^exp` with correct handling of exponents beyond `powi`'s range.
fn scale_pow2(mut v: f64, mut exp: i32) -> f64 {
    while exp > 1000 {
        v *= 2f64.powi(1000);
        exp -= 1000;
    }
    while exp < -1000 {
        v *= 2f64.powi(-1000);
        exp += 1000;
    }
    v * 2f64.powi(exp)
}

impl fmt::Display for VFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.base, self.to_f64()) {
            (2, Some(v)) if self.is_exact_f64() => write!(f, "{v:?}"),
            _ => write!(f, "{}*{}^{}", self.digits, self.base, self.exp),
        }
    }
}

impl fmt::Debug for VFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which side of a link owns a referenced object, as seen by the receiver of
/// the message that carries the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// Code `0xfc`: the object lives at the sender of the message.
    Sender,
    /// Code `0xfd`: the object lives at the receiver of the message (it was
    /// sent to the peer earlier and is now coming back).
    Receiver,
}

/// An object reference exactly as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireRef {
    /// Whose object it is.
    pub owner: Owner,
    /// The object's id in the owner's id space.
    pub id: i64,
}

/// Maps references of type `R` to their wire form while encoding.
///
/// The link layer implements this to assign object ids and count sends;
/// [`WireRef`] maps to itself.
pub trait RefEncoder<R> {
    /// The wire form of `r`, registering it as sent if need be.
    fn encode_ref(&mut self, r: &R) -> Result<WireRef, crate::Error>;
}

/// The identity mapping for raw wire references.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawRefs;

impl RefEncoder<WireRef> for RawRefs {
    fn encode_ref(&mut self, r: &WireRef) -> Result<WireRef, crate::Error> {
        Ok(*r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexform(v: f64) -> (i64, i64) {
        let f = VFloat::from_f64(v).expect("finite");
        (f.digits.to_i64().expect("small"), f.exp)
    }

    #[test]
    fn float_normalization_matches_python_hex() {
        // Values checked against VPy: float.hex() with trailing zero nibbles
        // stripped.
        assert_eq!(hexform(1.5), (24, -4));
        assert_eq!(hexform(-2.0), (-1, 1));
        assert_eq!(hexform(0.1), (0x1999999999999a, -56));
        assert_eq!(hexform(5e-324), (1, -1074));
        assert_eq!(hexform(0.0), (0, 0));
        assert_eq!(hexform(-0.0), (0, 0));
        assert!(VFloat::from_f64(f64::NAN).is_none());
        assert!(VFloat::from_f64(f64::INFINITY).is_none());
    }

    #[test]
    fn float_round_trips_through_f64() {
        for v in [
            1.5,
            -2.0,
            0.1,
            5e-324,
            1e300,
            -1e-300,
            123456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let f = VFloat::from_f64(v).expect("finite");
            assert_eq!(f.to_f64(), Some(v), "{v}");
            assert!(f.is_exact_f64());
        }
    }

    #[test]
    fn decimal_floats_convert() {
        assert_eq!(VFloat::decimal(125, -2).to_f64(), Some(1.25));
        assert_eq!(VFloat::decimal(-3, 2).to_f64(), Some(-300.0));
        assert_eq!(VFloat::decimal(1, 400).to_f64(), None);
        assert!(!VFloat::decimal(1, -1).is_exact_f64());
    }

    #[test]
    fn integers_compare_by_value() {
        let a: Entity = Entity::Int(5);
        let b: Entity = Entity::BigInt(BigInt::from(5));
        assert_eq!(a, b);
        assert!(matches!(
            Entity::<WireRef>::int(BigInt::from(7)),
            Entity::Int(7)
        ));
        let big = BigInt::from(i64::MAX) + 1;
        assert!(matches!(Entity::<WireRef>::int(big), Entity::BigInt(_)));
    }
}
