//! The VTS record layer (VPy's `VMessageEncrypter`/`VMessageDecrypter`):
//! `len16 || plaintext || zero padding || HMAC-SHA1`, encrypted as a whole,
//! with cipher state and the record number carried across records.

use super::suite::{hmac_sha1, Crypt, MAC_LEN};
use crate::Error;

/// Most plaintext bytes in one record (the length field holds `len - 1`).
pub const MAX_RECORD_PLAINTEXT: usize = 0x10000;

/// Plaintext bytes vole puts in one record, as VPy does (`max_write`).
pub const SEND_CHUNK: usize = 0x4000;

/// `posint_to_bytes`: minimal big-endian, zero as one zero byte.
fn num_bytes(num: u64) -> Vec<u8> {
    let b = num.to_be_bytes();
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
    b[first..].to_vec()
}

/// Padding needed after `2 + len + MAC` to reach a multiple of `block`.
fn pad_len(len: usize, block: usize) -> usize {
    let r = (2 + len + MAC_LEN) % block;
    if r == 0 {
        0
    } else {
        block - r
    }
}

/// The unencrypted form of record number `num` carrying `plain`.
pub(crate) fn frame(
    plain: &[u8],
    block: usize,
    mac_secret: &[u8],
    num: u64,
) -> Result<Vec<u8>, Error> {
    if plain.is_empty() || plain.len() > MAX_RECORD_PLAINTEXT || block == 0 {
        return Err(Error::Convert(format!(
            "a VTS record carries 1 to {MAX_RECORD_PLAINTEXT} bytes, not {}",
            plain.len()
        )));
    }
    // In range: 1 <= len <= 0x10000.
    let len16 = ((plain.len() - 1) as u16).to_be_bytes();
    let padding = vec![0u8; pad_len(plain.len(), block)];
    let mac = hmac_sha1(mac_secret, &[&num_bytes(num), &len16, plain, &padding]);
    let mut out = Vec::with_capacity(2 + plain.len() + padding.len() + MAC_LEN);
    out.extend_from_slice(&len16);
    out.extend_from_slice(plain);
    out.extend_from_slice(&padding);
    out.extend_from_slice(&mac);
    Ok(out)
}

/// Reads record number `num` from the front of decrypted bytes: the
/// plaintext and how many bytes it took, or `None` if `buf` does not hold
/// the whole record yet.
pub(crate) fn unframe(
    buf: &[u8],
    block: usize,
    mac_secret: &[u8],
    num: u64,
) -> Result<Option<(Vec<u8>, usize)>, Error> {
    let [a, b, ..] = buf else { return Ok(None) };
    let len = 1 + usize::from(u16::from_be_bytes([*a, *b]));
    let pad = pad_len(len, block);
    let total = 2 + len + pad + MAC_LEN;
    let Some(record) = buf.get(..total) else {
        return Ok(None);
    };
    let (body, mac) = record.split_at(total - MAC_LEN);
    let want = hmac_sha1(mac_secret, &[&num_bytes(num), body]);
    if mac != want.as_slice() {
        return Err(Error::VtsBadMac { record: num });
    }
    Ok(Some((body[2..2 + len].to_vec(), total)))
}

/// Seals outgoing records with a symmetric cipher.
pub(crate) struct Sealer {
    crypt: Crypt,
    mac: Vec<u8>,
    num: u64,
}

impl Sealer {
    pub(crate) fn new(crypt: Crypt, mac: Vec<u8>) -> Sealer {
        Sealer { crypt, mac, num: 0 }
    }

    /// Appends one record carrying `plain` (1..=65536 bytes) to `out`.
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let mut rec = frame(plain, self.crypt.block_len(), &self.mac, self.num)?;
        self.crypt.apply(&mut rec);
        self.num += 1;
        out.extend_from_slice(&rec);
        Ok(())
    }
}

/// Opens incoming records with a symmetric cipher.
pub(crate) struct Opener {
    crypt: Crypt,
    mac: Vec<u8>,
    num: u64,
    /// Ciphertext short of a whole block.
    partial: Vec<u8>,
    /// Decrypted bytes not yet returned as records.
    plain: Vec<u8>,
}

impl Opener {
    pub(crate) fn new(crypt: Crypt, mac: Vec<u8>) -> Opener {
        Opener {
            crypt,
            mac,
            num: 0,
            partial: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// Takes ciphertext. The cipher runs as one continuous stream across
    /// records, so every whole block can be decrypted as soon as it arrives.
    pub(crate) fn push(&mut self, data: &[u8]) {
        let block = self.crypt.block_len();
        self.partial.extend_from_slice(data);
        let whole = self.partial.len() - self.partial.len() % block;
        let mut blocks: Vec<u8> = self.partial.drain(..whole).collect();
        self.crypt.apply(&mut blocks);
        self.plain.extend_from_slice(&blocks);
    }

    /// Appends the plaintext of every complete record to `out`.
    pub(crate) fn open(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let block = self.crypt.block_len();
        let mut start = 0;
        while let Some((plain, used)) = unframe(&self.plain[start..], block, &self.mac, self.num)? {
            out.extend_from_slice(&plain);
            start += used;
            self.num += 1;
        }
        self.plain.drain(..start);
        Ok(())
    }

    /// The next complete record's plaintext, if there is one.
    #[cfg(test)]
    pub(crate) fn open_one(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let block = self.crypt.block_len();
        let Some((plain, used)) = unframe(&self.plain, block, &self.mac, self.num)? else {
            return Ok(None);
        };
        self.plain.drain(..used);
        self.num += 1;
        Ok(Some(plain))
    }

    /// Bytes held that do not make a complete record yet.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.len() + self.plain.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_numbers_are_minimal_big_endian() {
        assert_eq!(num_bytes(0), vec![0]);
        assert_eq!(num_bytes(255), vec![255]);
        assert_eq!(num_bytes(256), vec![1, 0]);
    }

    #[test]
    fn frame_round_trips_and_checks_the_mac() {
        let rec = frame(b"hello", 8, b"secret", 3).expect("frame");
        assert_eq!(rec.len() % 8, 0);
        let (p, used) = unframe(&rec, 8, b"secret", 3).expect("ok").expect("whole");
        assert_eq!((p.as_slice(), used), (&b"hello"[..], rec.len()));
        assert!(matches!(
            unframe(&rec, 8, b"secret", 4),
            Err(Error::VtsBadMac { record: 4 })
        ));
        assert!(unframe(&rec[..rec.len() - 1], 8, b"secret", 3)
            .expect("ok")
            .is_none());
        assert!(frame(b"", 8, b"", 0).is_err());
        assert!(frame(&vec![0; MAX_RECORD_PLAINTEXT + 1], 8, b"", 0).is_err());
    }
}
