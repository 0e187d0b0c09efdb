//! The connection the link layer runs over: TCP, VOP negotiation, then TLS,
//! VTS or PLAIN, behind one [`Conn`] type that is `AsyncRead + AsyncWrite`.
//!
//! [`accept`] and [`connect`] run the whole handshake (TCP_NODELAY, VOP, TLS)
//! under one handshake timeout and describe the result in a [`ConnInfo`].
//! Bytes read past the VOP line during negotiation are kept in a
//! [`Prefixed`] wrapper and returned first by reads.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::identity::PeerIdentity;
use crate::tls::{fingerprint, Fingerprint};
use crate::vop::{self, ServerPolicy, Transport};
use crate::vop_ahead::VopAhead;
use crate::vts::{self, Vts};
use crate::vts_io::VtsStream;
use crate::Error;

/// The label of TLS handshake timeouts and early closes.
const TLS_STEP: &str = "tls handshake";
/// The label of VTS handshake timeouts.
const VTS_STEP: &str = "vts handshake";

pub use crate::prefixed::Prefixed;

/// An established connection, after negotiation and any TLS handshake.
///
/// The TLS variants are boxed: a rustls session is large, and a `Conn` is
/// moved around by value.
#[derive(Debug)]
pub enum Conn {
    /// PLAIN: VEC directly on TCP.
    Plain(Prefixed<TcpStream>),
    /// TLS, server side.
    TlsServer(Box<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>>),
    /// TLS, client side. (A TLS server cannot speak first, so the client
    /// never has bytes left over from negotiation.)
    TlsClient(Box<tokio_rustls::client::TlsStream<VopAhead<TcpStream>>>),
    /// VTS, either side.
    Vts(Box<VtsStream<Prefixed<TcpStream>>>),
}

impl Conn {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s.get_ref(),
            Conn::TlsServer(s) => s.get_ref().0.get_ref(),
            Conn::TlsClient(s) => s.get_ref().0.get_ref(),
            Conn::Vts(s) => s.get_ref().get_ref(),
        }
    }
}

/// Delegates a poll method to whichever stream a [`Conn`] holds.
macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::TlsServer($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Conn::TlsClient($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Conn::Vts($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::TlsServer(s) => s.is_write_vectored(),
            Conn::TlsClient(s) => s.is_write_vectored(),
            Conn::Vts(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// What was negotiated on a connection, for logs and access decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The remote address.
    pub peer: SocketAddr,
    /// The local address.
    pub local: SocketAddr,
    /// The transport VOP chose.
    pub transport: Transport,
    /// TLS details, for TLS connections.
    pub tls: Option<TlsInfo>,
    /// Server side: what the client proved it is (a client certificate
    /// the client CA verified, or the key a VTS client authenticated
    /// with), if anything. Client side: `None` (the server's certificate is
    /// in [`TlsInfo::peer_fingerprint`], its VTS key in [`VtsInfo`]).
    pub identity: Option<PeerIdentity>,
    /// VTS details, for VTS connections.
    pub vts: Option<VtsInfo>,
}

/// Details of a VTS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtsInfo {
    /// The cipher and mode, e.g. `blowfish-cbc`.
    pub suite: String,
    /// Client side: the server key's fingerprint (hex). Server side: the
    /// fingerprint of the client's key if the client authenticated with
    /// one, in the form `--pin` takes.
    pub peer_key_fingerprint: Option<String>,
}

impl VtsInfo {
    fn from_session(vts: &Vts) -> VtsInfo {
        VtsInfo {
            suite: vts.suite().map(|s| s.to_string()).unwrap_or_default(),
            peer_key_fingerprint: vts.peer_key().map(vts::PublicKey::fingerprint_hex),
        }
    }
}

/// Details of a TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version, e.g. `TLSv1_3`.
    pub protocol: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Server side: the name the client asked for (SNI), if it sent one.
    /// Client side: `None`.
    pub sni: Option<String>,
    /// SHA-256 of the peer's end-entity certificate, if it sent one (the
    /// server always does; clients do when they have a client certificate).
    pub peer_fingerprint: Option<Fingerprint>,
    /// Whether the session was resumed (a ticket or session id from an
    /// earlier connection) rather than a full handshake.
    pub resumed: bool,
    /// The ALPN protocol both sides agreed on, if any (vole peers agree on
    /// [`crate::tls::ALPN_DIRECT`]).
    pub alpn: Option<Vec<u8>>,
}

impl TlsInfo {
    fn from_state(state: &CommonState, sni: Option<String>) -> TlsInfo {
        let protocol = match state.protocol_version() {
            Some(v) => v.as_str().map_or_else(|| format!("{v:?}"), str::to_owned),
            None => "unknown".to_owned(),
        };
        let cipher_suite = match state.negotiated_cipher_suite() {
            Some(s) => {
                let s = s.suite();
                s.as_str().map_or_else(|| format!("{s:?}"), str::to_owned)
            }
            None => "unknown".to_owned(),
        };
        TlsInfo {
            protocol,
            cipher_suite,
            sni,
            resumed: state.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            alpn: state.alpn_protocol().map(<[u8]>::to_vec),
            peer_fingerprint: state
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| fingerprint(c)),
        }
    }
}

