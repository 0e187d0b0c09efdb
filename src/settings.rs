//! Serve settings: the TOML file (`--config`), command-line values over
//! it, the host's defaults under both, and validation with errors that name
//! the key.
//!
//! [`Settings::resolve`] is the one place that turns what the operator wrote
//! into what the service runs with; `config check` runs it without starting
//! anything. The command line is turned into [`Overrides`] by the CLI; this
//! module knows nothing of how arguments are parsed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vole_control::control::Balance;
use vole_controller::balance::Limits;
use vole_controller::restart::RestartPolicy;
use vole_link::Overload;

use crate::access::{ClientAuthMode, ClientAuthSetting};
use crate::defaults;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in settings: `text` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text, json)")),
        }
    }
}

/// The settings file, as written. Every key is optional; unknown keys are
/// errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    listen: Option<Vec<String>>,
    backlog: Option<i32>,
    nodes: Option<u32>,
    balance: Option<Balance>,
    threads: Option<usize>,
    max_clients: Option<u64>,
    max_node_clients: Option<u64>,
    max_clients_per_ip: Option<u64>,
    max_inflight: Option<usize>,
    overload: Option<String>,
    link_buffer_budget: Option<usize>,
    node_buffer_budget: Option<usize>,
    state_dir: Option<PathBuf>,
    handshake_timeout: Option<f64>,
    write_timeout: Option<f64>,
    keep_alive: Option<f64>,
    idle_timeout: Option<f64>,
    max_message: Option<usize>,
    grace: Option<f64>,
    max_call_time: Option<f64>,
    admin_socket: Option<PathBuf>,
    pidfile: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    allow_root_nodes: Option<bool>,
    metrics: Option<SocketAddr>,
    health: Option<SocketAddr>,
    shutdown_delay: Option<f64>,
    proxy_protocol: Option<String>,
    proxy_protocol_from: Option<Vec<String>>,
    ticket_rotation: Option<f64>,
    transports: Option<TransportsSection>,
    tls: Option<TlsSection>,
    auth: Option<crate::access::AuthSection>,
    restart: Option<RestartSection>,
    heartbeat: Option<HeartbeatSection>,
    log: Option<LogSection>,
    /// The hosted service's own settings, checked by the service.
    service: Option<toml::Table>,
    node_command: Option<CommandLine>,
}

/// The VTS cipher list, in order, duplicates dropped; an unknown name or an
/// empty list is an error naming `transports.vts-ciphers`.
fn parse_vts_ciphers<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<vole_transport::vts::Suite>, SettingsError> {
    let key = "transports.vts-ciphers";
    let mut out = Vec::new();
    for name in names {
        let suite = vole_transport::vts::Suite::parse(name).ok_or_else(|| {
            invalid(
                key,
                format!("unknown cipher {name:?} (cipher-mode: aes256, blowfish or blowfish128, and cbc or ofb)"),
            )
        })?;
        if !out.contains(&suite) {
            out.push(suite);
        }
    }
    if out.is_empty() {
        return Err(invalid(key, "needs at least one cipher"));
    }
    Ok(out)
}

/// A command as the file writes it: one string (split like a shell does)
/// or a list of arguments.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CommandLine {
    Line(String),
    Argv(Vec<String>),
}

/// Splits a command line like a POSIX shell (quotes and backslashes; no
/// expansion).
fn split_command(key: &'static str, line: &str) -> Result<Vec<String>, SettingsError> {
    let argv = shlex::split(line)
        .ok_or_else(|| invalid(key, format!("cannot split {line:?} (unbalanced quotes?)")))?;
    if argv.is_empty() {
        return Err(invalid(key, "is empty"));
    }
    Ok(argv)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TransportsSection {
    tls: Option<bool>,
    plain: Option<bool>,
    vts: Option<bool>,
    vts_key: Option<PathBuf>,
    vts_ciphers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    client_auth: Option<ClientAuthMode>,
    ticket_key_file: Option<PathBuf>,
    watch: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestartSection {
    intensity: Option<u32>,
    period: Option<f64>,
    backoff_base: Option<f64>,
    backoff_max: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HeartbeatSection {
    interval: Option<f64>,
    timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LogSection {
    level: Option<String>,
    format: Option<LogFormat>,
    file: Option<PathBuf>,
}

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

/// A settings problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key has the wrong type or is unknown.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The problem, with the key.
        message: String,
    },
    /// A value is out of range or settings contradict each other.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key (as in the file; flags are named alike).
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl FileConfig {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<FileConfig, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }

    /// Parses settings text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, SettingsError> {
        let de = toml::Deserializer::parse(text).map_err(|e| SettingsError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = one_line(&e.into_inner().to_string());
            SettingsError::Parse {
                path: path.to_owned(),
                message: if key == "." || key.is_empty() {
                    message
                } else {
                    format!("key `{key}`: {message}")
                },
            }
        })
    }
}

