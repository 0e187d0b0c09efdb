//! One-process mode: this process serves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use vole_controller::admin::{
    AdminHandler, AdminRequest, AdminResponse, AdminSocket, HealthReport, NodeReport, StatusReport,
};
use vole_node::Service;
use vole_transport::tickets::{SharedTicketer, TicketKey};

use super::setup::{
    announce, announce_ready, service_config, tls_material, transports_name, vts_material,
    Prepared, FORCE_GRACE,
};
use crate::cli::exit::Failure;

/// What the admin socket and signals ask of the single process.
#[derive(Debug)]
enum Ask {
    Stop {
        force: bool,
    },
    ReopenLogs,
    /// `vole drain`: answered when the drain begins.
    Drain(oneshot::Sender<()>),
}

/// Admin requests in one-process mode: status of this process as node 0.
struct SingleAdmin {
    service: Service,
    started: Instant,
    listen: Vec<String>,
    asks: mpsc::UnboundedSender<Ask>,
    grace: Duration,
    /// In the shutdown delay: not ready for new connections.
    not_ready: Arc<AtomicBool>,
}

impl AdminHandler for SingleAdmin {
    fn handle(
        &self,
        request: AdminRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdminResponse> + Send + '_>> {
        Box::pin(async move {
            match request {
                AdminRequest::Status => {
                    let mut node = NodeReport {
                        id: 0,
                        pid: Some(std::process::id()),
                        state: if self.service.is_stopping() {
                            "stopping"
                        } else {
                            "serving"
                        }
                        .to_owned(),
                        uptime_ms: self.started.elapsed().as_millis() as u64,
                        ..NodeReport::default()
                    };
                    node.fill(&node_status(&self.service, self.started));
                    AdminResponse {
                        ok: true,
                        error: None,
                        status: Some(StatusReport {
                            pid: std::process::id(),
                            mode: "single".to_owned(),
                            listen: self.listen.clone(),
                            uptime_ms: self.started.elapsed().as_millis() as u64,
                            nodes: vec![node],
                            grace_ms: self.grace.as_millis() as u64,
                        }),
                        health: None,
                    }
                }
                AdminRequest::Stop { force, .. } => {
                    let _ = self.asks.send(Ask::Stop { force });
                    AdminResponse::ok()
                }
                AdminRequest::ReopenLogs => {
                    let _ = self.asks.send(Ask::ReopenLogs);
                    AdminResponse::ok()
                }
                AdminRequest::Health => {
                    let draining =
                        self.service.is_stopping() || self.not_ready.load(Ordering::SeqCst);
                    AdminResponse::health(HealthReport {
                        state: if draining { "draining" } else { "serving" }.to_owned(),
                        serving: 1,
                        nodes: 1,
                    })
                }
                AdminRequest::Drain if self.service.is_stopping() => AdminResponse::ok(),
                AdminRequest::Drain => {
                    let (tx, rx) = oneshot::channel();
                    if self.asks.send(Ask::Drain(tx)).is_ok() {
                        // Dropped unanswered only when the process stops.
                        let _ = rx.await;
                    }
                    AdminResponse::ok()
                }
                AdminRequest::Reload | AdminRequest::Scale { .. } | AdminRequest::Upgrade => {
                    AdminResponse::error(
                        "not available in one-process mode (nodes = 0); run with node processes",
                    )
                }
            }
        })
    }
}

/// This process's counters in the form a node reports them.
fn node_status(service: &Service, started: Instant) -> vole_control::control::NodeStatus {
    let s = service.snapshot();
    vole_control::control::NodeStatus {
        pid: std::process::id(),
        sessions: s.sessions,
        inflight: s.inflight,
        calls: s.calls,
        errors: s.errors,
        accepted: s.accepted,
        handshake_failures: s.handshake_failures,
        uptime_ms: started.elapsed().as_millis() as u64,
        handshake_failures_by_reason: s.handshake_failures_by_reason,
        latency_counts: s.latency_counts,
        latency_sum_us: s.latency_sum_us,
        cancelled: s.cancelled,
        // One-process mode has no descriptor budget (yet): it accepts as
        // `Service::run` does, backing off at the limit.
        ..Default::default()
    }
}

