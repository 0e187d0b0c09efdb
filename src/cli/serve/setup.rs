//! What both ways of serving share: the start-up before any thread exists
//! ([`prepare`]: settings, logging, daemon, pid file, inherited sockets),
//! the TLS material, the per-process service configuration, metrics, and
//! the lines that tell the operator the service is up.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use vole_control::control::{TlsMaterial, VtsMaterial};
use vole_link::LinkConfig;
use vole_node::ServiceConfig;
use vole_transport::stream::ServerSettings;
use vole_transport::tickets::{ticket_context, with_ticketer, SharedTicketer};
use vole_transport::tls::{self, ServerIdentity};
use vole_transport::vop::ServerPolicy;
use vole_transport::vts;

use super::upgrade;
use crate::cli::args::{Globals, ServeArgs};
use crate::cli::exit::Failure;
use crate::daemon::{self, PidSlot, ReadyPipe};
use crate::hosted::HostedService;
use crate::logging::{self, LogTarget};
use crate::settings::{Settings, TlsSetting, VtsSetting};

/// Everything set up before the runtime starts.
pub struct Prepared {
    pub(super) service: HostedService,
    pub(super) settings: Settings,
    pub(super) args: ServeArgs,
    pub(super) log: LogTarget,
    pub(super) ready: Arc<Mutex<ReadyPipe>>,
    /// The pid file: taken at start, or after an upgrade once serving.
    pub(super) pidfile: Arc<Mutex<PidSlot>>,
    pub(super) inherited: Mutex<Option<upgrade::Inherited>>,
    /// Listening sockets from systemd socket activation.
    pub(super) activated: Mutex<Option<Vec<std::net::TcpListener>>>,
    pub(super) notifier: vole_controller::systemd::Notifier,
}

impl Prepared {
    /// Whether this process is a controller (it starts nodes).
    pub fn is_controller(&self) -> bool {
        self.settings.nodes > 0
    }

    /// Worker threads for a one-process server's runtime (a controller
    /// runs on one thread, and its nodes get `threads` each).
    pub fn threads(&self) -> Option<usize> {
        self.settings.threads
    }

    /// Reports a start-up failure to the launching shell (daemon mode).
    pub fn report_failure(&self, failure: &Failure) {
        if let Ok(mut ready) = self.ready.lock() {
            if ready.pending() {
                ready.failed(failure.code, &format!("{:#}", failure.error));
            }
        }
    }
}

/// The settings for `args`, the service's own `[service]` table checked
/// too (at start and on every reload).
pub fn resolve(args: &ServeArgs, service: &HostedService) -> Result<Settings, Failure> {
    let settings = Settings::resolve(&args.overrides(), &service.defaults)
        .map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
    service
        .check(settings.service.as_ref())
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    if let Some(program) = settings.node_command.as_ref().and_then(|c| c.first()) {
        if find_program(program).is_none() {
            return Err(Failure::usage(anyhow::anyhow!(
                "node-command: no program {program:?} (not a file, nor found in PATH)"
            )));
        }
    }
    Ok(settings)
}

/// Where `program` is, as `execvp` would find it: a path if it has a
/// slash, else the first executable file of that name in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| runnable(p))
}

