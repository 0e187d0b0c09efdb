//! A client of one service that runs on several hosts: every address a
//! name resolves to (a Kubernetes headless Service gives one per pod), or
//! a static list. New links go to the hosts in turn, so they spread; a
//! host whose connection fails is set aside, for a backoff that doubles
//! with each failure, and the next one is tried; a host that connects is
//! trusted again. No membership protocol: DNS (or the list) says which
//! hosts there are. A name may also be looked up as DNS SRV records
//! (`_vop._tcp.NAME`, [`Pool::resolve_srv`]), which name the hosts and
//! their ports: a Kubernetes headless Service publishes them for a port
//! named `vop`.
//!
//! [`Endpoints`] is the policy, with no I/O or clock of its own (the time
//! is passed in); [`Pool`] connects with it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::resolve::{connect_to, ClientConfig};
use crate::{Error, Link, RemoteObject};

/// The first backoff of a host that failed.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest a failing host is set aside.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Host {
    addr: SocketAddr,
    /// Failures since it last connected.
    failures: u32,
    /// Links made to it.
    links: u64,
    /// Connections to it that failed, in all.
    failed: u64,
    /// Set aside until then.
    aside_until: Option<Instant>,
}

/// Which host the next link goes to (see the [module](self) documentation).
#[derive(Debug, Clone)]
pub struct Endpoints {
    hosts: Vec<Host>,
    next: usize,
}

impl Endpoints {
    /// The hosts at `addrs` (duplicates dropped), all trusted.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Endpoints {
        let mut hosts: Vec<Host> = Vec::new();
        for addr in addrs {
            if !hosts.iter().any(|h| h.addr == addr) {
                hosts.push(Host {
                    addr,
                    failures: 0,
                    links: 0,
                    failed: 0,
                    aside_until: None,
                });
            }
        }
        Endpoints { hosts, next: 0 }
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The order to try hosts in for the next link at `now`: from the next
    /// one in turn, those not set aside first, then (when every host is
    /// aside) the rest, soonest back first, so a link is still attempted.
    /// Advances the turn.
    pub fn order(&mut self, now: Instant) -> Vec<SocketAddr> {
        let n = self.hosts.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next % n;
        self.next = (start + 1) % n;
        let turn = (0..n).map(|i| &self.hosts[(start + i) % n]);
        let (mut up, mut aside): (Vec<&Host>, Vec<&Host>) =
            turn.partition(|h| h.aside_until.is_none_or(|t| t <= now));
        aside.sort_by_key(|h| h.aside_until);
        up.append(&mut aside);
        up.into_iter().map(|h| h.addr).collect()
    }

    /// A connection to `addr` failed at `now`: set it aside, for longer
    /// each time.
    pub fn failed(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.addr == addr) {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1u32 << h.failures.min(16))
                .min(MAX_BACKOFF);
            h.failures = h.failures.saturating_add(1);
            h.failed += 1;
            h.aside_until = Some(now + backoff);
        }
    }

    /// A connection to `addr` succeeded: trusted again.
    pub fn succeeded(&mut self, addr: SocketAddr) {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.addr == addr) {
            h.failures = 0;
            h.links += 1;
            h.aside_until = None;
        }
    }

    /// Whether `addr` is set aside at `now`.
    pub fn is_aside(&self, addr: SocketAddr, now: Instant) -> bool {
        self.hosts
            .iter()
            .any(|h| h.addr == addr && h.aside_until.is_some_and(|t| t > now))
    }
}

/// What SRV records are looked up for a name: `_vop._tcp.` before it.
pub const SRV_PREFIX: &str = "_vop._tcp.";

/// One SRV record's target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SrvTarget {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
}

/// SRV targets by priority, lowest first; within one, heaviest first (a
/// deterministic order: the pool spreads links over all of a tier, so the
/// weights' random draw of RFC 2782 would only reorder them).
fn srv_tiers(mut records: Vec<SrvTarget>) -> Vec<Vec<SrvTarget>> {
    records.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.weight.cmp(&a.weight))
            .then(a.target.cmp(&b.target))
    });
    let mut tiers: Vec<Vec<SrvTarget>> = Vec::new();
    for r in records {
        match tiers.last_mut() {
            Some(t) if t.first().is_some_and(|f| f.priority == r.priority) => t.push(r),
            _ => tiers.push(vec![r]),
        }
    }
    tiers
}

/// What a [`Pool`] did with one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStats {
    /// The host.
    pub addr: SocketAddr,
    /// Links made to it.
    pub links: u64,
    /// Connections to it that failed (or calls that found it frozen).
    pub failed: u64,
}

/// Links to one service over several hosts (see the
/// [module](self) documentation).
#[derive(Debug)]
pub struct Pool {
    /// The name TLS verifies every host against (and sends as SNI).
    host: String,
    config: ClientConfig,
    endpoints: Mutex<Endpoints>,
}