/// How a server accepts connections.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The transports it accepts, in order of preference.
    pub transports: ServerPolicy,
    /// The TLS configuration; required if `transports` allows TLS.
    pub tls: Option<Arc<ServerConfig>>,
    /// The VTS configuration; required if `transports` allows VTS.
    pub vts: Option<Arc<vts::ServerSettings>>,
    /// The time a client has for VOP negotiation and the TLS handshake
    /// together.
    pub handshake_timeout: Duration,
}

impl ServerSettings {
    /// Checks that the settings can accept anything: some transport is
    /// enabled, all enabled transports are implemented, and TLS has a
    /// configuration if enabled. [`accept`] checks this too; call it at
    /// startup to fail early.
    pub fn validate(&self) -> Result<(), Error> {
        vop::check_enabled(&self.transports.preference)?;
        if self.transports.allows(Transport::Tls) && self.tls.is_none() {
            return Err(Error::TransportConfig(
                "TLS is enabled but has no server configuration".into(),
            ));
        }
        if self.transports.allows(Transport::Vts) && self.vts.is_none() {
            return Err(Error::TransportConfig(
                "VTS is enabled but has no server key".into(),
            ));
        }
        Ok(())
    }
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The transports to offer (the server picks).
    pub offer: Vec<Transport>,
    /// The TLS configuration; required if `offer` includes TLS.
    pub tls: Option<Arc<ClientConfig>>,
    /// The VTS configuration; required if `offer` includes VTS.
    pub vts: Option<Arc<vts::ClientSettings>>,
    /// The name to verify the server certificate against and send as SNI;
    /// `None` uses the host passed to [`connect`].
    pub server_name: Option<ServerName<'static>>,
    /// The time for VOP negotiation and the TLS handshake together.
    pub handshake_timeout: Duration,
    /// The time for name resolution, and for each TCP connection attempt.
    pub connect_timeout: Duration,
}

impl ClientSettings {
    /// Checks that the offer is not empty, names only implemented
    /// transports, and has a TLS configuration if it includes TLS.
    pub fn validate(&self) -> Result<(), Error> {
        vop::check_enabled(&self.offer)?;
        if self.offer.contains(&Transport::Tls) && self.tls.is_none() {
            return Err(Error::TransportConfig(
                "TLS is offered but has no client configuration".into(),
            ));
        }
        if self.offer.contains(&Transport::Vts) && self.vts.is_none() {
            return Err(Error::TransportConfig(
                "VTS is offered but has no client configuration".into(),
            ));
        }
        Ok(())
    }
}

/// The client side of a TLS handshake over `io`, whose writes are held
/// (see `VopAhead`), by `deadline`. On success the hold ends: the client's
/// Finished is sent now, or with `hold` goes out with the first bytes
/// written (see [`connect_held`]). On a TLS error the alert rustls wrote
/// is sent before the error is returned; `None` is the deadline passing.
async fn connect_tls(
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
    io: VopAhead<TcpStream>,
    deadline: Instant,
    hold: bool,
) -> Result<tokio_rustls::client::TlsStream<VopAhead<TcpStream>>, Option<io::Error>> {
    let connect = TlsConnector::from(config.clone())
        .connect(name, io)
        .into_fallible();
    match timeout_at(deadline, connect).await {
        Err(_) => Err(None),
        Ok(Ok(mut stream)) => {
            stream.get_mut().0.stop_holding();
            if !hold {
                match timeout_at(deadline, stream.get_mut().0.flush()).await {
                    Err(_) => return Err(None),
                    Ok(Err(e)) => return Err(Some(e)),
                    Ok(Ok(())) => {}
                }
            }
            Ok(stream)
        }
        Ok(Err((e, mut io))) => {
            io.stop_holding();
            let _ = timeout_at(deadline, io.flush()).await;
            Err(Some(e))
        }
    }
}

/// Turns an I/O error from a TLS handshake into the crate error, keeping
/// the rustls error if there is one.
pub(crate) fn map_tls_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return Error::ClosedDuring(TLS_STEP);
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::Tls(tls.clone()),
        None => Error::Io(e),
    }
}

/// TCP keepalive on accepted connections, a backstop under the link's own
/// keep-alive (which needs a peer that agrees to send them, and a finished
/// handshake): after [`TCP_KEEPALIVE_IDLE`] of silence the kernel probes
/// every [`TCP_KEEPALIVE_INTERVAL`], and gives the connection up after
/// [`TCP_KEEPALIVE_PROBES`] unanswered probes (about two minutes in all),
/// so a peer whose host vanished does not hold a link forever.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// See [`TCP_KEEPALIVE_IDLE`].
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`TCP_KEEPALIVE_IDLE`].
pub const TCP_KEEPALIVE_PROBES: u32 = 6;

fn tcp_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_PROBES)
}

