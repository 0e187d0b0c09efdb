//! The VTS handshake in both roles, sans-IO (docs/vts.md, "Handshake
//! messages"): bytes in, bytes out, random bytes from a [`Random`].

use std::sync::Arc;

use bytes::BytesMut;

use super::config::{ClientSettings, ServerSettings, VtsTrust};
use super::key::{PublicKey, VtsKey};
use super::record::{frame, unframe, Opener, Sealer};
use super::suite::Random;
use super::suite::{sha1, Crypt, Prf, Suite};
use crate::entity::RawRefs;
use crate::tls::fingerprint_hex;
use crate::vec::{decode_complete, encode_to_vec, DecodeConfig, Decoder, EncodeConfig};
use crate::{Entity, Error};

/// The protocol line both sides send first.
pub const VTS_LINE: &[u8] = b"VTS_DRAFT-0.8\n";
/// Longest protocol line accepted (VPy's `__PROTO_MAXLEN`).
const MAX_LINE: usize = 32;
/// Largest handshake message accepted and announced (VPy's `hshake_lim`).
pub const HANDSHAKE_LIMIT: usize = 16384;
/// Largest peer key announced, in bytes (VPy's `max_keylen`).
const MAX_KEYLEN: i64 = 512;
/// Bytes of each nonce.
const NONCE: usize = 32;

fn decode_config() -> DecodeConfig {
    DecodeConfig {
        max_message: HANDSHAKE_LIMIT,
        max_depth: 16,
    }
}

/// Entities as VPy writes them with a fresh context: strings carry the
/// explicit codec `utf8`.
fn encode(e: &Entity) -> Result<Vec<u8>, Error> {
    encode_to_vec(
        e,
        EncodeConfig {
            str_codec: None,
            ..EncodeConfig::default()
        },
    )
}

fn bad(what: &'static str) -> Error {
    Error::BadVtsHandshake(what)
}

/// What a finished handshake hands to the record layer.
pub(crate) struct Established {
    pub suite: Suite,
    pub send: Sealer,
    pub recv: Opener,
    /// The server's key (client side) or the client's proven key (server
    /// side, only if it sent one).
    pub peer_key: Option<PublicKey>,
    /// Whether this side sent the last handshake message (so it must hold
    /// its records until the peer's first one: see [`super::Vts::send`]).
    pub sent_last: bool,
}

enum Role {
    Client(Arc<ClientSettings>),
    Server(Arc<ServerSettings>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the peer's protocol line.
    Line,
    /// Server: waiting for the client hello.
    Hello,
    /// Client: waiting for the server's reply.
    Reply,
    /// Server: waiting for the client's key exchange.
    KeyExchange,
    /// Client with a key: waiting for the server's secret.
    ServerSecret,
    Done,
}

/// One side of a handshake in progress.
pub(crate) struct Handshake {
    role: Role,
    step: Step,
    line: Vec<u8>,
    buf: BytesMut,
    decoder: Decoder,
    suite: Option<Suite>,
    rand_c: Vec<u8>,
    rand_s: Vec<u8>,
    srand_c: Vec<u8>,
    peer_key: Option<PublicKey>,
}

impl Handshake {
    fn new(role: Role) -> Handshake {
        Handshake {
            role,
            step: Step::Line,
            line: Vec::new(),
            buf: BytesMut::new(),
            decoder: Decoder::new(decode_config()),
            suite: None,
            rand_c: Vec::new(),
            rand_s: Vec::new(),
            srand_c: Vec::new(),
            peer_key: None,
        }
    }

    /// A client; its protocol line goes to `out` at once.
    pub(crate) fn client(settings: Arc<ClientSettings>, out: &mut Vec<u8>) -> Handshake {
        out.extend_from_slice(VTS_LINE);
        Handshake::new(Role::Client(settings))
    }

    /// A server; it speaks once it has read the client's line.
    pub(crate) fn server(settings: Arc<ServerSettings>) -> Handshake {
        Handshake::new(Role::Server(settings))
    }

