//! Building entities out of a message the [`Decoder`](super::Decoder) has
//! scanned: [`Reader`] (element by element, for callers that take a
//! message apart as they read it) and the builder under it, which decodes
//! each element's header and payload. The scan has already checked the
//! structure, sizes and depth, so what is built here can fail only on
//! payload contents (a bad string, an unknown reference) or a shape the
//! caller does not expect.

use num_bigint::{BigInt, Sign};
use num_traits::ToPrimitive;

use super::code;
use super::netbytes::{self, PosInt};
use super::string_codec::Codec;
use crate::entity::{Entity, Owner, VFloat, WireRef};
use crate::Error;

/// Maps wire references to references of type `R` while decoding.
///
/// The link layer implements this to look up its objects and count
/// receipts; an unknown id is an error that closes the link.
pub trait RefDecoder<R> {
    /// The reference for `wire`.
    fn decode_ref(&mut self, wire: WireRef) -> Result<R, Error>;
}

impl RefDecoder<WireRef> for crate::entity::RawRefs {
    fn decode_ref(&mut self, wire: WireRef) -> Result<WireRef, Error> {
        Ok(wire)
    }
}

pub(super) struct Builder<'a, D> {
    pub(super) buf: &'a [u8],
    pub(super) head: usize,
    pub(super) payload_end: usize,
    pub(super) header_end: usize,
    pub(super) peer_codec: Option<Codec>,
    pub(super) refs: &'a mut D,
}

/// Tuples a [`Reader`] can have open at once.
pub(super) const READER_DEPTH: usize = 8;

/// Reads one complete, scanned entity element by element (see
/// [`Decoder::decode_with`](super::Decoder::decode_with)).
///
/// Elements come in pre-order. [`Reader::tuple`] opens a tuple, whose
/// elements are then read in turn; [`Reader::entity`] reads a whole element
/// (with everything in it) as an [`Entity`]. The structure was checked by
/// the scan, so reads fail only on a shape the caller does not expect, and
/// a caller that reads less than the whole entity gets an error from
/// `decode_with`.
pub struct Reader<'a, D> {
    pub(super) b: Builder<'a, D>,
    /// Elements still to read, per open tuple.
    pub(super) open: [usize; READER_DEPTH],
    pub(super) depth: usize,
    /// Whether the root element has been read (or opened).
    pub(super) root_done: bool,
}

impl<'a, D> Reader<'a, D> {
    /// The code byte of the next element, or `None` if no element is left
    /// to read at this level (the open tuple is complete, or the root has
    /// been read).
    pub fn peek(&self) -> Option<u8> {
        if self.remaining() == 0 {
            return None;
        }
        self.b.buf.get(self.b.head).copied()
    }

    /// Elements left to read in the innermost open tuple (1 or 0 for the
    /// root).
    pub fn remaining(&self) -> usize {
        match self.depth.checked_sub(1) {
            Some(i) => self.open[i],
            None => usize::from(!self.root_done),
        }
    }

    /// Counts one element read at the current level, closing the tuples it
    /// completes.
    fn consumed(&mut self) {
        match self.depth.checked_sub(1) {
            Some(i) => {
                self.open[i] -= 1;
                let mut d = self.depth;
                // Close every tuple this element completes, innermost first.
                while d > 0 && self.open[d - 1] == 0 {
                    d -= 1;
                }
                self.depth = d;
            }
            None => self.root_done = true,
        }
    }

    /// If the next element is a tuple, opens it and returns its length:
    /// its elements are read next. Otherwise reads nothing and returns
    /// `None`.
    pub fn tuple(&mut self) -> Result<Option<usize>, Error> {
        if self.peek() != Some(code::TUPLE) {
            return Ok(None);
        }
        let save = self.b.head;
        self.b.head += 1;
        let n = match self.b.len("tuple length") {
            Ok(n) => n,
            Err(e) => {
                self.b.head = save;
                return Err(e);
            }
        };
        if n == 0 {
            self.consumed();
            return Ok(Some(0));
        }
        if self.depth == READER_DEPTH {
            return Err(Error::Malformed("message framing nested too deep"));
        }
        // Counted as read at its own level once its last element is.
        self.open[self.depth] = n;
        self.depth += 1;
        // The tuple's own slot in its parent is settled when it closes:
        // record it now, as the parent's count is what closes it.
        self.settle_parent();
        Ok(Some(n))
    }

    /// Takes the opened tuple's slot out of its parent's count; a parent
    /// whose count that ends stays open until this tuple closes (its count
    /// is below it on the stack).
    fn settle_parent(&mut self) {
        match self.depth.checked_sub(2) {
            Some(p) => self.open[p] -= 1,
            None => self.root_done = true,
        }
    }

