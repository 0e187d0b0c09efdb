//! The VEC entity writer: all headers in pre-order, then payloads in
//! reverse pre-order.

use super::string_codec::Codec;
use super::{code, netbytes};
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
        self.encode_in(
            out,
            |out, pays| self.element(entity, refs, out, 1, pays),
            |out| self.payloads(entity, out),
        )
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
        self.encode_in(
            out,
            |out, pays| self.part_element(part, refs, out, 1, pays),
            |out| self.part_payloads(part, out),
        )
    }

    /// One top-level entity: `headers` writes its headers (at depth 1) and
    /// keeps its payloads in a [`Payloads`]; if there were too many to keep,
    /// `payloads` walks the entity again for them. On error `out` is left
    /// as it was.
    #[inline(always)]
    fn encode_in<'e>(
        &self,
        out: &mut Vec<u8>,
        headers: impl FnOnce(&mut Vec<u8>, &mut Payloads<'e>) -> Result<(), Error>,
        payloads: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Error> {
        let start = out.len();
        let mut pays = Payloads::new();
        match self.too_deep(1).and_then(|()| headers(out, &mut pays)) {
            Ok(()) => {
                if !pays.write(out) {
                    payloads(out);
                }
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Refuses elements nested deeper than the cap. Children are checked
    /// once per container, before the first of them is written: all of them
    /// are at the same depth, and the first would fail before doing
    /// anything.
    #[inline]
    fn too_deep(&self, depth: usize) -> Result<(), Error> {
        if depth > self.config.max_depth {
            Err(Error::EncodeTooDeep {
                max: self.config.max_depth,
            })
        } else {
            Ok(())
        }
    }

    /// The headers of `part`, at `depth` (already checked). The leaves are
    /// written in place; only containers call out.
    #[inline(always)]
    fn part_element<'e, R>(
        &self,
        part: &'e Part<'e, R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
        pays: &mut Payloads<'e>,
    ) -> Result<(), Error> {
        match part {
            Part::Int(v) => put_int(out, *v),
            Part::Ref(r) => put_ref(out, refs.encode_ref(r)?),
            Part::Entity(e) => self.element(e, refs, out, depth, pays)?,
            Part::Items(_) | Part::Tuple(_) => self.part_headers(part, refs, out, depth, pays)?,
        }
        Ok(())
    }

    /// The headers of a container part at `depth` (already checked).
    fn part_headers<'e, R>(
        &self,
        part: &'e Part<'e, R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
        pays: &mut Payloads<'e>,
    ) -> Result<(), Error> {
        match part {
            Part::Items(items) => self.children(code::TUPLE, items, refs, out, depth, pays),
            Part::Tuple(parts) => {
                netbytes::put_coded(out, code::TUPLE, parts.len() as u64);
                if !parts.is_empty() {
                    self.too_deep(depth + 1)?;
                }
                for p in parts.iter() {
                    self.part_element(p, refs, out, depth + 1, pays)?;
                }
                Ok(())
            }
            _ => self.part_element(part, refs, out, depth, pays),
        }
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

    /// The headers of `e`, at `depth` (already checked): the common leaves
    /// in place, the rest in [`Encoder::headers`].
    #[inline(always)]
    fn element<'e, R>(
        &self,
        e: &'e Entity<R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
        pays: &mut Payloads<'e>,
    ) -> Result<(), Error> {
        match e {
            Entity::Int(v) => put_int(out, *v),
            Entity::Str(s) => self.put_str(out, s, pays),
            Entity::Ref(r) => put_ref(out, refs.encode_ref(r)?),
            _ => self.headers(e, refs, out, depth, pays)?,
        }
        Ok(())
    }

    #[inline(always)]
    fn put_str<'e>(&self, out: &mut Vec<u8>, s: &'e str, pays: &mut Payloads<'e>) {
        if self.config.str_codec == Some(Codec::Utf8) {
            netbytes::put_coded(out, code::STRING, s.len() as u64);
        } else {
            netbytes::put_coded(out, code::STRING_CODEC, UTF8.len() as u64);
            netbytes::put_u64(out, s.len() as u64);
            pays.push(UTF8);
        }
        pays.push(s.as_bytes());
    }

    /// The headers of `e` at `depth` (already checked).
    fn headers<'e, R>(
        &self,
        e: &'e Entity<R>,
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
        pays: &mut Payloads<'e>,
    ) -> Result<(), Error> {
        match e {
            Entity::Int(v) => put_int(out, *v),
            Entity::BigInt(v) => put_bigint(out, v),
            Entity::Bool(true) => out.push(code::TRUE),
            Entity::Bool(false) => out.push(code::FALSE),
            Entity::None => out.push(code::NONE),
            Entity::Float(f) => put_float(out, f),
            Entity::Bytes(b) => {
                netbytes::put_coded(out, code::BYTES, b.len() as u64);
                pays.push(b);
            }
            Entity::Str(s) => self.put_str(out, s, pays),
            Entity::Tuple(items) => self.children(code::TUPLE, items, refs, out, depth, pays)?,
            Entity::Exception(items) => {
                self.children(code::EXCEPTION, items, refs, out, depth, pays)?;
            }
            Entity::Tagged(value, tags) => {
                netbytes::put_coded(out, code::TAGGED, 1 + tags.len() as u64);
                self.too_deep(depth + 1)?;
                self.element(value, refs, out, depth + 1, pays)?;
                for tag in tags {
                    self.element(tag, refs, out, depth + 1, pays)?;
                }
            }
            Entity::Ref(r) => put_ref(out, refs.encode_ref(r)?),
        }
        Ok(())
    }

    /// A tuple or exception (`code`) of `items`, itself at `depth` (already
    /// checked).
    fn children<'e, R>(
        &self,
        code: u8,
        items: &'e [Entity<R>],
        refs: &mut impl RefEncoder<R>,
        out: &mut Vec<u8>,
        depth: usize,
        pays: &mut Payloads<'e>,
    ) -> Result<(), Error> {
        netbytes::put_coded(out, code, items.len() as u64);
        if !items.is_empty() {
            self.too_deep(depth + 1)?;
        }
        for item in items {
            self.element(item, refs, out, depth + 1, pays)?;
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

/// Payloads the header walk keeps for writing after the headers.
const PAYLOADS_INLINE: usize = 8;

/// The payloads met by the header walk, in pre-order, so that they can be
/// written in reverse without walking the entity again. An entity with more
/// of them than fit is walked again instead (see [`Payloads::write`]).
struct Payloads<'e> {
    inline: [&'e [u8]; PAYLOADS_INLINE],
    len: usize,
    total: usize,
}

impl<'e> Payloads<'e> {
    #[inline]
    fn new() -> Self {
        Payloads {
            inline: [&[]; PAYLOADS_INLINE],
            len: 0,
            total: 0,
        }
    }

    #[inline]
    fn push(&mut self, payload: &'e [u8]) {
        if payload.is_empty() {
            return;
        }
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = payload;
            self.total = self.total.saturating_add(payload.len());
        }
        self.len += 1;
    }

    /// Appends the payloads in reverse pre-order; `false` (and nothing
    /// written) if there were too many to keep.
    #[inline]
    fn write(&self, out: &mut Vec<u8>) -> bool {
        let Some(kept) = self.inline.get(..self.len) else {
            return false;
        };
        out.reserve(self.total);
        for p in kept.iter().rev() {
            out.extend_from_slice(p);
        }
        true
    }
}

/// Encodes one entity with raw wire references into a new buffer.
pub fn encode_to_vec(entity: &Entity, config: EncodeConfig) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    Encoder::new(config).encode(entity, &mut crate::entity::RawRefs, &mut out)?;
    Ok(out)
}

#[inline(always)]
fn put_ref(out: &mut Vec<u8>, wire: WireRef) {
    let c = match wire.owner {
        Owner::Sender => code::REF_SENDER,
        Owner::Receiver => code::REF_RECEIVER,
    };
    match netbytes::signed_u64(wire.id) {
        Some(n) => netbytes::put_coded(out, c, n),
        None => {
            out.push(c);
            netbytes::put_signed_i64(out, wire.id);
        }
    }
}

/// An integer: one byte for the small ones, written in place.
#[inline(always)]
fn put_int(out: &mut Vec<u8>, v: i64) {
    if (-1..=237).contains(&v) {
        out.push((v + 1) as u8);
    } else {
        put_int_long(out, v);
    }
}

#[inline(never)]
fn put_int_long(out: &mut Vec<u8>, v: i64) {
    if v >= 238 {
        netbytes::put_coded(out, code::INT_POS, (v - 238) as u64);
    } else {
        // v <= -2, so -(v + 2) >= 0 and cannot overflow.
        netbytes::put_coded(out, code::INT_NEG, (-(v + 2)) as u64);
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
