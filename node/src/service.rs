//! [`Service`]: serves Versile sessions on a listening socket.
//!
//! Every accepted connection runs, on its own task: VOP negotiation, the
//! chosen transport (TLS or PLAIN), then a VOL link whose gateway comes fresh
//! from the service's factory. The service tracks its links so that a stop
//! can drain them: new calls are refused, calls already running finish, and
//! whatever is still open when the grace period ends is closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vole_link::{Link, LinkConfig, LinkInfo, LinkSetup, Object};
use vole_transport::stream::{self, ServerSettings};

use crate::auth::Authorizer;
use crate::lograte::{log_limited, LogRate};

/// How long a draining link waits for its peer to stop calling before it
/// closes (see [`LinkConfig::drain_quiet`]); what a service's link
/// configuration should use. A client that calls within this time of the
/// last call gets its calls refused as closing instead of lost; one that
/// goes on calling is refused for no longer than this after its first
/// refusal. A draining link whose client is idle closes within this time.
pub const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// Makes the gateway object for a new link.
pub type GatewayFactory = Arc<dyn Fn(&LinkInfo) -> Arc<dyn Object> + Send + Sync>;

/// Told when connections start and end (a node reports these to its
/// controller, which balances on them).
pub trait SessionObserver: Send + Sync + 'static {
    /// A connection was accepted.
    fn opened(&self);
    /// A connection ended (whether or not its handshake succeeded).
    fn closed(&self);
}

/// Settings of a service.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Allowed transports, TLS configuration and the handshake timeout.
    pub transport: ServerSettings,
    /// Link settings; `hold_peer` should be false for a service.
    pub link: LinkConfig,
    /// The node id reported by `meta.ping()`, when running under a
    /// controller.
    pub node_id: Option<u32>,
    /// Which connections this service refuses at once.
    pub admission: Admission,
    /// Which clients this service serves, asked after the transport
    /// handshake (see [`crate::auth`]); `None` serves every client.
    pub authorizer: Option<Authorizer>,
    /// Every connection starts with a PROXY protocol header from a
    /// balancer in these networks (others are refused); `None`: no header.
    pub proxy_from: Option<Vec<vole_transport::proxy::IpNet>>,
}

/// Connection limits a service applies itself, as it accepts. A refused
/// connection is closed at once (before VOP), logged (rate-limited) and
/// counted as a handshake failure with the limit as its reason
/// (`max-clients`, `max-clients-per-ip`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// Most connections this service holds open at once.
    pub max_clients: Option<u64>,
    /// Most connections from one IP address this service holds open at
    /// once.
    pub max_clients_per_ip: Option<u64>,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("transports", &self.transport.transports)
            .field("tls", &self.transport.tls.is_some())
            .field("link", &self.link)
            .field("node_id", &self.node_id)
            .field("admission", &self.admission)
            .field("authorizer", &self.authorizer.is_some())
            .finish()
    }
}

/// Counters of a service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections whose VOP or TLS handshake failed.
    pub handshake_failures: AtomicU64,
    /// Links that ended on an error.
    pub link_errors: AtomicU64,
    /// Calls served on links that have closed (add the live links' counts for
    /// the total).
    pub calls_closed_links: AtomicU64,
    /// Failed calls on links that have closed.
    pub errors_closed_links: AtomicU64,
}

/// A point-in-time view of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Open links.
    pub sessions: u64,
    /// Connections accepted in total.
    pub accepted: u64,
    /// Calls served in total.
    pub calls: u64,
    /// Calls that failed in total.
    pub errors: u64,
    /// Calls running now.
    pub inflight: u64,
    /// Handshake failures in total.
    pub handshake_failures: u64,
    /// Handshake failures by reason.
    pub handshake_failures_by_reason: Vec<(String, u64)>,
    /// Served-call latency histogram counts (see `vole_link::metrics`).
    pub latency_counts: Vec<u64>,
    /// Sum of served-call latencies, microseconds.
    pub latency_sum_us: u64,
    /// Calls cancelled before they finished, in total (by their caller,
    /// by `max-call-time`, or as their link closed).
    pub cancelled: u64,
}

