//! What a link knows about its connection ([`LinkInfo`], [`TlsInfo`]) and
//! the [`CallContext`] a call runs in, which carries it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use vole_transport::PeerIdentity;

use crate::cancel::CancelTable;
use crate::session::Session;

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
    /// What the peer proved it is during the transport handshake (a
    /// client certificate the server's client CA verified), if anything.
    pub identity: Option<PeerIdentity>,
    /// The balancer's address, when the connection came through one that
    /// sent a PROXY protocol header; `peer_addr` is then the client's
    /// address as the header gave it.
    pub proxy_addr: Option<SocketAddr>,
    /// The serving process's health, which `meta.health()` answers (a
    /// link without one answers `SERVING`).
    pub health: Option<std::sync::Arc<ServiceHealth>>,
}

/// Whether a service wants new work, as `meta.health()` tells its callers
/// (the states of gRPC's health service): `SERVING`, or `DRAINING` from
/// the first instant of a shutdown delay or a drain.
#[derive(Debug, Default)]
pub struct ServiceHealth {
    draining: std::sync::atomic::AtomicBool,
}

impl ServiceHealth {
    /// From now on the service is draining (it never serves again).
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether it is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `SERVING` or `DRAINING`.
    pub fn name(&self) -> &'static str {
        if self.is_draining() {
            "DRAINING"
        } else {
            "SERVING"
        }
    }
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
    /// The ALPN protocol both sides agreed on, if any: `vole/1` between
    /// two vole peers, whose link then runs the direct handshake.
    pub alpn: Option<String>,
}

/// The context a call runs in: which link it came from, who the peer is,
/// and whether the call is still wanted.
///
/// Cheap to clone (three reference counts; nothing is allocated per call).
///
/// # Cancellation
///
/// A call ends when its handler returns, or when the link cancels it: the
/// caller gave up (its deadline passed, or it dropped the call and sent
/// `vole.cancel`), the call ran longer than the service's `max-call-time`,
/// or the link closed. Cancelling drops the handler's future, so code
/// after its current `.await` does not run; work the handler handed to
/// another task or thread goes on, and should stop when
/// [`CallContext::is_cancelled`] turns true or [`CallContext::cancelled`]
/// completes (move a clone of the context, or
/// [`CallContext::cancellation_token`], into that work). Both also report
/// a call that ended normally: its work is no longer wanted either.
#[derive(Debug, Clone)]
pub struct CallContext {
    info: Arc<LinkInfo>,
    /// The link's session map, shared by every call on it.
    session: Arc<Session>,
    /// The link's served calls, and this call's id among them (none for a
    /// context that is no call's).
    call: Option<(Arc<CancelTable>, u64)>,
}

impl CallContext {
    /// A context for calls arriving on a link described by `info`.
    pub fn new(info: Arc<LinkInfo>) -> Self {
        CallContext {
            info,
            session: Arc::default(),
            call: None,
        }
    }

    /// A context with no connection details, for calls made in-process.
    /// It is never cancelled.
    pub fn detached() -> Self {
        CallContext::new(Arc::new(LinkInfo::default()))
    }

    /// The context of the peer's call `call_id` on a link whose calls are
    /// cancelled through `table`.
    pub(crate) fn for_call(&self, table: &Arc<CancelTable>, call_id: u64) -> Self {
        CallContext {
            info: self.info.clone(),
            session: self.session.clone(),
            call: Some((table.clone(), call_id)),
        }
    }

    /// The VOL call id of this call (the peer's message id), if the
    /// context is a call's.
    pub fn call_id(&self) -> Option<u64> {
        self.call.as_ref().map(|(_, id)| *id)
    }

    /// Whether the call has ended: cancelled (see the type's
    /// documentation) or answered. Allocates nothing.
    pub fn is_cancelled(&self) -> bool {
        match &self.call {
            Some((table, id)) => table.is_cancelled(*id),
            None => false,
        }
    }

    /// The call's cancellation token: fires when the call is cancelled or
    /// otherwise ends. A detached context's never fires.
    pub fn cancellation_token(&self) -> CancellationToken {
        match &self.call {
            Some((table, id)) => table.token(*id),
            None => CancellationToken::new(),
        }
    }

    /// Completes when the call is cancelled or otherwise ends (see
    /// [`CallContext::cancellation_token`]).
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.cancellation_token().cancelled_owned()
    }

    /// Everything the link knows about its connection.
    pub fn link(&self) -> &LinkInfo {
        &self.info
    }

    /// The peer's address: the client's, also behind a balancer that
    /// sent a PROXY protocol header.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.info.peer_addr
    }

    /// The balancer's address, when the connection came through one that
    /// sent a PROXY protocol header.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.info.proxy_addr
    }

    /// The negotiated transport.
    pub fn transport(&self) -> Option<&'static str> {
        self.info.transport
    }

    /// TLS details.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.info.tls.as_ref()
    }

    /// What the peer proved it is (a verified client certificate, a
    /// key), if anything.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.info.identity.as_ref()
    }

    /// The link's session: a typed map every call on this link shares
    /// (see [`Session`]).
    pub fn session(&self) -> &Session {
        &self.session
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_context_is_no_call_and_never_cancelled() {
        let cx = CallContext::detached();
        assert_eq!(cx.call_id(), None);
        assert!(!cx.is_cancelled());
        assert!(!cx.cancellation_token().is_cancelled());
    }

    #[test]
    fn a_calls_context_follows_its_call() {
        let table = Arc::new(CancelTable::default());
        let cx = CallContext::detached().for_call(&table, 9);
        assert_eq!(cx.call_id(), Some(9));
        table.begin(9);
        table.running(9);
        let token = cx.cancellation_token();
        let clone = cx.clone();
        assert!(!clone.is_cancelled());
        table.end(9);
        assert!(clone.is_cancelled() && token.is_cancelled());
    }

    #[test]
    fn the_calls_of_a_link_share_its_session_and_other_links_do_not() {
        let table = Arc::new(CancelTable::default());
        let link = CallContext::new(Arc::new(LinkInfo::default()));
        link.for_call(&table, 1).session().insert(5u8);
        assert_eq!(
            link.for_call(&table, 3).session().get::<u8>().as_deref(),
            Some(&5)
        );
        let other = CallContext::new(Arc::new(LinkInfo::default()));
        assert_eq!(other.session().get::<u8>(), None);
        assert_eq!(other.identity(), None);
    }
}
