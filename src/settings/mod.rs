//! Serve settings: the TOML file (`--config`), command-line values over
//! it, the host's defaults under both, and validation with errors that name
//! the key.
//!
//! [`Settings::resolve`] is the one place that turns what the operator wrote
//! into what the service runs with; `config check` runs it without starting
//! anything. The command line is turned into [`Overrides`] by the CLI; this
//! module knows nothing of how arguments are parsed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vole_control::control::Balance;
use vole_controller::balance::Limits;
use vole_controller::restart::RestartPolicy;
use vole_link::Overload;

use crate::access::{ClientAuthMode, ClientAuthSetting};
use crate::defaults;

mod error;
mod file;
mod values;

pub use error::SettingsError;
pub use file::FileConfig;
pub use values::{parse_listen, LogFormat};

use error::invalid;
use file::{parse_vts_ciphers, split_command, CommandLine};
use values::{keep_alive_period, optional_secs, proxy_protocol, secs};

/// What the command line says, over the settings file. `None` (or
/// `false`) leaves the file's value or the default.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// The settings file.
    pub config: Option<PathBuf>,
    /// Listen addresses, as written (see [`parse_listen`]).
    pub listen: Vec<String>,
    /// Allow PLAIN.
    pub plain: bool,
    /// Disable TLS.
    pub no_tls: bool,
    /// TLS certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// TLS key.
    pub tls_key: Option<PathBuf>,
    /// CA file client certificates must chain to.
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificates required or optional.
    pub tls_client_auth: Option<ClientAuthMode>,
    /// Session-ticket keys shared with other hosts.
    pub tls_ticket_key_file: Option<PathBuf>,
    /// Seconds between checks of the TLS files for a change (0: off).
    pub tls_watch: Option<f64>,
    /// Allowed client certificate subjects (replaces the file's list).
    pub auth_allow_subjects: Option<Vec<String>>,
    /// Allowed client fingerprints (replaces the file's list).
    pub auth_allow_keys: Option<Vec<String>>,
    /// Also accept VTS.
    pub vts: bool,
    /// VTS server key file.
    pub vts_key: Option<PathBuf>,
    /// VTS ciphers, comma-separated, in order of preference.
    pub vts_ciphers: Option<String>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Handshake limit, seconds.
    pub handshake_timeout: Option<f64>,
    /// Largest message.
    pub max_message: Option<usize>,
    /// Grace period, seconds.
    pub grace: Option<f64>,
    /// Write-progress limit, seconds.
    pub write_timeout: Option<f64>,
    /// Keep-alive period asked of peers, seconds (0: off).
    pub keep_alive: Option<f64>,
    /// Idle link limit, seconds (0: off).
    pub idle_timeout: Option<f64>,
    /// Longest a served call may run, seconds.
    pub max_call_time: Option<f64>,
    /// Listen backlog.
    pub backlog: Option<i32>,
    /// Worker threads per process.
    pub threads: Option<usize>,
    /// Node processes.
    pub nodes: Option<u32>,
    /// Balance mode.
    pub balance: Option<Balance>,
    /// Most connections over all nodes.
    pub max_clients: Option<u64>,
    /// Most connections per node.
    pub max_node_clients: Option<u64>,
    /// Most connections from one IP address, per serving process.
    pub max_clients_per_ip: Option<u64>,
    /// The peer's calls one link runs at once.
    pub max_inflight: Option<usize>,
    /// Beyond `max_inflight`: wait or refuse.
    pub overload: Option<Overload>,
    /// Bytes of the peer's calls one link may hold.
    pub link_buffer_budget: Option<usize>,
    /// Bytes of the peer's calls the links of one process may hold.
    pub node_buffer_budget: Option<usize>,
    /// Heartbeat period, seconds.
    pub heartbeat_interval: Option<f64>,
    /// Heartbeat answer limit, seconds.
    pub heartbeat_timeout: Option<f64>,
    /// Restart intensity.
    pub restart_intensity: Option<u32>,
    /// Restart window, seconds.
    pub restart_period: Option<f64>,
    /// Admin socket.
    pub admin_socket: Option<PathBuf>,
    /// Detach.
    pub daemon: bool,
    /// Pid file.
    pub pidfile: Option<PathBuf>,
    /// Log file.
    pub log_file: Option<PathBuf>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Log filter.
    pub log_level: Option<String>,
    /// Node user.
    pub user: Option<String>,
    /// Node group.
    pub group: Option<String>,
    /// Allow root nodes.
    pub allow_root_nodes: bool,
    /// Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// Health endpoint.
    pub health: Option<SocketAddr>,
    /// Not-ready period before a drain, seconds.
    pub shutdown_delay: Option<f64>,
    /// `off` or `required`.
    pub proxy_protocol: Option<String>,
    /// Balancers allowed to send PROXY headers (empty: not given).
    pub proxy_protocol_from: Vec<String>,
    /// Ticket rotation, seconds.
    pub ticket_rotation: Option<f64>,
    /// External nodes: this command (split like a shell does).
    pub node_command: Option<String>,
}