/// Why a handshake failed, in a word (a metrics label).
pub fn handshake_failure_reason(e: &vole_transport::Error) -> &'static str {
    use vole_transport::Error as E;
    match e {
        E::Timeout(_) => "timeout",
        E::BadVopLine(_) | E::UnknownTransport(_) => "bad_vop",
        E::NoCommonTransport { .. } => "no_common_transport",
        E::ClosedDuring(_) => "closed",
        E::ProxyHeader(_) => "proxy",
        e if e.is_client_certificate_failure() => "client_certificate",
        E::Tls(_) => "tls",
        E::Io(_) => "io",
        _ => "other",
    }
}

struct Inner {
    config: ServiceConfig,
    factory: GatewayFactory,
    observer: Option<Arc<dyn SessionObserver>>,
    metrics: Arc<vole_link::metrics::CallMetrics>,
    failure_reasons: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    links: Mutex<HashMap<u64, Link>>,
    /// Connections admitted and not yet ended: in all, and per address.
    open: Mutex<Open>,
    tracker: TaskTracker,
    stop_accepting: CancellationToken,
    stats: ServiceStats,
    /// What `meta.health()` answers on every link.
    health: Arc<vole_link::ServiceHealth>,
}

/// A running service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    /// A service with the given settings and gateway factory.
    pub fn new(config: ServiceConfig, factory: GatewayFactory) -> Self {
        Service::with_observer(config, factory, None)
    }

    /// A service that reports connections to `observer`.
    pub fn with_observer(
        mut config: ServiceConfig,
        factory: GatewayFactory,
        observer: Option<Arc<dyn SessionObserver>>,
    ) -> Self {
        let metrics = config
            .link
            .metrics
            .get_or_insert_with(Default::default)
            .clone();
        Service {
            inner: Arc::new(Inner {
                config,
                factory,
                observer,
                links: Mutex::new(HashMap::new()),
                open: Mutex::new(Open::default()),
                tracker: TaskTracker::new(),
                stop_accepting: CancellationToken::new(),
                stats: ServiceStats::default(),
                health: Arc::default(),
                metrics,
                failure_reasons: Mutex::new(std::collections::BTreeMap::new()),
            }),
        }
    }

    /// Accepts connections from `listener` until [`Service::stop_accepting`]
    /// (or [`Service::shutdown`]) is called.
    pub async fn run(&self, listener: TcpListener) {
        let stop = self.inner.stop_accepting.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => self.serve_connection(tcp),
                    Err(e) => accept_error(e).await,
                },
            }
        }
    }

    /// Serves one accepted connection on a new task (or closes it at once
    /// if [`Admission`] refuses it).
    pub fn serve_connection(&self, tcp: TcpStream) {
        self.inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let peer = tcp.peer_addr().ok();
        let ip = peer.map(|a| a.ip());
        let admitted = match self.inner.open.lock() {
            Ok(mut open) => open.admit(ip, &self.inner.config.admission),
            // Poisoned: a panic elsewhere; do not refuse on that account.
            Err(_) => Ok(()),
        };
        if let Err(reason) = admitted {
            self.refuse(tcp, peer, reason);
            return;
        }
        if let Some(o) = &self.inner.observer {
            o.opened();
        }
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            this.session(tcp, peer).await;
            if let Ok(mut open) = this.inner.open.lock() {
                open.release(ip);
            }
            if let Some(o) = &this.inner.observer {
                o.closed();
            }
        });
    }

    /// Closes a connection [`Admission`] refused, and counts and logs it.
    fn refuse(&self, tcp: TcpStream, peer: Option<std::net::SocketAddr>, reason: &'static str) {
        drop(tcp);
        let inner = &self.inner;
        inner
            .stats
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut reasons) = inner.failure_reasons.lock() {
            *reasons.entry(reason).or_default() += 1;
        }
        log_refusal(peer, reason);
    }

    /// Whether [`Service::stop_accepting`] has been called.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop_accepting.is_cancelled()
    }

    /// Resolves when [`Service::stop_accepting`] is called.
    pub async fn stopping(&self) {
        self.inner.stop_accepting.cancelled().await
    }

    /// Counts and logs a connection that failed before its link was up.
    fn handshake_failed(&self, peer: Option<std::net::SocketAddr>, e: &vole_transport::Error) {
        let inner = &self.inner;
        inner
            .stats
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut reasons) = inner.failure_reasons.lock() {
            *reasons.entry(handshake_failure_reason(e)).or_default() += 1;
        }
        log_handshake_failure(peer, e);
    }

    /// Behind a balancer: the PROXY header, read only from a trusted
    /// source. The client's address and the balancer's, or why not.
    async fn proxied(
        &self,
        tcp: &mut TcpStream,
        peer: Option<std::net::SocketAddr>,
        from: &[vole_transport::proxy::IpNet],
    ) -> Result<(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>), vole_transport::Error>
    {
        use vole_transport::proxy::{self, ProxyHeader};
        let Some(balancer) = peer.filter(|p| proxy::trusted(p.ip(), from)) else {
            return Err(vole_transport::Error::ProxyHeader(
                "the connection's source may not send one (proxy-protocol-from)".to_owned(),
            ));
        };
        let limit = self.inner.config.transport.handshake_timeout;
        match proxy::read_header(tcp, limit).await? {
            ProxyHeader::Proxied { client, .. } => Ok((Some(client), Some(balancer))),
            // The balancer's own connection (a health check).
            ProxyHeader::Local => Ok((peer, None)),
        }
    }

    /// Serves one admitted connection from `peer` (its address as read at
    /// admission: asking the socket again costs a system call per session).
    async fn session(&self, mut tcp: TcpStream, peer: Option<std::net::SocketAddr>) {
        let inner = &self.inner;
        let (client, balancer) = match &inner.config.proxy_from {
            None => (peer, None),
            Some(from) => match self.proxied(&mut tcp, peer, from).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    self.handshake_failed(peer, &e);
                    return;
                }
            },
        };
        // Boxed: the handshake's state (about 18 KiB: the negotiation and
        // TLS or VTS) is freed once the link is up, instead of staying in
        // this task, whose size every idle link pays, for the link's life.
        let accepting = Box::pin(stream::accept(tcp, &inner.config.transport));
        let (conn, conn_info) = match accepting.await {
            Ok(accepted) => accepted,
            Err(e) => {
                self.handshake_failed(client, &e);
                return;
            }
        };
        let peer = client;
        let mut info = LinkInfo::from_conn(&conn_info);
        info.node_id = inner.config.node_id;
        info.health = Some(inner.health.clone());
        if balancer.is_some() {
            info.peer_addr = client;
            info.proxy_addr = balancer;
        }
        if let Some(authorizer) = &inner.config.authorizer {
            if let Err(reason) = authorizer.authorize(&info) {
                inner
                    .stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                if let Ok(mut reasons) = inner.failure_reasons.lock() {
                    *reasons.entry(REFUSED).or_default() += 1;
                }
                log_unauthorized(peer, info.identity.as_ref(), &reason);
                // Closed before the link handshake (after counting, so a
                // client that sees the close sees the count): the client
                // learns nothing but that its link failed.
                drop(conn);
                return;
            }
        }
        let gateway = (inner.factory)(&info);
        let setup = LinkSetup {
            config: inner.config.link.clone(),
            gateway,
            info,
        };
        let mut link_id = 0;
        let closed = vole_link::serve(conn, setup, |link| {
            link_id = link.id();
            tracing::debug!(link = link_id, ?peer, transport = %conn_info.transport, "session opened");
            if let Ok(mut links) = inner.links.lock() {
                links.insert(link.id(), link.clone());
            }
            // Accepted before a stop began but set up after: drain it too
            // (registered first, so either this check or the stop's list
            // of links sees it). Its calls are refused as closing, so the
            // client retries elsewhere, rather than dropping the connection.
            if inner.stop_accepting.is_cancelled() {
                tokio::spawn(async move { link.close().await });
            }
        })
        .await;
        let link = inner
            .links
            .lock()
            .ok()
            .and_then(|mut links| links.remove(&link_id));
        if let Some(link) = link {
            let stats = link.stats();
            inner
                .stats
                .calls_closed_links
                .fetch_add(stats.calls_in.load(Ordering::Relaxed), Ordering::Relaxed);
            inner
                .stats
                .errors_closed_links
                .fetch_add(stats.errors_in.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if !closed.clean {
            inner.stats.link_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops accepting new connections; open links continue.
    pub fn stop_accepting(&self) {
        self.inner.health.set_draining();
        self.inner.stop_accepting.cancel();
    }

    /// The service is not ready for new work (a shutdown delay began):
    /// `meta.health()` answers `DRAINING`, while it serves on.
    pub fn set_not_ready(&self) {
        self.inner.health.set_draining();
    }

    /// The open links.
    pub fn links(&self) -> Vec<Link> {
        self.inner
            .links
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops the service: stops accepting, drains every link (new calls are
    /// refused, running calls finish and are answered), and after `grace`
    /// closes whatever is still open. Returns the number of links that had
    /// to be closed by force.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stop_accepting();
        let links = self.links();
        tracing::info!(
            links = links.len(),
            grace_s = grace.as_secs_f64(),
            "draining links"
        );
        let drain = async {
            let closes: Vec<_> = links.iter().map(|l| l.close()).collect();
            futures_join_all(closes).await;
        };
        let forced = match tokio::time::timeout(grace, drain).await {
            Ok(()) => 0,
            Err(_) => {
                let open = self.links();
                for link in &open {
                    link.abort();
                }
                open.len()
            }
        };
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        forced
    }

    /// Counters now.
    pub fn snapshot(&self) -> Snapshot {
        let s = &self.inner.stats;
        let links = self.links();
        let live_calls: u64 = links
            .iter()
            .map(|l| l.stats().calls_in.load(Ordering::Relaxed))
            .sum();
        let live_errors: u64 = links
            .iter()
            .map(|l| l.stats().errors_in.load(Ordering::Relaxed))
            .sum();
        let inflight: u64 = links.iter().map(|l| l.stats().inflight()).sum();
        Snapshot {
            sessions: links.len() as u64,
            accepted: s.accepted.load(Ordering::Relaxed),
            calls: s.calls_closed_links.load(Ordering::Relaxed) + live_calls,
            errors: s.errors_closed_links.load(Ordering::Relaxed) + live_errors,
            handshake_failures: s.handshake_failures.load(Ordering::Relaxed),
            handshake_failures_by_reason: self
                .inner
                .failure_reasons
                .lock()
                .map(|r| r.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
                .unwrap_or_default(),
            latency_counts: self.inner.metrics.counts(),
            latency_sum_us: self.inner.metrics.sum_us(),
            cancelled: self.inner.metrics.cancelled(),
            inflight,
        }
    }
}

/// Connections admitted and not yet ended.
#[derive(Debug, Default)]
struct Open {
    total: u64,
    per_ip: HashMap<std::net::IpAddr, u64>,
}

impl Open {
    /// Admits a connection from `ip` under `limits`, or names the limit
    /// that refuses it.
    fn admit(
        &mut self,
        ip: Option<std::net::IpAddr>,
        limits: &Admission,
    ) -> Result<(), &'static str> {
        if limits.max_clients.is_some_and(|max| self.total >= max) {
            return Err("max-clients");
        }
        if let (Some(max), Some(ip)) = (limits.max_clients_per_ip, ip) {
            if self.per_ip.get(&ip).copied().unwrap_or(0) >= max {
                return Err("max-clients-per-ip");
            }
        }
        self.total += 1;
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        Ok(())
    }

    /// A connection admitted from `ip` ended.
    fn release(&mut self, ip: Option<std::net::IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.per_ip.entry(ip) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
}

/// Connections refused by [`Admission`]: at most this many lines a second
/// for each limit; the rest are counted, and the count logged when the
/// second ends.
static REFUSAL_LOG: LogRate = LogRate::new(5, Duration::from_secs(1));

fn log_refusal(peer: Option<std::net::SocketAddr>, reason: &'static str) {
    log_limited(
        &REFUSAL_LOG,
        reason,
        || tracing::warn!(?peer, reason, "connection refused: {reason} reached"),
        move |n| {
            tracing::warn!(
                reason,
                suppressed = n,
                "connection refused: {n} more ({reason}) suppressed in the last second"
            )
        },
    );
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut set: futures_util::stream::FuturesUnordered<F> = futures.into_iter().collect();
    use futures_util::StreamExt;
    while set.next().await.is_some() {}
}

/// The handshake failure reason of a client the authorizer refused.
pub const REFUSED: &str = "refused";

fn log_unauthorized(
    peer: Option<std::net::SocketAddr>,
    identity: Option<&vole_link::PeerIdentity>,
    reason: &str,
) {
    let identity = identity.map_or_else(|| "none".to_owned(), ToString::to_string);
    log_limited(
        &HANDSHAKE_LOG,
        REFUSED,
        || tracing::info!(?peer, %identity, %reason, "client refused by the authorizer"),
        move |n| {
            tracing::info!(
                reason = REFUSED,
                suppressed = n,
                "client refused by the authorizer: {n} more suppressed in the last second"
            )
        },
    );
}

/// Refused handshakes: at most this many lines a second for each reason;
/// the rest are counted, and the count logged when the second ends.
static HANDSHAKE_LOG: LogRate = LogRate::new(5, Duration::from_secs(1));

fn log_handshake_failure(peer: Option<std::net::SocketAddr>, e: &vole_transport::Error) {
    let reason = handshake_failure_reason(e);
    let error = vole_link::object::error_chain(e);
    // A peer that connects and closes (a port probe, a health check, a
    // client that gives up) is no fault of the server's: not a warning.
    if reason == "closed" {
        tracing::debug!(?peer, %error, "connection closed during handshake");
        return;
    }
    log_limited(
        &HANDSHAKE_LOG,
        reason,
        || tracing::warn!(?peer, %error, "connection refused during handshake"),
        move |n| {
            tracing::warn!(
                reason,
                suppressed = n,
                "connection refused during handshake: {n} more ({reason}) suppressed in the last second"
            )
        },
    );
}

pub(crate) async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted => {}
        // Out of descriptors (the connection stays queued) or the like:
        // log (at most once a second), pause, go on.
        _ => {
            crate::capacity::log_error("accept", &e);
            tokio::time::sleep(crate::capacity::BACKOFF).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use vole_link::publish::Published;
    use vole_link::{CallError, Error as LinkError, Value};
    use vole_transport::stream::{Conn, Prefixed};
    use vole_transport::vop::{self, ServerPolicy, Transport};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    fn plain_service() -> Service {
        plain_service_with(None)
    }

    fn plain_service_with(authorizer: Option<Authorizer>) -> Service {
        let config = ServiceConfig {
            transport: ServerSettings {
                transports: ServerPolicy::new(false, true),
                tls: None,
                vts: None,
                handshake_timeout: LIMIT,
            },
            link: LinkConfig {
                hold_peer: false,
                drain_quiet: DRAIN_QUIET,
                ..LinkConfig::default()
            },
            node_id: None,
            admission: Admission::default(),
            authorizer,
            proxy_from: None,
        };
        Service::new(
            config,
            Arc::new(|_| {
                Published::new("Gateway")
                    .method(
                        "echo",
                        "",
                        |(v,): (Value,)| async move { Ok::<_, CallError>(v) },
                    )
                    .into_object()
            }),
        )
    }

    /// Serves one connection on an ephemeral port; connects to it (PLAIN)
    /// and makes one call.
    async fn connect_and_echo(service: &Service) -> Result<Value, LinkError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            service.serve_connection(tcp);
        };
        let client = async {
            let config = vole_link::resolve::ClientConfig::plain();
            let (link, gw) =
                vole_link::resolve::connect_to("127.0.0.1", addr.port(), &config).await?;
            let v = gw.call("echo", (1,)).await;
            link.close().await;
            v
        };
        let ((), result) = tokio::time::timeout(LIMIT, async { tokio::join!(accept, client) })
            .await
            .expect("in time");
        result
    }

    fn refused(service: &Service) -> u64 {
        service
            .snapshot()
            .handshake_failures_by_reason
            .iter()
            .find(|(r, _)| r == REFUSED)
            .map_or(0, |(_, n)| *n)
    }

    #[tokio::test]
    async fn the_authorizer_sees_the_connection_and_may_refuse_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let refuse_second: Authorizer = Arc::new(move |info: &LinkInfo| {
            let mut seen = log.lock().expect("lock");
            seen.push((
                info.transport,
                info.peer_addr.is_some(),
                info.identity.clone(),
            ));
            if seen.len() == 2 {
                Err("the second one".to_owned())
            } else {
                Ok(())
            }
        });
        let service = plain_service_with(Some(refuse_second));
        assert!(
            connect_and_echo(&service).await.is_ok(),
            "the first is served"
        );
        assert_eq!(refused(&service), 0);
        let e = connect_and_echo(&service)
            .await
            .expect_err("the second is refused");
        assert!(
            !matches!(e, LinkError::Exception(_)),
            "closed, not answered: {e:?}"
        );
        assert_eq!(refused(&service), 1);
        assert!(
            connect_and_echo(&service).await.is_ok(),
            "the third is served"
        );
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, vec![(Some("PLAIN"), true, None); 3]);
        let forced = service.shutdown(LIMIT).await;
        assert_eq!(forced, 0);
    }

    #[test]
    fn admission_counts_connections_in_all_and_per_address() {
        let limits = Admission {
            max_clients: Some(3),
            max_clients_per_ip: Some(2),
        };
        let a: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
        let b: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
        let mut open = Open::default();
        assert_eq!(open.admit(Some(a), &limits), Ok(()));
        assert_eq!(open.admit(Some(a), &limits), Ok(()));
        assert_eq!(open.admit(Some(a), &limits), Err("max-clients-per-ip"));
        assert_eq!(open.admit(Some(b), &limits), Ok(()));
        assert_eq!(open.admit(Some(b), &limits), Err("max-clients"));
        open.release(Some(a));
        assert_eq!(open.admit(Some(b), &limits), Ok(()), "room again");
        open.release(Some(b));
        open.release(Some(b));
        assert!(
            !open.per_ip.contains_key(&b),
            "an address with none left is forgotten"
        );
        // No limits: everything is admitted.
        let mut open = Open::default();
        for _ in 0..100 {
            assert_eq!(open.admit(Some(a), &Admission::default()), Ok(()));
        }
    }

    /// A connection accepted before a stop but set up after it began is
    /// served and drained like the others: its link comes up and its first
    /// call is refused as closing (so the client retries elsewhere), instead
    /// of the connection being dropped mid-handshake.
    #[tokio::test]
    async fn a_connection_set_up_during_a_stop_is_drained_not_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let service = plain_service();
        // Accepted; its VOP negotiation waits for the client's line.
        service.serve_connection(accepted);
        let stopping = service.clone();
        let shutdown = tokio::spawn(async move { stopping.shutdown(LIMIT).await });
        tokio::time::timeout(LIMIT, service.stopping())
            .await
            .expect("the stop begins");

        let (transport, leftover) = vop::negotiate_client(&mut client, &[Transport::Plain], LIMIT)
            .await
            .expect("VOP");
        assert_eq!(transport, Transport::Plain);
        let setup = vole_link::LinkSetup {
            config: LinkConfig::default(),
            gateway: Published::new("Client").into_object(),
            info: LinkInfo::default(),
        };
        let conn = Conn::Plain(Prefixed::new(leftover, client));
        let (link, gw) = tokio::time::timeout(LIMIT, vole_link::connect(conn, setup))
            .await
            .expect("in time")
            .expect("the link handshake completes");
        match gw.call("echo", (1,)).await {
            Err(e @ LinkError::Closing(_)) => assert!(e.never_ran(), "{e}"),
            other => panic!("expected a closing refusal, got {other:?}"),
        }
        // The client goes away; the drain ends cleanly.
        tokio::time::timeout(LIMIT, link.close())
            .await
            .expect("client closes");
        let forced = tokio::time::timeout(LIMIT, shutdown)
            .await
            .expect("the stop ends")
            .expect("stop task");
        assert_eq!(forced, 0, "no link had to be forced");
    }
}