/// Runs the server side of a connection on an accepted TCP stream: sets
/// TCP_NODELAY and TCP keepalive (see [`TCP_KEEPALIVE_IDLE`]), negotiates the transport and runs the TLS handshake if TLS
/// was chosen, all within `settings.handshake_timeout`.
///
/// On error the caller just drops the stream (for
/// [`Error::NoCommonTransport`] that is the close VOP prescribes).
pub async fn accept(
    mut tcp: TcpStream,
    settings: &ServerSettings,
) -> Result<(Conn, ConnInfo), Error> {
    settings.validate()?;
    let deadline = Instant::now() + settings.handshake_timeout;
    tcp.set_nodelay(true)?;
    socket2::SockRef::from(&tcp).set_tcp_keepalive(&tcp_keepalive())?;
    let peer = tcp.peer_addr()?;
    let local = tcp.local_addr()?;
    let (transport, leftover) =
        vop::read_offer(&mut tcp, &settings.transports, settings.handshake_timeout).await?;
    let reply = vop::server_reply(transport);
    // TLS: the reply goes in front of the handshake's writes, which are
    // held until it waits for the client (see `Prefixed::holding`). So a
    // ClientHello that came with the offer (see `vop_ahead`) is answered
    // with the reply and the ServerHello in one write (a client that waits
    // for the reply gets it when the handshake waits for its ClientHello),
    // and the session tickets go in the link's first write.
    let io = if transport == Transport::Tls {
        Prefixed::holding(leftover, reply, tcp)
    } else {
        timeout_at(deadline, async {
            tcp.write_all(&reply).await?;
            tcp.flush().await
        })
        .await
        .map_err(|_| Error::Timeout(vop::STEP))??;
        Prefixed::new(leftover, tcp)
    };
    if let (Transport::Vts, Some(config)) = (transport, &settings.vts) {
        let stream = timeout_at(
            deadline,
            VtsStream::handshake(io, Vts::server(config.clone())),
        )
        .await
        .map_err(|_| Error::Timeout(VTS_STEP))??;
        let vts = VtsInfo::from_session(stream.session());
        // The key the handshake verified the client holds, if it gave one.
        let identity = vts
            .peer_key_fingerprint
            .as_deref()
            .and_then(|fp| crate::tls::parse_fingerprint(fp).ok())
            .map(|fp| PeerIdentity::key(&fp));
        let info = ConnInfo {
            peer,
            local,
            transport,
            tls: None,
            identity,
            vts: Some(vts),
        };
        return Ok((Conn::Vts(Box::new(stream)), info));
    }
    let (conn, tls, identity) = match (transport, &settings.tls) {
        (Transport::Plain, _) => (Conn::Plain(io), None, None),
        (Transport::Tls, Some(config)) => {
            let accept = TlsAcceptor::from(config.clone()).accept(io).into_fallible();
            let mut stream = match timeout_at(deadline, accept).await {
                Err(_) => return Err(Error::Timeout(TLS_STEP)),
                Ok(Ok(stream)) => stream,
                Ok(Err((e, mut io))) => {
                    // The alert rustls wrote to tell the client why.
                    io.stop_holding();
                    let _ = timeout_at(deadline, io.flush()).await;
                    return Err(map_tls_error(e));
                }
            };
            stream.get_mut().0.stop_holding();
            let session = stream.get_ref().1;
            let info = TlsInfo::from_state(session, session.server_name().map(str::to_owned));
            // rustls hands out a client's chain only once its verifier
            // accepted it (and keeps it across resumption).
            let identity = session
                .peer_certificates()
                .and_then(PeerIdentity::from_chain);
            (Conn::TlsServer(Box::new(stream)), Some(info), identity)
        }
        // `validate` and `vop::choose` rule these out.
        (t, _) => {
            return Err(Error::TransportConfig(format!(
                "transport {t} chosen but not available"
            )))
        }
    };
    let info = ConnInfo {
        peer,
        local,
        transport,
        tls,
        identity,
        vts: None,
    };
    Ok((conn, info))
}

/// Connects to `host:port` and runs the client side: resolves the name,
/// tries each address in turn (each within `settings.connect_timeout`),
/// sets TCP_NODELAY, negotiates the transport and runs the TLS handshake if
/// the server chose TLS (VOP and TLS together within
/// `settings.handshake_timeout`).
///
/// `host` may be a name or an IP address (IPv6 with or without brackets);
/// unless `settings.server_name` says otherwise, it is also the name the
/// server certificate must carry.
pub async fn connect(
    host: &str,
    port: u16,
    settings: &ClientSettings,
) -> Result<(Conn, ConnInfo), Error> {
    connect_with(host, port, settings, false).await
}

/// [`connect`], for a caller that writes at once (a link, whose hellos go
/// out when it starts): the client's TLS Finished is held back to go out
/// in the same system call and TCP segment as the first bytes written (or
/// at the first flush, or read that waits), rather than on its own. Until
/// then the server has not finished its handshake: a caller that waits for
/// the server without writing, flushing or reading waits for ever.
pub async fn connect_held(
    host: &str,
    port: u16,
    settings: &ClientSettings,
) -> Result<(Conn, ConnInfo), Error> {
    connect_with(host, port, settings, true).await
}