    /// Whether the handshake is between messages (nothing half-read).
    pub(crate) fn step_name(&self) -> &'static str {
        match self.step {
            Step::Line => "the VTS protocol line",
            Step::Hello => "the VTS client hello",
            Step::Reply => "the VTS server reply",
            Step::KeyExchange => "the VTS key exchange",
            Step::ServerSecret => "the VTS server secret",
            Step::Done => "nothing",
        }
    }

    /// Takes bytes from the peer; writes replies to `out`. Returns the
    /// record layer once the handshake is complete, with the bytes that
    /// followed the last handshake message.
    pub(crate) fn receive(
        &mut self,
        data: &[u8],
        rng: &mut dyn Random,
        out: &mut Vec<u8>,
    ) -> Result<Option<(Established, Vec<u8>)>, Error> {
        self.buf.extend_from_slice(data);
        if self.step == Step::Line {
            if !self.read_line()? {
                return Ok(None);
            }
            self.start(rng, out)?;
        }
        while self.step != Step::Done {
            let Some(msg) = self.decoder.decode(&mut self.buf, &mut RawRefs)? else {
                return Ok(None);
            };
            if let Some(done) = self.handle(msg, rng, out)? {
                return Ok(Some((done, self.buf.split().to_vec())));
            }
        }
        Ok(None)
    }

    /// Reads the peer's protocol line; true once it is complete and valid.
    fn read_line(&mut self) -> Result<bool, Error> {
        while let Some(&b) = self.buf.first() {
            let _ = self.buf.split_to(1);
            self.line.push(b);
            if b == b'\n' {
                if self.line != VTS_LINE {
                    let shown = String::from_utf8_lossy(&self.line).trim_end().to_string();
                    return Err(Error::BadVtsHello(format!(
                        "expected VTS_DRAFT-0.8, got {shown:?}"
                    )));
                }
                return Ok(true);
            }
            if self.line.len() >= MAX_LINE {
                return Err(Error::BadVtsHello(format!(
                    "no newline within {MAX_LINE} bytes"
                )));
            }
        }
        Ok(false)
    }

    /// After the peer's line: the server answers with its line, the client
    /// sends its hello.
    fn start(&mut self, rng: &mut dyn Random, out: &mut Vec<u8>) -> Result<(), Error> {
        match &self.role {
            Role::Server(_) => {
                out.extend_from_slice(VTS_LINE);
                self.step = Step::Hello;
            }
            Role::Client(settings) => {
                self.rand_c = draw(rng, NONCE)?;
                // VPy draws srand_c here too and draws it again before
                // using it; drawing it keeps replays of VPy's randomness
                // in step.
                let _ = draw(rng, NONCE)?;
                let hello = client_hello(&settings.suites, &self.rand_c);
                out.extend_from_slice(&encode(&hello)?);
                self.step = Step::Reply;
            }
        }
        Ok(())
    }

    fn handle(
        &mut self,
        msg: Entity,
        rng: &mut dyn Random,
        out: &mut Vec<u8>,
    ) -> Result<Option<Established>, Error> {
        match (&self.role, self.step) {
            (Role::Server(s), Step::Hello) => {
                let s = s.clone();
                self.server_hello(&s, &msg, rng, out)?;
                Ok(None)
            }
            (Role::Server(s), Step::KeyExchange) => {
                let s = s.clone();
                self.server_key_exchange(&s, &msg, rng, out).map(Some)
            }
            (Role::Client(c), Step::Reply) => {
                let c = c.clone();
                self.client_reply(&c, &msg, rng, out)
            }
            (Role::Client(c), Step::ServerSecret) => {
                let c = c.clone();
                self.client_secret(&c, &msg).map(Some)
            }
            _ => Err(bad("message after the handshake ended")),
        }
    }

    // ---- server ----------------------------------------------------------

