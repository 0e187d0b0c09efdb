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
//! 2. **build** (in [`super::build`]): once `header_end + payload_total`
//!    bytes are buffered, walk the headers again and build the entity,
//!    taking payloads from the end of the message backwards (they are
//!    stored in reverse pre-order). Open containers wait on an explicit
//!    stack, so no input, however deeply nested, recurses on the native
//!    stack.

use bytes::{Buf, BytesMut};

use super::build::{Builder, Reader, RefDecoder, READER_DEPTH};
use super::code;
use super::netbytes;
use super::string_codec::Codec;
use crate::entity::Entity;
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

/// Containers [`Decoder::scan_fast`] tracks in place; deeper nesting is left
/// to the general scan.
const FAST_DEPTH: usize = 16;

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