async fn connect_with(
    host: &str,
    port: u16,
    settings: &ClientSettings,
    hold: bool,
) -> Result<(Conn, ConnInfo), Error> {
    settings.validate()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let server_name = match (&settings.server_name, settings.tls.is_some()) {
        (Some(name), _) => Some(name.clone()),
        (None, true) => Some(ServerName::try_from(bare.to_owned()).map_err(|_| {
            Error::TransportConfig(format!("{host:?} is not a valid TLS server name"))
        })?),
        (None, false) => None,
    };

    let addrs: Vec<SocketAddr> = timeout(
        settings.connect_timeout,
        tokio::net::lookup_host((bare, port)),
    )
    .await
    .map_err(|_| Error::Timeout("name resolution"))??
    .collect();
    let mut last_err = Error::Io(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host} resolved to no address"),
    ));
    let mut tcp = None;
    for addr in addrs {
        match timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "connect failed");
                last_err = Error::Io(e);
            }
            Err(_) => {
                tracing::debug!(%addr, "connect timed out");
                last_err = Error::Timeout("tcp connect");
            }
        }
    }
    let Some(mut tcp) = tcp else {
        return Err(last_err);
    };

    let deadline = Instant::now() + settings.handshake_timeout;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?;
    let local = tcp.local_addr()?;
    if let (&[Transport::Tls], Some(config), Some(name)) = (
        settings.offer.as_slice(),
        &settings.tls,
        server_name.clone(),
    ) {
        // TLS is the only answer that lets this client go on: its
        // ClientHello goes out behind the VOP line (see `vop_ahead`).
        let (ahead, state) = VopAhead::new(tcp);
        let handshake = connect_tls(config, name, ahead, deadline, hold).await;
        let vop_failure = || state.lock().ok().and_then(|mut s| s.failure());
        let stream = match handshake {
            Err(None) => {
                let replied = state.lock().map(|s| s.replied()).unwrap_or(true);
                return Err(Error::Timeout(if replied { TLS_STEP } else { vop::STEP }));
            }
            Err(Some(e)) => return Err(vop_failure().unwrap_or_else(|| map_tls_error(e))),
            Ok(stream) => stream,
        };
        let tls = TlsInfo::from_state(stream.get_ref().1, None);
        let info = ConnInfo {
            peer,
            local,
            transport: Transport::Tls,
            tls: Some(tls),
            identity: None,
            vts: None,
        };
        return Ok((Conn::TlsClient(Box::new(stream)), info));
    }
    let (transport, leftover) =
        vop::negotiate_client(&mut tcp, &settings.offer, settings.handshake_timeout).await?;
    if let (Transport::Vts, Some(config)) = (transport, &settings.vts) {
        let io = Prefixed::new(leftover, tcp);
        let stream = timeout_at(
            deadline,
            VtsStream::handshake(io, Vts::client(config.clone())),
        )
        .await
        .map_err(|_| Error::Timeout(VTS_STEP))??;
        let info = ConnInfo {
            peer,
            local,
            transport,
            tls: None,
            identity: None,
            vts: Some(VtsInfo::from_session(stream.session())),
        };
        return Ok((Conn::Vts(Box::new(stream)), info));
    }
    let (conn, tls) = match (transport, &settings.tls, server_name) {
        (Transport::Plain, _, _) => (Conn::Plain(Prefixed::new(leftover, tcp)), None),
        (Transport::Tls, Some(config), Some(name)) => {
            if !leftover.is_empty() {
                return Err(Error::BadVopLine(format!(
                    "{} bytes from the server before the TLS handshake",
                    leftover.len()
                )));
            }
            // The reply is read: the wrapper only holds the handshake's
            // writes.
            let ahead = VopAhead::through(tcp);
            let stream = match connect_tls(config, name, ahead, deadline, hold).await {
                Ok(stream) => stream,
                Err(None) => return Err(Error::Timeout(TLS_STEP)),
                Err(Some(e)) => return Err(map_tls_error(e)),
            };
            let info = TlsInfo::from_state(stream.get_ref().1, None);
            (Conn::TlsClient(Box::new(stream)), Some(info))
        }
        // `validate` and `vop::parse_server_reply` rule these out.
        (t, _, _) => {
            return Err(Error::TransportConfig(format!(
                "transport {t} chosen but not available"
            )))
        }
    };
    let info = ConnInfo {
        peer,
        local,
        transport,
        tls,
        identity: None,
        vts: None,
    };
    Ok((conn, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::dev_server;
    use crate::tls::{client_config, ServerTrust};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(10);

    fn server_settings(tls: Option<Arc<ServerConfig>>, plain: bool) -> ServerSettings {
        ServerSettings {
            transports: ServerPolicy::new(tls.is_some(), plain),
            tls,
            vts: None,
            handshake_timeout: T,
        }
    }

    fn client_settings(tls: Option<Arc<ClientConfig>>, offer: &[Transport]) -> ClientSettings {
        ClientSettings {
            offer: offer.to_vec(),
            tls,
            vts: None,
            server_name: None,
            handshake_timeout: T,
            connect_timeout: T,
        }
    }

    /// A listener on an ephemeral loopback port and a task accepting one
    /// connection on it with `settings`.
    async fn serve_one(
        settings: ServerSettings,
    ) -> (
        u16,
        tokio::task::JoinHandle<Result<(Conn, ConnInfo), Error>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            accept(tcp, &settings).await
        });
        (port, task)
    }

    async fn echo_once(conn: &mut Conn) {
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).await.expect("read");
        conn.write_all(&buf).await.expect("write");
        conn.flush().await.expect("flush");
    }

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        timeout(Duration::from_secs(20), f).await.expect("bounded")
    }

    fn vts_pair(pin: Option<[u8; 32]>, client_key: bool) -> (ServerSettings, ClientSettings) {
        let key = Arc::new(vts::VtsKey::generate(1024).expect("key"));
        let trust = vts::VtsTrust::Pinned(pin.unwrap_or_else(|| key.public().fingerprint()));
        let mut c = vts::ClientSettings::new(trust);
        if client_key {
            c.key = Some(Arc::new(vts::VtsKey::generate(1024).expect("client key")));
        }
        let server = ServerSettings {
            transports: ServerPolicy::with_vts(false, true, false),
            tls: None,
            vts: Some(Arc::new(vts::ServerSettings::new(key))),
            handshake_timeout: T,
        };
        let client = ClientSettings {
            vts: Some(Arc::new(c)),
            ..client_settings(None, &[Transport::Vts])
        };
        (server, client)
    }

    #[tokio::test]
    async fn vts_echo_with_a_pinned_server_and_a_client_key() {
        bounded(async {
            let (server, client) = vts_pair(None, true);
            let want = client
                .vts
                .as_ref()
                .and_then(|c| c.key.as_ref())
                .map(|k| k.public().fingerprint_hex());
            let (port, task) = serve_one(server).await;
            let (mut conn, info) = connect("127.0.0.1", port, &client).await.expect("connect");
            let (mut sconn, sinfo) = task.await.expect("join").expect("accept");
            assert_eq!(
                (info.transport, sinfo.transport),
                (Transport::Vts, Transport::Vts)
            );
            let svts = sinfo.vts.expect("vts info");
            assert_eq!(svts.suite, "aes256-cbc");
            assert_eq!(svts.peer_key_fingerprint, want);
            let big = vec![7u8; 200_000];
            let writer = async {
                conn.write_all(&big).await.expect("write");
                conn.flush().await.expect("flush");
                let mut back = vec![0u8; big.len()];
                conn.read_exact(&mut back).await.expect("read back");
                back
            };
            let echo = async {
                let mut buf = vec![0u8; 200_000];
                sconn.read_exact(&mut buf).await.expect("read");
                sconn.write_all(&buf).await.expect("write");
                sconn.flush().await.expect("flush");
            };
            let (back, ()) = tokio::join!(writer, echo);
            assert_eq!(back, big);
        })
        .await;
    }

    #[tokio::test]
    async fn vts_wrong_pin_fails_with_both_fingerprints() {
        bounded(async {
            let (server, client) = vts_pair(Some([9; 32]), false);
            let (port, task) = serve_one(server).await;
            let err = connect("127.0.0.1", port, &client)
                .await
                .expect_err("wrong pin");
            assert!(matches!(err, Error::VtsKeyMismatch { .. }), "{err:?}");
            assert!(
                task.await.expect("join").is_err(),
                "the server sees the close"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn tls_echo() {
        let (_dir, server_tls) = dev_server("stream-tls");
        let (port, server) =
            serve_one(server_settings(Some(server_tls.config.clone()), false)).await;
        let client_tls =
            client_config(&ServerTrust::Pinned(server_tls.fingerprint)).expect("client");
        bounded(async {
            let (mut conn, info) = connect(
                "localhost",
                port,
                &client_settings(Some(client_tls), &[Transport::Tls, Transport::Plain]),
            )
            .await
            .expect("connect");
            let (mut sconn, sinfo) = server.await.expect("join").expect("accept");
            assert!(matches!(conn, Conn::TlsClient(_)));
            assert!(matches!(sconn, Conn::TlsServer(_)));
            assert_eq!(info.transport, Transport::Tls);
            assert_eq!(sinfo.transport, Transport::Tls);
            assert_eq!((info.peer, info.local), (sinfo.local, sinfo.peer));
            let tls = info.tls.expect("client tls info");
            assert_eq!(tls.protocol, "TLSv1_3");
            assert!(
                tls.cipher_suite.starts_with("TLS13_"),
                "{}",
                tls.cipher_suite
            );
            assert_eq!(tls.peer_fingerprint, Some(server_tls.fingerprint));
            assert_eq!(tls.sni, None);
            let stls = sinfo.tls.expect("server tls info");
            assert_eq!(stls.sni.as_deref(), Some("localhost"));
            assert_eq!(stls.peer_fingerprint, None);
            assert_eq!(stls.cipher_suite, tls.cipher_suite);
            assert!(conn.tcp().nodelay().expect("nodelay"));
            assert!(sconn.tcp().nodelay().expect("nodelay"));
            let server_sock = socket2::SockRef::from(sconn.tcp());
            assert!(server_sock.keepalive().expect("keepalive"));
            assert_eq!(
                server_sock.tcp_keepalive_time().expect("idle"),
                TCP_KEEPALIVE_IDLE
            );
            assert_eq!(
                server_sock.tcp_keepalive_interval().expect("interval"),
                TCP_KEEPALIVE_INTERVAL
            );
            assert_eq!(
                server_sock.tcp_keepalive_retries().expect("probes"),
                TCP_KEEPALIVE_PROBES
            );

            conn.write_all(b"hello").await.expect("write");
            conn.flush().await.expect("flush");
            echo_once(&mut sconn).await;
            let mut back = [0u8; 5];
            conn.read_exact(&mut back).await.expect("read");
            assert_eq!(&back, b"hello");
        })
        .await;
    }

    /// Runs one TLS handshake against a server asking for client
    /// certificates, then one byte each way (in TLS 1.3 the server judges
    /// the client's certificate after the client's handshake ends, so a
    /// refusal shows on the client's first read). Returns the server's
    /// view of the client, or the server's error.
    async fn mtls_once(
        auth: &crate::tls::ClientAuth,
        cert: Option<&crate::tls::ClientCert>,
    ) -> Result<Option<PeerIdentity>, Error> {
        let (_dir, server_tls) = dev_server("stream-mtls");
        let tls = crate::tls::server_config_with(
            &crate::tls::ServerIdentity::Files {
                cert: _dir.0.join("state").join(crate::tls::DEV_CERT_FILE),
                key: _dir.0.join("state").join(crate::tls::DEV_KEY_FILE),
            },
            Some(auth),
        )
        .expect("server config");
        let (port, server) = serve_one(server_settings(Some(tls.config), false)).await;
        let client_tls =
            crate::tls::client_config_with(&ServerTrust::Pinned(server_tls.fingerprint), cert)
                .expect("client");
        let settings = client_settings(Some(client_tls), &[Transport::Tls]);
        bounded(async {
            let client = connect("localhost", port, &settings);
            let (client, accepted) = tokio::join!(client, server);
            let accepted = accepted.expect("join");
            let (mut sconn, sinfo) = match accepted {
                Ok(a) => a,
                Err(e) => return Err(e),
            };
            let (mut conn, _) = client.expect("the client's side completes");
            conn.write_all(b"x").await.expect("write");
            conn.flush().await.expect("flush");
            let mut b = [0u8; 1];
            sconn.read_exact(&mut b).await.expect("server reads");
            Ok(sinfo.identity)
        })
        .await
    }

    #[tokio::test]
    async fn client_certificates_required_and_optional() {
        use crate::tls::tests::{TempDir, TestCa};
        use crate::tls::ClientAuth;
        let dir = TempDir::new("stream-client-certs");
        let ca = TestCa::new("client ca");
        let other = TestCa::new("other ca");
        let alice = ca.issue(&dir.0, "alice");
        let mallory = other.issue(&dir.0.join("other"), "mallory");
        let required = ClientAuth {
            ca_pem: ca.pem.clone().into_bytes(),
            required: true,
        };
        let optional = ClientAuth {
            required: false,
            ..required.clone()
        };

        let id = mtls_once(&required, Some(&alice)).await.expect("served");
        let id = id.expect("an identity");
        assert_eq!(id.subject(), Some("CN=alice"));
        assert!(matches!(
            mtls_once(&required, None).await,
            Err(Error::Tls(rustls::Error::NoCertificatesPresented))
        ));
        assert!(matches!(
            mtls_once(&required, Some(&mallory)).await,
            Err(Error::Tls(rustls::Error::InvalidCertificate(_)))
        ));
        assert_eq!(mtls_once(&optional, None).await.expect("served"), None);
        let id = mtls_once(&optional, Some(&alice)).await.expect("served");
        assert_eq!(id.as_ref().and_then(|i| i.subject()), Some("CN=alice"));
        assert!(
            mtls_once(&optional, Some(&mallory)).await.is_err(),
            "a certificate that does not verify fails even when optional"
        );
    }

    #[tokio::test]
    async fn tls_to_an_ip_address() {
        let (_dir, server_tls) = dev_server("stream-ip");
        let (port, server) =
            serve_one(server_settings(Some(server_tls.config.clone()), false)).await;
        let ca = _dir.0.join("state").join(crate::tls::DEV_CERT_FILE);
        let client_tls = client_config(&ServerTrust::CaFile(ca)).expect("client");
        bounded(async {
            let (_conn, info) = connect(
                "127.0.0.1",
                port,
                &client_settings(Some(client_tls), &[Transport::Tls]),
            )
            .await
            .expect("connect");
            assert_eq!(info.transport, Transport::Tls);
            let (_sconn, sinfo) = server.await.expect("join").expect("accept");
            // Clients send no SNI for IP addresses.
            assert_eq!(sinfo.tls.expect("tls").sni, None);
        })
        .await;
    }

    #[tokio::test]
    async fn tls_wrong_pin_fails_on_both_sides() {
        let (_dir, server_tls) = dev_server("stream-pin");
        let (port, server) =
            serve_one(server_settings(Some(server_tls.config.clone()), false)).await;
        let mut wrong = server_tls.fingerprint;
        wrong[31] ^= 0x80;
        let client_tls = client_config(&ServerTrust::Pinned(wrong)).expect("client");
        bounded(async {
            let err = connect(
                "localhost",
                port,
                &client_settings(Some(client_tls), &[Transport::Tls]),
            )
            .await
            .expect_err("wrong pin");
            assert!(
                matches!(err, Error::Tls(rustls::Error::InvalidCertificate(_))),
                "{err:?}"
            );
            // The client's alert reaches the server, though the client
            // holds its handshake writes (see `connect_tls`).
            let serr = server.await.expect("join").expect_err("server side");
            assert!(
                matches!(serr, Error::Tls(rustls::Error::AlertReceived(_))),
                "{serr:?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn plain_echo_when_both_sides_enable_it() {
        let (port, server) = serve_one(server_settings(None, true)).await;
        bounded(async {
            let (mut conn, info) = connect(
                "127.0.0.1",
                port,
                &client_settings(None, &[Transport::Plain]),
            )
            .await
            .expect("connect");
            let (mut sconn, sinfo) = server.await.expect("join").expect("accept");
            assert_eq!(info.transport, Transport::Plain);
            assert_eq!(sinfo.transport, Transport::Plain);
            assert_eq!((info.tls, sinfo.tls), (None, None));
            assert!(conn.tcp().nodelay().expect("nodelay"));
            assert!(sconn.tcp().nodelay().expect("nodelay"));
            conn.write_all(b"plain").await.expect("write");
            echo_once(&mut sconn).await;
            let mut back = [0u8; 5];
            conn.read_exact(&mut back).await.expect("read");
            assert_eq!(&back, b"plain");
        })
        .await;
    }

    #[tokio::test]
    async fn plain_offer_to_a_tls_only_server_fails_on_both_sides() {
        let (_dir, server_tls) = dev_server("stream-nocommon");
        let (port, server) =
            serve_one(server_settings(Some(server_tls.config.clone()), false)).await;
        bounded(async {
            let err = connect(
                "127.0.0.1",
                port,
                &client_settings(None, &[Transport::Plain]),
            )
            .await
            .expect_err("refused");
            assert!(
                matches!(err, Error::ClosedDuring("vop negotiation")),
                "{err:?}"
            );
            let serr = server.await.expect("join").expect_err("server side");
            assert!(matches!(serr, Error::NoCommonTransport { .. }), "{serr:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn server_delivers_bytes_sent_with_the_vop_line() {
        let (port, server) = serve_one(server_settings(None, true)).await;
        bounded(async {
            let mut raw = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            raw.write_all(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\nVEC_DRAFT-0.8-utf8\n")
                .await
                .expect("write");
            let (mut sconn, _) = server.await.expect("join").expect("accept");
            let mut hello = [0u8; 19];
            sconn.read_exact(&mut hello).await.expect("read");
            assert_eq!(&hello, b"VEC_DRAFT-0.8-utf8\n");
            let mut reply = [0u8; 34];
            raw.read_exact(&mut reply).await.expect("reply");
            assert_eq!(&reply, b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n");
        })
        .await;
    }

    /// A raw server that reads the offer and answers with `answer` in one
    /// write, then holds the connection until the client is done.
    async fn raw_server(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut offer = Vec::new();
            let mut b = [0u8; 1];
            while offer.last() != Some(&b'\n') {
                tcp.read_exact(&mut b).await.expect("offer");
                offer.push(b[0]);
            }
            tcp.write_all(answer).await.expect("answer");
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
            offer
        });
        (port, task)
    }

    #[tokio::test]
    async fn client_delivers_bytes_sent_with_the_reply() {
        // Like VPy's PLAIN server: the VEC hello right behind the reply.
        let (port, server) =
            raw_server(b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\nVEC_DRAFT-0.8-utf8\n").await;
        bounded(async {
            let (mut conn, _) = connect(
                "127.0.0.1",
                port,
                &client_settings(None, &[Transport::Plain]),
            )
            .await
            .expect("connect");
            let mut hello = [0u8; 19];
            conn.read_exact(&mut hello).await.expect("read");
            assert_eq!(&hello, b"VEC_DRAFT-0.8-utf8\n");
            drop(conn);
            let offer = server.await.expect("join");
            assert_eq!(offer, b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\n");
        })
        .await;
    }

    /// Bytes from the server behind its reply: a client that also offered
    /// PLAIN waited for the reply, so they came before its ClientHello and
    /// are refused as such; a TLS-only client sent its ClientHello ahead,
    /// so they are the server's TLS bytes, and not TLS: refused by TLS.
    #[tokio::test]
    async fn client_refuses_server_bytes_before_tls() {
        for offer in [&[Transport::Tls, Transport::Plain][..], &[Transport::Tls]] {
            let (port, server) = raw_server(b"VOP_DRAFT-0.8 USE_TRANSPORT:TLS\nhi").await;
            let client_tls = client_config(&ServerTrust::DangerAcceptAny).expect("client");
            bounded(async {
                let err = connect("127.0.0.1", port, &client_settings(Some(client_tls), offer))
                    .await
                    .expect_err("refused");
                if offer.len() == 2 {
                    assert!(matches!(err, Error::BadVopLine(_)), "{err:?}");
                } else {
                    assert!(matches!(err, Error::Tls(_)), "{err:?}");
                }
                server.await.expect("join");
            })
            .await;
        }
    }

    /// A TLS-only client sends its ClientHello behind its VOP line, before
    /// any reply: a server that answers nothing still gets both.
    #[tokio::test]
    async fn a_tls_only_client_sends_its_client_hello_ahead() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let line = b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n";
            let mut got = vec![0u8; line.len() + 1];
            tcp.read_exact(&mut got).await.expect("line and more");
            got
        });
        let client_tls = client_config(&ServerTrust::DangerAcceptAny).expect("client");
        let settings = ClientSettings {
            handshake_timeout: Duration::from_millis(300),
            ..client_settings(Some(client_tls), &[Transport::Tls])
        };
        bounded(async {
            let (got, err) = tokio::join!(server, connect("127.0.0.1", port, &settings));
            let got = got.expect("join");
            assert_eq!(&got[..got.len() - 1], b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n");
            // 0x16: a TLS handshake record, the ClientHello.
            assert_eq!(got[got.len() - 1], 0x16);
            let err = err.expect_err("no reply");
            assert!(
                matches!(
                    err,
                    Error::Timeout(vop::STEP) | Error::ClosedDuring(vop::STEP)
                ),
                "{err:?}"
            );
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_hits_the_handshake_timeout() {
        let (port, server) = serve_one(ServerSettings {
            handshake_timeout: Duration::from_secs(30),
            ..server_settings(None, true)
        })
        .await;
        let _raw = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let started = Instant::now();
        let err = server.await.expect("join").expect_err("timeout");
        assert!(matches!(err, Error::Timeout("vop negotiation")), "{err:?}");
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn tls_handshake_shares_the_handshake_timeout() {
        let (_dir, server_tls) = dev_server("stream-tls-timeout");
        let (port, server) = serve_one(ServerSettings {
            handshake_timeout: Duration::from_secs(30),
            ..server_settings(Some(server_tls.config), false)
        })
        .await;
        // Negotiates TLS, then never sends a ClientHello.
        let mut raw = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        raw.write_all(b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n")
            .await
            .expect("write");
        let mut reply = [0u8; 32];
        raw.read_exact(&mut reply).await.expect("reply");
        let err = server.await.expect("join").expect_err("timeout");
        assert!(matches!(err, Error::Timeout("tls handshake")), "{err:?}");
    }

    #[tokio::test]
    async fn client_closing_during_tls_handshake() {
        let (_dir, server_tls) = dev_server("stream-tls-eof");
        let (port, server) = serve_one(server_settings(Some(server_tls.config), false)).await;
        bounded(async {
            let mut raw = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            raw.write_all(b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n")
                .await
                .expect("write");
            let mut reply = [0u8; 32];
            raw.read_exact(&mut reply).await.expect("reply");
            drop(raw);
            let err = server.await.expect("join").expect_err("closed");
            assert!(
                matches!(err, Error::ClosedDuring("tls handshake")),
                "{err:?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn settings_are_validated() {
        let tcp_pair = || async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let c = TcpStream::connect(listener.local_addr().expect("addr"))
                .await
                .expect("connect");
            let (s, _) = listener.accept().await.expect("accept");
            (c, s)
        };
        for settings in [
            server_settings(None, false),
            ServerSettings {
                transports: ServerPolicy::new(true, false),
                ..server_settings(None, true)
            },
            ServerSettings {
                transports: ServerPolicy {
                    preference: vec![Transport::Vts],
                },
                ..server_settings(None, true)
            },
        ] {
            assert!(matches!(
                settings.validate(),
                Err(Error::TransportConfig(_))
            ));
            let (_c, s) = tcp_pair().await;
            assert!(matches!(
                accept(s, &settings).await,
                Err(Error::TransportConfig(_))
            ));
        }
        for settings in [
            client_settings(None, &[]),
            client_settings(None, &[Transport::Tls]),
            client_settings(None, &[Transport::Vts, Transport::Plain]),
        ] {
            assert!(matches!(
                settings.validate(),
                Err(Error::TransportConfig(_))
            ));
            assert!(matches!(
                connect("127.0.0.1", 9, &settings).await,
                Err(Error::TransportConfig(_))
            ));
        }
        let tls = client_config(&ServerTrust::DangerAcceptAny).expect("client");
        assert!(matches!(
            connect("bad name!", 9, &client_settings(Some(tls), &[Transport::Tls])).await,
            Err(Error::TransportConfig(m)) if m.contains("server name")
        ));
    }

    #[tokio::test]
    async fn connect_to_a_closed_port_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = bounded(connect(
            "127.0.0.1",
            port,
            &client_settings(None, &[Transport::Plain]),
        ))
        .await
        .expect_err("refused");
        match err {
            Error::Io(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
    }
}