    fn server_hello(
        &mut self,
        s: &ServerSettings,
        msg: &Entity,
        rng: &mut dyn Random,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let [hhashes, ciphers, hashes, rand_c, max_keylen, hshake_lim] =
            tuple(msg, "client hello is not a 6-tuple")?
        else {
            return Err(bad("client hello is not a 6-tuple"));
        };
        let hhashes = str_list(hhashes, "client hello hmac hashes")?;
        let hashes = str_list(hashes, "client hello hashes")?;
        let offered = offered_suites(ciphers)?;
        let rand_c = nonce(rand_c, "client nonce")?;
        limit(max_keylen)?;
        limit(hshake_lim)?;
        if !hhashes.contains(&"sha256") || !hashes.contains(&"sha1") {
            return Err(Error::NoCommonVtsCipher {
                offered: format!("hmac {hhashes:?}, hashes {hashes:?}"),
                allowed: "hmac sha256, hash sha1".into(),
            });
        }
        let suite = s
            .suites
            .iter()
            .copied()
            .find(|x| offered.contains(x))
            .ok_or_else(|| Error::NoCommonVtsCipher {
                offered: list(&offered),
                allowed: list(&s.suites),
            })?;
        self.suite = Some(suite);
        self.rand_c = rand_c;
        self.rand_s = draw(rng, NONCE)?;
        let reply = Entity::tuple([
            Entity::str("sha256"),
            Entity::str(suite.cipher.name()),
            Entity::str(suite.mode.name()),
            Entity::str("sha1"),
            Entity::bytes(self.rand_s.clone()),
            s.key.public().to_entity(),
            Entity::None,
            Entity::Int(MAX_KEYLEN),
            Entity::Int(HANDSHAKE_LIMIT as i64),
        ]);
        out.extend_from_slice(&encode(&reply)?);
        self.step = Step::KeyExchange;
        Ok(())
    }

    fn server_key_exchange(
        &mut self,
        s: &ServerSettings,
        msg: &Entity,
        rng: &mut dyn Random,
        out: &mut Vec<u8>,
    ) -> Result<Established, Error> {
        let suite = self.suite.ok_or(bad("key exchange before hello"))?;
        let [enc_header, enc_msg] = tuple(msg, "key exchange is not a pair")? else {
            return Err(bad("key exchange is not a pair"));
        };
        let (Entity::Bytes(enc_header), Entity::Bytes(enc_msg)) = (enc_header, enc_msg) else {
            return Err(bad("key exchange parts are not bytes"));
        };
        let header = rsa_open(&s.key, enc_header)?;
        let [srand_c, block_rand, msg_hash] =
            tuple(&header, "key exchange header is not a 3-tuple")?
        else {
            return Err(bad("key exchange header is not a 3-tuple"));
        };
        let srand_c = nonce(srand_c, "client secret")?;
        let block_rand = nonce(block_rand, "key exchange nonce")?;
        let Entity::Bytes(msg_hash) = msg_hash else {
            return Err(bad("key exchange hash is not bytes"));
        };
        let msg_bytes = block_open(
            suite,
            &[b"vts client sendkey", &block_rand[..], &srand_c[..]].concat(),
            enc_msg,
        )?;
        if sha1(&msg_bytes) != *msg_hash {
            return Err(bad("key exchange content does not match its hash"));
        }
        let body = decode_complete(&msg_bytes, None, decode_config())?;
        let [keydata, credentials, _padding] =
            tuple(&body, "key exchange content is not a 3-tuple")?
        else {
            return Err(bad("key exchange content is not a 3-tuple"));
        };
        if !credentials.is_none() {
            return Err(bad(
                "client credentials (X.509 identity or certificates) are not supported",
            ));
        }
        let client_key = if keydata.is_none() {
            None
        } else {
            Some(PublicKey::from_entity(keydata)?)
        };
        let srand_s = match &client_key {
            Some(k) => {
                let srand_s = draw(rng, NONCE)?;
                let sealed = rsa_seal(k, &encode(&Entity::bytes(srand_s.clone()))?, rng)?;
                out.extend_from_slice(&encode(&Entity::bytes(sealed))?);
                Some(srand_s)
            }
            None => None,
        };
        self.step = Step::Done;
        let keys = derive(
            suite,
            &self.rand_c,
            &self.rand_s,
            &srand_c,
            srand_s.as_deref(),
        );
        Ok(Established {
            suite,
            send: Sealer::new(
                Crypt::new(suite, &keys.s_key, &keys.s_iv, true)?,
                keys.s_mac,
            ),
            recv: Opener::new(
                Crypt::new(suite, &keys.c_key, &keys.c_iv, false)?,
                keys.c_mac,
            ),
            sent_last: client_key.is_some(),
            peer_key: client_key,
        })
    }