/// The host's defaults: what a service built with [`crate::Host`] chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// The port of the default listen address (`127.0.0.1:<port>`).
    pub port: u16,
    /// The state directory when neither the file nor the command line
    /// names one.
    pub state_dir: PathBuf,
}

impl Default for Defaults {
    /// `vole`'s own: port 4433, the `vole` state directory.
    fn default() -> Self {
        Defaults {
            port: 4433,
            state_dir: vole_transport::tls::default_state_dir(),
        }
    }
}

/// The number of nodes when not given: one per CPU.
pub fn default_nodes() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// TLS, as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSetting {
    /// No TLS (PLAIN only).
    Disabled,
    /// A generated dev certificate in the state directory.
    Dev,
    /// These files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// VTS, as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VtsSetting {
    /// No VTS.
    Disabled,
    /// A key generated once in the state directory.
    Generated,
    /// The key in this file.
    File(PathBuf),
}

/// Everything `vole serve` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Listen backlog.
    pub backlog: i32,
    /// Node processes (0: one process).
    pub nodes: u32,
    /// Balance mode.
    pub balance: Balance,
    /// Worker threads per process, if set.
    pub threads: Option<usize>,
    /// Connection limits.
    pub limits: Limits,
    /// Most connections from one IP address, per serving process (each
    /// node, or the one process).
    pub max_clients_per_ip: Option<u64>,
    /// The peer's calls one link runs at once.
    pub max_inflight: usize,
    /// What a link does with calls beyond `max_inflight`.
    pub overload: Overload,
    /// Bytes of the peer's calls one link may hold before it stops reading.
    pub link_buffer_budget: usize,
    /// Bytes of the peer's calls the links of one serving process may hold
    /// together before the links holding most stop reading.
    pub node_buffer_budget: usize,
    /// TLS.
    pub tls: TlsSetting,
    /// Session-ticket keys shared with other hosts (`[tls]
    /// ticket-key-file`), read at start and on every reload.
    pub ticket_key_file: Option<PathBuf>,
    /// How often the TLS files are checked for a change, which reloads the
    /// service if they are usable (`[tls] watch`; `None`: never).
    pub tls_watch: Option<Duration>,
    /// TLS client certificates: the CA and whether they are required
    /// (`None`: clients are not asked).
    pub client_auth: Option<ClientAuthSetting>,
    /// Allow lists: clients whose identity they do not name are refused
    /// (`None`: every client is served).
    pub access: Option<vole_control::control::AccessRules>,
    /// PLAIN allowed.
    pub plain: bool,
    /// VTS (VPy's default transport).
    pub vts: VtsSetting,
    /// VTS ciphers and modes accepted, in order of preference.
    pub vts_ciphers: Vec<vole_transport::vts::Suite>,
    /// State directory.
    pub state_dir: PathBuf,
    /// VOP + TLS handshake limit.
    pub handshake_timeout: Duration,
    /// Write-progress limit per link.
    pub write_timeout: Duration,
    /// The keep-alive period asked of every peer: a link silent for 1.5
    /// periods is closed. `None`: not asked.
    pub keep_alive: Option<Duration>,
    /// Links with no calls for this long are closed. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Longest a served call may run before it is cancelled (`None`: no
    /// limit).
    pub max_call_time: Option<Duration>,
    /// Largest message.
    pub max_message: usize,
    /// Graceful stop period.
    pub grace: Duration,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Heartbeat answer limit.
    pub heartbeat_timeout: Duration,
    /// Log filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Log file (stderr if none).
    pub log_file: Option<PathBuf>,
    /// Admin socket path (derived from the port if not set).
    pub admin_socket: Option<PathBuf>,
    /// Pid file.
    pub pidfile: Option<PathBuf>,
    /// Detach.
    pub daemon: bool,
    /// User to run nodes as.
    pub user: Option<String>,
    /// Group to run nodes as.
    pub group: Option<String>,
    /// Allow nodes to run as root.
    pub allow_root_nodes: bool,
    /// Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// Health endpoint (`/livez`, `/readyz`).
    pub health: Option<SocketAddr>,
    /// How long a graceful stop first serves on while not ready (zero:
    /// drain at once).
    pub shutdown_delay: Duration,
    /// PROXY protocol required, from balancers in these networks; `None`:
    /// off.
    pub proxy_protocol_from: Option<Vec<vole_transport::proxy::IpNet>>,
    /// Ticket key rotation period.
    pub ticket_rotation: Duration,
    /// The hosted service's own settings (the `[service]` table), unchecked
    /// here: the service deserializes it.
    pub service: Option<toml::Table>,
    /// External nodes: each node runs this command (program and
    /// arguments), given the listening sockets by the systemd
    /// socket-activation convention. `None`: the host's own nodes.
    pub node_command: Option<Vec<String>>,
}

