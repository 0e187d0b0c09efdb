//! VTS, the Versile Transport Security protocol of VPy 0.8.5, in both roles.
//!
//! The protocol is described in `docs/vts.md`. This module is sans-IO:
//! [`Vts`] takes bytes from the peer and hands back bytes to send and
//! decrypted plaintext; [`crate::stream`] drives it over a socket.
//!
//! * [`suite`]: ciphers, modes, VPy's HMAC variant and the PRF.
//! * [`record`]: the record layer.
//! * [`key`]: RSA keys, their wire form and fingerprints, VPy's RSA block
//!   cipher.
//! * `config`: settings of both roles and the random source.
//! * `handshake`: the handshake state machines.
//!
//! VTS is a legacy protocol (64-bit block ciphers, no forward secrecy);
//! offer it only to reach VPy peers.

mod config;
mod handshake;
pub mod key;
pub mod record;
pub mod suite;

use std::sync::Arc;

pub use handshake::{HANDSHAKE_LIMIT, VTS_LINE};
pub use key::{local_vts_pin, PublicKey, VtsKey, VTS_KEY_FILE};
pub use suite::{Cipher, Mode, Suite};

pub use config::{ClientSettings, ServerSettings, VtsTrust};
pub use suite::{OsRandom, Random};

use crate::Error;
use handshake::{Established, Handshake};
use record::{Opener, Sealer, SEND_CHUNK};

/// One VTS connection, sans-IO.
pub struct Vts {
    handshake: Option<Handshake>,
    send: Option<Sealer>,
    recv: Option<Opener>,
    suite: Option<Suite>,
    peer_key: Option<PublicKey>,
    out: Vec<u8>,
    plain: Vec<u8>,
    /// Plaintext sent while waiting for the peer's first record.
    held: Option<Vec<u8>>,
    rng: Box<dyn Random>,
}

impl std::fmt::Debug for Vts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vts")
            .field("established", &self.is_established())
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Vts {
    /// The server side, with the OS random source.
    pub fn server(settings: Arc<ServerSettings>) -> Vts {
        Vts::server_with(settings, Box::new(OsRandom))
    }

    /// The server side, drawing random bytes from `rng`.
    pub fn server_with(settings: Arc<ServerSettings>, rng: Box<dyn Random>) -> Vts {
        Vts::with(Handshake::server(settings), Vec::new(), rng)
    }

    /// The client side, with the OS random source. Its first bytes are
    /// ready in [`Vts::take_output`].
    pub fn client(settings: Arc<ClientSettings>) -> Vts {
        Vts::client_with(settings, Box::new(OsRandom))
    }

    /// The client side, drawing random bytes from `rng`.
    pub fn client_with(settings: Arc<ClientSettings>, rng: Box<dyn Random>) -> Vts {
        let mut out = Vec::new();
        let hs = Handshake::client(settings, &mut out);
        Vts::with(hs, out, rng)
    }

    fn with(hs: Handshake, out: Vec<u8>, rng: Box<dyn Random>) -> Vts {
        Vts {
            handshake: Some(hs),
            send: None,
            recv: None,
            suite: None,
            peer_key: None,
            out,
            plain: Vec::new(),
            held: None,
            rng,
        }
    }

    /// Takes bytes from the peer. Any error is fatal to the connection.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut data = data.to_vec();
        if let Some(hs) = &mut self.handshake {
            match hs.receive(&data, self.rng.as_mut(), &mut self.out)? {
                None => return Ok(()),
                Some((done, rest)) => {
                    self.establish(done);
                    data = rest;
                }
            }
        }
        if let Some(recv) = &mut self.recv {
            recv.push(&data);
            recv.open(&mut self.plain)?;
        }
        if !self.plain.is_empty() {
            if let Some(held) = self.held.take() {
                self.send(&held)?;
            }
        }
        Ok(())
    }

    fn establish(&mut self, done: Established) {
        self.handshake = None;
        self.suite = Some(done.suite);
        self.peer_key = done.peer_key;
        self.send = Some(done.send);
        self.recv = Some(done.recv);
        if done.sent_last {
            self.held = Some(Vec::new());
        }
    }

    /// The peer closed its side: an error if that cut a handshake or a
    /// record short.
    pub fn receive_eof(&self) -> Result<(), Error> {
        if let Some(hs) = &self.handshake {
            return Err(Error::ClosedDuring(hs.step_name()));
        }
        match &self.recv {
            Some(r) if r.buffered() > 0 => Err(Error::Truncated(r.buffered())),
            _ => Ok(()),
        }
    }

    /// Encrypts `plain` into records of at most 16 KiB. Only after the
    /// handshake.
    ///
    /// The side that sent the last handshake message holds what it sends
    /// until the peer's first record has arrived: VPy finishes its side of
    /// the handshake in a later reactor turn and leaves records that
    /// arrive before then unread until more bytes come, which stalls a
    /// link whose peer then waits for an answer. Both sides of a VOL link
    /// speak first (their VEC hellos), so the wait always ends.
    pub fn send(&mut self, plain: &[u8]) -> Result<(), Error> {
        if let Some(held) = &mut self.held {
            held.extend_from_slice(plain);
            return Ok(());
        }
        let Some(send) = &mut self.send else {
            return Err(Error::TransportConfig(
                "VTS data sent before the handshake completed".into(),
            ));
        };
        for chunk in plain.chunks(SEND_CHUNK) {
            send.seal(chunk, &mut self.out)?;
        }
        Ok(())
    }

    /// Bytes to write to the peer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether bytes are waiting in [`Vts::take_output`].
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Decrypted bytes from the peer.
    pub fn take_plaintext(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plain)
    }

    /// Whether the handshake is complete.
    pub fn is_established(&self) -> bool {
        self.handshake.is_none()
    }

    /// The negotiated suite, once established.
    pub fn suite(&self) -> Option<Suite> {
        self.suite
    }

    /// Once established: the server's key on the client side; on the
    /// server side the client's key, if it sent one (and so proved it
    /// holds the private half by completing the handshake).
    pub fn peer_key(&self) -> Option<&PublicKey> {
        self.peer_key.as_ref()
    }
}

#[cfg(test)]
mod tests;
