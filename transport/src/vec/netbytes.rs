//! Netbytes: VEC's variable-length encoding of non-negative integers, and
//! its signed form.
//!
//! * `n <= 246`: one byte `n`.
//! * otherwise `m = n - 247` as minimal big-endian bytes of length `L`:
//!   `(246 + L) || m` when `L <= 8`, else `0xff || netbytes(L - 9) || m`.
//! * signed: `2n` for `n >= 0`, `-2n + 1` for `n < 0`.
//!
//! Decoding accepts non-minimal forms (VPy does too) but bounds every length
//! so a hostile peer cannot make it loop or allocate.

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::ToPrimitive;

use crate::Error;

/// A decoded non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PosInt {
    /// Fits in 128 bits (always the case for fields of at most 8 bytes).
    Small(u128),
    /// Larger.
    Big(BigUint),
}

impl PosInt {
    /// The value as a `u64`, or an `OutOfRange` error naming `what`.
    pub(crate) fn to_u64(&self, what: &'static str) -> Result<u64, Error> {
        match self {
            PosInt::Small(v) => u64::try_from(*v).map_err(|_| Error::OutOfRange { what }),
            // A non-minimal long form can still hold a small value.
            PosInt::Big(v) => v.to_u64().ok_or(Error::OutOfRange { what }),
        }
    }

    /// The value as a `usize`, or an `OutOfRange` error naming `what`.
    pub(crate) fn to_usize(&self, what: &'static str) -> Result<usize, Error> {
        usize::try_from(self.to_u64(what)?).map_err(|_| Error::OutOfRange { what })
    }

    pub(crate) fn to_biguint(&self) -> BigUint {
        match self {
            PosInt::Small(v) => BigUint::from(*v),
            PosInt::Big(v) => v.clone(),
        }
    }
}

/// Appends the netbytes form of `n`.
#[inline]
pub(crate) fn put_u64(out: &mut Vec<u8>, n: u64) {
    if n <= 246 {
        out.push(n as u8);
    } else {
        put_u64_long(out, n);
    }
}

/// [`put_u64`] for `n > 246`.
#[inline(never)]
fn put_u64_long(out: &mut Vec<u8>, n: u64) {
    let (field, len) = long_field(n);
    append_cut(out, &field, len);
}

/// The long netbytes form of `n > 246`, padded to nine bytes, and how many
/// of them it takes: the length byte, then the value less 247 big-endian in
/// as few bytes as it needs (at least one).
#[inline(always)]
fn long_field(n: u64) -> ([u8; 9], usize) {
    let m = n - 247;
    let len = (8 - (m.leading_zeros() / 8) as usize).max(1);
    let mut field = [0u8; 9];
    field[0] = 246 + len as u8;
    // The value's `len` bytes, big-endian, moved to the front of the eight.
    field[1..].copy_from_slice(&(m << (8 * (8 - len))).to_be_bytes());
    (field, 1 + len)
}

/// Appends the first `len` bytes of `bytes` as one fixed-size append (no
/// variable-length copy), then cut to length.
#[inline(always)]
fn append_cut<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let end = out.len() + len;
    out.extend_from_slice(bytes);
    out.truncate(end);
}

/// Appends the byte `code` followed by the netbytes form of `n`: the
/// header of an element with one integer field.
#[inline]
pub(crate) fn put_coded(out: &mut Vec<u8>, code: u8, n: u64) {
    if n <= 246 {
        out.extend_from_slice(&[code, n as u8]);
    } else {
        put_coded_long(out, code, n);
    }
}

/// [`put_coded`] for `n > 246`.
#[inline(never)]
fn put_coded_long(out: &mut Vec<u8>, code: u8, n: u64) {
    let (field, len) = long_field(n);
    let mut header = [0u8; 10];
    header[0] = code;
    header[1..].copy_from_slice(&field);
    append_cut(out, &header, 1 + len);
}

/// The unsigned form of the signed netbytes of `v`, if it fits a `u64`
/// (all but `i64::MIN`).
#[inline]
pub(crate) fn signed_u64(v: i64) -> Option<u64> {
    if v >= 0 {
        Some((v as u64) << 1)
    } else if v > i64::MIN {
        Some(((-v) as u64) << 1 | 1)
    } else {
        None
    }
}

