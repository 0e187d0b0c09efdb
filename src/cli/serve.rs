//! `vole serve`: the demo gateway, in one process (`--nodes 0`) or as a
//! controller with node processes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use vole_controller::admin::{
    AdminHandler, AdminRequest, AdminResponse, AdminSocket, NodeReport, StatusReport,
};
use vole_controller::balance::Limits;
use vole_controller::restart::RestartPolicy;
use vole_controller::{Bound, ControllerConfig, Outcome};
use vole_link::LinkConfig;
use vole_node::control::{NodeConfig, TlsFiles};
use vole_node::{Service, ServiceConfig};
use vole_transport::stream::ServerSettings;
use vole_transport::tickets::{with_ticketer, SharedTicketer, TicketKey};
use vole_transport::tls::{self, ServerIdentity};
use vole_transport::vop::ServerPolicy;

use super::exit::{self, Failure};
use super::ServeArgs;

fn seconds(value: f64, flag: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{flag} must be a positive number of seconds"
            ))
        })
}

fn state_dir(args: &ServeArgs) -> PathBuf {
    args.state_dir
        .clone()
        .unwrap_or_else(tls::default_state_dir)
}

/// The TLS files to serve with: the given ones, or the dev certificate
/// (generated once, here, before any node starts). The files are loaded
/// once to check them, so a bad certificate fails the start.
fn tls_files(args: &ServeArgs) -> Result<Option<(TlsFiles, Arc<rustls::ServerConfig>)>, Failure> {
    if args.no_tls {
        return Ok(None);
    }
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => tls::ensure_dev_identity(&state_dir(args)).context("dev certificate")?,
    };
    let server = tls::server_config(&ServerIdentity::Files {
        cert: cert.clone(),
        key: key.clone(),
    })
    .map_err(|e| Failure::usage(anyhow::Error::new(e).context("tls")))?;
    tracing::info!(fingerprint = %tls::fingerprint_hex(&server.fingerprint), cert = %cert.display(), "tls certificate (sha256)");
    Ok(Some((TlsFiles { cert, key }, server.config)))
}

struct Common {
    handshake_timeout: Duration,
    write_timeout: Duration,
    grace: Duration,
    tls: Option<(TlsFiles, Arc<rustls::ServerConfig>)>,
}

fn common(args: &ServeArgs) -> Result<Common, Failure> {
    let handshake_timeout = seconds(args.handshake_timeout, "--handshake-timeout")?;
    let write_timeout = seconds(args.write_timeout, "--write-timeout")?;
    let grace = seconds(args.grace, "--grace")?;
    if args.max_message < 1024 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--max-message must be at least 1024 bytes"
        )));
    }
    if args.backlog < 1 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--backlog must be at least 1"
        )));
    }
    Ok(Common {
        handshake_timeout,
        write_timeout,
        grace,
        tls: tls_files(args)?,
    })
}

fn admin_path(args: &ServeArgs, first: Option<&SocketAddr>) -> PathBuf {
    args.admin_socket.clone().unwrap_or_else(|| {
        let port = first.map_or(0, |a| a.port());
        state_dir(args).join(format!("admin-{port}.sock"))
    })
}

fn announce(addrs: &[SocketAddr], transports: &str) {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        tracing::info!(%addr, %transports, "serving the demo gateway");
        // Tests and scripts read this line to learn the port.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    let _ = stdout.flush();
}

fn announce_ready(nodes: u32) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ready: {nodes} node(s) serving");
    let _ = stdout.flush();
}

/// How often the TLS session-ticket key is replaced.
const TICKET_ROTATION: Duration = Duration::from_secs(3600);

/// One-process mode: this process makes and rotates its own ticket keys.
async fn rotate_own_tickets(ticketer: Arc<SharedTicketer>) {
    loop {
        match TicketKey::generate() {
            Ok(k) => ticketer.rotate(&k),
            Err(e) => tracing::error!(error = %e, "cannot generate a ticket key"),
        }
        tokio::time::sleep(TICKET_ROTATION).await;
    }
}