    /// If the next element is an integer that fits an `i64`, reads it.
    /// Otherwise reads nothing and returns `None`.
    pub fn int(&mut self) -> Option<i64> {
        let c = self.peek()?;
        let v = match c {
            0..=0xee => i64::from(c) - 1,
            code::INT_POS | code::INT_NEG => {
                let (n, used) =
                    netbytes::read_u64(self.b.buf.get(self.b.head + 1..self.b.header_end)?)?;
                let v = int_i64(c, n)?;
                self.b.head += used;
                v
            }
            _ => return None,
        };
        self.b.head += 1;
        self.consumed();
        Some(v)
    }

    /// If the next element is a string in the peer's default codec and that
    /// codec is UTF-8 (or ASCII), reads it and returns it borrowed from the
    /// message. Otherwise reads nothing and returns `None`; invalid UTF-8 is
    /// an error, as it is for [`Reader::entity`].
    pub fn str(&mut self) -> Result<Option<&'a str>, Error> {
        if self.peek() != Some(code::STRING)
            || !matches!(self.b.peer_codec, Some(Codec::Utf8 | Codec::Ascii))
        {
            return Ok(None);
        }
        let (head, payload_end) = (self.b.head, self.b.payload_end);
        self.b.head += 1;
        let data = self.b.len("string length").and_then(|n| self.b.payload(n));
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                (self.b.head, self.b.payload_end) = (head, payload_end);
                return Err(e);
            }
        };
        let codec = self.b.peer_codec.unwrap_or(Codec::Utf8);
        let valid = match codec {
            Codec::Ascii => data.is_ascii(),
            _ => true,
        };
        match simdutf8::basic::from_utf8(data) {
            Ok(text) if valid => {
                self.consumed();
                Ok(Some(text))
            }
            _ => Err(Error::InvalidString {
                codec: codec.wire_name(),
            }),
        }
    }

    /// Reads the next element whole.
    pub fn entity<R>(&mut self) -> Result<Entity<R>, Error>
    where
        D: RefDecoder<R>,
    {
        if self.remaining() == 0 {
            return Err(Error::Malformed("read past the end of a tuple"));
        }
        let e = self.b.entity()?;
        self.consumed();
        Ok(e)
    }

    /// Reads (and drops) every element not yet read, at every open level:
    /// for a caller that met a shape it does not expect and wants only to
    /// report it.
    pub fn skip_rest<R>(&mut self) -> Result<(), Error>
    where
        D: RefDecoder<R>,
    {
        while self.remaining() > 0 {
            self.entity::<R>()?;
        }
        Ok(())
    }

    /// Checks that everything was read.
    pub(super) fn finish(&self) -> Result<(), Error> {
        if self.root_done
            && self.depth == 0
            && self.b.head == self.b.header_end
            && self.b.payload_end == self.b.header_end
        {
            Ok(())
        } else {
            Err(Error::Malformed("entity not read to its end"))
        }
    }
}