/// Appends the netbytes form of an arbitrary non-negative integer.
pub(crate) fn put_big(out: &mut Vec<u8>, n: &BigUint) {
    if let Some(small) = n.to_u64() {
        return put_u64(out, small);
    }
    let m = n - BigUint::from(247u32);
    let bytes = m.to_bytes_be();
    let len = bytes.len();
    if len <= 8 {
        out.push(246 + len as u8);
    } else {
        out.push(0xff);
        put_u64(out, (len - 9) as u64);
    }
    out.extend_from_slice(&bytes);
}

/// Appends the signed netbytes form of `v`.
pub(crate) fn put_signed_i64(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        put_u64(out, (v as u64) << 1);
    } else if v > i64::MIN {
        put_u64(out, ((-v) as u64) << 1 | 1);
    } else {
        put_signed_big(out, &BigInt::from(v));
    }
}

/// Appends the signed netbytes form of an arbitrary integer.
pub(crate) fn put_signed_big(out: &mut Vec<u8>, v: &BigInt) {
    let mag = v.magnitude() << 1u32;
    let n = if v.sign() == Sign::Minus {
        mag | BigUint::from(1u32)
    } else {
        mag
    };
    put_big(out, &n);
}

/// Reads a netbytes integer of the short forms (at most 8 value bytes)
/// whose value fits a `u64`: the common case, without building a
/// [`PosInt`]. `None` if `buf` holds only a prefix of it, or if it is the
/// `0xff` form or too large; callers then fall back to [`read`].
#[inline]
pub(crate) fn read_u64(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    if first <= 246 {
        return Some((u64::from(first), 1));
    }
    if first == 255 {
        return None;
    }
    let len = usize::from(first - 246);
    let v = match buf.get(1..9) {
        // Eight bytes at hand: one load, the bytes beyond the field
        // shifted out.
        Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
            u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]) >> (8 * (8 - len))
        }
        _ => {
            let mut v: u64 = 0;
            for &b in buf.get(1..1 + len)? {
                v = (v << 8) | u64::from(b);
            }
            v
        }
    };
    Some((v.checked_add(247)?, 1 + len))
}

/// Reads one netbytes integer from the start of `buf`.
///
/// Returns `Ok(None)` if `buf` holds only a prefix of it, otherwise the value
/// and the number of bytes it took.
pub(crate) fn read(buf: &[u8]) -> Result<Option<(PosInt, usize)>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        0..=246 => Ok(Some((PosInt::Small(first as u128), 1))),
        247..=254 => {
            let len = (first - 246) as usize;
            let Some(m) = buf.get(1..1 + len) else {
                return Ok(None);
            };
            let mut v: u128 = 0;
            for &b in m {
                v = (v << 8) | b as u128;
            }
            Ok(Some((PosInt::Small(v + 247), 1 + len)))
        }
        255 => {
            // The length of the length: one level of nesting only. A length
            // field that itself needs the 0xff form would describe an integer
            // of more than 2^64 bytes.
            let rest = &buf[1..];
            let Some(&inner) = rest.first() else {
                return Ok(None);
            };
            if inner == 255 {
                return Err(Error::OutOfRange {
                    what: "integer length",
                });
            }
            let Some((len_field, used)) = read(rest)? else {
                return Ok(None);
            };
            let len = len_field
                .to_u64("integer length")?
                .checked_add(9)
                .and_then(|l| usize::try_from(l).ok())
                .ok_or(Error::OutOfRange {
                    what: "integer length",
                })?;
            let start = 1 + used;
            let Some(end) = start.checked_add(len) else {
                return Err(Error::OutOfRange {
                    what: "integer length",
                });
            };
            let Some(m) = buf.get(start..end) else {
                return Ok(None);
            };
            let v = BigUint::from_bytes_be(m) + BigUint::from(247u32);
            Ok(Some((PosInt::Big(v), end)))
        }
    }
}

/// How many bytes the netbytes integer at the start of `buf` takes, without
/// decoding it; `Ok(None)` if `buf` holds only a prefix of it.
///
/// For the `0xff` form this also returns the declared total length, which the
/// caller checks against the message cap before waiting for the bytes.
pub(crate) fn field_len(buf: &[u8]) -> Result<Option<u64>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        0..=246 => Ok(Some(1)),
        247..=254 => Ok(Some(1 + (first - 246) as u64)),
        255 => {
            let rest = &buf[1..];
            let Some(&inner) = rest.first() else {
                return Ok(None);
            };
            if inner == 255 {
                return Err(Error::OutOfRange {
                    what: "integer length",
                });
            }
            let Some((len_field, used)) = read(rest)? else {
                return Ok(None);
            };
            let len = len_field
                .to_u64("integer length")?
                .checked_add(9 + 1 + used as u64)
                .ok_or(Error::OutOfRange {
                    what: "integer length",
                })?;
            Ok(Some(len))
        }
    }
}