    // ---- client ----------------------------------------------------------

    fn client_reply(
        &mut self,
        c: &ClientSettings,
        msg: &Entity,
        rng: &mut dyn Random,
        out: &mut Vec<u8>,
    ) -> Result<Option<Established>, Error> {
        let [hmac, cipher, mode, hash, rand_s, pubkey, _credentials, max_keylen, hshake_lim] =
            tuple(msg, "server reply is not a 9-tuple")?
        else {
            return Err(bad("server reply is not a 9-tuple"));
        };
        let name = |e: &Entity| {
            e.as_str()
                .map(str::to_owned)
                .ok_or(bad("server reply names are not strings"))
        };
        let (hmac, cipher, mode, hash) = (name(hmac)?, name(cipher)?, name(mode)?, name(hash)?);
        let suite = super::suite::Cipher::from_name(&cipher)
            .zip(super::suite::Mode::from_name(&mode))
            .map(|(cipher, mode)| Suite { cipher, mode })
            .filter(|s| c.suites.contains(s));
        let (Some(suite), "sha256", "sha1") = (suite, hmac.as_str(), hash.as_str()) else {
            return Err(bad(
                "server chose a cipher, mode or hash the client did not offer",
            ));
        };
        limit(max_keylen)?;
        limit(hshake_lim)?;
        self.rand_s = nonce(rand_s, "server nonce")?;
        let server_key = PublicKey::from_entity(pubkey)?;
        if let VtsTrust::Pinned(want) = &c.trust {
            if server_key.fingerprint() != *want {
                return Err(Error::VtsKeyMismatch {
                    got: server_key.fingerprint_hex(),
                    want: fingerprint_hex(want),
                });
            }
        }
        self.suite = Some(suite);
        self.srand_c = draw(rng, NONCE)?;
        let keydata = c
            .key
            .as_ref()
            .map_or(Entity::None, |k| k.public().to_entity());
        let content = encode(&Entity::tuple([
            keydata,
            Entity::None,
            Entity::bytes(Vec::new()),
        ]))?;
        let block_rand = draw(rng, NONCE)?;
        let enc_msg = block_seal(
            suite,
            &[b"vts client sendkey", &block_rand[..], &self.srand_c[..]].concat(),
            &content,
        )?;
        let header = encode(&Entity::tuple([
            Entity::bytes(self.srand_c.clone()),
            Entity::bytes(block_rand),
            Entity::bytes(sha1(&content)),
        ]))?;
        let enc_header = rsa_seal(&server_key, &header, rng)?;
        out.extend_from_slice(&encode(&Entity::tuple([
            Entity::bytes(enc_header),
            Entity::bytes(enc_msg),
        ]))?);
        self.peer_key = Some(server_key);
        if c.key.is_some() {
            self.step = Step::ServerSecret;
            return Ok(None);
        }
        self.step = Step::Done;
        self.client_keys(suite, None, true).map(Some)
    }

    fn client_secret(&mut self, c: &ClientSettings, msg: &Entity) -> Result<Established, Error> {
        let (Some(key), Some(suite)) = (&c.key, self.suite) else {
            return Err(bad("server secret without a client key"));
        };
        let Entity::Bytes(sealed) = msg else {
            return Err(bad("server secret is not bytes"));
        };
        let srand_s = nonce(&rsa_open(key, sealed)?, "server secret")?;
        self.step = Step::Done;
        self.client_keys(suite, Some(&srand_s), false)
    }