impl<'a, D> Builder<'a, D> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Error> {
        match self.buf.get(self.head) {
            Some(&b) => {
                self.head += 1;
                Ok(b)
            }
            None => Err(Error::Malformed("header overrun")),
        }
    }

    /// A short-form integer that fits a `u64`, if that is what comes next
    /// (see [`netbytes::read_u64`]); otherwise nothing is consumed.
    #[inline]
    fn small(&mut self) -> Option<u64> {
        let (v, n) = netbytes::read_u64(self.buf.get(self.head..self.header_end)?)?;
        self.head += n;
        Some(v)
    }

    fn posint(&mut self) -> Result<PosInt, Error> {
        let (v, n) = netbytes::read(&self.buf[self.head..self.header_end])?
            .ok_or(Error::Malformed("header overrun"))?;
        self.head += n;
        Ok(v)
    }

    #[inline(always)]
    fn len(&mut self, what: &'static str) -> Result<usize, Error> {
        match self.small() {
            Some(v) => usize::try_from(v).map_err(|_| Error::OutOfRange { what }),
            None => self.long_len(what),
        }
    }

    #[cold]
    #[inline(never)]
    fn long_len(&mut self, what: &'static str) -> Result<usize, Error> {
        self.posint()?.to_usize(what)
    }

    #[inline]
    fn payload(&mut self, len: usize) -> Result<&'a [u8], Error> {
        match self.payload_end.checked_sub(len) {
            Some(start) if start >= self.header_end => {
                let buf: &'a [u8] = self.buf;
                let data = &buf[start..self.payload_end];
                self.payload_end = start;
                Ok(data)
            }
            _ => Err(Error::Malformed("payload overrun")),
        }
    }

    fn signed(&mut self) -> Result<BigInt, Error> {
        Ok(netbytes::to_signed(&self.posint()?))
    }

    #[inline]
    fn signed_i64(&mut self, what: &'static str) -> Result<i64, Error> {
        if let Some(v) = self.small() {
            // v >> 1 < 2^63, so both signs fit.
            let half = (v >> 1) as i64;
            return Ok(if v & 1 == 1 { -half } else { half });
        }
        netbytes::to_signed_i64(&self.posint()?).ok_or(Error::OutOfRange { what })
    }

    /// Builds the entity whose headers start at `head`.
    ///
    /// Iterative: containers wait on an explicit stack, so the native stack
    /// stays flat however deep the (depth-capped) nesting is. Elements and
    /// payloads are visited in pre-order, as the recursive definition does.
    ///
    /// The common elements are decoded inline and each finished entity goes
    /// straight into its parent: wrapping every element in an enum inside a
    /// `Result` made the compiler shuffle them through the stack, which cost
    /// more than decoding them.
    pub(super) fn entity<R>(&mut self) -> Result<Entity<R>, Error>
    where
        D: RefDecoder<R>,
    {
        // Made at the first container: a leaf (what a reader mostly asks
        // for) needs no stack, and setting one up costs more than the leaf.
        let mut open: Option<OpenStack<R>> = None;
        loop {
            let c = self.byte()?;
            let mut done: Entity<R> = match c {
                0..=0xee => Entity::Int(i64::from(c) - 1),
                code::NONE => Entity::None,
                code::FALSE => Entity::Bool(false),
                code::TRUE => Entity::Bool(true),
                code::INT_POS | code::INT_NEG => match self.small() {
                    Some(n) => match int_i64(c, n) {
                        Some(v) => Entity::Int(v),
                        None => int_i128(c, n),
                    },
                    None => self.big_int(c)?,
                },
                code::STRING => Entity::Str(self.string()?),
                code::REF_SENDER | code::REF_RECEIVER => {
                    let id = self.signed_i64("object id")?;
                    let owner = if c == code::REF_SENDER {
                        Owner::Sender
                    } else {
                        Owner::Receiver
                    };
                    Entity::Ref(self.refs.decode_ref(WireRef { owner, id })?)
                }
                code::TUPLE | code::EXCEPTION | code::TAGGED => {
                    let kind = match c {
                        code::TUPLE => ContainerKind::Tuple,
                        code::EXCEPTION => ContainerKind::Exception,
                        _ => ContainerKind::Tagged,
                    };
                    let n = self.len("tuple length")?;
                    if n > 0 {
                        // The scan saw all n children in the header bytes,
                        // so n is bounded by the message size.
                        open.get_or_insert_with(OpenStack::new).push(OpenContainer {
                            kind,
                            remaining: n,
                            items: Vec::with_capacity(n),
                        });
                        continue;
                    }
                    kind.close(Vec::new())?
                }
                _ => self.rare_leaf(c)?,
            };
            // Hand the finished entity to its parent, closing every
            // container it completes.
            loop {
                let Some(top) = open.as_mut().and_then(OpenStack::top_mut) else {
                    return Ok(done);
                };
                top.items.push(done);
                // Containers are only on the stack with children pending.
                top.remaining -= 1;
                if top.remaining > 0 {
                    break;
                }
                let (kind, items) = (top.kind, std::mem::take(&mut top.items));
                if let Some(open) = open.as_mut() {
                    open.drop_top();
                }
                done = match kind {
                    ContainerKind::Tuple => Entity::Tuple(items),
                    ContainerKind::Exception => Entity::Exception(items),
                    ContainerKind::Tagged => kind.close(items)?,
                };
            }
        }
    }

    /// A string in the peer's default codec (code `STRING`).
    fn string(&mut self) -> Result<String, Error> {
        let n = self.len("string length")?;
        let codec = self.peer_codec.ok_or_else(|| Error::NoStringCodec)?;
        codec.decode(self.payload(n)?)
    }

    /// An integer too large for the short form (`INT_POS`/`INT_NEG` code
    /// `c` already read).
    #[cold]
    fn big_int<R>(&mut self, c: u8) -> Result<Entity<R>, Error> {
        let n = self.posint()?.to_biguint();
        let n = BigInt::from_biguint(Sign::Plus, n);
        Ok(Entity::int(if c == code::INT_POS {
            n + BigInt::from(238)
        } else {
            -(n + BigInt::from(2))
        }))
    }

    /// The leaves [`Builder::entity`] does not decode inline (code `c`
    /// already read).
    #[inline(never)]
    fn rare_leaf<R>(&mut self, c: u8) -> Result<Entity<R>, Error> {
        Ok(match c {
            code::BYTES => {
                let n = self.len("bytes length")?;
                Entity::Bytes(self.payload(n)?.to_vec())
            }
            code::STRING_CODEC => {
                let codec_len = self.len("codec length")?;
                let data_len = self.len("string length")?;
                let name = self.payload(codec_len)?;
                let codec = Codec::from_name(name).ok_or_else(|| {
                    Error::UnsupportedCodec(String::from_utf8_lossy(name).into_owned())
                })?;
                Entity::Str(codec.decode(self.payload(data_len)?)?)
            }
            code::FLOAT_2 | code::FLOAT_10 => {
                let digits = self.signed()?;
                let exp = self.signed_i64("float exponent")?;
                Entity::Float(VFloat {
                    digits,
                    base: if c == code::FLOAT_2 { 2 } else { 10 },
                    exp,
                })
            }
            code::FLOAT_N => {
                let digits = self.signed()?;
                // Any base VFloat can hold (2..=u64::MAX), not only those
                // that fit in an i64: the encoder writes them all.
                let base = self
                    .signed()?
                    .to_u64()
                    .filter(|b| *b >= 2)
                    .ok_or(Error::InvalidFloatBase)?;
                let exp = self.signed_i64("float exponent")?;
                Entity::Float(VFloat { digits, base, exp })
            }
            _ => return Err(Error::InvalidCode { code: c }),
        })
    }
}

