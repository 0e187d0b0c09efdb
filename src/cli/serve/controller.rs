//! Controller mode: this process binds, starts the nodes and supervises
//! them.

use anyhow::Context as _;
use vole_control::control::NodeConfig;
use vole_controller::admin::AdminSocket;
use vole_controller::{Bound, ControllerConfig, Hooks, Lifecycle, Outcome};

use super::privileges::node_user;
use super::setup::{
    announce, announce_ready, tls_material, transports_name, vts_material, Prepared,
};
use super::upgrade::Relaunch;
use crate::cli::exit::{self, Failure};
use crate::hosted::HostedService;
use crate::settings::Settings;

/// Whether the kernel moves connections queued on a closing `SO_REUSEPORT`
/// listener to another listener of its group (`net.ipv4.tcp_migrate_req`,
/// Linux 5.14+, per network namespace); `None` if it cannot tell.
fn migrate_req() -> Option<bool> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").ok()?;
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// The controller configuration for these settings (reads the TLS files).
pub fn controller_config(
    s: &Settings,
    service: &HostedService,
) -> Result<ControllerConfig, Failure> {
    let tls = tls_material(s)?;
    let vts = vts_material(s)?;
    let mut node_args = vec!["--threads".to_owned(), s.threads.unwrap_or(1).to_string()];
    if s.log_format == crate::settings::LogFormat::Json {
        node_args.extend(["--log-format".to_owned(), "json".to_owned()]);
    }
    node_args.extend(["--log-level".to_owned(), s.log_level.clone()]);
    Ok(ControllerConfig {
        nodes: s.nodes,
        balance: s.balance,
        listen: s.listen.clone(),
        backlog: s.backlog,
        limits: s.limits,
        restart: s.restart,
        heartbeat_interval: s.heartbeat_interval,
        heartbeat_timeout: s.heartbeat_timeout,
        grace: s.grace,
        shutdown_delay: s.shutdown_delay,
        node: NodeConfig {
            node_id: 0,
            balance: s.balance,
            tls: tls.map(|(material, _)| material),
            plain: s.plain,
            vts: vts.map(|(material, _)| material),
            handshake_timeout_ms: s.handshake_timeout.as_millis() as u64,
            write_timeout_ms: s.write_timeout.as_millis() as u64,
            keep_alive_ms: s.keep_alive.map(|d| d.as_millis() as u64),
            idle_timeout_ms: s.idle_timeout.map(|d| d.as_millis() as u64),
            max_call_time_ms: s.max_call_time.map(|d| d.as_millis() as u64),
            max_message: s.max_message,
            grace_ms: s.grace.as_millis() as u64,
            tickets: None,
            service: crate::hosted::table_text(s.service.as_ref()),
            budgets: super::setup::node_budgets(s),
            access: s.access.clone(),
            proxy_from: s
                .proxy_protocol_from
                .as_ref()
                .map(|nets| nets.iter().map(ToString::to_string).collect()),
        },
        name: service.name.clone(),
        node_args,
        ticket_rotation: s.ticket_rotation,
        shared_ticket_keys: super::setup::shared_ticket_keys(s)?,
        node_user: node_user(s)?,
        metrics_interval: s.metrics.map(|_| std::time::Duration::from_secs(1)),
        log_json: s.log_format == crate::settings::LogFormat::Json,
        node_command: s.node_command.clone(),
    })
}