    fn client_keys(
        &mut self,
        suite: Suite,
        srand_s: Option<&[u8]>,
        sent_last: bool,
    ) -> Result<Established, Error> {
        let keys = derive(suite, &self.rand_c, &self.rand_s, &self.srand_c, srand_s);
        Ok(Established {
            suite,
            send: Sealer::new(
                Crypt::new(suite, &keys.c_key, &keys.c_iv, true)?,
                keys.c_mac,
            ),
            recv: Opener::new(
                Crypt::new(suite, &keys.s_key, &keys.s_iv, false)?,
                keys.s_mac,
            ),
            peer_key: self.peer_key.take(),
            sent_last,
        })
    }
}

fn draw(rng: &mut dyn Random, n: usize) -> Result<Vec<u8>, Error> {
    let mut v = vec![0; n];
    rng.fill(&mut v)?;
    Ok(v)
}

fn tuple<'a>(e: &'a Entity, what: &'static str) -> Result<&'a [Entity], Error> {
    e.as_tuple().ok_or(bad(what))
}

fn str_list<'a>(e: &'a Entity, what: &'static str) -> Result<Vec<&'a str>, Error> {
    tuple(e, what)?
        .iter()
        .map(|x| x.as_str().ok_or(bad(what)))
        .collect()
}

fn nonce(e: &Entity, what: &'static str) -> Result<Vec<u8>, Error> {
    match e {
        Entity::Bytes(b) if b.len() >= NONCE => Ok(b.clone()),
        _ => Err(Error::BadVtsHandshake(match what {
            "client nonce" => "client nonce is not at least 32 bytes",
            "server nonce" => "server nonce is not at least 32 bytes",
            "client secret" => "client secret is not at least 32 bytes",
            "server secret" => "server secret is not at least 32 bytes",
            _ => "key exchange nonce is not at least 32 bytes",
        })),
    }
}

/// `max_keylen` and `hshake_lim`: `None` or a positive integer.
fn limit(e: &Entity) -> Result<(), Error> {
    match e {
        Entity::None => Ok(()),
        Entity::Int(i) if *i > 0 => Ok(()),
        Entity::BigInt(i) if i.sign() == num_bigint::Sign::Plus => Ok(()),
        _ => Err(bad("limit is not None or a positive integer")),
    }
}