/// toml's messages carry a source excerpt over several lines; keep the
/// location and the problem on one line.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|'))
        .collect();
    lines.join("; ")
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

/// The addresses one `listen` value names: `host:port` with an IPv4
/// address or a host name (every address it resolves to), `[v6]:port`,
/// or `:port` for every IPv4 interface (as nginx and HAProxy read it;
/// `[::]:port` adds IPv6).
pub fn parse_listen(value: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs as _;
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "{value:?} has no port (host:port, [v6]:port or :port)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{value:?}: {port:?} is not a port number"))?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]);
    }
    if host.starts_with('[') || host.contains(':') {
        return Err(format!(
            "{value:?} is not an address (IPv6 goes in brackets: [::1]:{port})"
        ));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
}

/// The keep-alive period: 0 turns it off; anything else must be at least
/// the 100 ms a link can time (VPy agrees to any positive period).
fn keep_alive_period(value: f64) -> Result<Option<Duration>, SettingsError> {
    let period = optional_secs("keep-alive", value)?;
    if period.is_some_and(|p| p < Duration::from_millis(100)) {
        return Err(invalid(
            "keep-alive",
            format!("must be at least 0.1 seconds (or 0 for off), not {value}"),
        ));
    }
    Ok(period)
}

/// A period where 0 turns the feature off.
fn optional_secs(key: &'static str, value: f64) -> Result<Option<Duration>, SettingsError> {
    if value == 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .map(Some)
        .ok_or_else(|| {
            invalid(
                key,
                format!("must be a positive number of seconds (or 0 for off), not {value}"),
            )
        })
}

