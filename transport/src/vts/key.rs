//! VTS RSA keys: key files, the wire form, fingerprints, and VPy's RSA
//! block cipher (docs/vts.md, "Keys" and "RSA block cipher").

use std::path::Path;

use num_bigint::{BigInt, Sign};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};

use super::suite::Random;
use crate::tls::{fingerprint_hex, Fingerprint};
use crate::{Entity, Error};

/// Largest RSA modulus accepted from a peer, in bits (VPy's default
/// `max_keylen` of 512 bytes).
pub const MAX_PEER_KEY_BITS: usize = 4096;

/// Bits of a key vole generates.
pub const GENERATED_KEY_BITS: usize = 2048;

/// The file in the state directory holding the server's generated VTS key.
pub const VTS_KEY_FILE: &str = "vts-key.pem";

/// The fingerprint of the VTS key generated in `state_dir`, if there is a
/// usable one: what a client on the same machine trusts for localhost, as
/// it does the dev certificate.
pub fn local_vts_pin(state_dir: &Path) -> Option<Fingerprint> {
    match VtsKey::load(&state_dir.join(VTS_KEY_FILE)) {
        Ok(key) => Some(key.public().fingerprint()),
        Err(e) => {
            tracing::debug!(error = %e, "no usable local VTS key");
            None
        }
    }
}

/// An RSA key pair of this side: the server key, or a client's key.
#[derive(Clone)]
pub struct VtsKey {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for VtsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VtsKey({})", self.public().fingerprint_hex())
    }
}

fn key_err(what: impl std::fmt::Display) -> Error {
    Error::VtsKey(what.to_string())
}

impl VtsKey {
    /// A new random key of `bits` bits.
    pub fn generate(bits: usize) -> Result<VtsKey, Error> {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).map_err(key_err)?;
        Ok(VtsKey { key })
    }

    /// A key from its parts as big-endian bytes.
    pub fn from_components(
        n: &[u8],
        e: &[u8],
        d: &[u8],
        p: &[u8],
        q: &[u8],
    ) -> Result<VtsKey, Error> {
        let u = BigUint::from_bytes_be;
        let key =
            RsaPrivateKey::from_components(u(n), u(e), u(d), vec![u(p), u(q)]).map_err(key_err)?;
        Ok(VtsKey { key })
    }

    /// Reads a PEM key: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<VtsKey, Error> {
        let key = match RsaPrivateKey::from_pkcs8_pem(pem) {
            Ok(k) => k,
            Err(e8) => RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|_| key_err(format!("not an RSA private key in PEM: {e8}")))?,
        };
        Ok(VtsKey { key })
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, Error> {
        Ok(self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(key_err)?
            .to_string())
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<VtsKey, Error> {
        let cred = |reason: String| Error::Credentials {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| cred(e.to_string()))?;
        VtsKey::from_pem(&pem).map_err(|e| cred(e.to_string()))
    }

    /// Reads the key file at `path`, or, if there is none, generates a
    /// 2048-bit key and writes it there with mode 0600. The flag says
    /// whether the key is new.
    pub fn load_or_generate(path: &Path) -> Result<(VtsKey, bool), Error> {
        if path.exists() {
            return Ok((VtsKey::load(path)?, false));
        }
        let key = VtsKey::generate(GENERATED_KEY_BITS)?;
        let pem = key.to_pem()?;
        write_private(path, pem.as_bytes()).map_err(|e| Error::Credentials {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok((key, true))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.to_public_key(),
        }
    }

    /// Opens data sealed to this key with VPy's RSA block cipher: `data`
    /// must be whole ciphertext blocks.
    pub(crate) fn decrypter(&self) -> RsaDecrypt<'_> {
        RsaDecrypt {
            k: modulus_len(self.key.n()),
            iv: vec![0; modulus_len(self.key.n()).saturating_sub(11)],
            key: &self.key,
        }
    }
}

/// Writes a new file readable by its owner only; never replaces one.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// An RSA public key: the server's, or a client's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey {
    key: RsaPublicKey,
}

impl PublicKey {
    /// SHA-256 of the key as PKCS#1 `RSAPublicKey` DER.
    pub fn fingerprint(&self) -> Fingerprint {
        match self.key.to_pkcs1_der() {
            Ok(der) => super::suite::sha256(der.as_bytes()),
            // Encoding a valid key's two integers cannot fail; a zero
            // fingerprint would match no pin.
            Err(_) => [0; 32],
        }
    }