fn list(suites: &[Suite]) -> String {
    suites
        .iter()
        .map(Suite::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ciphers a client hello offers, as suites; unknown names are skipped.
fn offered_suites(e: &Entity) -> Result<Vec<Suite>, Error> {
    let mut out = Vec::new();
    for c in tuple(e, "client hello ciphers")? {
        let [name, modes] = tuple(c, "client hello cipher is not a pair")? else {
            return Err(bad("client hello cipher is not a pair"));
        };
        let name = name
            .as_str()
            .ok_or(bad("client hello cipher name is not a string"))?;
        let modes = str_list(modes, "client hello cipher modes")?;
        if let Some(cipher) = super::suite::Cipher::from_name(name) {
            out.extend(
                modes
                    .iter()
                    .filter_map(|m| super::suite::Mode::from_name(m))
                    .map(|mode| Suite { cipher, mode }),
            );
        }
    }
    Ok(out)
}

/// The client hello: suites grouped by cipher in order of first mention.
fn client_hello(suites: &[Suite], rand_c: &[u8]) -> Entity {
    let mut ciphers: Vec<(super::suite::Cipher, Vec<Entity>)> = Vec::new();
    for s in suites {
        match ciphers.iter_mut().find(|(c, _)| *c == s.cipher) {
            Some((_, modes)) => modes.push(Entity::str(s.mode.name())),
            None => ciphers.push((s.cipher, vec![Entity::str(s.mode.name())])),
        }
    }
    Entity::tuple([
        Entity::tuple([Entity::str("sha256")]),
        Entity::tuple(
            ciphers
                .into_iter()
                .map(|(c, modes)| Entity::tuple([Entity::str(c.name()), Entity::Tuple(modes)])),
        ),
        Entity::tuple([Entity::str("sha1")]),
        Entity::bytes(rand_c.to_vec()),
        Entity::Int(MAX_KEYLEN),
        Entity::Int(HANDSHAKE_LIMIT as i64),
    ])
}

struct Keys {
    c_key: Vec<u8>,
    s_key: Vec<u8>,
    c_iv: Vec<u8>,
    s_iv: Vec<u8>,
    c_mac: Vec<u8>,
    s_mac: Vec<u8>,
}

/// Session keys (`VSecure._gen_keys`).
fn derive(
    suite: Suite,
    rand_c: &[u8],
    rand_s: &[u8],
    srand_c: &[u8],
    srand_s: Option<&[u8]>,
) -> Keys {
    let srand_s = srand_s.unwrap_or_default();
    let s_seed = [rand_s, rand_c, srand_s, srand_c].concat();
    let c_seed = [rand_c, rand_s, srand_c, srand_s].concat();
    let mut prf = Prf::new([&b"vts key expansion"[..], &s_seed, &c_seed].concat());
    let (kl, bl) = (suite.cipher.key_len(), suite.cipher.block_len());
    Keys {
        c_key: prf.take(kl),
        s_key: prf.take(kl),
        c_iv: prf.take(bl),
        s_iv: prf.take(bl),
        c_mac: prf.take(bl),
        s_mac: prf.take(bl),
    }
}

/// Seals handshake content as one symmetric record under a PRF key.
fn block_seal(suite: Suite, seed: &[u8], content: &[u8]) -> Result<Vec<u8>, Error> {
    let mut prf = Prf::new(seed.to_vec());
    let key = prf.take(suite.cipher.key_len());
    let iv = prf.take(suite.cipher.block_len());
    let mut rec = frame(content, suite.cipher.block_len(), b"", 0)?;
    Crypt::new(suite, &key, &iv, true)?.apply(&mut rec);
    Ok(rec)
}

/// Opens [`block_seal`]: exactly one record, nothing after it.
fn block_open(suite: Suite, seed: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let mut prf = Prf::new(seed.to_vec());
    let key = prf.take(suite.cipher.key_len());
    let iv = prf.take(suite.cipher.block_len());
    let block = suite.cipher.block_len();
    if !sealed.len().is_multiple_of(block) {
        return Err(bad("sealed key exchange is not a whole number of blocks"));
    }
    let mut data = sealed.to_vec();
    Crypt::new(suite, &key, &iv, false)?.apply(&mut data);
    match unframe(&data, block, b"", 0)? {
        Some((content, used)) if used == data.len() => Ok(content),
        _ => Err(bad("sealed key exchange is not exactly one record")),
    }
}

/// Seals handshake content to an RSA key as one record.
fn rsa_seal(key: &PublicKey, content: &[u8], rng: &mut dyn Random) -> Result<Vec<u8>, Error> {
    let mut enc = key.encrypter();
    let rec = frame(content, enc.plain_block(), b"", 0)?;
    let mut out = Vec::new();
    enc.encrypt(&rec, rng, &mut out)?;
    Ok(out)
}

/// Opens [`rsa_seal`] with our key and decodes the entity inside.
fn rsa_open(key: &VtsKey, sealed: &[u8]) -> Result<Entity, Error> {
    let mut dec = key.decrypter();
    if sealed.is_empty() || !sealed.len().is_multiple_of(dec.cipher_block()) {
        return Err(Error::BadVtsRsaBlock(
            "ciphertext is not a whole number of rsa blocks",
        ));
    }
    let mut data = Vec::new();
    dec.decrypt(sealed, &mut data)?;
    let block = dec.cipher_block() - 11;
    match unframe(&data, block, b"", 0)? {
        Some((content, used)) if used == data.len() => {
            decode_complete(&content, None, decode_config())
        }
        _ => Err(Error::BadVtsRsaBlock(
            "rsa-sealed data is not exactly one record",
        )),
    }
}