/// Runs the controller. Returns whether it stepped down for an upgrade.
pub(super) async fn run(p: &Prepared) -> Result<bool, Failure> {
    let s = &p.settings;
    let config = controller_config(s, &p.service)?;
    let nodes = config.nodes;
    let mut inherited = p.inherited.lock().ok().and_then(|mut i| i.take());
    let upgraded = inherited.is_some();
    let endpoint = super::metrics::Endpoint::open(
        s,
        &p.service.name,
        inherited.as_mut().and_then(|i| i.metrics.take()),
    )?
    .map(std::sync::Arc::new);
    let health =
        super::health::Endpoint::open(s.health, inherited.as_mut().and_then(|i| i.health.take()))?
            .map(std::sync::Arc::new);
    // A controller started by an upgrade answers scrapes once it serves
    // (the old one answers until then).
    if let (Some(e), false) = (&endpoint, upgraded) {
        e.start()?;
    }
    let activated = p.activated.lock().ok().and_then(|mut a| a.take());
    let (bound, admin) = match (inherited, activated) {
        (Some(inh), _) => {
            let bound =
                Bound::from_listeners(config, inh.listeners).map_err(anyhow::Error::from)?;
            let path = s.admin_path(bound.addrs().first());
            let admin = match inh.admin {
                Some(fd) => AdminSocket::from_fd(fd, &path).context("inherited admin socket")?,
                None => AdminSocket::bind(&path)
                    .await
                    .map_err(anyhow::Error::from)?,
            };
            (bound, admin)
        }
        (None, Some(sockets)) => {
            tracing::info!(
                sockets = sockets.len(),
                "using the sockets systemd passed; listen and backlog settings are ignored"
            );
            let bound = Bound::from_listeners(config, sockets).map_err(anyhow::Error::from)?;
            let admin = AdminSocket::bind(&s.admin_path(bound.addrs().first()))
                .await
                .map_err(anyhow::Error::from)?;
            (bound, admin)
        }
        (None, None) => {
            let bound = Bound::new(config).map_err(anyhow::Error::from)?;
            let admin = AdminSocket::bind(&s.admin_path(bound.addrs().first()))
                .await
                .map_err(anyhow::Error::from)?;
            (bound, admin)
        }
    };
    tracing::info!(service = %p.service.name, path = %admin.path().display(), nodes, balance = s.balance.name(), "controller starting");
    // Probes are answered from the start (not ready until a node serves);
    // after an upgrade, once this controller serves.
    let admin_path = admin.path().to_owned();
    if let (Some(h), false) = (&health, upgraded) {
        h.start(&admin_path)?;
    }
    let watcher = s.tls_watch.map(|every| {
        tokio::spawn(super::watch::run(
            super::watch::watched(s),
            every,
            admin_path.clone(),
        ))
    });
    if s.balance == vole_control::control::Balance::Reuseport && migrate_req() == Some(false) {
        tracing::warn!("reuseport: net.ipv4.tcp_migrate_req is 0, so connections queued on a node's socket when it retires (reload, upgrade, scale-down, a node replaced) are reset; set it to 1 (sysctl -w net.ipv4.tcp_migrate_req=1) for the kernel to move them to another node, or use balance shared, grant or dispatch");
    }
    announce(
        &p.service.name,
        bound.addrs(),
        &transports_name(
            !matches!(s.tls, crate::settings::TlsSetting::Disabled),
            !matches!(s.vts, crate::settings::VtsSetting::Disabled),
            s.plain,
        ),
    );

    let relaunch = Relaunch::current();
    let args = p.args.clone();
    let service = p.service.clone();
    let log = p.log.clone();
    let ready = p.ready.clone();
    let pidfile = p.pidfile.clone();
    let notify_pidfile = p.pidfile.clone();
    let ready_endpoint = endpoint.clone();
    let notify_endpoint = endpoint.clone();
    let upgrade_endpoint = endpoint;
    let ready_health = health.clone();
    let notify_health = health.clone();
    let upgrade_health = health;
    let log_to_file = s.log_file.is_some();
    let notifier = p.notifier.clone();
    let watchdog = notifier.watchdog_interval();
    let upgrade_notifier = notifier.clone();
    let grace = s.grace;
    let hooks = Hooks {
        on_ready: Some(Box::new(move || {
            let serving = announce_ready(&ready, &pidfile, nodes, log_to_file);
            if let (true, Some(e)) = (serving, &ready_endpoint) {
                if let Err(f) = e.start() {
                    tracing::error!(error = %format!("{:#}", f.error), "metrics endpoint");
                }
            }
            if let (true, Some(h)) = (serving, &ready_health) {
                if let Err(f) = h.start(&admin_path) {
                    tracing::error!(error = %format!("{:#}", f.error), "health endpoint");
                }
            }
        })),
        notify: Box::new(move |event: Lifecycle| {
            // The new controller of an upgrade takes the pid file over
            // before it tells systemd it is the main process; if it cannot,
            // it says nothing and reports the failure (`on_ready`, called
            // right after), and the controller it replaces keeps serving.
            if event == Lifecycle::Ready
                && super::setup::take_pidfile_over(&notify_pidfile).is_err()
            {
                return;
            }
            // The new controller of an upgrade serves: it answers scrapes
            // from now on.
            if let (Lifecycle::MainPid(_), Some(e)) = (event, &notify_endpoint) {
                e.stop();
            }
            if let (Lifecycle::MainPid(_), Some(h)) = (event, &notify_health) {
                h.stop();
            }
            if event == Lifecycle::Stopping {
                // Let systemd wait for the drain (TimeoutStopSec may be
                // shorter than the grace period).
                notifier.extend_timeout(grace + std::time::Duration::from_secs(5));
            }
            notifier.lifecycle(event);
        }),
        watchdog,
        reload: Box::new(move || {
            let settings =
                super::setup::resolve(&args, &service).map_err(|f| format!("{:#}", f.error))?;
            controller_config(&settings, &service).map_err(|f| format!("{:#}", f.error))
        }),
        reopen_logs: Box::new(move || log.reopen().map_err(|e| e.to_string())),
        upgrade: Box::new(move |request| {
            let metrics = upgrade_endpoint.as_ref().map(|e| e.fd());
            let health = upgrade_health.as_ref().map(|h| h.fd());
            super::upgrade::spawn(&relaunch, request, metrics, health, &upgrade_notifier)
        }),
    };
    let outcome = bound.run(Some(admin), hooks).await;
    if let Some(w) = watcher {
        w.abort();
    }
    let outcome = outcome.map_err(anyhow::Error::from)?;
    match outcome {
        Outcome::Stopped => {
            tracing::info!("stopped: every node drained");
            Ok(false)
        }
        Outcome::Upgraded { pid } => {
            tracing::info!(new_pid = pid, "stepped down after the upgrade");
            Ok(true)
        }
        Outcome::StoppedUnclean => Err(Failure {
            code: exit::UNCLEAN_STOP,
            error: anyhow::anyhow!("stopped, but not every node drained cleanly"),
        }),
        Outcome::Escalated { restarts } => Err(Failure {
            code: exit::RESTART_LIMIT,
            error: anyhow::anyhow!(
                "nodes kept dying ({restarts} node deaths within {}s, more than restart.intensity allows); gave up",
                s.restart.period.as_secs()
            ),
        }),
        Outcome::ConfigError(msg) => Err(Failure::usage(anyhow::anyhow!(msg))),
    }
}
