//! VTS ciphers and modes, VPy's HMAC variant, the PRF and the random
//! source (docs/vts.md,
//! "Algorithms").

use aes::Aes256;
use blowfish::cipher::{
    generic_array::GenericArray, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit,
};
use blowfish::Blowfish;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::Error;

/// A block cipher VTS can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES with a 256-bit key (VPy offers it only with PyCrypto installed).
    Aes256,
    /// Blowfish with a 56-byte (448-bit) key.
    Blowfish,
    /// Blowfish with a 16-byte key.
    Blowfish128,
}

impl Cipher {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256 => "aes256",
            Cipher::Blowfish => "blowfish",
            Cipher::Blowfish128 => "blowfish128",
        }
    }

    /// The cipher with this wire name.
    pub fn from_name(name: &str) -> Option<Cipher> {
        [Cipher::Aes256, Cipher::Blowfish, Cipher::Blowfish128]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// Key length in bytes, as VPy's key factories generate it.
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes256 => 32,
            Cipher::Blowfish => 56,
            Cipher::Blowfish128 => 16,
        }
    }

    /// Block length in bytes.
    pub fn block_len(self) -> usize {
        match self {
            Cipher::Aes256 => 16,
            Cipher::Blowfish | Cipher::Blowfish128 => 8,
        }
    }
}

/// A chaining mode VTS can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Cipher block chaining.
    Cbc,
    /// Output feedback.
    Ofb,
}

impl Mode {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cbc => "cbc",
            Mode::Ofb => "ofb",
        }
    }

    /// The mode with this wire name.
    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::Cbc, Mode::Ofb]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// A cipher and a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite {
    /// The block cipher.
    pub cipher: Cipher,
    /// Its chaining mode.
    pub mode: Mode,
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.cipher.name(), self.mode.name())
    }
}

impl Suite {
    /// Every suite vole implements, strongest first: the default
    /// preference of a vole server and the offer of a vole client.
    pub const ALL: [Suite; 6] = [
        Suite {
            cipher: Cipher::Aes256,
            mode: Mode::Cbc,
        },
        Suite {
            cipher: Cipher::Aes256,
            mode: Mode::Ofb,
        },
        Suite {
            cipher: Cipher::Blowfish,
            mode: Mode::Cbc,
        },
        Suite {
            cipher: Cipher::Blowfish,
            mode: Mode::Ofb,
        },
        Suite {
            cipher: Cipher::Blowfish128,
            mode: Mode::Cbc,
        },
        Suite {
            cipher: Cipher::Blowfish128,
            mode: Mode::Ofb,
        },
    ];

    /// Parses `cipher-mode` (e.g. `blowfish-cbc`).
    pub fn parse(s: &str) -> Option<Suite> {
        let (c, m) = s.rsplit_once('-')?;
        Some(Suite {
            cipher: Cipher::from_name(c)?,
            mode: Mode::from_name(m)?,
        })
    }
}

/// One direction of a block cipher in a mode, whose state (CBC chaining
/// block, OFB register) carries on from call to call.
pub(crate) enum Crypt {
    BfCbcEnc(cbc::Encryptor<Blowfish>),
    BfCbcDec(cbc::Decryptor<Blowfish>),
    BfOfb(ofb::OfbCore<Blowfish>),
    AesCbcEnc(cbc::Encryptor<Aes256>),
    AesCbcDec(cbc::Decryptor<Aes256>),
    AesOfb(ofb::OfbCore<Aes256>),
}

impl Crypt {
    /// A transform for `suite` with `key` (the cipher's key length) and
    /// `iv` (one block).
    pub(crate) fn new(suite: Suite, key: &[u8], iv: &[u8], encrypt: bool) -> Result<Crypt, Error> {
        let bad = |_| Error::VtsKey(format!("bad key or iv length for {suite}"));
        Ok(match (suite.cipher, suite.mode) {
            (Cipher::Aes256, mode) => {
                let c = Aes256::new_from_slice(key).map_err(bad)?;
                match (mode, encrypt) {
                    (Mode::Cbc, true) => {
                        Crypt::AesCbcEnc(cbc::Encryptor::inner_iv_slice_init(c, iv).map_err(bad)?)
                    }
                    (Mode::Cbc, false) => {
                        Crypt::AesCbcDec(cbc::Decryptor::inner_iv_slice_init(c, iv).map_err(bad)?)
                    }
                    (Mode::Ofb, _) => {
                        Crypt::AesOfb(ofb::OfbCore::inner_iv_slice_init(c, iv).map_err(bad)?)
                    }
                }
            }
            (Cipher::Blowfish | Cipher::Blowfish128, mode) => {
                let c = Blowfish::new_from_slice(key).map_err(bad)?;
                match (mode, encrypt) {
                    (Mode::Cbc, true) => {
                        Crypt::BfCbcEnc(cbc::Encryptor::inner_iv_slice_init(c, iv).map_err(bad)?)
                    }
                    (Mode::Cbc, false) => {
                        Crypt::BfCbcDec(cbc::Decryptor::inner_iv_slice_init(c, iv).map_err(bad)?)
                    }
                    (Mode::Ofb, _) => {
                        Crypt::BfOfb(ofb::OfbCore::inner_iv_slice_init(c, iv).map_err(bad)?)
                    }
                }
            }
        })
    }

