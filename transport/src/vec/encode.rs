//! The VEC entity writer: all headers in pre-order, then payloads in
//! reverse pre-order.

use super::{code, netbytes, Codec};
use crate::entity::{Entity, Owner, RefEncoder, VFloat, WireRef};
use crate::Error;

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeConfig {
    /// The default codec this side declared in its VEC hello. Strings are
    /// sent without a codec (code `0xf4`) when this is UTF-8, and with an
    /// explicit `utf8` codec (code `0xf5`) otherwise.
    pub str_codec: Option<Codec>,
    /// Values nesting deeper than this are refused.
    pub max_depth: usize,
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig {
            str_codec: Some(Codec::Utf8),
            max_depth: super::decode::DEFAULT_MAX_DEPTH,
        }
    }
}

/// A tuple to encode, given as borrowed parts, so a caller can wrap
/// entities in framing (such as a VOL message `(id, code, payload)`) without
/// building and allocating the enclosing tuples.
///
/// [`Encoder::encode_part`] writes exactly the bytes [`Encoder::encode`]
/// writes for the entity the part stands for.
pub enum Part<'a, R> {
    /// An integer.
    Int(i64),
    /// A reference.
    Ref(&'a R),
    /// An entity.
    Entity(&'a Entity<R>),
    /// A tuple of these entities.
    Items(&'a [Entity<R>]),
    /// A tuple of these parts.
    Tuple(&'a [Part<'a, R>]),
}

impl<R: std::fmt::Debug> std::fmt::Debug for Part<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Int(v) => write!(f, "{v}"),
            Part::Ref(r) => write!(f, "{r:?}"),
            Part::Entity(e) => write!(f, "{e:?}"),
            Part::Items(items) => {
                let mut t = f.debug_tuple("");
                for item in items.iter() {
                    t.field(item);
                }
                t.finish()
            }
            Part::Tuple(parts) => {
                let mut t = f.debug_tuple("");
                for part in parts.iter() {
                    t.field(part);
                }
                t.finish()
            }
        }
    }
}

/// Writes entities in the VEC layout.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    config: EncodeConfig,
}

impl Encoder {
    /// An encoder with the given settings.
    pub fn new(config: EncodeConfig) -> Self {
        Encoder { config }
    }

    /// The settings.
    pub fn config(&self) -> &EncodeConfig {
        &self.config
    }