/// The number of nodes when not given: one per CPU.
pub fn default_nodes() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Runs `vole serve`.
pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let nodes = args.nodes.unwrap_or_else(default_nodes);
    if nodes == 0 {
        single(args).await
    } else {
        controller(args, nodes).await
    }
}

async fn controller(args: ServeArgs, nodes: u32) -> Result<(), Failure> {
    let c = common(&args)?;
    let heartbeat_interval = seconds(args.heartbeat_interval, "--heartbeat-interval")?;
    let heartbeat_timeout = seconds(args.heartbeat_timeout, "--heartbeat-timeout")?;
    let restart_period = seconds(args.restart_period, "--restart-period")?;
    let transports = match (&c.tls, args.plain) {
        (Some(_), true) => "TLS,PLAIN",
        (Some(_), false) => "TLS",
        (None, _) => "PLAIN",
    };
    let mut node_args = Vec::new();
    node_args.extend([
        "--threads".to_owned(),
        args.threads.unwrap_or(1).to_string(),
    ]);
    let config = ControllerConfig {
        nodes,
        balance: args.balance,
        listen: args.listen.clone(),
        backlog: args.backlog,
        limits: Limits {
            max_clients: args.max_clients,
            max_node_clients: args.max_node_clients,
        },
        restart: RestartPolicy {
            intensity: args.restart_intensity,
            period: restart_period,
            ..RestartPolicy::default()
        },
        heartbeat_interval,
        heartbeat_timeout,
        grace: c.grace,
        node: NodeConfig {
            node_id: 0,
            balance: args.balance,
            tls: c.tls.map(|(files, _)| files),
            plain: args.plain,
            handshake_timeout_ms: c.handshake_timeout.as_millis() as u64,
            write_timeout_ms: c.write_timeout.as_millis() as u64,
            max_message: args.max_message,
            grace_ms: c.grace.as_millis() as u64,
            tickets: None,
        },
        node_args,
        ticket_rotation: TICKET_ROTATION,
    };
    let bound = Bound::new(config).map_err(anyhow::Error::from)?;
    let admin = AdminSocket::bind(&admin_path(&args, bound.addrs().first()))
        .await
        .map_err(anyhow::Error::from)?;
    tracing::info!(path = %admin.path().display(), nodes, balance = args.balance.name(), "controller starting");
    announce(bound.addrs(), transports);
    let outcome = bound
        .run(Some(admin), move || announce_ready(nodes))
        .await
        .map_err(anyhow::Error::from)?;
    match outcome {
        Outcome::Stopped => {
            tracing::info!("stopped: every node drained");
            Ok(())
        }
        Outcome::StoppedUnclean => Err(Failure {
            code: exit::UNCLEAN_STOP,
            error: anyhow::anyhow!("stopped, but not every node drained cleanly"),
        }),
        Outcome::Escalated { restarts } => Err(Failure {
            code: exit::RESTART_LIMIT,
            error: anyhow::anyhow!(
                "nodes kept dying ({restarts} node deaths within {}s, more than --restart-intensity allows); gave up",
                args.restart_period
            ),
        }),
        Outcome::ConfigError(msg) => Err(Failure::usage(anyhow::anyhow!(msg))),
    }
}

/// The service configuration for one-process mode.
fn service_config(args: &ServeArgs, c: &Common, ticketer: &Arc<SharedTicketer>) -> ServiceConfig {
    let tls = c
        .tls
        .as_ref()
        .map(|(_, config)| with_ticketer(config, ticketer.clone()));
    ServiceConfig {
        transport: ServerSettings {
            transports: ServerPolicy::new(tls.is_some(), args.plain),
            tls,
            handshake_timeout: c.handshake_timeout,
        },
        link: LinkConfig {
            hold_peer: false,
            max_message: args.max_message,
            write_timeout: c.write_timeout,
            handshake_timeout: c.handshake_timeout,
            ..LinkConfig::default()
        },
        node_id: None,
    }
}