impl Settings {
    /// The settings for `args`: its config file (if any), the command line
    /// over it, the defaults under both; validated.
    pub fn resolve(args: &Overrides, defaults: &Defaults) -> Result<Settings, SettingsError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(args, file, defaults)
    }

    /// Merges the command line over a parsed file and validates.
    pub fn merge(
        args: &Overrides,
        f: FileConfig,
        defaults: &Defaults,
    ) -> Result<Settings, SettingsError> {
        let transports = f.transports.unwrap_or_default();
        let tls_files = f.tls.unwrap_or_default();
        let restart = f.restart.unwrap_or_default();
        let heartbeat = f.heartbeat.unwrap_or_default();
        let log = f.log.unwrap_or_default();

        let written = if args.listen.is_empty() {
            f.listen
        } else {
            Some(args.listen.clone())
        };
        let listen = match written {
            None => vec![SocketAddr::from(([127, 0, 0, 1], defaults.port))],
            Some(all) => {
                let mut listen = Vec::new();
                for a in &all {
                    for addr in parse_listen(a).map_err(|e| invalid("listen", e))? {
                        if !listen.contains(&addr) {
                            listen.push(addr);
                        }
                    }
                }
                listen
            }
        };
        if listen.is_empty() {
            return Err(invalid("listen", "needs at least one address"));
        }
        let backlog = args.backlog.or(f.backlog).unwrap_or(defaults::BACKLOG);
        if backlog < 1 {
            return Err(invalid("backlog", "must be at least 1"));
        }
        let node_command = match (&args.node_command, f.node_command) {
            (Some(line), _) => Some(split_command("node-command", line)?),
            (None, Some(CommandLine::Line(line))) => Some(split_command("node-command", &line)?),
            (None, Some(CommandLine::Argv(argv))) if argv.is_empty() => {
                return Err(invalid("node-command", "is empty"))
            }
            (None, Some(CommandLine::Argv(argv))) => Some(argv),
            (None, None) => None,
        };
        let external = node_command.is_some();
        // External nodes speak their own transports: vole's TLS and PLAIN
        // settings do not apply to them.
        let tls_enabled = !external && !args.no_tls && transports.tls.unwrap_or(true);
        let plain = !external && (args.plain || transports.plain.unwrap_or(false));
        if external && (args.tls_cert.is_some() || tls_files.cert.is_some()) {
            return Err(invalid(
                "tls.cert",
                "external nodes (node-command) serve their own transports; vole's TLS does not apply",
            ));
        }
        let vts_enabled = args.vts || transports.vts.unwrap_or(false);
        let vts_key = args.vts_key.clone().or(transports.vts_key);
        if external && (vts_enabled || vts_key.is_some()) {
            return Err(invalid(
                "transports.vts",
                "external nodes (node-command) serve their own transports; vole's VTS does not apply",
            ));
        }
        let vts = match (vts_enabled, vts_key) {
            (false, None) => VtsSetting::Disabled,
            (false, Some(_)) => {
                return Err(invalid(
                    "transports.vts-key",
                    "a VTS key needs VTS enabled (vts = true, or --vts)",
                ))
            }
            (true, None) => VtsSetting::Generated,
            (true, Some(key)) => VtsSetting::File(key),
        };
        let vts_ciphers = match (&args.vts_ciphers, transports.vts_ciphers) {
            (Some(line), _) => parse_vts_ciphers(line.split(',').map(str::trim))?,
            (None, Some(list)) => parse_vts_ciphers(list.iter().map(String::as_str))?,
            (None, None) => defaults::vts_ciphers(),
        };
        if !external && !tls_enabled && !plain && vts == VtsSetting::Disabled {
            return Err(invalid(
                "transports",
                "TLS is disabled and neither VTS nor PLAIN is enabled: nothing to serve",
            ));
        }
        let written = crate::access::Written::merge(
            crate::access::Written {
                client_ca: args.tls_client_ca.clone(),
                client_auth: args.tls_client_auth,
                allow_subjects: args.auth_allow_subjects.clone(),
                allow_keys: args.auth_allow_keys.clone(),
            },
            tls_files.client_ca,
            tls_files.client_auth,
            f.auth,
        );
        let (client_auth, access) = crate::access::resolve(
            written,
            tls_enabled,
            vts != VtsSetting::Disabled,
            defaults::CLIENT_AUTH,
        )
        .map_err(|(key, problem)| invalid(key, problem))?;
        let cert = args.tls_cert.clone().or(tls_files.cert);
        let key = args.tls_key.clone().or(tls_files.key);
        let tls = match (tls_enabled, cert, key) {
            (false, _, _) => TlsSetting::Disabled,
            (true, Some(cert), Some(key)) => TlsSetting::Files { cert, key },
            (true, None, None) => TlsSetting::Dev,
            (true, Some(_), None) => return Err(invalid("tls.key", "a certificate needs its key")),
            (true, None, Some(_)) => {
                return Err(invalid("tls.cert", "a key needs its certificate"))
            }
        };
        let ticket_key_file = args
            .tls_ticket_key_file
            .clone()
            .or(tls_files.ticket_key_file);
        if ticket_key_file.is_some() && matches!(tls, TlsSetting::Disabled) {
            return Err(invalid(
                "tls.ticket-key-file",
                "session tickets are TLS's: enable TLS or drop the key file",
            ));
        }
        let tls_watch = optional_secs(
            "tls.watch",
            args.tls_watch.or(tls_files.watch).unwrap_or(0.0),
        )?;
        if tls_watch.is_some()
            && !matches!(tls, TlsSetting::Files { .. })
            && ticket_key_file.is_none()
        {
            return Err(invalid(
                "tls.watch",
                "watches [tls] cert and key or ticket-key-file, and none is set",
            ));
        }
        let max_message = args
            .max_message
            .or(f.max_message)
            .unwrap_or(defaults::MAX_MESSAGE);
        if max_message < 1024 {
            return Err(invalid("max-message", "must be at least 1024 bytes"));
        }
        let max_inflight = args
            .max_inflight
            .or(f.max_inflight)
            .unwrap_or_else(defaults::max_inflight);
        if max_inflight < 1 {
            return Err(invalid("max-inflight", "must be at least 1"));
        }
        let overload = match (args.overload, f.overload) {
            (Some(o), _) => o,
            (None, Some(text)) => text.parse().map_err(|e: String| invalid("overload", e))?,
            (None, None) => Overload::default(),
        };
        let link_buffer_budget = args
            .link_buffer_budget
            .or(f.link_buffer_budget)
            .unwrap_or(defaults::LINK_BUFFER_BUDGET.max(max_message));
        if link_buffer_budget < max_message {
            return Err(invalid(
                "link-buffer-budget",
                format!("must be at least max-message ({max_message} bytes), so one call fits"),
            ));
        }
        let node_buffer_budget = args
            .node_buffer_budget
            .or(f.node_buffer_budget)
            .unwrap_or(defaults::NODE_BUFFER_BUDGET.max(max_message));
        if node_buffer_budget < max_message {
            return Err(invalid(
                "node-buffer-budget",
                format!("must be at least max-message ({max_message} bytes), so one call fits"),
            ));
        }
        let max_clients_per_ip = args.max_clients_per_ip.or(f.max_clients_per_ip);
        if max_clients_per_ip == Some(0) {
            return Err(invalid("max-clients-per-ip", "must be at least 1"));
        }
        let threads = args.threads.or(f.threads);
        if threads == Some(0) {
            return Err(invalid("threads", "must be at least 1"));
        }
        let default_restart = defaults::restart();
        let restart = RestartPolicy {
            base: secs(
                "restart.backoff-base",
                restart
                    .backoff_base
                    .unwrap_or(default_restart.base.as_secs_f64()),
            )?,
            max: secs(
                "restart.backoff-max",
                restart
                    .backoff_max
                    .unwrap_or(default_restart.max.as_secs_f64()),
            )?,
            intensity: args
                .restart_intensity
                .or(restart.intensity)
                .unwrap_or(default_restart.intensity),
            period: secs(
                "restart.period",
                args.restart_period
                    .or(restart.period)
                    .unwrap_or(default_restart.period.as_secs_f64()),
            )?,
            stable_after: default_restart.stable_after,
        };
        if restart.base > restart.max {
            return Err(invalid(
                "restart.backoff-base",
                "must not exceed restart.backoff-max",
            ));
        }
        let log_level = args
            .log_level
            .clone()
            .or(log.level)
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{log_level:?} is not a log filter"),
            ));
        }
        let daemon = args.daemon;
        let pidfile = args.pidfile.clone().or(f.pidfile);
        if daemon && pidfile.is_none() {
            return Err(invalid("pidfile", "a daemon needs a pid file (--pidfile)"));
        }
        let nodes = args.nodes.or(f.nodes).unwrap_or_else(default_nodes);
        let balance = args.balance.or(f.balance);
        let balance = match (external, balance) {
            (false, b) => b.unwrap_or_default(),
            (true, None) => Balance::Shared,
            (true, Some(b @ (Balance::Shared | Balance::Reuseport))) => b,
            (true, Some(b)) => {
                return Err(invalid(
                    "balance",
                    format!(
                        "{} needs vole's own nodes (a control link); external nodes (node-command) take shared or reuseport",
                        b.name()
                    ),
                ))
            }
        };
        if external && nodes == 0 {
            return Err(invalid(
                "nodes",
                "external nodes (node-command) need nodes >= 1",
            ));
        }
        let proxy_protocol_from = proxy_protocol(
            args.proxy_protocol.clone().or(f.proxy_protocol),
            if args.proxy_protocol_from.is_empty() {
                f.proxy_protocol_from
            } else {
                Some(args.proxy_protocol_from.clone())
            },
        )?;
        if external && proxy_protocol_from.is_some() {
            return Err(invalid(
                "proxy-protocol",
                "external nodes (node-command) read their own connections; vole cannot take the PROXY header off them",
            ));
        }
        if nodes == 0 && tls_watch.is_some() {
            return Err(invalid(
                "tls.watch",
                "reloads the service, which needs node processes (nodes >= 1)",
            ));
        }
        let user = args.user.clone().or(f.user);
        let group = args.group.clone().or(f.group);
        if nodes == 0 && (user.is_some() || group.is_some()) {
            return Err(invalid(
                "user",
                "dropping privileges needs node processes (nodes >= 1)",
            ));
        }
        Ok(Settings {
            listen,
            backlog,
            nodes,
            balance,
            threads,
            limits: Limits {
                max_clients: args.max_clients.or(f.max_clients),
                max_node_clients: args.max_node_clients.or(f.max_node_clients),
            },
            max_clients_per_ip,
            max_inflight,
            overload,
            link_buffer_budget,
            node_buffer_budget,
            tls,
            ticket_key_file,
            tls_watch,
            client_auth,
            access,
            plain,
            vts,
            vts_ciphers,
            state_dir: args
                .state_dir
                .clone()
                .or(f.state_dir)
                .unwrap_or_else(|| defaults.state_dir.clone()),
            handshake_timeout: secs(
                "handshake-timeout",
                args.handshake_timeout
                    .or(f.handshake_timeout)
                    .unwrap_or(defaults::HANDSHAKE_TIMEOUT),
            )?,
            write_timeout: secs(
                "write-timeout",
                args.write_timeout
                    .or(f.write_timeout)
                    .unwrap_or(defaults::WRITE_TIMEOUT),
            )?,
            keep_alive: keep_alive_period(
                args.keep_alive
                    .or(f.keep_alive)
                    .unwrap_or(defaults::KEEP_ALIVE),
            )?,
            idle_timeout: optional_secs(
                "idle-timeout",
                args.idle_timeout
                    .or(f.idle_timeout)
                    .unwrap_or(defaults::IDLE_TIMEOUT),
            )?,
            max_message,
            max_call_time: args
                .max_call_time
                .or(f.max_call_time)
                .map(|v| secs("max-call-time", v))
                .transpose()?,
            grace: secs("grace", args.grace.or(f.grace).unwrap_or(defaults::GRACE))?,
            restart,
            heartbeat_interval: secs(
                "heartbeat.interval",
                args.heartbeat_interval
                    .or(heartbeat.interval)
                    .unwrap_or(defaults::HEARTBEAT_INTERVAL),
            )?,
            heartbeat_timeout: secs(
                "heartbeat.timeout",
                args.heartbeat_timeout
                    .or(heartbeat.timeout)
                    .unwrap_or(defaults::HEARTBEAT_TIMEOUT),
            )?,
            log_level,
            log_format: args.log_format.or(log.format).unwrap_or_default(),
            log_file: args.log_file.clone().or(log.file),
            admin_socket: args.admin_socket.clone().or(f.admin_socket),
            pidfile,
            daemon,
            user,
            group,
            allow_root_nodes: args.allow_root_nodes || f.allow_root_nodes.unwrap_or(false),
            metrics: args.metrics.or(f.metrics),
            health: args.health.or(f.health),
            proxy_protocol_from,
            shutdown_delay: optional_secs(
                "shutdown-delay",
                args.shutdown_delay
                    .or(f.shutdown_delay)
                    .unwrap_or(defaults::SHUTDOWN_DELAY),
            )?
            .unwrap_or(Duration::ZERO),
            ticket_rotation: secs(
                "ticket-rotation",
                args.ticket_rotation
                    .or(f.ticket_rotation)
                    .unwrap_or(defaults::TICKET_ROTATION),
            )?,
            service: f.service,
            node_command,
        })
    }

    /// The admin socket path: as set, or `admin-<port>.sock` in the state
    /// directory for the first listen address.
    pub fn admin_path(&self, first: Option<&SocketAddr>) -> PathBuf {
        self.admin_socket.clone().unwrap_or_else(|| {
            let port = first.map_or(0, |a| a.port());
            self.state_dir.join(format!("admin-{port}.sock"))
        })
    }
}

#[cfg(test)]
mod tests;