    /// The fingerprint in hex, the form `--pin` takes.
    pub fn fingerprint_hex(&self) -> String {
        fingerprint_hex(&self.fingerprint())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.n().bits()
    }

    /// VPy's wire form: `("rsa", (n, e, None, None, None))`.
    pub(crate) fn to_entity(&self) -> Entity {
        let int = |v: &BigUint| Entity::int(BigInt::from_bytes_be(Sign::Plus, &v.to_bytes_be()));
        Entity::tuple([
            Entity::str("rsa"),
            Entity::tuple([
                int(self.key.n()),
                int(self.key.e()),
                Entity::None,
                Entity::None,
                Entity::None,
            ]),
        ])
    }

    /// Reads the wire form; refuses other ciphers, private parts and keys
    /// over [`MAX_PEER_KEY_BITS`].
    pub(crate) fn from_entity(e: &Entity) -> Result<PublicKey, Error> {
        let bad = Error::BadVtsHandshake;
        let [name, data] = e.as_tuple().ok_or(bad("public key is not a pair"))? else {
            return Err(bad("public key is not a pair"));
        };
        if name.as_str() != Some("rsa") {
            return Err(bad("public key cipher is not rsa"));
        }
        let [n, e, rest @ ..] = data.as_tuple().ok_or(bad("rsa key data is not a tuple"))? else {
            return Err(bad("rsa key data is not a 5-tuple"));
        };
        if rest.len() != 3 || !rest.iter().all(Entity::is_none) {
            return Err(bad("rsa key data is not (n, e, None, None, None)"));
        }
        let uint = |v: &Entity| -> Result<BigUint, Error> {
            let b = match v {
                Entity::Int(i) if *i > 0 => BigInt::from(*i),
                Entity::BigInt(i) if i.sign() == Sign::Plus => i.clone(),
                _ => return Err(bad("rsa key part is not a positive integer")),
            };
            Ok(BigUint::from_bytes_be(&b.to_bytes_be().1))
        };
        let n = uint(n)?;
        if n.bits() > MAX_PEER_KEY_BITS {
            return Err(bad("peer rsa key exceeds 4096 bits"));
        }
        let key = RsaPublicKey::new_with_max_size(n, uint(e)?, MAX_PEER_KEY_BITS)
            .map_err(|_| bad("invalid rsa public key"))?;
        Ok(PublicKey { key })
    }

    /// Seals plaintext blocks to this key with VPy's RSA block cipher.
    pub(crate) fn encrypter(&self) -> RsaEncrypt<'_> {
        let k = modulus_len(self.key.n());
        RsaEncrypt {
            k,
            iv: vec![0; k.saturating_sub(11)],
            key: &self.key,
        }
    }
}

/// Byte length of `n - 1` (VPy's `posint_to_bytes(max_number)`).
fn modulus_len(n: &BigUint) -> usize {
    let one = BigUint::from(1u8);
    if n <= &one {
        return 0;
    }
    (n - one).bits().div_ceil(8)
}

/// Left-pads `v`'s big-endian bytes to `len`; `None` if it is longer.
fn to_fixed(v: &BigUint, len: usize) -> Option<Vec<u8>> {
    let b = v.to_bytes_be();
    let b = if b == [0] { Vec::new() } else { b };
    let pad = len.checked_sub(b.len())?;
    let mut out = vec![0; pad];
    out.extend_from_slice(&b);
    Some(out)
}

/// The encrypting direction of VPy's RSA block cipher (CBC over raw RSA).
pub(crate) struct RsaEncrypt<'a> {
    key: &'a RsaPublicKey,
    k: usize,
    iv: Vec<u8>,
}

