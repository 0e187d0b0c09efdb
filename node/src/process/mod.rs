//! The node process: what `vole node` (started by the controller, never by
//! hand) runs.
//!
//! 1. Adopt the control socket the controller left at a known descriptor and
//!    receive the listening sockets over it (or none, in `dispatch` mode).
//! 2. Run a VOL control link on that socket; ask the controller for the
//!    [`NodeConfig`] (`hello`).
//! 3. Serve: accept as the balance mode says (only while holding grants in
//!    `grant` mode, freely in `shared` and `reuseport`, or take connections
//!    the controller passes in `dispatch`), reporting connections opened and
//!    closed.
//! 4. Stop when the controller says so (draining links), or at once when the
//!    control link closes: a node never outlives its controller.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use vole_link::{LinkConfig, LinkInfo, LinkSetup};
use vole_transport::stream::ServerSettings;
use vole_transport::tls;
use vole_transport::vop::ServerPolicy;

use crate::capacity::{Capacity, FdBudget};
use crate::{Authorizer, Error, GatewayFactory, Service, ServiceConfig, SessionObserver};
use vole_control::control::{
    Balance, NodeConfig, EXIT_CONFIG, HANDOFF_DISPATCH, HANDOFF_LISTENERS,
};
use vole_control::fdpass;
use vole_transport::tickets::{ticket_context, with_ticketer, SharedTicketer};

mod accept;
mod control;

use accept::*;
use control::*;

/// How long a TLS session ticket is valid, seconds.
pub const TICKET_LIFETIME_SECS: u32 = 6 * 3600;

/// Where the controller left things for the node.
#[derive(Debug, Clone, Copy)]
pub struct NodeArgs {
    /// The node's id (for logs until the controller confirms it).
    pub id: u32,
    /// The control socket.
    pub control_fd: RawFd,
    /// The socket connections arrive on in `dispatch` mode.
    pub conn_fd: Option<RawFd>,
}

/// How the node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeExit {
    /// Stopped on the controller's request; every link drained.
    Stopped,
    /// Stopped on request, but some links had to be closed by force.
    StoppedForced,
    /// The controller went away.
    Orphaned,
    /// The configuration is unusable; the controller must not restart it.
    ConfigError,
}

impl NodeExit {
    /// The process exit code for this outcome.
    pub fn code(self) -> i32 {
        match self {
            NodeExit::Stopped | NodeExit::Orphaned => 0,
            NodeExit::StoppedForced => 1,
            NodeExit::ConfigError => EXIT_CONFIG,
        }
    }
}

fn listener_from(fd: OwnedFd) -> Result<TcpListener, Error> {
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)
        .map_err(|e| Error::Handoff(format!("listener: {e}")))?;
    TcpListener::from_std(std).map_err(|e| Error::Handoff(format!("listener: {e}")))
}

