//! What a link knows about its connection ([`LinkInfo`], [`TlsInfo`]) and
//! the [`CallContext`] a call runs in, which carries it.

use std::net::SocketAddr;
use std::sync::Arc;

/// What a link knows about its connection, shared by every call on it.
#[derive(Debug, Clone, Default)]
pub struct LinkInfo {
    /// Process-unique id of the link.
    pub link_id: u64,
    /// The peer's socket address, if the link runs over a socket.
    pub peer_addr: Option<SocketAddr>,
    /// This side's socket address.
    pub local_addr: Option<SocketAddr>,
    /// The transport VOP negotiated (`"TLS"`, `"PLAIN"`), if any.
    pub transport: Option<&'static str>,
    /// TLS details, if the transport is TLS.
    pub tls: Option<TlsInfo>,
    /// The serving node's id, when running under a controller.
    pub node_id: Option<u32>,
}

/// TLS details of a link.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// Protocol version, e.g. `"TLSv1_3"`.
    pub version: String,
    /// Negotiated cipher suite.
    pub cipher_suite: String,
    /// The server name the client asked for (server side).
    pub server_name: Option<String>,
    /// SHA-256 of the peer's end-entity certificate, if it sent one.
    pub peer_cert_sha256: Option<[u8; 32]>,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
}

/// The context a call runs in: which link it came from and who the peer is.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallContext {
    info: Arc<LinkInfo>,
}

impl CallContext {
    /// A context for calls arriving on a link described by `info`.
    pub fn new(info: Arc<LinkInfo>) -> Self {
        CallContext { info }
    }

    /// A context with no connection details, for calls made in-process.
    pub fn detached() -> Self {
        CallContext {
            info: Arc::new(LinkInfo::default()),
        }
    }

    /// Everything the link knows about its connection.
    pub fn link(&self) -> &LinkInfo {
        &self.info
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.info.peer_addr
    }

    /// The negotiated transport.
    pub fn transport(&self) -> Option<&'static str> {
        self.info.transport
    }

    /// TLS details.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.info.tls.as_ref()
    }
}