/// Converts a decoded netbytes value to the signed integer it encodes.
pub(crate) fn to_signed(v: &PosInt) -> BigInt {
    let n = v.to_biguint();
    let odd = n.bit(0);
    let half = BigInt::from_biguint(Sign::Plus, n >> 1u32);
    if odd {
        -half
    } else {
        half
    }
}

/// Converts a decoded netbytes value to the signed integer it encodes, if it
/// fits in an `i64`.
pub(crate) fn to_signed_i64(v: &PosInt) -> Option<i64> {
    match v {
        PosInt::Small(n) => {
            let half = i128::try_from(n >> 1).ok()?;
            i64::try_from(if n & 1 == 1 { -half } else { half }).ok()
        }
        PosInt::Big(_) => to_signed(v).to_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        put_u64(&mut v, n);
        v
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn matches_vpy_vectors() {
        // From versile.common.util.posint_to_netbytes.
        assert_eq!(enc(0), hex("00"));
        assert_eq!(enc(246), hex("f6"));
        assert_eq!(enc(247), hex("f700"));
        assert_eq!(enc(248), hex("f701"));
        assert_eq!(enc(502), hex("f7ff"));
        assert_eq!(enc(503), hex("f80100"));
        assert_eq!(
            enc(u64::MAX),
            hex("fe ffffffffffffff08".replace(' ', "").as_str())
        );
        let mut big = Vec::new();
        put_big(&mut big, &(BigUint::from(u64::MAX) + BigUint::from(248u32)));
        assert_eq!(big, hex("ff00010000000000000000"));
        let mut big = Vec::new();
        put_big(&mut big, &(BigUint::from(1u32) << 80u32));
        assert_eq!(big, hex("ff01ffffffffffffffffff09"));
    }

    #[test]
    fn round_trips_and_reports_lengths() {
        for n in [0u64, 1, 246, 247, 248, 502, 503, 65_782, 1 << 40, u64::MAX] {
            let bytes = enc(n);
            let (v, used) = read(&bytes).expect("valid").expect("complete");
            assert_eq!(used, bytes.len());
            assert_eq!(v.to_u64("n").expect("fits"), n);
            assert_eq!(field_len(&bytes).expect("valid"), Some(bytes.len() as u64));
            for cut in 0..bytes.len() {
                assert_eq!(
                    read(&bytes[..cut]).expect("prefix is fine"),
                    None,
                    "{n} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_read() {
        for n in [0u64, 1, 246, 247, 248, 502, 503, 65_782, 1 << 40, u64::MAX] {
            let bytes = enc(n);
            assert_eq!(read_u64(&bytes), Some((n, bytes.len())), "{n}");
            // With bytes behind the field, as in a message.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0xaa; 9]);
            assert_eq!(read_u64(&longer), Some((n, bytes.len())), "{n} in more");
            for cut in 0..bytes.len() {
                assert_eq!(read_u64(&bytes[..cut]), None, "{n} cut {cut}");
            }
        }
        // Beyond u64 after adding 247, and the long form: left to `read`.
        assert_eq!(
            read_u64(&hex("fe ffffffffffffffff".replace(' ', "").as_str())),
            None
        );
        assert_eq!(read_u64(&hex("ff00010000000000000000")), None);
        // Non-minimal forms are accepted, as by `read`.
        assert_eq!(read_u64(&hex("f800ff")), Some((502, 3)));
    }

    #[test]
    fn accepts_non_minimal_forms_like_vpy() {
        let (v, used) = read(&hex("f800ff")).expect("ok").expect("complete");
        assert_eq!((v, used), (PosInt::Small(502), 3));
    }

    #[test]
    fn rejects_nested_length_of_length() {
        assert!(read(&[0xff, 0xff, 0x00]).is_err());
        assert!(field_len(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn signed_forms() {
        for v in [0i64, 1, -1, 123, -123, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_signed_i64(&mut out, v);
            let (n, _) = read(&out).expect("ok").expect("complete");
            assert_eq!(to_signed_i64(&n), Some(v));
            assert_eq!(to_signed(&n), BigInt::from(v));
        }
        // -1 is 3, 1 is 2 (VPy signedint_to_netbytes).
        let mut out = Vec::new();
        put_signed_i64(&mut out, -1);
        assert_eq!(out, vec![3]);
    }
}