impl RsaEncrypt<'_> {
    /// Plaintext block length, `k - 11`.
    pub(crate) fn plain_block(&self) -> usize {
        self.iv.len()
    }

    /// Encrypts whole plaintext blocks.
    pub(crate) fn encrypt(
        &mut self,
        plain: &[u8],
        rng: &mut dyn Random,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let pb = self.plain_block();
        if pb == 0 {
            return Err(Error::BadVtsRsaBlock(
                "rsa key too small for the block cipher",
            ));
        }
        for block in plain.chunks(pb) {
            let mut framed = Vec::with_capacity(self.k - 1);
            framed.push(2);
            framed.extend(block.iter().zip(&self.iv).map(|(a, b)| a ^ b));
            framed.push(0);
            let mut pad = [0u8; 8];
            rng.fill(&mut pad)?;
            framed.extend_from_slice(&pad);
            let c = rsa::hazmat::rsa_encrypt(self.key, &BigUint::from_bytes_be(&framed))
                .map_err(|_| Error::BadVtsRsaBlock("rsa encryption failed"))?;
            let c = to_fixed(&c, self.k).ok_or(Error::BadVtsRsaBlock("rsa output too long"))?;
            self.iv.copy_from_slice(&c[..pb]);
            out.extend_from_slice(&c);
        }
        Ok(())
    }
}

/// The decrypting direction of VPy's RSA block cipher.
pub(crate) struct RsaDecrypt<'a> {
    key: &'a RsaPrivateKey,
    k: usize,
    iv: Vec<u8>,
}

impl RsaDecrypt<'_> {
    /// Ciphertext block length, `k`.
    pub(crate) fn cipher_block(&self) -> usize {
        self.k
    }

    /// Decrypts whole ciphertext blocks.
    pub(crate) fn decrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let pb = self.iv.len();
        if pb == 0 || !data.len().is_multiple_of(self.k) {
            return Err(Error::BadVtsRsaBlock(
                "ciphertext is not a whole number of rsa blocks",
            ));
        }
        for block in data.chunks_exact(self.k) {
            let c = BigUint::from_bytes_be(block);
            let m =
                rsa::hazmat::rsa_decrypt_and_check(self.key, Some(&mut rsa::rand_core::OsRng), &c)
                    .map_err(|_| Error::BadVtsRsaBlock("rsa block out of range"))?;
            let m = to_fixed(&m, self.k - 1).ok_or(Error::BadVtsRsaBlock("rsa block too long"))?;
            if m[0] != 2 || m[self.k - 10] != 0 {
                return Err(Error::BadVtsRsaBlock("rsa block framing is wrong"));
            }
            out.extend(m[1..1 + pb].iter().zip(&self.iv).map(|(a, b)| a ^ b));
            self.iv.copy_from_slice(&block[..pb]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vole-vts-key-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_generated_key_is_private_to_its_owner_and_reloads() {
        let dir = scratch("gen");
        let path = dir.join(VTS_KEY_FILE);
        let (key, new) = VtsKey::load_or_generate(&path).expect("generate");
        assert!(new);
        assert_eq!(key.public().bits(), GENERATED_KEY_BITS);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, new) = VtsKey::load_or_generate(&path).expect("load");
        assert!(!new);
        assert_eq!(again.public(), key.public());
        assert_eq!(local_vts_pin(&dir), Some(key.public().fingerprint()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unusable_key_files_name_the_file() {
        let dir = scratch("bad");
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        for path in [bad, dir.join("missing.pem")] {
            match VtsKey::load(&path) {
                Err(Error::Credentials { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(local_vts_pin(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wire_form_round_trips_and_refuses_other_shapes() {
        let key = VtsKey::generate(1024).expect("key").public();
        assert_eq!(
            PublicKey::from_entity(&key.to_entity()).expect("parse"),
            key
        );
        let Entity::Tuple(mut parts) = key.to_entity() else {
            panic!("tuple")
        };
        parts[0] = Entity::str("dsa");
        assert!(matches!(
            PublicKey::from_entity(&Entity::Tuple(parts)),
            Err(Error::BadVtsHandshake(_))
        ));
        let private = Entity::tuple([
            Entity::str("rsa"),
            Entity::tuple([
                Entity::Int(3233),
                Entity::Int(17),
                Entity::Int(2753),
                Entity::None,
                Entity::None,
            ]),
        ]);
        assert!(PublicKey::from_entity(&private).is_err());
        let huge = Entity::tuple([
            Entity::str("rsa"),
            Entity::tuple([
                Entity::int(BigInt::from(1) << 5000usize),
                Entity::Int(65537),
                Entity::None,
                Entity::None,
                Entity::None,
            ]),
        ]);
        assert!(matches!(
            PublicKey::from_entity(&huge),
            Err(Error::BadVtsHandshake("peer rsa key exceeds 4096 bits"))
        ));
    }
}
