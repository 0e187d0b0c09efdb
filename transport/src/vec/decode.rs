//! The incremental VEC entity reader.
//!
//! Decoding one entity takes two passes over the buffer:
//!
//! 1. **scan**: walk the headers with an explicit stack, summing payload
//!    lengths, until the header structure is complete. The scan is resumable:
//!    when the buffer runs out it remembers where the last complete header
//!    element ended. It enforces the size cap (headers plus declared payloads)
//!    and the depth cap, so nothing is allocated for a message that will be
//!    refused.
//! 2. **build**: once `header_end + payload_total` bytes are buffered, walk
//!    the headers again and build the entity, taking payloads from the end of
//!    the message backwards (they are stored in reverse pre-order). Open
//!    containers wait on an explicit stack, so no input, however deeply
//!    nested, recurses on the native stack.

use bytes::{Buf, BytesMut};
use num_bigint::{BigInt, Sign};
use num_traits::ToPrimitive;

use super::code;
use super::netbytes::{self, PosInt};
use super::string_codec::Codec;
use crate::entity::{Entity, Owner, VFloat, WireRef};
use crate::Error;

/// Default cap on one message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Default cap on entity nesting.
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeConfig {
    /// Largest accepted message (one top-level entity), headers and payloads.
    pub max_message: usize,
    /// Deepest accepted nesting of tuples, exceptions and tagged values.
    pub max_depth: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_message: DEFAULT_MAX_MESSAGE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

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

/// Reads entities from a growing byte buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: DecodeConfig,
    peer_codec: Option<Codec>,
    scan: Scan,
    /// A message was refused: where the next one starts is unknown, so
    /// every later call fails too (see [`Decoder::take_message`]).
    failed: bool,
    /// Tests compare the scan with and without [`Decoder::scan_fast`].
    #[cfg(test)]
    pub(crate) general_scan_only: bool,
}

#[derive(Debug, Clone, Default)]
struct Scan {
    /// Offset of the first header element not yet scanned.
    pos: usize,
    /// Children still to scan, per open container.
    stack: Vec<u64>,
    /// Sum of payload lengths seen so far.
    payload_total: u64,
    /// Whether the root element has been scanned.
    root_seen: bool,
}

enum Step {
    NeedMore,
    Done,
}

impl Decoder {
    /// A decoder with the given caps and no peer codec.
    pub fn new(config: DecodeConfig) -> Self {
        Decoder {
            config,
            peer_codec: None,
            scan: Scan::default(),
            failed: false,
            #[cfg(test)]
            general_scan_only: false,
        }
    }

    /// Sets the default codec the peer declared in its VEC hello; strings
    /// without an explicit codec are decoded with it.
    pub fn set_peer_codec(&mut self, codec: Option<Codec>) {
        self.peer_codec = codec;
    }

    /// The settings.
    pub fn config(&self) -> &DecodeConfig {
        &self.config
    }

    /// Whether part of an entity has been scanned but not yet returned.
    pub fn is_mid_entity(&self) -> bool {
        self.scan.pos > 0
    }

    /// The whole length of the entity at the front of the buffer, once its
    /// headers have been scanned (by a [`Decoder::decode`] that found the
    /// entity incomplete): a reader may reserve room for it at once
    /// instead of growing its buffer as the payloads arrive.
    pub fn pending_len(&self) -> Option<usize> {
        let headers_done = self.scan.root_seen && self.scan.stack.iter().all(|&n| n == 0);
        // At most `max_message` (the scan checked), so it fits a usize.
        (headers_done && !self.failed)
            .then(|| usize::try_from(self.scan.pos as u64 + self.scan.payload_total).ok())
            .flatten()
    }

    /// Decodes the next entity from the front of `buf`, consuming its bytes.
    ///
    /// Returns `Ok(None)` if `buf` does not yet hold a whole entity; call
    /// again when more bytes have been appended (without consuming any).
    pub fn decode<R>(
        &mut self,
        buf: &mut BytesMut,
        refs: &mut impl RefDecoder<R>,
    ) -> Result<Option<Entity<R>>, Error> {
        let Some((header_end, total)) = self.take_message(buf)? else {
            return Ok(None);
        };
        let mut builder = self.builder(&buf[..total], header_end, refs);
        let entity = builder.entity()?;
        debug_assert_eq!(builder.head, header_end);
        debug_assert_eq!(builder.payload_end, header_end);
        buf.advance(total);
        Ok(Some(entity))
    }

