//! Settings of a VTS server and client.

use std::sync::Arc;

use super::key::VtsKey;
use super::suite::Suite;
use crate::tls::Fingerprint;

/// How a VTS server is set up.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The server's RSA key.
    pub key: Arc<VtsKey>,
    /// Suites the server accepts, in its order of preference.
    pub suites: Vec<Suite>,
}

impl ServerSettings {
    /// A server with `key` accepting every suite, strongest first.
    pub fn new(key: Arc<VtsKey>) -> ServerSettings {
        ServerSettings {
            key,
            suites: Suite::ALL.to_vec(),
        }
    }
}

/// How a VTS client decides whether to trust the server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VtsTrust {
    /// Exactly the key with this fingerprint ([`super::PublicKey::fingerprint`]).
    Pinned(Fingerprint),
    /// Any key. Nothing authenticates the server: for tests only.
    Insecure,
}

/// How a VTS client is set up.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Which server keys to trust.
    pub trust: VtsTrust,
    /// The client's own key, sent to authenticate the client.
    pub key: Option<Arc<VtsKey>>,
    /// Suites offered, in order.
    pub suites: Vec<Suite>,
}

impl ClientSettings {
    /// A client trusting as `trust` says, without a key, offering every
    /// suite.
    pub fn new(trust: VtsTrust) -> ClientSettings {
        ClientSettings {
            trust,
            key: None,
            suites: Suite::ALL.to_vec(),
        }
    }
}