/// Records this process's metrics as node 0 every second.
async fn record_metrics(service: Service, started: Instant) {
    let mut recorder = vole_controller::metrics::Recorder::default();
    loop {
        recorder.node(0, &node_status(&service, started), 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One-process mode: this process makes and rotates its own ticket keys.
async fn rotate_own_tickets(ticketer: Arc<SharedTicketer>, every: Duration) {
    loop {
        match TicketKey::generate() {
            Ok(k) => ticketer.rotate(&k),
            Err(e) => tracing::error!(error = %e, "cannot generate a ticket key"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs the one-process service. Returns whether it stepped down for an
/// upgrade (never, here).
pub(super) async fn run(p: &Prepared) -> Result<bool, Failure> {
    let s = &p.settings;
    let tls = tls_material(s)?;
    let vts = vts_material(s)?;
    let ticketer = SharedTicketer::new(vole_node::process::TICKET_LIFETIME_SECS);
    let mut config = service_config(s, tls.as_ref(), vts.as_ref().map(|(_, c)| c), &ticketer);
    config.authorizer = p.service.authorizer(s.access.as_ref());
    let rotation = match super::setup::shared_ticket_keys(s)? {
        // Keys shared with other hosts: used as they are, never rotated here.
        Some(keys) => {
            if let Some((current, previous)) = keys.split_first() {
                ticketer.set_keys(current, previous);
            }
            tokio::spawn(std::future::pending::<()>())
        }
        None => tokio::spawn(rotate_own_tickets(ticketer, s.ticket_rotation)),
    };
    let activated = p.activated.lock().ok().and_then(|mut a| a.take());
    let sockets = match activated {
        Some(sockets) => sockets,
        None => s
            .listen
            .iter()
            .map(|addr| vole_control::listen::bind(*addr, s.backlog))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::from)?,
    };
    let mut listeners = Vec::new();
    for socket in sockets {
        socket.set_nonblocking(true).context("listener")?;
        listeners.push(tokio::net::TcpListener::from_std(socket).context("listener")?);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()
        .context("listener address")?;
    let start = vole_node::process::NodeStart {
        node_id: 0,
        service: crate::hosted::table_text(s.service.as_ref()),
    };
    let factory = match (p.service.node_init())(start).await {
        Ok(f) => f,
        Err(vole_node::process::InitError::Config(e)) => {
            return Err(Failure::usage(anyhow::anyhow!(e)))
        }
        Err(vole_node::process::InitError::Failed(e)) => {
            return Err(Failure {
                code: crate::cli::exit::INIT_FAILED,
                error: anyhow::anyhow!("the service's init failed: {e}"),
            })
        }
    };
    let service = Service::new(config, factory);
    let endpoint = super::metrics::Endpoint::open(s, &p.service.name, None)?;
    if let Some(e) = &endpoint {
        e.start()?;
    }
    let metrics_task = s
        .metrics
        .map(|_| tokio::spawn(record_metrics(service.clone(), Instant::now())));
    let (asks_tx, mut asks) = mpsc::unbounded_channel();
    let admin = AdminSocket::bind(&s.admin_path(addrs.first()))
        .await
        .map_err(anyhow::Error::from)?;
    let not_ready = Arc::new(AtomicBool::new(false));
    let admin_path = admin.path().to_owned();
    let handler: Arc<dyn AdminHandler> = Arc::new(SingleAdmin {
        service: service.clone(),
        started: Instant::now(),
        listen: addrs.iter().map(ToString::to_string).collect(),
        asks: asks_tx,
        grace: s.grace,
        not_ready: not_ready.clone(),
    });
    let admin_task = tokio::spawn(async move { admin.serve(handler).await });
    let health = super::health::Endpoint::open(s.health, None)?;
    if let Some(h) = &health {
        h.start(&admin_path)?;
    }
    announce(
        &p.service.name,
        &addrs,
        &transports_name(tls.is_some(), vts.is_some(), s.plain),
    );
    let mut tasks = Vec::new();
    for l in listeners {
        let svc = service.clone();
        tasks.push(tokio::spawn(async move { svc.run(l).await }));
    }
    if announce_ready(&p.ready, &p.pidfile, 1, s.log_file.is_some()) {
        p.notifier.lifecycle(vole_controller::Lifecycle::Ready);
    }
    let watchdog = p.notifier.watchdog_interval();
    let notifier = p.notifier.clone();
    let watchdog_task = watchdog.map(|every| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.watchdog();
            }
        })
    });
    let mut term = signal(SignalKind::terminate()).context("signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
    let mut quit = signal(SignalKind::quit()).context("signal handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("signal handler")?;
    // SIGTERM and `vole drain` first serve on, not ready, for the shutdown
    // delay (if any); then the drain.
    let mut drains: Vec<oneshot::Sender<()>> = Vec::new();
    let mut drain_asked = false;
    let mut delay_until: Option<tokio::time::Instant> = None;
    let begin_delay = |by: &str, until: &mut Option<tokio::time::Instant>| -> bool {
        if until.is_some() {
            tracing::info!(
                by,
                "already not ready; draining when the shutdown delay ends"
            );
            return false;
        }
        if s.shutdown_delay.is_zero() {
            tracing::info!(by, "stopping gracefully");
            return true;
        }
        tracing::info!(by, delay = ?s.shutdown_delay, "not ready: serving on for the shutdown delay, then draining");
        not_ready.store(true, Ordering::SeqCst);
        service.set_not_ready();
        *until = Some(tokio::time::Instant::now() + s.shutdown_delay);
        false
    };
    let force = loop {
        let delay_over = async {
            match delay_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => if begin_delay("SIGTERM", &mut delay_until) { break false },
            _ = int.recv() => { tracing::info!("SIGINT: fast stop"); break true; }
            _ = quit.recv() => { tracing::info!("SIGQUIT: fast stop"); break true; }
            _ = usr1.recv() => reopen(p),
            _ = delay_over => { tracing::info!("shutdown delay over: draining"); break false; }
            Some(ask) = asks.recv() => match ask {
                Ask::Stop { force } => { tracing::info!(force, "stop requested on the admin socket"); break force; }
                Ask::ReopenLogs => reopen(p),
                Ask::Drain(reply) => {
                    drains.push(reply);
                    drain_asked = true;
                    if begin_delay("vole drain", &mut delay_until) {
                        break false;
                    }
                }
            },
        }
    };
    for reply in drains {
        let _ = reply.send(());
    }
    p.notifier.extend_timeout(s.grace + Duration::from_secs(5));
    p.notifier.lifecycle(vole_controller::Lifecycle::Stopping);
    let shutdown = service.shutdown(if force { FORCE_GRACE } else { s.grace });
    tokio::pin!(shutdown);
    // A second signal forces, but not the orchestrator's SIGTERM after its
    // preStop hook's `vole drain`.
    let forced = tokio::select! {
        forced = &mut shutdown => forced,
        _ = async {
            loop {
                tokio::select! {
                    _ = term.recv() => if !drain_asked { break },
                    _ = int.recv() => break,
                    _ = quit.recv() => break,
                }
                tracing::info!("SIGTERM: already draining (vole drain)");
            }
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
    if let Some(t) = watchdog_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    if forced > 0 {
        tracing::warn!(
            links = forced,
            "links closed by force after the grace period"
        );
    }
    tracing::info!("stopped");
    Ok(false)
}

fn reopen(p: &Prepared) {
    if let Err(e) = p.log.reopen() {
        tracing::error!(error = %e, "cannot reopen the log file");
    }
}