    /// Decodes the next entity from the front of `buf` element by element:
    /// once it is wholly buffered, `read` pulls its elements from a
    /// [`Reader`], and must pull all of them.
    ///
    /// This is for callers that know the shape of a message's outer levels
    /// (a link reading its `(id, code, payload)` framing): they take those
    /// levels apart as they read them, and no tuple is built for them.
    ///
    /// Returns `Ok(None)`, consuming nothing, if `buf` does not yet hold a
    /// whole entity. Otherwise the entity's bytes are consumed, and the
    /// result is `read`'s, or an error if `read` left elements unread.
    pub fn decode_with<R, D, T>(
        &mut self,
        buf: &mut BytesMut,
        refs: &mut D,
        read: impl FnOnce(&mut Reader<'_, D>) -> Result<T, Error>,
    ) -> Result<Option<T>, Error>
    where
        D: RefDecoder<R>,
    {
        let Some((header_end, total)) = self.take_message(buf)? else {
            return Ok(None);
        };
        let mut reader = Reader {
            b: self.builder(&buf[..total], header_end, refs),
            open: [0; READER_DEPTH],
            depth: 0,
            root_done: false,
        };
        let result = read(&mut reader).and_then(|v| reader.finish().map(|()| v));
        buf.advance(total);
        result.map(Some)
    }

    /// A builder over one whole message `msg` whose headers end at
    /// `header_end`.
    fn builder<'a, D>(&self, msg: &'a [u8], header_end: usize, refs: &'a mut D) -> Builder<'a, D> {
        Builder {
            buf: msg,
            head: 0,
            payload_end: msg.len(),
            header_end,
            peer_codec: self.peer_codec,
            refs,
        }
    }

    /// Scans for the next whole entity. Once its headers and payloads are
    /// all buffered, resets the scan for the one after and returns where its
    /// headers end and its total length.
    ///
    /// Once the scan has refused a message, the stream is out of step (the
    /// refused message's end is unknown, and the scan stopped part-way
    /// through it): every later call fails with [`Error::Malformed`]
    /// rather than read on from a wrong place.
    fn take_message(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
        if self.failed {
            return Err(Error::Malformed(
                "decoding after a refused message (the stream is out of step)",
            ));
        }
        match self.scan_headers(buf) {
            Ok(Step::NeedMore) => return Ok(None),
            Ok(Step::Done) => {}
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        }
        let header_end = self.scan.pos;
        // At most `max_message` (checked by the scan), so this cannot
        // saturate, and fits a usize.
        let total = (header_end as u64).saturating_add(self.scan.payload_total);
        if (buf.len() as u64) < total {
            return Ok(None);
        }
        // Reset, keeping the stack's allocation for the next message.
        self.scan.pos = 0;
        self.scan.payload_total = 0;
        self.scan.root_seen = false;
        self.scan.stack.clear();
        Ok(Some((header_end, total as usize)))
    }

    /// Checks the state at end of stream: leftover bytes are an error.
    pub fn decode_eof(&self, buf: &BytesMut) -> Result<(), Error> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Truncated(buf.len()))
        }
    }

    /// Refuses a message whose size, as far as its headers tell, is the sum
    /// of `parts` and exceeds the cap. A sum beyond `u64::MAX` exceeds any
    /// cap: hostile lengths are refused, never wrapped.
    #[inline]
    fn too_large(&self, parts: [u64; 3]) -> Result<(), Error> {
        let declared = parts[0]
            .checked_add(parts[1])
            .and_then(|s| s.checked_add(parts[2]));
        match declared {
            Some(declared) if declared <= self.config.max_message as u64 => Ok(()),
            declared => Err(self.refuse(declared)),
        }
    }

    #[cold]
    fn refuse(&self, declared: Option<u64>) -> Error {
        Error::TooLarge {
            declared: declared.unwrap_or(u64::MAX),
            max: self.config.max_message,
        }
    }

    /// The scan's common case, with its state in locals: elements with
    /// short-form fields, containers at most [`FAST_DEPTH`] deep. It
    /// commits exactly what [`Decoder::scan_headers`] would, element by
    /// element, and leaves an element it does not take in the common case
    /// (incomplete, a long-form field, an unusual or invalid code, a cap
    /// reached) uncommitted for the general loop, which then decides about
    /// it as it always did. Returns whether the headers are complete.
    ///
    /// Called on a fresh scan only.
    fn scan_fast(&mut self, buf: &[u8]) -> bool {
        let max_depth = self.config.max_depth;
        // Elements still to scan per open level: `top` for the innermost,
        // `outer[..depth]` below it. Level 0 stands for the root (one
        // element); level `d` is the `d`-th entry of the general scan's
        // stack.
        let mut outer = [0u64; FAST_DEPTH];
        let mut depth = 0usize;
        let mut top = 1u64;
        let mut pos = 0usize;
        let mut total = 0u64;
        // What the size cap leaves: `max_message - pos - total`, so that
        // the size check of an element (`too_large`) is one subtraction.
        let mut budget = self.config.max_message as u64;
        let done = loop {
            // Close finished levels.
            while top == 0 {
                let Some(d) = depth.checked_sub(1) else {
                    break;
                };
                depth = d;
                top = outer[d];
            }
            if top == 0 {
                break true;
            }
            let Some(&c) = buf.get(pos) else {
                break false;
            };
            let (len, payload, children) = match c {
                0..=0xee | code::FALSE | code::TRUE | code::NONE => (1, 0, 0),
                code::INT_POS | code::INT_NEG | code::REF_SENDER | code::REF_RECEIVER => {
                    let len = match buf.get(pos + 1) {
                        Some(&f) if f <= 246 => 2,
                        Some(&f) if f != 0xff => 2 + usize::from(f - 246),
                        _ => break false,
                    };
                    if pos + len > buf.len() {
                        break false;
                    }
                    (len, 0, 0)
                }
                code::BYTES | code::STRING | code::TUPLE | code::EXCEPTION | code::TAGGED => {
                    let Some((v, n)) = buf.get(pos + 1..).and_then(netbytes::read_u64) else {
                        break false;
                    };
                    if c == code::BYTES || c == code::STRING {
                        (1 + n, v, 0)
                    } else {
                        (1 + n, 0, v)
                    }
                }
                _ => break false,
            };
            // The element's size check, then its children's (each takes
            // at least a byte), as the general scan makes them; an element
            // that fails one is left to it.
            let Some(left) = payload
                .checked_add(len as u64)
                .and_then(|need| budget.checked_sub(need))
            else {
                break false;
            };
            if children > 0 && (depth + 2 > max_depth || depth == FAST_DEPTH || children > left) {
                break false;
            }
            // Commit the element.
            budget = left;
            pos += len;
            total += payload;
            top -= 1;
            if children > 0 {
                outer[depth] = top;
                depth += 1;
                top = children;
            }
        };
        self.scan.pos = pos;
        self.scan.payload_total = total;
        // The root is scanned once level 0 is done or a level opened above.
        self.scan.root_seen = done || depth > 0 || top == 0;
        if !done {
            // The general scan's stack: levels 1..=depth.
            if depth > 0 {
                self.scan.stack.extend_from_slice(&outer[1..depth]);
                self.scan.stack.push(top);
            }
        }
        done
    }

    fn scan_headers(&mut self, buf: &[u8]) -> Result<Step, Error> {
        #[cfg(test)]
        let fresh = self.scan.pos == 0 && !self.general_scan_only;
        #[cfg(not(test))]
        let fresh = self.scan.pos == 0;
        if fresh && self.scan_fast(buf) {
            return Ok(Step::Done);
        }
        loop {
            // Close finished containers.
            while self.scan.stack.last() == Some(&0) {
                self.scan.stack.pop();
            }
            if self.scan.root_seen && self.scan.stack.is_empty() {
                return Ok(Step::Done);
            }
            let start = self.scan.pos;
            let rest = &buf[start..];
            let Some(&c) = rest.first() else {
                return Ok(Step::NeedMore);
            };
            // Measure the whole element (code plus its leaf fields) first;
            // nothing is recorded unless all of it is there.
            let mut at = 1usize;
            let mut payload = 0u64;
            let mut children: Option<u64> = None;
            macro_rules! field {
                () => {{
                    match rest.get(at) {
                        // The short forms: the first byte gives the length,
                        // and the commit check below bounds the message.
                        Some(&f) if f != 0xff => {
                            let n = if f <= 246 {
                                1
                            } else {
                                1 + usize::from(f - 246)
                            };
                            if at + n > rest.len() {
                                return Ok(Step::NeedMore);
                            }
                            at += n;
                        }
                        _ => field_long!(),
                    }
                }};
            }
            macro_rules! field_long {
                () => {{
                    match netbytes::field_len(&rest[at..])? {
                        None => return Ok(Step::NeedMore),
                        Some(n) => {
                            let field_start = (start + at) as u64;
                            self.too_large([field_start, n, self.scan.payload_total])?;
                            // Cannot saturate: the sum was checked just above.
                            let end = field_start.saturating_add(n);
                            if end > buf.len() as u64 {
                                return Ok(Step::NeedMore);
                            }
                            // `end` is within `buf`, so `n` fits a usize.
                            at += n as usize;
                        }
                    }
                }};
            }
            // A length or count. Its field is bounded like any other first:
            // the long form can declare a field longer than any message,
            // which must be refused rather than waited for.
            macro_rules! value {
                ($what:expr) => {{
                    match netbytes::read_u64(&rest[at..]) {
                        Some((v, n)) => {
                            at += n;
                            v
                        }
                        None => {
                            let field_start = at;
                            field_long!();
                            match netbytes::read(&rest[field_start..at])? {
                                None => return Ok(Step::NeedMore),
                                Some((v, _)) => v.to_u64($what)?,
                            }
                        }
                    }
                }};
            }
            match c {
                0..=0xee | code::FALSE | code::TRUE | code::NONE => {}
                code::INT_POS | code::INT_NEG | code::REF_SENDER | code::REF_RECEIVER => field!(),
                code::BYTES | code::STRING => payload = value!("bytes length"),
                code::STRING_CODEC => {
                    payload = value!("codec length");
                    payload = payload
                        .checked_add(value!("string length"))
                        .ok_or_else(|| Error::OutOfRange {
                            what: "string length",
                        })?;
                }
                code::TUPLE | code::EXCEPTION | code::TAGGED => {
                    children = Some(value!("tuple length"));
                }
                code::FLOAT_2 | code::FLOAT_10 => {
                    field!();
                    field!();
                }
                code::FLOAT_N => {
                    field!();
                    field!();
                    field!();
                }
                _ => return Err(Error::InvalidCode { code: c }),
            }
            self.too_large([(start + at) as u64, self.scan.payload_total, payload])?;
            // Cannot saturate: the sum was checked just above.
            let payload_total = self.scan.payload_total.saturating_add(payload);
            // Commit the element.
            self.scan.pos = start + at;
            self.scan.payload_total = payload_total;
            match self.scan.stack.last_mut() {
                Some(remaining) => *remaining -= 1,
                None => self.scan.root_seen = true,
            }
            if let Some(n) = children.filter(|n| *n > 0) {
                if self.scan.stack.len() + 2 > self.config.max_depth {
                    return Err(Error::TooDeep {
                        max: self.config.max_depth,
                    });
                }
                // Every child takes at least one header byte.
                self.too_large([self.scan.pos as u64, n, payload_total])?;
                self.scan.stack.push(n);
            }
        }
    }
}