    /// Appends the encoding of `entity` to `out`.
    ///
    /// On error `out` is left as it was, but `refs` may have registered some
    /// of the references it was asked about; a link rolls those back.
    pub fn encode<R>(
        &self,
        entity: &Entity<R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = out.len();
        let result = self
            .headers(entity, refs, out, 1)
            .map(|()| self.payloads(entity, out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Appends the encoding of the entity `part` stands for.
    ///
    /// On error `out` is left as it was; `refs` may have registered
    /// references, as with [`Encoder::encode`].
    pub fn encode_part<R>(
        &self,
        part: &Part<'_, R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = out.len();
        let result = self
            .part_headers(part, refs, out, 1)
            .map(|()| self.part_payloads(part, out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn part_headers<R>(
        &self,
        part: &Part<'_, R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), Error> {
        if depth > self.config.max_depth {
            return Err(Error::EncodeTooDeep {
                max: self.config.max_depth,
            });
        }
        match part {
            Part::Int(v) => put_int(out, *v),
            Part::Ref(r) => put_ref(out, refs.encode_ref(r)?),
            Part::Entity(e) => self.headers(e, refs, out, depth)?,
            Part::Items(items) => {
                out.push(code::TUPLE);
                self.children(items, refs, out, depth)?;
            }
            Part::Tuple(parts) => {
                out.push(code::TUPLE);
                netbytes::put_u64(out, parts.len() as u64);
                for p in parts.iter() {
                    self.part_headers(p, refs, out, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn part_payloads<R>(&self, part: &Part<'_, R>, out: &mut Vec<u8>) {
        match part {
            Part::Int(_) | Part::Ref(_) => {}
            Part::Entity(e) => self.payloads(e, out),
            Part::Items(items) => {
                for item in items.iter().rev() {
                    self.payloads(item, out);
                }
            }
            Part::Tuple(parts) => {
                for p in parts.iter().rev() {
                    self.part_payloads(p, out);
                }
            }
        }
    }

    fn headers<R>(
        &self,
        e: &Entity<R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), Error> {
        if depth > self.config.max_depth {
            return Err(Error::EncodeTooDeep {
                max: self.config.max_depth,
            });
        }
        match e {
            Entity::Int(v) => put_int(out, *v),
            Entity::BigInt(v) => put_bigint(out, v),
            Entity::Bool(true) => out.push(code::TRUE),
            Entity::Bool(false) => out.push(code::FALSE),
            Entity::None => out.push(code::NONE),
            Entity::Float(f) => put_float(out, f),
            Entity::Bytes(b) => {
                out.push(code::BYTES);
                netbytes::put_u64(out, b.len() as u64);
            }
            Entity::Str(s) => {
                if self.config.str_codec == Some(Codec::Utf8) {
                    out.push(code::STRING);
                } else {
                    out.push(code::STRING_CODEC);
                    netbytes::put_u64(out, UTF8.len() as u64);
                }
                netbytes::put_u64(out, s.len() as u64);
            }
            Entity::Tuple(items) => {
                out.push(code::TUPLE);
                self.children(items, refs, out, depth)?;
            }
            Entity::Exception(items) => {
                out.push(code::EXCEPTION);
                self.children(items, refs, out, depth)?;
            }
            Entity::Tagged(value, tags) => {
                out.push(code::TAGGED);
                netbytes::put_u64(out, 1 + tags.len() as u64);
                self.headers(value, refs, out, depth + 1)?;
                for tag in tags {
                    self.headers(tag, refs, out, depth + 1)?;
                }
            }
            Entity::Ref(r) => put_ref(out, refs.encode_ref(r)?),
        }
        Ok(())
    }

    fn children<R>(
        &self,
        items: &[Entity<R>],
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), Error> {
        netbytes::put_u64(out, items.len() as u64);
        for item in items {
            self.headers(item, refs, out, depth + 1)?;
        }
        Ok(())
    }

    /// Payloads in reverse pre-order: children last-to-first, then the
    /// entity's own payload. Depth was checked by `headers`.
    fn payloads<R>(&self, e: &Entity<R>, out: &mut Vec<u8>) {
        match e {
            Entity::Bytes(b) => out.extend_from_slice(b),
            Entity::Str(s) => {
                // Pre-order is [codec, data]; reversed: data, then codec.
                out.extend_from_slice(s.as_bytes());
                if self.config.str_codec != Some(Codec::Utf8) {
                    out.extend_from_slice(UTF8);
                }
            }
            Entity::Tuple(items) | Entity::Exception(items) => {
                for item in items.iter().rev() {
                    self.payloads(item, out);
                }
            }
            Entity::Tagged(value, tags) => {
                for tag in tags.iter().rev() {
                    self.payloads(tag, out);
                }
                self.payloads(value, out);
            }
            _ => {}
        }
    }
}

const UTF8: &[u8] = b"utf8";

/// Encodes one entity with raw wire references into a new buffer.
pub fn encode_to_vec(entity: &Entity, config: EncodeConfig) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    Encoder::new(config).encode(entity, &mut crate::entity::RawRefs, &mut out)?;
    Ok(out)
}

fn put_ref(out: &mut Vec<u8>, wire: WireRef) {
    out.push(match wire.owner {
        Owner::Sender => code::REF_SENDER,
        Owner::Receiver => code::REF_RECEIVER,
    });
    netbytes::put_signed_i64(out, wire.id);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    if (-1..=237).contains(&v) {
        out.push((v + 1) as u8);
    } else if v >= 238 {
        out.push(code::INT_POS);
        netbytes::put_u64(out, (v - 238) as u64);
    } else {
        out.push(code::INT_NEG);
        // v <= -2, so -(v + 2) >= 0 and cannot overflow.
        netbytes::put_u64(out, (-(v + 2)) as u64);
    }
}

fn put_bigint(out: &mut Vec<u8>, v: &num_bigint::BigInt) {
    use num_bigint::{BigInt, Sign};
    use num_traits::ToPrimitive;
    if let Some(small) = v.to_i64() {
        return put_int(out, small);
    }
    if v.sign() == Sign::Minus {
        out.push(code::INT_NEG);
        let n: BigInt = -(v + BigInt::from(2));
        netbytes::put_big(out, n.magnitude());
    } else {
        out.push(code::INT_POS);
        let n: BigInt = v - BigInt::from(238);
        netbytes::put_big(out, n.magnitude());
    }
}

fn put_float(out: &mut Vec<u8>, f: &VFloat) {
    match f.base {
        2 => out.push(code::FLOAT_2),
        10 => out.push(code::FLOAT_10),
        _ => out.push(code::FLOAT_N),
    }
    netbytes::put_signed_big(out, &f.digits);
    if f.base != 2 && f.base != 10 {
        netbytes::put_signed_big(out, &num_bigint::BigInt::from(f.base));
    }
    netbytes::put_signed_i64(out, f.exp);
}