/// Settings, logging, daemon, pid file: everything before threads exist.
pub fn prepare(
    args: ServeArgs,
    globals: Globals,
    service: &HostedService,
) -> Result<Prepared, Failure> {
    let (verbose, quiet) = (globals.verbose, globals.quiet);
    let settings = resolve(&args, service)?;
    let inherited = upgrade::Inherited::take().map_err(Failure::from)?;
    // SAFETY: no thread exists yet (main calls this before building the
    // runtime), and descriptors from 3 up that LISTEN_FDS names belong to
    // nobody else in this process.
    let activated = unsafe { vole_controller::systemd::listen_fds() }
        .map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
    let activated: Vec<std::net::TcpListener> = activated
        .into_iter()
        .map(|a| {
            tracing::info!(name = ?a.name, "socket from systemd");
            a.listener
        })
        .collect();
    if !activated.is_empty() && settings.balance == vole_control::control::Balance::Reuseport {
        return Err(Failure::usage(anyhow::anyhow!(
            "balance: reuseport needs per-node sockets and cannot use systemd socket activation"
        )));
    }
    let mut notifier = vole_controller::systemd::Notifier::from_env();
    if inherited.is_some() {
        notifier = notifier.successor();
    }
    let level = match (quiet, verbose) {
        (true, _) => "error".to_owned(),
        (_, 1) => "debug".to_owned(),
        (_, v) if v >= 2 => "trace".to_owned(),
        _ => settings.log_level.clone(),
    };
    let mut inherited = inherited;
    let mut ready = match inherited.as_mut().and_then(|i| i.ready.take()) {
        Some(fd) => ReadyPipe::from_fd(fd),
        None => ReadyPipe::none(),
    };
    // A controller started by an upgrade is already detached.
    if settings.daemon && inherited.is_none() {
        ready = daemon::detach()
            .context("cannot detach")
            .map_err(Failure::from)?;
    }
    // Everything the settings name is checked before anything is written
    // (a log file, a pid file, a dev certificate): the nodes' user and
    // group must exist (and may be used). Reported through the ready pipe,
    // so a launching shell or an upgrading controller learns why.
    if settings.nodes > 0 {
        if let Err(f) = super::privileges::node_user(&settings) {
            ready.failed(f.code, &format!("{:#}", f.error));
            return Err(f);
        }
    }
    let log = match &settings.log_file {
        Some(path) => {
            logging::redirect_stderr(path).with_context(|| format!("log file {}", path.display()))
        }
        None => Ok(LogTarget::stderr()),
    };
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            let f = Failure::usage(e);
            ready.failed(f.code, &format!("{:#}", f.error));
            return Err(f);
        }
    };
    logging::init(&level, settings.log_format, false);
    // The new controller of an upgrade takes the pid file over only once
    // it serves (see `announce_ready`): one that fails before must leave
    // the pid file naming the controller that still serves.
    let pidfile = match (&settings.pidfile, &inherited) {
        (Some(path), Some(inh)) => PidSlot::pending(path, inh.from),
        (Some(path), None) => match PidSlot::taken(path) {
            Ok(p) => p,
            Err(e) => {
                let f = Failure::usage(anyhow::Error::new(e));
                ready.failed(f.code, &format!("{:#}", f.error));
                return Err(f);
            }
        },
        (None, _) => PidSlot::default(),
    };
    Ok(Prepared {
        service: service.clone(),
        settings,
        args,
        log,
        ready: Arc::new(Mutex::new(ready)),
        pidfile: Arc::new(Mutex::new(pidfile)),
        inherited: Mutex::new(inherited),
        activated: Mutex::new((!activated.is_empty()).then_some(activated)),
        notifier,
    })
}

/// Takes the pid file over if this controller was started by an upgrade
/// (once; later calls give the same answer). Called when the service
/// serves, before it tells systemd or the controller it replaces.
pub(super) fn take_pidfile_over(pidfile: &Arc<Mutex<PidSlot>>) -> Result<(), String> {
    let result = match pidfile.lock() {
        Ok(mut slot) => slot.take_over(),
        Err(_) => Err("pid file: lock poisoned".to_owned()),
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, "cannot take the pid file over; not reporting ready");
    }
    result
}