/// The integer of code `c` (`INT_POS` or `INT_NEG`) with field value `n`,
/// if it fits an `i64`: `n + 238` or `-(n + 2)`.
#[inline(always)]
fn int_i64(c: u8, n: u64) -> Option<i64> {
    if c == code::INT_POS {
        i64::try_from(n.checked_add(238)?).ok()
    } else {
        // n <= i64::MAX - 1 exactly when -(n + 2) >= i64::MIN.
        let n = i64::try_from(n).ok().filter(|n| *n < i64::MAX)?;
        Some(-n - 2)
    }
}

/// [`int_i64`] for the values beyond an `i64`; exact in an `i128`, as
/// `n < 2^64`.
#[cold]
fn int_i128<R>(c: u8, n: u64) -> Entity<R> {
    let n = i128::from(n);
    Entity::BigInt(BigInt::from(if c == code::INT_POS {
        n + 238
    } else {
        -(n + 2)
    }))
}

#[derive(Clone, Copy)]
enum ContainerKind {
    Tuple,
    Exception,
    Tagged,
}

impl ContainerKind {
    fn close<R>(self, items: Vec<Entity<R>>) -> Result<Entity<R>, Error> {
        Ok(match self {
            ContainerKind::Tuple => Entity::Tuple(items),
            ContainerKind::Exception => Entity::Exception(items),
            ContainerKind::Tagged => {
                let mut items = items.into_iter();
                let value = items
                    .next()
                    .ok_or(Error::Malformed("tagged entity without a value"))?;
                Entity::Tagged(Box::new(value), items.collect())
            }
        })
    }
}

/// A container whose children are still being built.
struct OpenContainer<R> {
    kind: ContainerKind,
    remaining: usize,
    items: Vec<Entity<R>>,
}

/// Open containers nested deeper than this spill to the heap.
const INLINE_DEPTH: usize = 8;

/// The builder's stack of open containers: the first [`INLINE_DEPTH`]
/// levels live inline, so decoding a message of ordinary depth allocates
/// nothing for the stack itself.
struct OpenStack<R> {
    inline: [Option<OpenContainer<R>>; INLINE_DEPTH],
    len: usize,
    spill: Vec<OpenContainer<R>>,
}

impl<R> OpenStack<R> {
    fn new() -> Self {
        OpenStack {
            inline: std::array::from_fn(|_| None),
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, c: OpenContainer<R>) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(c),
            None => self.spill.push(c),
        }
        self.len += 1;
    }

    fn top_mut(&mut self) -> Option<&mut OpenContainer<R>> {
        let i = self.len.checked_sub(1)?;
        match self.inline.get_mut(i) {
            Some(slot) => slot.as_mut(),
            None => self.spill.last_mut(),
        }
    }

    /// Removes the top entry, if any.
    fn drop_top(&mut self) {
        let Some(i) = self.len.checked_sub(1) else {
            return;
        };
        self.len = i;
        match self.inline.get_mut(i) {
            Some(slot) => *slot = None,
            None => {
                self.spill.pop();
            }
        }
    }
}