/// `proxy-protocol` and `proxy-protocol-from`: the balancers' networks when
/// the header is required, `None` when off. A bare address is its own
/// network (`/32`, `/128`).
fn proxy_protocol(
    mode: Option<String>,
    from: Option<Vec<String>>,
) -> Result<Option<Vec<vole_transport::proxy::IpNet>>, SettingsError> {
    let from = from.unwrap_or_default();
    match mode.as_deref().unwrap_or(defaults::PROXY_PROTOCOL) {
        "off" if from.is_empty() => Ok(None),
        "off" => Err(invalid(
            "proxy-protocol-from",
            "takes effect only with proxy-protocol = \"required\"",
        )),
        "required" if from.is_empty() => Err(invalid(
            "proxy-protocol-from",
            "proxy-protocol = \"required\" needs the balancers' networks, e.g. [\"10.0.0.0/8\"]",
        )),
        "required" => from
            .iter()
            .map(|n| {
                n.parse::<vole_transport::proxy::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(Into::into))
                    .map_err(|_| {
                        invalid(
                            "proxy-protocol-from",
                            format!(
                                "{n:?} is not a network (CIDR such as 10.0.0.0/8) or an address"
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(invalid(
            "proxy-protocol",
            format!("{other:?} is not a mode (off, required)"),
        )),
    }
}

fn secs(key: &'static str, value: f64) -> Result<Duration, SettingsError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(
                key,
                format!("must be a positive number of seconds, not {value}"),
            )
        })
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, SettingsError> {
        let f = FileConfig::parse(text, Path::new("test.toml"))?;
        Settings::merge(&Overrides::default(), f, &Defaults::default())
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("expected an error for {text:?}, got {s:?}"),
        }
    }

    #[test]
    fn every_setting_reads_from_the_file() {
        let s = parse(
            r#"
            listen = ["127.0.0.1:5000", "[::1]:5000"]
            backlog = 64
            nodes = 3
            balance = "dispatch"
            threads = 2
            max-clients = 100
            max-node-clients = 40
            state-dir = "/tmp/x"
            handshake-timeout = 2.5
            write-timeout = 7
            max-message = 4096
            grace = 3
            admin-socket = "/tmp/x/admin.sock"
            pidfile = "/tmp/x/vole.pid"
            user = "nobody"
            group = "nogroup"
            allow-root-nodes = true
            metrics = "127.0.0.1:9100"
            ticket-rotation = 600
            [transports]
            tls = true
            plain = true
            [tls]
            cert = "/etc/vole/cert.pem"
            key = "/etc/vole/key.pem"
            [restart]
            intensity = 9
            period = 30
            backoff-base = 0.5
            backoff-max = 20
            [heartbeat]
            interval = 0.5
            timeout = 2
            [log]
            level = "debug"
            format = "json"
            file = "/var/log/vole.log"
            "#,
        )
        .expect("valid");
        assert_eq!(s.listen.len(), 2);
        assert_eq!(
            (s.backlog, s.nodes, s.balance, s.threads),
            (64, 3, Balance::Dispatch, Some(2))
        );
        assert_eq!(
            s.limits,
            Limits {
                max_clients: Some(100),
                max_node_clients: Some(40)
            }
        );
        assert_eq!(
            s.tls,
            TlsSetting::Files {
                cert: "/etc/vole/cert.pem".into(),
                key: "/etc/vole/key.pem".into()
            }
        );
        assert!(s.plain);
        assert_eq!(s.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(s.restart.intensity, 9);
        assert_eq!(s.restart.base, Duration::from_millis(500));
        assert_eq!(s.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(
            (s.log_format, s.log_level.as_str()),
            (LogFormat::Json, "debug")
        );
        assert_eq!(s.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!(s.ticket_rotation, Duration::from_secs(600));
        assert!(s.allow_root_nodes);
    }

    #[test]
    fn flags_override_the_file() {
        let f = FileConfig::parse(
            "nodes = 3\nbalance = \"shared\"\ngrace = 5\n",
            Path::new("t"),
        )
        .expect("file");
        let args = Overrides {
            nodes: Some(1),
            grace: Some(2.0),
            ..Overrides::default()
        };
        let s = Settings::merge(&args, f, &Defaults::default()).expect("valid");
        assert_eq!(
            (s.nodes, s.balance, s.grace),
            (1, Balance::Shared, Duration::from_secs(2))
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = err("nodez = 3\n");
        assert!(e.contains("nodez"), "{e}");
        let e = err("nodes = \"three\"\n");
        assert!(e.contains("nodes") && e.contains("invalid type"), "{e}");
        let e = err("[restart]\nintensity = -1\n");
        assert!(e.contains("restart.intensity"), "{e}");
        let e = err("[log]\nformat = \"xml\"\n");
        assert!(e.contains("log.format"), "{e}");
        let e = err("balance = \"random\"\n");
        assert!(e.contains("balance"), "{e}");
        let e = err("[tls]\ncolour = 1\n");
        assert!(e.contains("colour"), "{e}");
        let e = err("listen = [\"localhost\"]\n");
        assert!(e.contains("listen") && e.contains("no port"), "{e}");
        let e = err("nodes = \n");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn listen_takes_host_port_v6_port_and_a_bare_port() {
        let s =
            parse("listen = [\"127.0.0.1:5000\", \"[::1]:5001\", \":5002\"]\n").expect("parses");
        assert_eq!(
            s.listen,
            vec![
                "127.0.0.1:5000".parse().expect("addr"),
                "[::1]:5001".parse().expect("addr"),
                "0.0.0.0:5002".parse().expect("addr"),
            ]
        );
        // A host name: every address it resolves to, each once.
        let s = parse("listen = [\"localhost:5003\", \"127.0.0.1:5003\"]\n").expect("resolves");
        assert!(
            s.listen.contains(&"127.0.0.1:5003".parse().expect("addr")),
            "{:?}",
            s.listen
        );
        let mut unique = s.listen.clone();
        unique.dedup();
        assert_eq!(unique.len(), s.listen.len(), "{:?}", s.listen);
        for (bad, why) in [
            ("5000", "no port"),
            ("127.0.0.1:http", "not a port number"),
            ("127.0.0.1:70000", "not a port number"),
            ("::1:5000", "brackets"),
            ("no-such-host.invalid:5000", "cannot resolve"),
        ] {
            let e = err(&format!("listen = [{bad:?}]\n"));
            assert!(e.starts_with("listen:") && e.contains(why), "{bad}: {e}");
        }
        let args = Overrides {
            listen: vec![":6000".to_owned()],
            ..Overrides::default()
        };
        let s =
            Settings::merge(&args, FileConfig::default(), &Defaults::default()).expect("merges");
        assert_eq!(s.listen, vec!["0.0.0.0:6000".parse().expect("addr")]);
    }

    #[test]
    fn keep_alive_and_idle_timeout() {
        let s = parse("").expect("defaults");
        assert_eq!(s.keep_alive, Some(Duration::from_secs(30)));
        assert_eq!(s.idle_timeout, None);
        let s = parse("keep-alive = 2.5\nidle-timeout = 600\n").expect("set");
        assert_eq!(s.keep_alive, Some(Duration::from_millis(2500)));
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(600)));
        let s = parse("keep-alive = 0\nidle-timeout = 0\n").expect("off");
        assert_eq!((s.keep_alive, s.idle_timeout), (None, None));
        let args = Overrides {
            keep_alive: Some(0.5),
            idle_timeout: Some(9.0),
            ..Overrides::default()
        };
        let f = FileConfig::parse("keep-alive = 3\nidle-timeout = 1\n", Path::new("t"))
            .expect("parses");
        let s = Settings::merge(&args, f, &Defaults::default()).expect("merges");
        assert_eq!(s.keep_alive, Some(Duration::from_millis(500)));
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(9)));
    }

    #[test]
    fn vts_is_off_by_default_and_read_from_file_and_flags() {
        assert_eq!(parse("").expect("empty").vts, VtsSetting::Disabled);
        let s = parse("[transports]\nvts = true\n").expect("vts");
        assert_eq!(s.vts, VtsSetting::Generated);
        let s = parse("[transports]\nvts = true\nvts-key = \"k.pem\"\n").expect("vts key");
        assert_eq!(s.vts, VtsSetting::File("k.pem".into()));
        // VTS alone is something to serve.
        let s = parse("[transports]\ntls = false\nvts = true\n").expect("vts only");
        assert_eq!((s.tls, s.plain), (TlsSetting::Disabled, false));
        let args = Overrides {
            vts: true,
            vts_key: Some("f.pem".into()),
            ..Overrides::default()
        };
        let s =
            Settings::merge(&args, FileConfig::default(), &Defaults::default()).expect("merges");
        assert_eq!(s.vts, VtsSetting::File("f.pem".into()));
        assert_eq!(s.vts_ciphers, crate::defaults::vts_ciphers());
    }

    #[test]
    fn vts_ciphers_read_in_order_and_refuse_unknown_names() {
        use vole_transport::vts::Suite;
        let s = parse(
            "[transports]\nvts = true\nvts-ciphers = [\"blowfish-cbc\", \"aes256-ofb\", \"blowfish-cbc\"]\n",
        )
        .expect("ciphers");
        let want: Vec<Suite> = ["blowfish-cbc", "aes256-ofb"]
            .iter()
            .filter_map(|n| Suite::parse(n))
            .collect();
        assert_eq!(s.vts_ciphers, want);
        let args = Overrides {
            vts: true,
            vts_ciphers: Some("blowfish128-ofb, blowfish-cbc".to_owned()),
            ..Overrides::default()
        };
        let s =
            Settings::merge(&args, FileConfig::default(), &Defaults::default()).expect("merges");
        assert_eq!(s.vts_ciphers.len(), 2);
        assert!(err("[transports]\nvts-ciphers = [\"des-cbc\"]\n")
            .starts_with("transports.vts-ciphers:"));
        assert!(err("[transports]\nvts-ciphers = []\n").starts_with("transports.vts-ciphers:"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        assert!(err("grace = 0\n").starts_with("grace:"));
        assert!(err("[transports]\ntls = false\n").starts_with("transports:"));
        assert!(err("[tls]\ncert = \"a.pem\"\n").starts_with("tls.key:"));
        assert!(err("[transports]\nvts-key = \"k.pem\"\n").starts_with("transports.vts-key:"));
        assert!(err("[transports]\nvts = 1\n").contains("vts"));
        assert!(
            err("node-command = \"x\"\n[transports]\nvts = true\n").starts_with("transports.vts:")
        );
        assert!(err("max-message = 10\n").starts_with("max-message:"));
        assert!(err("backlog = 0\n").starts_with("backlog:"));
        assert!(err("[log]\nlevel = \"not[a filter\"\n").starts_with("log.level:"));
        assert!(err("[restart]\nbackoff-base = 9\nbackoff-max = 1\n")
            .starts_with("restart.backoff-base:"));
        assert!(err("nodes = 0\nuser = \"nobody\"\n").starts_with("user:"));
        assert!(err("keep-alive = -1\n").starts_with("keep-alive:"));
        assert!(err("keep-alive = 0.01\n").starts_with("keep-alive:"));
        assert!(err("keep-alive = inf\n").starts_with("keep-alive:"));
        assert!(err("idle-timeout = -5\n").starts_with("idle-timeout:"));
        assert!(err("idle-timeout = nan\n").starts_with("idle-timeout:"));
        let daemon = Overrides {
            daemon: true,
            ..Overrides::default()
        };
        assert!(
            Settings::merge(&daemon, FileConfig::default(), &Defaults::default())
                .is_err_and(|e| e.to_string().starts_with("pidfile:"))
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let s = Settings::merge(
            &Overrides {
                nodes: Some(2),
                ..Overrides::default()
            },
            FileConfig::default(),
            &Defaults::default(),
        )
        .expect("ok");
        assert_eq!(s.listen, vec![SocketAddr::from(([127, 0, 0, 1], 4433))]);
        assert_eq!(s.tls, TlsSetting::Dev);
        assert!(!s.plain);
        assert_eq!(s.grace, Duration::from_secs(10));
        assert_eq!(s.balance, Balance::Grant);
        assert!(s.service.is_none());
    }

    #[test]
    fn a_host_s_defaults_apply_under_the_file_and_flags() {
        let defaults = Defaults {
            port: 7000,
            state_dir: PathBuf::from("/srv/greeter"),
        };
        let s =
            Settings::merge(&Overrides::default(), FileConfig::default(), &defaults).expect("ok");
        assert_eq!(s.listen, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]);
        assert_eq!(s.state_dir, PathBuf::from("/srv/greeter"));
        assert_eq!(
            s.admin_path(s.listen.first()),
            PathBuf::from("/srv/greeter/admin-7000.sock")
        );
        let f = FileConfig::parse("state-dir = \"/x\"\n", Path::new("t")).expect("file");
        let s = Settings::merge(&Overrides::default(), f, &defaults).expect("ok");
        assert_eq!(s.state_dir, PathBuf::from("/x"));
    }

    #[test]
    fn the_service_table_is_kept_for_the_service() {
        let s = parse("[service]\ngreeting = \"hi\"\n[service.db]\npool = 4\n").expect("ok");
        let table = s.service.expect("a table");
        assert_eq!(table["greeting"].as_str(), Some("hi"));
        assert_eq!(table["db"]["pool"].as_integer(), Some(4));
        let e = err("service = 3\n");
        assert!(e.contains("service"), "{e}");
    }

    #[test]
    fn external_nodes_take_a_command_and_shared_or_reuseport() {
        let s = parse("nodes = 2\nnode-command = \"python3 'my svc.py' --x\"\n").expect("ok");
        assert_eq!(
            s.node_command,
            Some(vec![
                "python3".to_owned(),
                "my svc.py".to_owned(),
                "--x".to_owned()
            ])
        );
        assert_eq!(s.balance, Balance::Shared, "shared by default");
        assert_eq!(s.tls, TlsSetting::Disabled, "vole's TLS is not theirs");
        let s = parse("nodes = 2\nbalance = \"reuseport\"\nnode-command = [\"a b\", \"c\"]\n")
            .expect("ok");
        assert_eq!(s.node_command, Some(vec!["a b".to_owned(), "c".to_owned()]));
        assert_eq!(s.balance, Balance::Reuseport);
        for mode in ["grant", "dispatch"] {
            let e = err(&format!("balance = \"{mode}\"\nnode-command = \"x\"\n"));
            assert!(
                e.starts_with("balance:") && e.contains("shared or reuseport"),
                "{e}"
            );
        }
        assert!(err("node-command = \"\"\n").starts_with("node-command: is empty"));
        assert!(err("node-command = []\n").starts_with("node-command: is empty"));
        assert!(err("node-command = \"a 'b\"\n").starts_with("node-command: cannot split"));
        assert!(err("nodes = 0\nnode-command = \"x\"\n").starts_with("nodes:"));
        assert!(
            err("node-command = \"x\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n")
                .starts_with("tls.cert:")
        );
        let flag = Overrides {
            node_command: Some("svc --port-from-fd".to_owned()),
            nodes: Some(3),
            ..Overrides::default()
        };
        let f = FileConfig::parse("node-command = \"other\"\n", Path::new("t")).expect("file");
        let s = Settings::merge(&flag, f, &Defaults::default()).expect("ok");
        assert_eq!(
            s.node_command,
            Some(vec!["svc".to_owned(), "--port-from-fd".to_owned()])
        );
    }

    #[test]
    fn budgets_and_admission_read_from_the_file_and_the_flags() {
        let s = parse(
            "max-inflight = 8\noverload = \"refuse\"\nlink-buffer-budget = 20000000\nnode-buffer-budget = 30000000\nmax-clients-per-ip = 4\n",
        )
        .expect("valid");
        assert_eq!(
            (
                s.max_inflight,
                s.overload,
                s.link_buffer_budget,
                s.node_buffer_budget,
                s.max_clients_per_ip
            ),
            (8, Overload::Refuse, 20_000_000, 30_000_000, Some(4))
        );
        let d = parse("").expect("defaults");
        assert_eq!(
            (
                d.max_inflight,
                d.overload,
                d.link_buffer_budget,
                d.node_buffer_budget,
                d.max_clients_per_ip
            ),
            (1024, Overload::Wait, 64 << 20, 256 << 20, None)
        );
        let f = FileConfig::parse(
            "max-inflight = 8\noverload = \"refuse\"\nnode-buffer-budget = 30000000\n",
            Path::new("t"),
        )
        .expect("file");
        let args = Overrides {
            max_inflight: Some(3),
            overload: Some(Overload::Wait),
            link_buffer_budget: Some(17 << 20),
            node_buffer_budget: Some(40 << 20),
            max_clients_per_ip: Some(2),
            ..Overrides::default()
        };
        let s = Settings::merge(&args, f, &Defaults::default()).expect("valid");
        assert_eq!(
            (
                s.max_inflight,
                s.overload,
                s.link_buffer_budget,
                s.node_buffer_budget,
                s.max_clients_per_ip
            ),
            (3, Overload::Wait, 17 << 20, 40 << 20, Some(2))
        );
    }

    #[test]
    fn bad_budgets_and_admission_name_the_key() {
        assert!(err("max-inflight = 0\n").starts_with("max-inflight:"));
        let e = err("max-inflight = -1\n");
        assert!(e.contains("max-inflight"), "{e}");
        let e = err("overload = \"drop\"\n");
        assert!(
            e.starts_with("overload:") && e.contains("wait, refuse"),
            "{e}"
        );
        let e = err("link-buffer-budget = 1000\n");
        assert!(
            e.starts_with("link-buffer-budget:") && e.contains("max-message"),
            "{e}"
        );
        let e = err("max-message = 2048\nnode-buffer-budget = 1024\n");
        assert!(e.starts_with("node-buffer-budget:"), "{e}");
        assert!(err("max-clients-per-ip = 0\n").starts_with("max-clients-per-ip:"));
        let e = err("max-clients-per-ip = \"many\"\n");
        assert!(e.contains("max-clients-per-ip"), "{e}");
        // A larger max-message raises the budgets' defaults with it.
        let s = parse("max-message = 300000000\n").expect("valid");
        assert_eq!(s.link_buffer_budget, 300_000_000);
        assert_eq!(s.node_buffer_budget, 300_000_000);
    }

    #[test]
    fn a_read_error_names_the_file_once() {
        let e = Settings::resolve(
            &Overrides {
                config: Some(PathBuf::from("/nonexistent/vole.toml")),
                ..Overrides::default()
            },
            &Defaults::default(),
        )
        .expect_err("missing file");
        assert_eq!(e.to_string(), "cannot read /nonexistent/vole.toml");
        let cause = std::error::Error::source(&e).expect("a cause").to_string();
        assert!(cause.contains("No such file"), "{cause}");
    }

    #[test]
    fn max_call_time_is_off_unless_set_and_positive() {
        let s = parse("").expect("valid");
        assert_eq!(s.max_call_time, None, "off by default");
        let s = parse("max-call-time = 2.5\n").expect("valid");
        assert_eq!(s.max_call_time, Some(Duration::from_millis(2500)));
        let f = FileConfig::parse("max-call-time = 30\n", Path::new("t")).expect("file");
        let args = Overrides {
            max_call_time: Some(1.0),
            ..Overrides::default()
        };
        let s = Settings::merge(&args, f, &Defaults::default()).expect("valid");
        assert_eq!(
            s.max_call_time,
            Some(Duration::from_secs(1)),
            "the flag wins"
        );
        assert!(err("max-call-time = 0\n").starts_with("max-call-time:"));
        assert!(err("max-call-time = -3\n").starts_with("max-call-time:"));
    }
}