/// Called once the service serves: takes the pid file over (after an
/// upgrade), tells the launching shell (daemon) or the controller being
/// replaced, then lets go of the terminal, and prints the ready line.
/// Returns false, having reported why, if the pid file could not be taken
/// over (the controller being replaced then keeps serving, and ends this
/// one).
pub(super) fn announce_ready(
    ready: &Arc<Mutex<ReadyPipe>>,
    pidfile: &Arc<Mutex<PidSlot>>,
    nodes: u32,
    log_to_file: bool,
) -> bool {
    if let Err(e) = take_pidfile_over(pidfile) {
        if let Ok(mut r) = ready.lock() {
            r.failed(crate::cli::exit::USAGE, &e);
        }
        return false;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ready: {nodes} node(s) serving");
    let _ = stdout.flush();
    if let Ok(mut r) = ready.lock() {
        if r.pending() {
            r.ready();
            if !log_to_file {
                let _ = daemon::release_terminal();
            }
        }
    }
    true
}

pub(super) fn announce(service: &str, addrs: &[SocketAddr], transports: &str) {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        tracing::info!(%service, %addr, %transports, "serving");
        // Tests and scripts read this line to learn the port.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    let _ = stdout.flush();
}

/// The TLS certificate and key (read here, before any privilege drop),
/// checked by building a server configuration from them.
pub fn tls_material(
    settings: &Settings,
) -> Result<Option<(TlsMaterial, Arc<rustls::ServerConfig>)>, Failure> {
    let (cert, key) = match &settings.tls {
        TlsSetting::Disabled => return Ok(None),
        TlsSetting::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSetting::Dev => {
            tls::ensure_dev_identity(&settings.state_dir).context("dev certificate")?
        }
    };
    let client_auth = settings
        .client_auth
        .as_ref()
        .map(|c| c.load())
        .transpose()
        .map_err(Failure::usage)?;
    let server = tls::server_config_with(
        &ServerIdentity::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        client_auth.as_ref(),
    )
    .map_err(|e| Failure::usage(anyhow::Error::new(e).context("tls")))?;
    if let Some(c) = &settings.client_auth {
        tracing::info!(ca = %c.ca.display(), mode = c.mode.name(), "tls client certificates");
    }
    tracing::info!(fingerprint = %tls::fingerprint_hex(&server.fingerprint), cert = %cert.display(), "tls certificate (sha256)");
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
    let material = TlsMaterial {
        cert_pem: read(&cert)?,
        key_pem: read(&key)?,
        client_ca_pem: client_auth
            .as_ref()
            .map(|c| String::from_utf8_lossy(&c.ca_pem).into_owned()),
        client_auth_required: client_auth.as_ref().is_some_and(|c| c.required),
    };
    Ok(Some((material, server.config)))
}

/// The VTS server key (read or generated here, before any privilege
/// drop), with its fingerprint logged and a warning that VTS is legacy.
pub fn vts_material(
    settings: &Settings,
) -> Result<Option<(VtsMaterial, Arc<vts::ServerSettings>)>, Failure> {
    let (key, path, generated) = match &settings.vts {
        VtsSetting::Disabled => return Ok(None),
        VtsSetting::File(path) => {
            let key = vts::VtsKey::load(path)
                .map_err(|e| Failure::usage(anyhow::Error::new(e).context("transports.vts-key")))?;
            (key, path.clone(), false)
        }
        VtsSetting::Generated => {
            std::fs::create_dir_all(&settings.state_dir).with_context(|| {
                format!("create state directory {}", settings.state_dir.display())
            })?;
            let path = settings.state_dir.join(vts::VTS_KEY_FILE);
            let (key, generated) = vts::VtsKey::load_or_generate(&path).context("VTS key")?;
            (key, path, generated)
        }
    };
    let fingerprint = key.public().fingerprint_hex();
    tracing::info!(%fingerprint, key = %path.display(), bits = key.public().bits(), generated, "vts key (sha256)");
    tracing::warn!("VTS is enabled: a legacy transport for Versile Python clients (64-bit block ciphers, no forward secrecy); prefer TLS where the client allows it");
    let material = VtsMaterial {
        key_pem: key.to_pem().context("VTS key")?,
        ciphers: settings
            .vts_ciphers
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let mut server = vts::ServerSettings::new(Arc::new(key));
    server.suites = settings.vts_ciphers.clone();
    Ok(Some((material, Arc::new(server))))
}

pub(super) fn transports_name(tls: bool, vts: bool, plain: bool) -> String {
    let mut names = Vec::new();
    if tls {
        names.push("TLS");
    }
    if vts {
        names.push("VTS");
    }
    if plain {
        names.push("PLAIN");
    }
    names.join(",")
}

/// The service configuration for one process.
pub(super) fn service_config(
    s: &Settings,
    tls: Option<&(TlsMaterial, Arc<rustls::ServerConfig>)>,
    vts: Option<&Arc<vts::ServerSettings>>,
    ticketer: &Arc<SharedTicketer>,
) -> ServiceConfig {
    let tls = tls.map(|(material, config)| {
        let client_auth = material.client_ca_pem.as_ref().map(|ca| tls::ClientAuth {
            ca_pem: ca.clone().into_bytes(),
            required: material.client_auth_required,
        });
        with_ticketer(
            config,
            ticketer.clone(),
            ticket_context(client_auth.as_ref()),
        )
    });
    ServiceConfig {
        transport: ServerSettings {
            transports: ServerPolicy::with_vts(tls.is_some(), vts.is_some(), s.plain),
            tls,
            vts: vts.cloned(),
            handshake_timeout: s.handshake_timeout,
        },
        link: LinkConfig {
            hold_peer: false,
            max_message: s.max_message,
            write_timeout: s.write_timeout,
            handshake_timeout: s.handshake_timeout,
            keep_alive: s.keep_alive,
            idle_timeout: s.idle_timeout,
            drain_quiet: vole_node::DRAIN_QUIET,
            max_call_time: s.max_call_time,
            max_inflight: s.max_inflight,
            overload: s.overload,
            max_buffered: s.link_buffer_budget,
            budget: Some(Arc::new(vole_link::budget::Budget::new(
                s.node_buffer_budget,
            ))),
            ..LinkConfig::default()
        },
        node_id: None,
        // One process: it is the only node.
        admission: vole_node::Admission {
            max_clients: min_some(s.limits.max_clients, s.limits.max_node_clients),
            max_clients_per_ip: s.max_clients_per_ip,
        },
        // The host's (see `HostedService::authorizer`); the caller sets it.
        authorizer: None,
        proxy_from: s.proxy_protocol_from.clone(),
    }
}

/// The smaller of two optional limits.
fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What nodes apply themselves, sent with their configuration. Under
/// `grant` and `dispatch` the controller's balancer holds connections to
/// `max-clients` and `max-node-clients`; under `shared` and `reuseport`
/// nodes accept without it, so each node holds itself to
/// `max-node-clients` and to its share of `max-clients` (divided by the
/// number of nodes, rounded up).
pub(super) fn node_budgets(s: &Settings) -> vole_control::control::Budgets {
    use vole_control::control::Balance;
    let max_clients = match s.balance {
        Balance::Grant | Balance::Dispatch => None,
        Balance::Shared | Balance::Reuseport => min_some(
            s.limits
                .max_clients
                .map(|m| m.div_ceil(u64::from(s.nodes.max(1)))),
            s.limits.max_node_clients,
        ),
    };
    vole_control::control::Budgets {
        max_inflight: Some(s.max_inflight),
        overload_refuse: s.overload == vole_link::Overload::Refuse,
        link_buffer_budget: Some(s.link_buffer_budget),
        node_buffer_budget: Some(s.node_buffer_budget),
        max_clients,
        max_clients_per_ip: s.max_clients_per_ip,
    }
}

/// How long to keep a forced shutdown from hanging.
pub(super) const FORCE_GRACE: Duration = Duration::from_millis(1);

/// The keys of the ticket-key file (`[tls] ticket-key-file`), if one is
/// set: read at start and on every reload.
pub(crate) fn shared_ticket_keys(
    s: &Settings,
) -> Result<Option<Vec<vole_transport::tickets::TicketKey>>, Failure> {
    let Some(path) = &s.ticket_key_file else {
        return Ok(None);
    };
    let failure = |e: String| {
        Failure::usage(anyhow::anyhow!(
            "tls.ticket-key-file {}: {e}",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| failure(e.to_string()))?;
    vole_transport::tickets::TicketKey::from_file_bytes(&bytes)
        .map(Some)
        .map_err(|e| failure(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Defaults, Overrides};
    use vole_control::control::Balance;

    fn settings(balance: Balance, nodes: u32) -> Settings {
        let args = Overrides {
            balance: Some(balance),
            nodes: Some(nodes),
            max_clients: Some(10),
            max_clients_per_ip: Some(2),
            ..Overrides::default()
        };
        Settings::merge(&args, Default::default(), &Defaults::default()).expect("valid")
    }

    #[test]
    fn nodes_hold_themselves_to_max_clients_where_the_controller_does_not() {
        for balance in [Balance::Shared, Balance::Reuseport] {
            let b = node_budgets(&settings(balance, 3));
            assert_eq!(b.max_clients, Some(4), "{balance:?}: 10 / 3 rounded up");
            assert_eq!(b.max_clients_per_ip, Some(2));
        }
        for balance in [Balance::Grant, Balance::Dispatch] {
            let b = node_budgets(&settings(balance, 3));
            assert_eq!(b.max_clients, None, "{balance:?}: the controller's");
            assert_eq!(b.max_clients_per_ip, Some(2));
        }
        let mut s = settings(Balance::Shared, 3);
        s.limits.max_node_clients = Some(2);
        assert_eq!(node_budgets(&s).max_clients, Some(2), "the smaller");
        assert_eq!(min_some(None, Some(3)), Some(3));
        assert_eq!(min_some(None, None), None);
    }
}