/// Admin requests in one-process mode: status of this process as node 0.
struct SingleAdmin {
    service: Service,
    started: Instant,
    listen: Vec<String>,
    stop: tokio::sync::mpsc::UnboundedSender<bool>,
}

impl AdminHandler for SingleAdmin {
    fn handle(
        &self,
        request: AdminRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdminResponse> + Send + '_>> {
        Box::pin(async move {
            match request {
                AdminRequest::Status => {
                    let s = self.service.snapshot();
                    let node = NodeReport {
                        id: 0,
                        pid: Some(std::process::id()),
                        state: if self.service.is_stopping() {
                            "stopping"
                        } else {
                            "serving"
                        }
                        .to_owned(),
                        sessions: s.sessions,
                        inflight: s.inflight,
                        calls: s.calls,
                        errors: s.errors,
                        restarts: 0,
                        uptime_ms: self.started.elapsed().as_millis() as u64,
                    };
                    AdminResponse {
                        ok: true,
                        error: None,
                        status: Some(StatusReport {
                            pid: std::process::id(),
                            mode: "single".to_owned(),
                            listen: self.listen.clone(),
                            uptime_ms: self.started.elapsed().as_millis() as u64,
                            nodes: vec![node],
                        }),
                    }
                }
                AdminRequest::Stop { force, .. } => {
                    let _ = self.stop.send(force);
                    AdminResponse::ok()
                }
            }
        })
    }
}

async fn single(args: ServeArgs) -> Result<(), Failure> {
    let c = common(&args)?;
    let ticketer = SharedTicketer::new(vole_node::process::TICKET_LIFETIME_SECS);
    let config = service_config(&args, &c, &ticketer);
    let rotation = tokio::spawn(rotate_own_tickets(ticketer));
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let std_listener =
            vole_node::listen::bind(*addr, args.backlog).map_err(anyhow::Error::from)?;
        listeners.push(tokio::net::TcpListener::from_std(std_listener).context("listener")?);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()
        .context("listener address")?;
    let transports: Vec<String> = config
        .transport
        .transports
        .preference
        .iter()
        .map(|t| t.to_string())
        .collect();
    let service = Service::new(config, Arc::new(|_| vole::demo::gateway()));
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
    let admin = AdminSocket::bind(&admin_path(&args, addrs.first()))
        .await
        .map_err(anyhow::Error::from)?;
    let handler: Arc<dyn AdminHandler> = Arc::new(SingleAdmin {
        service: service.clone(),
        started: Instant::now(),
        listen: addrs.iter().map(ToString::to_string).collect(),
        stop: stop_tx,
    });
    let admin_task = tokio::spawn(async move { admin.serve(handler).await });
    announce(&addrs, &transports.join(","));
    let mut tasks = Vec::new();
    for l in listeners {
        let s = service.clone();
        tasks.push(tokio::spawn(async move { s.run(l).await }));
    }
    announce_ready(1);
    let grace = c.grace;
    let mut term = signal(SignalKind::terminate()).context("signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
    let force_now = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping gracefully"); false }
        _ = int.recv() => { tracing::info!("SIGINT: stopping gracefully (again to force)"); false }
        Some(force) = stop_rx.recv() => { tracing::info!(force, "stop requested on the admin socket"); force }
    };
    let shutdown = service.shutdown(if force_now {
        Duration::from_millis(1)
    } else {
        grace
    });
    tokio::pin!(shutdown);
    let forced = tokio::select! {
        forced = &mut shutdown => forced,
        _ = async {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {}, Some(true) = stop_rx.recv() => {} }
        } => {
            tracing::warn!("forcing the stop: closing every link now");
            for link in service.links() {
                link.abort();
            }
            shutdown.await
        }
    };
    for t in tasks {
        let _ = t.await;
    }
    admin_task.abort();
    let _ = admin_task.await;
    rotation.abort();
    if forced > 0 {
        tracing::warn!(
            links = forced,
            "links closed by force after the grace period"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