fn service_config(
    cfg: &NodeConfig,
    ticketer: &Arc<SharedTicketer>,
    authorizer: Option<Authorizer>,
) -> Result<ServiceConfig, Error> {
    let tls = match &cfg.tls {
        Some(material) => {
            let client_auth = material.client_ca_pem.as_ref().map(|ca| tls::ClientAuth {
                ca_pem: ca.clone().into_bytes(),
                required: material.client_auth_required,
            });
            let config = tls::server_config_from_pem(
                material.cert_pem.as_bytes(),
                material.key_pem.as_bytes(),
                client_auth.as_ref(),
            )?
            .config;
            Some(with_ticketer(
                &config,
                ticketer.clone(),
                ticket_context(client_auth.as_ref()),
            ))
        }
        None => None,
    };
    let proxy_from = match &cfg.proxy_from {
        None => None,
        Some(nets) => Some(
            nets.iter()
                .map(|n| {
                    n.parse()
                        .map_err(|e| Error::Config(format!("proxy-protocol-from {n:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let vts = match &cfg.vts {
        Some(material) => {
            let key = vole_transport::vts::VtsKey::from_pem(&material.key_pem)?;
            let mut settings = vole_transport::vts::ServerSettings::new(Arc::new(key));
            let ciphers: Vec<_> = material
                .ciphers
                .iter()
                .filter_map(|c| vole_transport::vts::Suite::parse(c))
                .collect();
            if !ciphers.is_empty() {
                settings.suites = ciphers;
            }
            Some(Arc::new(settings))
        }
        None => None,
    };
    Ok(ServiceConfig {
        proxy_from,
        transport: ServerSettings {
            transports: ServerPolicy::with_vts(tls.is_some(), vts.is_some(), cfg.plain),
            tls,
            vts,
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms.max(1)),
        },
        link: LinkConfig {
            hold_peer: false,
            max_message: cfg.max_message,
            write_timeout: Duration::from_millis(cfg.write_timeout_ms.max(1)),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms.max(1)),
            keep_alive: cfg.keep_alive_ms.map(Duration::from_millis),
            idle_timeout: cfg.idle_timeout_ms.map(Duration::from_millis),
            drain_quiet: crate::DRAIN_QUIET,
            max_call_time: cfg
                .max_call_time_ms
                .map(|ms| Duration::from_millis(ms.max(1))),
            ..budgeted(&cfg.budgets)
        },
        node_id: Some(cfg.node_id),
        admission: crate::Admission {
            max_clients: cfg.budgets.max_clients,
            max_clients_per_ip: cfg.budgets.max_clients_per_ip,
        },
        authorizer: crate::auth::all_of([
            cfg.access
                .clone()
                .map(|rules| Arc::new(crate::AllowList::new(rules)) as Authorizer),
            authorizer,
        ]),
    })
}

/// The link defaults with the budgets the controller sent.
fn budgeted(b: &vole_control::control::Budgets) -> LinkConfig {
    let d = LinkConfig::default();
    LinkConfig {
        max_inflight: b.max_inflight.unwrap_or(d.max_inflight),
        overload: if b.overload_refuse {
            vole_link::Overload::Refuse
        } else {
            vole_link::Overload::Wait
        },
        max_buffered: b.link_buffer_budget.unwrap_or(d.max_buffered),
        budget: Some(Arc::new(vole_link::budget::Budget::new(
            b.node_buffer_budget
                .unwrap_or(vole_link::budget::DEFAULT_NODE_BUDGET),
        ))),
        ..d
    }
}

/// Fault injection for tests of the controller's supervision: the
/// environment variable `VOLE_TEST_NODE_FAULT` set to `exit` makes a node exit
/// (code 3) right after it receives its sockets, as a crashing node would;
/// `config` makes it report its configuration unusable. Never set in
/// production; the controller passes its environment on to nodes, so a test
/// sets it on the controller.
pub const FAULT_ENV: &str = "VOLE_TEST_NODE_FAULT";

/// What a node's init gets: the node's id and the hosted service's own
/// settings (the `[service]` table), as the controller sent them.
#[derive(Debug, Clone)]
pub struct NodeStart {
    /// The node's id.
    pub node_id: u32,
    /// The `[service]` settings table as TOML text, if the settings have
    /// one.
    pub service: Option<String>,
}

/// Why a node's init failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The service's settings are unusable: the node reports a
    /// configuration error and is not restarted.
    #[error("the service's settings are unusable: {0}")]
    Config(String),
    /// The init failed (a database that does not answer, say): the node
    /// exits and the controller's restart policy decides what next.
    #[error("{0}")]
    Failed(String),
}

/// A future that makes the node's gateway factory.
pub type InitFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<GatewayFactory, InitError>> + Send>>;

/// Makes what a node serves, once, after the controller's configuration
/// has arrived and before the node takes connections (open a database
/// pool, load a model).
pub type NodeInit = Box<dyn FnOnce(NodeStart) -> InitFuture + Send>;

/// A [`NodeInit`] that serves `factory` and needs no set-up.
pub fn serve_factory(factory: GatewayFactory) -> NodeInit {
    Box::new(move |_| Box::pin(std::future::ready(Ok(factory))))
}

/// Runs a node until it is stopped or orphaned.
///
/// `init` runs once the controller's configuration has arrived; while it
/// runs the node answers heartbeats, and a stop or the controller's death
/// ends it. Its failure ends the node: [`InitError::Config`] as a
/// configuration error (not restarted), [`InitError::Failed`] as
/// [`Error::Init`] (restarted as the restart policy says).
///
/// `authorizer` (the host's own, if it has one) decides which clients are
/// served, together with the allow lists the controller sends.
pub async fn run(
    args: NodeArgs,
    init: NodeInit,
    authorizer: Option<Authorizer>,
) -> Result<NodeExit, Error> {
    let fault = std::env::var(FAULT_ENV).ok();
    let state = Arc::new(NodeState {
        started: Instant::now(),
        service: OnceLock::new(),
        capacity: OnceLock::new(),
        grants: Semaphore::new(0),
        stop: watch::channel(None).0,
        ticketer: SharedTicketer::new(TICKET_LIFETIME_SECS),
        not_ready: std::sync::atomic::AtomicBool::new(false),
    });

    let control = fdpass::adopt_unix_stream(args.control_fd)
        .map_err(|e| Error::Handoff(format!("control socket: {e}")))?;
    let conn_socket = match args.conn_fd {
        Some(fd) => Some(
            fdpass::adopt_unix_stream(fd)
                .map_err(|e| Error::Handoff(format!("connection socket: {e}")))?,
        ),
        None => None,
    };
    let mut tag = [0u8; 1];
    let fds = fdpass::recv(&control, &mut tag)
        .await
        .map_err(|e| Error::Handoff(e.to_string()))?
        .ok_or_else(|| {
            Error::Handoff("controller closed the control socket before the handoff".to_owned())
        })?;
    let listeners = match tag[0] {
        HANDOFF_LISTENERS if !fds.is_empty() => fds
            .into_iter()
            .map(listener_from)
            .collect::<Result<Vec<_>, _>>()?,
        HANDOFF_DISPATCH if fds.is_empty() && conn_socket.is_some() => Vec::new(),
        other => {
            return Err(Error::Handoff(format!(
                "unexpected handoff frame {other:#04x} with {} fds",
                fds.len()
            )))
        }
    };

    if fault.as_deref() == Some("exit") {
        tracing::error!("{FAULT_ENV}=exit: exiting at once");
        std::process::exit(3);
    }
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: true,
            handshake_timeout: Duration::from_secs(10),
            ..LinkConfig::default()
        },
        gateway: control_object(state.clone()),
        info: LinkInfo::default(),
    };
    let (link, controller) = vole_link::connect(control, setup)
        .await
        .map_err(|e| Error::Control(e.to_string()))?;
    let config_json: String = controller
        .call_as("hello", (std::process::id(),))
        .await
        .map_err(|e| Error::Control(format!("hello: {e}")))?;
    let cfg: NodeConfig = serde_json::from_str(&config_json)
        .map_err(|e| Error::Control(format!("node configuration: {e}")))?;
    if cfg.node_id != args.id {
        return Err(Error::Control(format!(
            "controller says node {} but this is node {}",
            cfg.node_id, args.id
        )));
    }
    if fault.as_deref() == Some("config") {
        tracing::error!("{FAULT_ENV}=config: reporting the configuration unusable");
        return Ok(NodeExit::ConfigError);
    }
    if let Some(keys) = &cfg.tickets {
        if !keys.install(&state.ticketer) {
            tracing::warn!("malformed ticket keys from the controller; tickets disabled until the next rotation");
        }
    }
    let service_cfg = match service_config(&cfg, &state.ticketer, authorizer) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %vole_link::object::error_chain(&e), "node configuration is unusable");
            return Ok(NodeExit::ConfigError);
        }
    };
    let start = NodeStart {
        node_id: cfg.node_id,
        service: cfg.service.clone(),
    };
    let factory = tokio::select! {
        made = init(start) => match made {
            Ok(f) => f,
            Err(InitError::Config(e)) => {
                tracing::error!(error = %e, "the service's settings are unusable");
                return Ok(NodeExit::ConfigError);
            }
            Err(InitError::Failed(e)) => return Err(Error::Init(e)),
        },
        req = state.stop_requested() => {
            tracing::info!(graceful = req.graceful, "stopped before the service's init finished");
            link.close().await;
            return Ok(NodeExit::Stopped);
        }
        reason = link.closed() => {
            tracing::warn!(%reason, "control link closed during the service's init: the controller is gone");
            return Ok(NodeExit::Orphaned);
        }
    };
    let reports = Arc::new(Reports::default());
    // Measured now: what is open besides connections is open by now.
    let budget = FdBudget::measure();
    let capacity = Arc::new(Capacity::new(budget));
    let _ = state.capacity.set(capacity.clone());
    let observer: Arc<dyn SessionObserver> = Arc::new(Observers(reports.clone(), capacity.clone()));
    let service = Service::with_observer(service_cfg, factory, Some(observer));
    let _ = state.service.set(service.clone());
    if state.not_ready.load(std::sync::atomic::Ordering::SeqCst) {
        service.set_not_ready();
    }
    tokio::spawn(report_sessions(
        reports.clone(),
        controller.clone(),
        cfg.balance.report_delay(),
    ));

    let mut accept_tasks = Vec::new();
    match cfg.balance {
        Balance::Grant => {
            let (svc, st, rep) = (service.clone(), state.clone(), reports.clone());
            let cap = capacity.clone();
            accept_tasks.push(tokio::spawn(async move {
                accept_with_grants(svc, st, rep, cap, listeners).await
            }));
        }
        Balance::Shared | Balance::Reuseport => {
            for l in listeners {
                let (svc, cap) = (service.clone(), capacity.clone());
                accept_tasks.push(tokio::spawn(
                    async move { accept_freely(svc, cap, l).await },
                ));
            }
        }
        Balance::Dispatch => {
            let (svc, cap) = (service.clone(), capacity.clone());
            let sock = conn_socket.ok_or_else(|| {
                Error::Handoff("dispatch mode without a connection socket".to_owned())
            })?;
            accept_tasks.push(tokio::spawn(async move {
                take_dispatched(svc, cap, sock).await
            }));
        }
    }
    if let Some(n) = budget.capacity() {
        if n == 0 {
            tracing::error!(
                fd_limit = budget.limit,
                open = budget.baseline,
                "the descriptor limit leaves no room for connections: raise it (ulimit -n, LimitNOFILE=)"
            );
        }
        tracing::info!(fd_limit = budget.limit, connections = n, "descriptor limit");
        let _ = controller.call_oneway("capacity", (n,)).await;
    }
    tokio::spawn(resample_budget(capacity.clone(), controller.clone()));
    let _ = controller.call_oneway("ready", ()).await;
    tracing::info!(
        node = cfg.node_id,
        balance = cfg.balance.name(),
        "node serving"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Control(format!("signal handler: {e}")))?;
    let (request, orphaned) = tokio::select! {
        req = state.stop_requested() => (req, false),
        reason = link.closed() => {
            tracing::warn!(%reason, "control link closed: the controller is gone; stopping");
            (StopRequest { graceful: true, grace: Duration::from_secs(1) }, true)
        }
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping");
            (StopRequest { graceful: true, grace: Duration::from_secs(1) }, false)
        }
    };
    service.stop_accepting();
    // A forced stop that arrives while draining cuts the drain short.
    let grace = if request.graceful {
        request.grace
    } else {
        Duration::ZERO
    };
    let drain = service.shutdown(grace.max(Duration::from_millis(1)));
    tokio::pin!(drain);
    let forced = tokio::select! {
        forced = &mut drain => forced,
        _ = state.force_requested() => {
            // Links cut here were not drained: they count as forced (the
            // drain itself then sees nothing left to force).
            let open = service.links();
            for l in &open {
                l.abort();
            }
            drain.await.max(open.len())
        }
    };
    for t in accept_tasks {
        t.abort();
    }
    link.close().await;
    Ok(match (orphaned, forced) {
        (true, _) => NodeExit::Orphaned,
        (false, 0) => NodeExit::Stopped,
        (false, _) => NodeExit::StoppedForced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vole_control::quiet::QuietStream;

    const DELAY: Duration = Duration::from_millis(5);

    /// Connections opened and closed within the delay after the first go
    /// out as one report, counted right; nothing is reported twice.
    #[tokio::test(start_paused = true)]
    async fn reports_coalesce_within_the_delay() {
        let reports = Arc::new(Reports::default());
        for _ in 0..10 {
            reports.opened();
        }
        let later = reports.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DELAY / 2).await;
            for _ in 0..3 {
                later.closed();
            }
        });
        let start = tokio::time::Instant::now();
        assert_eq!(reports.next(DELAY).await, (10, 3));
        assert!(start.elapsed() >= DELAY, "the report waited for more");
        assert!(
            tokio::time::timeout(Duration::from_secs(1), reports.next(DELAY))
                .await
                .is_err(),
            "nothing new: no report"
        );
        reports.closed();
        assert_eq!(
            reports.next(DELAY).await,
            (0, 1),
            "a later event is reported"
        );
    }

    /// A node that used its last grant reports at once, with whatever is
    /// counted.
    #[tokio::test(start_paused = true)]
    async fn flush_now_skips_the_delay() {
        let reports = Arc::new(Reports::default());
        reports.closed();
        reports.opened();
        reports.flush_now();
        let start = tokio::time::Instant::now();
        assert_eq!(reports.next(Duration::from_secs(60)).await, (1, 1));
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Urgency arriving while a report waits cuts the wait short.
        reports.opened();
        let urgent = reports.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            urgent.opened();
            urgent.flush_now();
        });
        let start = tokio::time::Instant::now();
        assert_eq!(reports.next(Duration::from_secs(60)).await, (2, 0));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    fn plain_service() -> Service {
        observed_service(None)
    }

    fn observed_service(observer: Option<Arc<dyn SessionObserver>>) -> Service {
        use vole_link::publish::Published;
        let config = ServiceConfig {
            transport: ServerSettings {
                transports: ServerPolicy::new(false, true),
                tls: None,
                vts: None,
                handshake_timeout: Duration::from_secs(10),
            },
            link: LinkConfig {
                hold_peer: false,
                ..LinkConfig::default()
            },
            node_id: Some(0),
            admission: Default::default(),
            authorizer: None,
            proxy_from: None,
        };
        Service::with_observer(
            config,
            Arc::new(|_| Published::new("Gateway").into_object()),
            observer,
        )
    }

    /// Accepted TCP connections (server ends) and their clients.
    fn tcp_pairs(n: usize) -> (Vec<std::net::TcpStream>, Vec<std::net::TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let accepted = (0..n)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        (accepted, clients)
    }

    async fn accepted_reaches(service: &Service, n: u64) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while service.snapshot().accepted < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} of {n} connections served", service.snapshot().accepted));
    }

    /// A frame the kernel truncated (the table was full, or, here, too many
    /// descriptors) does not end the receive loop, as ENOBUFS did in issue
    /// #13: what arrived is served, the node counts as full for a moment,
    /// and the next frame is taken as usual.
    #[tokio::test]
    async fn a_truncated_frame_is_served_in_part_and_the_loop_goes_on() {
        use std::os::fd::AsRawFd;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut controller = QuietStream::new(ours).expect("controller end");
        let node = QuietStream::new(theirs).expect("node end");
        let n = fdpass::MAX_FDS + 2;
        let (accepted, clients) = tcp_pairs(n + 1);
        let raw: Vec<RawFd> = accepted[..n].iter().map(AsRawFd::as_raw_fd).collect();
        nix::sys::socket::sendmsg::<()>(
            controller.as_raw_fd(),
            &[std::io::IoSlice::new(&[n as u8])],
            &[nix::sys::socket::ControlMessage::ScmRights(&raw)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        let last = std::os::fd::AsFd::as_fd(&accepted[n]);
        fdpass::send(&mut controller, &[1], &[last])
            .await
            .expect("send");
        drop(accepted);
        let service = plain_service();
        let capacity = Arc::new(Capacity::new(FdBudget {
            limit: None,
            baseline: 0,
        }));
        let task = tokio::spawn(take_dispatched(service.clone(), capacity.clone(), node));
        accepted_reaches(&service, fdpass::MAX_FDS as u64 + 1).await;
        assert_eq!(service.snapshot().accepted, fdpass::MAX_FDS as u64 + 1);
        assert!(capacity.is_full(), "a truncated frame marks the node full");
        assert!(!task.is_finished(), "the loop goes on");
        drop(controller);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the controller's going away ends it")
            .expect("task");
        // (Clients gone, their handshakes end at once.)
        drop(clients);
        service.shutdown(Duration::from_millis(10)).await;
    }

    /// At capacity the node leaves frames in the socket; a connection that
    /// closes makes room and the next frame is taken.
    #[tokio::test]
    async fn frames_wait_in_the_socket_while_the_node_is_full() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut controller = QuietStream::new(ours).expect("controller end");
        let node = QuietStream::new(theirs).expect("node end");
        let (accepted, mut clients) = tcp_pairs(2);
        for conn in &accepted {
            fdpass::send(&mut controller, &[1], &[std::os::fd::AsFd::as_fd(conn)])
                .await
                .expect("send");
        }
        drop(accepted);
        let reports = Arc::new(Reports::default());
        // Room for one connection.
        let capacity = Arc::new(Capacity::new(FdBudget {
            limit: Some(crate::capacity::FD_RESERVE + 1),
            baseline: 0,
        }));
        let service = observed_service(Some(Arc::new(Observers(reports, capacity.clone()))));
        let task = tokio::spawn(take_dispatched(service.clone(), capacity.clone(), node));
        accepted_reaches(&service, 1).await;
        assert!(capacity.is_full());
        // Held back: the second frame is still in the socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(service.snapshot().accepted, 1, "the node is full");
        // The first client goes away (its handshake fails): room.
        drop(clients.remove(0));
        accepted_reaches(&service, 2).await;
        assert!(!task.is_finished());
        task.abort();
        drop(clients);
        service.shutdown(Duration::from_millis(10)).await;
    }

    /// Every connection of every frame is served (each client gets its
    /// VOP answer), and nothing is written back to the controller.
    #[tokio::test]
    async fn dispatched_connections_are_served_and_nothing_goes_back() {
        use std::os::fd::AsFd;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut controller = QuietStream::new(ours).expect("controller end");
        let node = QuietStream::new(theirs).expect("node end");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let accepted: Vec<_> = (0..3)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        let fds: Vec<_> = accepted.iter().map(AsFd::as_fd).collect();
        fdpass::send(&mut controller, &[2], &fds[..2])
            .await
            .expect("send");
        fdpass::send(&mut controller, &[1], &fds[2..])
            .await
            .expect("send");
        drop(accepted); // the frames hold them now
        let service = plain_service();
        let capacity = Arc::new(Capacity::new(FdBudget {
            limit: None,
            baseline: 0,
        }));
        let task = tokio::spawn(take_dispatched(service.clone(), capacity, node));
        for client in clients {
            let mut client = tokio::io::BufReader::new(client);
            client
                .get_mut()
                .write_all(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\n")
                .await
                .expect("hello");
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(10), client.read_line(&mut line))
                .await
                .expect("in time")
                .expect("answer");
            assert_eq!(line, "VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n");
        }
        assert_eq!(service.snapshot().accepted, 3);
        let mut buf = [0u8; 8];
        assert_eq!(
            controller.try_read(&mut buf).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "the node sends nothing back"
        );
        // The controller goes away: the node stops taking connections.
        drop(controller);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends")
            .expect("task");
        service.shutdown(Duration::from_millis(10)).await;
    }
}