    /// Block length in bytes.
    pub(crate) fn block_len(&self) -> usize {
        match self {
            Crypt::BfCbcEnc(_) | Crypt::BfCbcDec(_) | Crypt::BfOfb(_) => 8,
            _ => 16,
        }
    }

    /// Transforms `data` in place. Its length must be a multiple of the
    /// block length; a trailing partial block is left as it is (callers
    /// only pass whole blocks).
    pub(crate) fn apply(&mut self, data: &mut [u8]) {
        let n = self.block_len();
        for block in data.chunks_exact_mut(n) {
            match self {
                Crypt::BfCbcEnc(c) => c.encrypt_block_mut(GenericArray::from_mut_slice(block)),
                Crypt::BfCbcDec(c) => c.decrypt_block_mut(GenericArray::from_mut_slice(block)),
                Crypt::BfOfb(c) => c.encrypt_block_mut(GenericArray::from_mut_slice(block)),
                Crypt::AesCbcEnc(c) => c.encrypt_block_mut(GenericArray::from_mut_slice(block)),
                Crypt::AesCbcDec(c) => c.decrypt_block_mut(GenericArray::from_mut_slice(block)),
                Crypt::AesOfb(c) => c.encrypt_block_mut(GenericArray::from_mut_slice(block)),
            }
        }
    }
}

/// VPy's HMAC (`VHash.hmac`): RFC 2104 except that the key is padded, and
/// the pads are as long as, the hash's *digest* size rather than its block
/// size. The `hmac` crate implements only the standard construction, so
/// this is built from the digest directly.
fn vpy_hmac<D: Digest>(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let size = <D as Digest>::output_size();
    let mut key = if secret.len() > size {
        D::digest(secret).to_vec()
    } else {
        secret.to_vec()
    };
    key.resize(size, 0);
    let mut inner = D::new();
    inner.update(key.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>());
    for p in parts {
        inner.update(p);
    }
    let inner = inner.finalize();
    let mut outer = D::new();
    outer.update(key.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>());
    outer.update(inner);
    outer.finalize().to_vec()
}

/// VPy's HMAC-SHA1, the record MAC.
pub(crate) fn hmac_sha1(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    vpy_hmac::<Sha1>(secret, parts)
}

/// SHA-1 digest length, the record MAC length.
pub(crate) const MAC_LEN: usize = 20;

/// SHA-1 of `data`.
pub(crate) fn sha1(data: &[u8]) -> Vec<u8> {
    Sha1::digest(data).to_vec()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The PRF, P_hash of RFC 5246 over VPy's HMAC-SHA256 with an empty
/// secret (`VPseudoRandomHMAC`). Reads continue where the last one ended.
pub(crate) struct Prf {
    seed: Vec<u8>,
    a: Vec<u8>,
    buf: Vec<u8>,
}

impl Prf {
    pub(crate) fn new(seed: Vec<u8>) -> Prf {
        Prf {
            a: seed.clone(),
            seed,
            buf: Vec::new(),
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.a = vpy_hmac::<Sha256>(b"", &[&self.a, &self.seed]);
            let block = vpy_hmac::<Sha256>(b"", &[&self.a, &self.seed]);
            self.buf.extend_from_slice(&block);
        }
        self.buf.drain(..n).collect()
    }
}

/// A source of random bytes: the OS in service, a replay in tests.
pub trait Random: Send {
    /// Fills `buf`.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Error>;
}

/// The operating system's random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        aws_lc_rs::rand::fill(buf)
            .map_err(|_| Error::VtsKey("the system random source failed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpy_hmac_is_not_rfc2104() {
        // VPy: VCrypto.lazy().hash_cls('sha1').hmac(b'k', b'msg')
        assert_eq!(
            hex(&hmac_sha1(b"k", &[b"msg"])),
            "514f73efb789d74edce920cc43a4c9a33f510dff"
        );
    }

    #[test]
    fn suites_parse_and_print() {
        for s in Suite::ALL {
            assert_eq!(Suite::parse(&s.to_string()), Some(s));
        }
        assert_eq!(Suite::parse("des-cbc"), None);
    }

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