impl Pool {
    /// Every address `host:port` resolves to, now.
    pub async fn resolve(host: &str, port: u16, config: ClientConfig) -> Result<Pool, Error> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            config.transport.connect_timeout,
            tokio::net::lookup_host((bare, port)),
        )
        .await
        .map_err(|_| Error::Timeout("name resolution"))?
        .map_err(vole_transport::Error::Io)?
        .collect();
        if addrs.is_empty() {
            return Err(Error::Usage(format!("{host} resolves to no address")));
        }
        Ok(Pool::with_addrs(host, addrs, config))
    }

    /// The hosts the SRV records of `_vop._tcp.NAME` name (RFC 2782), at
    /// the ports they give, resolved now with the system's DNS settings
    /// (`/etc/resolv.conf`, search domains included). The targets of the
    /// lowest priority are used (the others are backups: used only when
    /// none of those resolves), in the order of their weights; every
    /// address of each. TLS verifies each host as `name`.
    pub async fn resolve_srv(name: &str, config: ClientConfig) -> Result<Pool, Error> {
        let query = format!("{SRV_PREFIX}{name}");
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::Transport(vole_transport::Error::Io(std::io::Error::other(format!(
                "{what}: {e}"
            ))))
        };
        let limit = config.transport.connect_timeout;
        let lookups = async {
            let resolver = hickory_resolver::Resolver::builder_tokio()
                .and_then(|b| b.build())
                .map_err(|e| failed("reading the system's DNS settings", &e))?;
            let srv = resolver
                .srv_lookup(query.as_str())
                .await
                .map_err(|e| failed(&format!("SRV lookup of {query}"), &e))?;
            let records: Vec<SrvTarget> = srv
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(SrvTarget {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_utf8(),
                    }),
                    _ => None,
                })
                .collect();
            let mut last = None;
            for tier in srv_tiers(records) {
                let mut addrs = Vec::new();
                for t in &tier {
                    match resolver.lookup_ip(t.target.as_str()).await {
                        Ok(ips) => addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, t.port))),
                        Err(e) => last = Some(failed(&format!("resolving {}", t.target), &e)),
                    }
                }
                if !addrs.is_empty() {
                    return Ok(addrs);
                }
            }
            Err(last.unwrap_or_else(|| Error::Usage(format!("{query} names no host"))))
        };
        let addrs = tokio::time::timeout(limit, lookups)
            .await
            .map_err(|_| Error::Timeout("SRV lookup"))??;
        Ok(Pool::with_addrs(name, addrs, config))
    }

    /// The hosts at `addrs`, each verified (TLS) as `host`.
    pub fn with_addrs(
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
        config: ClientConfig,
    ) -> Pool {
        Pool {
            host: host.to_owned(),
            config,
            endpoints: Mutex::new(Endpoints::new(addrs)),
        }
    }

    /// The hosts, in no particular order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .lock()
            .map(|e| e.hosts.iter().map(|h| h.addr).collect())
            .unwrap_or_default()
    }

    /// What the pool did with each host, in the order given.
    pub fn stats(&self) -> Vec<HostStats> {
        self.endpoints
            .lock()
            .map(|e| {
                e.hosts
                    .iter()
                    .map(|h| HostStats {
                        addr: h.addr,
                        links: h.links,
                        failed: h.failed,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets `addr` aside as if a connection to it had failed: a call on it
    /// found it unresponsive.
    pub fn set_aside(&self, addr: SocketAddr) {
        if let Ok(mut e) = self.endpoints.lock() {
            e.failed(addr, Instant::now());
        }
    }

    /// A new link, to the next host in turn that connects; the host it
    /// went to. Hosts that fail are set aside and the next is tried; the
    /// error is the last host's when none connects.
    pub async fn connect(&self) -> Result<(Link, RemoteObject, SocketAddr), Error> {
        let order = self
            .endpoints
            .lock()
            .map(|mut e| e.order(Instant::now()))
            .unwrap_or_default();
        let mut last = Error::Usage("the pool has no hosts".to_owned());
        for addr in order {
            match self.connect_addr(addr).await {
                Ok((link, gw)) => {
                    if let Ok(mut e) = self.endpoints.lock() {
                        e.succeeded(addr);
                    }
                    return Ok((link, gw, addr));
                }
                Err(err) => {
                    tracing::debug!(%addr, error = %err, "host set aside");
                    if let Ok(mut e) = self.endpoints.lock() {
                        e.failed(addr, Instant::now());
                    }
                    last = err;
                }
            }
        }
        Err(last)
    }

    async fn connect_addr(&self, addr: SocketAddr) -> Result<(Link, RemoteObject), Error> {
        let mut config = self.config.clone();
        if config.transport.server_name.is_none() && config.transport.tls.is_some() {
            let bare = self
                .host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(&self.host);
            config.transport.server_name = Some(vole_transport::tls::server_name(bare)?);
        }
        connect_to(&addr.ip().to_string(), addr.port(), &config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Links go round the hosts; a failed host goes to the back for its
    /// backoff, which doubles and is capped; success restores it.
    #[test]
    fn hosts_take_turns_and_failures_back_off() {
        let t0 = Instant::now();
        let mut e = Endpoints::new([addr(1), addr(2), addr(3), addr(2)]);
        assert_eq!(e.len(), 3);
        let firsts: Vec<u16> = (0..6).map(|_| e.order(t0)[0].port()).collect();
        assert_eq!(firsts, [1, 2, 3, 1, 2, 3]);
        e.failed(addr(2), t0);
        assert!(e.is_aside(addr(2), t0));
        // Its turn: tried last.
        e.order(t0);
        assert_eq!(e.order(t0), [addr(3), addr(1), addr(2)]);
        assert!(!e.is_aside(addr(2), t0 + FIRST_BACKOFF));
        e.failed(addr(2), t0);
        assert!(e.is_aside(addr(2), t0 + FIRST_BACKOFF));
        assert!(!e.is_aside(addr(2), t0 + FIRST_BACKOFF * 2));
        for _ in 0..40 {
            e.failed(addr(2), t0);
        }
        assert!(e.is_aside(addr(2), t0 + MAX_BACKOFF - FIRST_BACKOFF));
        assert!(!e.is_aside(addr(2), t0 + MAX_BACKOFF));
        e.succeeded(addr(2));
        assert!(!e.is_aside(addr(2), t0));
    }

    /// SRV targets go by priority, then weight; a tier is all of one
    /// priority.
    #[test]
    fn srv_targets_are_tiered_by_priority_and_ordered_by_weight() {
        let t = |priority, weight, target: &str| SrvTarget {
            priority,
            weight,
            port: 4433,
            target: target.to_owned(),
        };
        let tiers = srv_tiers(vec![
            t(20, 5, "backup."),
            t(10, 1, "light."),
            t(10, 9, "heavy."),
            t(10, 1, "also-light."),
        ]);
        let names: Vec<Vec<&str>> = tiers
            .iter()
            .map(|tier| tier.iter().map(|r| r.target.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            [vec!["heavy.", "also-light.", "light."], vec!["backup."]]
        );
        assert!(srv_tiers(Vec::new()).is_empty());
    }

    /// With every host aside, a link is still attempted: soonest back
    /// first.
    #[test]
    fn all_aside_still_tries_the_soonest_back() {
        let t0 = Instant::now();
        let mut e = Endpoints::new([addr(1), addr(2)]);
        e.failed(addr(1), t0);
        e.failed(addr(1), t0);
        e.failed(addr(2), t0);
        assert_eq!(e.order(t0), [addr(2), addr(1)]);
        assert!(Endpoints::new([]).order(t0).is_empty());
    }

    async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = l.local_addr().expect("addr");
        (l, a)
    }

    /// Against real sockets: a closed port is set aside and the links go
    /// to the host that serves; with none serving the error says so.
    #[tokio::test]
    async fn a_dead_host_is_skipped_and_set_aside() {
        use crate::publish::Published;
        let (live, live_addr) = listener().await;
        let (dead, dead_addr) = listener().await;
        drop(dead);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = live.accept().await {
                tokio::spawn(async move {
                    let settings = vole_transport::stream::ServerSettings {
                        transports: vole_transport::vop::ServerPolicy::new(false, true),
                        tls: None,
                        vts: None,
                        handshake_timeout: Duration::from_secs(5),
                    };
                    if let Ok((conn, info)) = vole_transport::stream::accept(tcp, &settings).await {
                        let setup = crate::LinkSetup {
                            config: crate::LinkConfig::default(),
                            gateway: Published::new("G").into_object(),
                            info: crate::LinkInfo::from_conn(&info),
                        };
                        let _ = crate::serve(conn, setup, |_| {}).await;
                    }
                });
            }
        });
        let pool = Pool::with_addrs("127.0.0.1", [dead_addr, live_addr], ClientConfig::plain());
        for _ in 0..4 {
            let (link, _gw, at) = pool.connect().await.expect("a link");
            assert_eq!(at, live_addr);
            link.abort();
        }
        assert!(pool
            .endpoints
            .lock()
            .expect("lock")
            .is_aside(dead_addr, Instant::now()));
        let none = Pool::with_addrs("127.0.0.1", [dead_addr], ClientConfig::plain());
        assert!(none.connect().await.is_err());
    }
}