struct Builder<'a, D> {
    buf: &'a [u8],
    head: usize,
    payload_end: usize,
    header_end: usize,
    peer_codec: Option<Codec>,
    refs: &'a mut D,
}

/// Containers [`Decoder::scan_fast`] tracks in place; deeper nesting is left
/// to the general scan.
const FAST_DEPTH: usize = 16;

/// Tuples a [`Reader`] can have open at once.
const READER_DEPTH: usize = 8;

/// Reads one complete, scanned entity element by element (see
/// [`Decoder::decode_with`]).
///
/// Elements come in pre-order. [`Reader::tuple`] opens a tuple, whose
/// elements are then read in turn; [`Reader::entity`] reads a whole element
/// (with everything in it) as an [`Entity`]. The structure was checked by
/// the scan, so reads fail only on a shape the caller does not expect, and
/// a caller that reads less than the whole entity gets an error from
/// `decode_with`.
pub struct Reader<'a, D> {
    b: Builder<'a, D>,
    /// Elements still to read, per open tuple.
    open: [usize; READER_DEPTH],
    depth: usize,
    /// Whether the root element has been read (or opened).
    root_done: bool,
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
    fn finish(&self) -> Result<(), Error> {
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
    fn entity<R>(&mut self) -> Result<Entity<R>, Error>
    where
        D: super::RefDecoder<R>,
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

/// Decodes exactly one entity with raw wire references from `bytes`.
///
/// Trailing bytes after the entity, or too few bytes, are errors.
pub fn decode_complete(
    bytes: &[u8],
    peer_codec: Option<Codec>,
    config: DecodeConfig,
) -> Result<Entity, Error> {
    let mut decoder = Decoder::new(config);
    decoder.set_peer_codec(peer_codec);
    let mut buf = BytesMut::from(bytes);
    match decoder.decode(&mut buf, &mut crate::entity::RawRefs)? {
        Some(e) if buf.is_empty() => Ok(e),
        Some(_) => Err(Error::Malformed("trailing bytes after entity")),
        None => Err(Error::Truncated(bytes.len())),
    }
}
