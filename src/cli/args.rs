//! The command line every host parses (clap): serving, operating, and the
//! internal node modes. Turned into settings by [`ServeArgs::overrides`];
//! the settings know nothing of clap.
//!
//! The doc comments here are the `--help` texts, where `[grant]` is a
//! default, not a link, and `<port>` a placeholder, not HTML. Fixed
//! defaults are not written here but added from [`crate::defaults`]
//! (`cli::help`).
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Global flags, shared by every subcommand of a host (and handed to a
/// service's own subcommands).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Globals {
    /// `-v` count.
    pub verbose: u8,
    /// `-q`.
    pub quiet: bool,
}

impl Globals {
    /// The log level a client command runs with.
    pub fn client_log_level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (_, 0) => "warn",
            (_, 1) => "debug",
            _ => "trace",
        }
    }
}

/// The command line every host parses: serving and operating a service.
/// The program's name, version and about text are the host's (set at run
/// time by [`crate::Host`]).
#[derive(Debug, Parser)]
#[command(name = "vole", propagate_version = true, max_term_width = 100)]
pub struct HostCli {
    /// What to do.
    #[command(subcommand)]
    pub command: HostCommand,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The subcommands of every host.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Serve (TLS with a generated dev certificate by default).
    Serve(Box<ServeArgs>),
    /// Show the nodes of a running service (from its admin socket).
    ///
    /// A node's STATE: starting; serving; retiring (removed by a reload or a
    /// scale-down: finishing its links, then exiting); draining (the service
    /// stops gracefully: finishing its links); stopping (a forced stop);
    /// restarting (waiting out a restart backoff); exited; unresponsive (did
    /// not answer the status request in time).
    Status(StatusArgs),
    /// Stop a running service: gracefully, or at once with --force.
    Stop(StopArgs),
    /// Stop gracefully the way a balancer expects: not ready at once (/readyz 404), serving on for the
    /// shutdown delay, then draining. Idempotent; returns when the drain begins (a preStop hook).
    Drain(TargetArgs),
    /// Re-read the configuration and replace the nodes one by one.
    Reload(TargetArgs),
    /// Run this many nodes.
    Scale(ScaleArgs),
    /// Reopen the log file (after logrotate).
    ReopenLogs(TargetArgs),
    /// Zero-downtime binary upgrade: start a new controller, hand it the sockets, step down.
    /// Returns once the new controller serves; exits 2 if it failed (the old one keeps serving).
    Upgrade(TargetArgs),
    /// Settings files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell
    /// (e.g. `vole completions bash > /etc/bash_completion.d/vole`).
    Completions(CompletionsArgs),
    /// Print the man page (roff; e.g. `vole man | man -l -`).
    Man,
    /// Internal: a node process, started by the controller.
    #[command(hide = true)]
    Node(NodeArgs),
    /// Internal: starts an external node (`--node-command`) with the
    /// socket-activation variables set for its own pid.
    #[command(hide = true, name = "exec-node")]
    ExecNode(ExecNodeArgs),
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `exec-node` (internal).
#[derive(Debug, Args)]
pub struct ExecNodeArgs {
    /// Node id.
    #[arg(long)]
    pub id: u32,
    /// How many listening sockets start at descriptor 3.
    #[arg(long)]
    pub fds: usize,
    /// The name for LISTEN_FDNAMES.
    #[arg(long)]
    pub name: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How admin commands find the running service.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// The service's admin socket.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// The service's settings file (the admin socket is found from it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The service's state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `vole stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Close links at once instead of letting calls finish.
    #[arg(long)]
    pub force: bool,
    /// Grace period for running calls, seconds [the service's grace].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Return once the service has been asked to stop, without waiting for
    /// it to exit.
    #[arg(long)]
    pub no_wait: bool,
    /// Which service.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `vole scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The new number of nodes.
    pub nodes: u32,
    /// Which service.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `vole config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a settings file without starting anything.
    Check {
        /// The settings file (TOML).
        file: PathBuf,
    },
}

/// `vole status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The service's admin socket [default: the only admin-*.sock in the state directory].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// The service's state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `vole node` (internal).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node id.
    #[arg(long)]
    pub id: u32,
    /// The control socket's descriptor.
    #[arg(long)]
    pub control_fd: i32,
    /// The connection socket's descriptor (dispatch mode).
    #[arg(long)]
    pub conn_fd: Option<i32>,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Log format.
    #[arg(long, default_value = "text")]
    pub log_format: crate::settings::LogFormat,
    /// Log filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// `vole serve`. Every setting can also come from `--config FILE`
/// (TOML); a flag given here overrides the file. Defaults are in brackets.
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Settings file (TOML); see `deploy/vole.toml`. A `[service]` table holds the service's own settings.
    #[arg(help_heading = "Daemon and files", long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on: host:port, [v6]:port, or :port (every IPv4 interface); a host name binds every address it resolves to; repeat for several [127.0.0.1:<the service's port>].
    #[arg(help_heading = "Network", long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Also accept PLAIN (unencrypted) connections; for trusted networks only.
    #[arg(help_heading = "TLS", long)]
    pub plain: bool,
    /// Disable TLS (then PLAIN must be enabled).
    #[arg(help_heading = "TLS", long)]
    pub no_tls: bool,
    /// TLS certificate chain (PEM); without it a dev certificate is generated.
    #[arg(help_heading = "TLS", long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(help_heading = "TLS", long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Ask TLS clients for a certificate chaining to a CA in this file (PEM); a verified certificate is the client's identity.
    #[arg(help_heading = "TLS", long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: required (a client without a certificate is refused) or optional (it is served without an identity).
    #[arg(help_heading = "TLS", long, value_name = "MODE")]
    pub tls_client_auth: Option<crate::access::ClientAuthMode>,
    /// Session-ticket keys shared with other hosts behind one balancer, so a client resumes on any of them: 48 bytes per key (16-byte id, 32-byte key), newest first (`head -c 48 /dev/urandom`); re-read on reload [keys of this host's own, rotated].
    #[arg(help_heading = "TLS", long, value_name = "FILE")]
    pub tls_ticket_key_file: Option<PathBuf>,
    /// Seconds between checks of --tls-cert, --tls-key and --tls-ticket-key-file for a change; a change reloads the service if the new files are usable (cert-manager swaps them in place); 0 never checks.
    #[arg(help_heading = "TLS", long, value_name = "SECS")]
    pub tls_watch: Option<f64>,
    /// Serve only clients whose certificate has this subject (as whoami shows it, e.g. "CN=alice, O=Example"), or that --auth-allow-key names; repeat for several [every client].
    #[arg(help_heading = "TLS", long, value_name = "SUBJECT")]
    pub auth_allow_subject: Vec<String>,
    /// Serve only clients whose certificate (or key) has this SHA-256 fingerprint, or that --auth-allow-subject names; repeat for several [every client].
    #[arg(help_heading = "TLS", long, value_name = "SHA256")]
    pub auth_allow_key: Vec<String>,
    /// Also accept VTS, the legacy transport stock Versile Python clients use by default.
    #[arg(help_heading = "TLS", long)]
    pub vts: bool,
    /// VTS server RSA key (PEM, PKCS#8 or PKCS#1); without it a key is generated in the state directory.
    #[arg(help_heading = "TLS", long, value_name = "FILE")]
    pub vts_key: Option<PathBuf>,
    /// VTS ciphers accepted, in order of preference, comma-separated (cipher-mode; ciphers aes256, blowfish, blowfish128; modes cbc, ofb).
    #[arg(help_heading = "TLS", long, value_name = "LIST")]
    pub vts_ciphers: Option<String>,
    /// Where the dev certificate and admin socket live [$VOLE_STATE_DIR, else $XDG_STATE_HOME/<service>, else ~/.local/state/<service>].
    #[arg(help_heading = "Daemon and files", long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a connection has to complete VOP and TLS.
    #[arg(help_heading = "Network", long, value_name = "SECS")]
    pub handshake_timeout: Option<f64>,
    /// Largest accepted message, in bytes.
    #[arg(help_heading = "Network", long, value_name = "BYTES")]
    pub max_message: Option<usize>,
    /// Seconds to let calls finish on stop before closing links by force.
    #[arg(help_heading = "Supervision", long, value_name = "SECS")]
    pub grace: Option<f64>,
    /// Seconds a link may make no write progress (the peer stopped reading) before it is closed.
    #[arg(help_heading = "Network", long, value_name = "SECS")]
    pub write_timeout: Option<f64>,
    /// Seconds between the keep-alives asked of every peer; a link silent for 1.5 periods is closed; 0 asks none.
    #[arg(help_heading = "Network", long, value_name = "SECS")]
    pub keep_alive: Option<f64>,
    /// Seconds a link may go without a call before it is closed; 0 never closes idle links.
    #[arg(help_heading = "Network", long, value_name = "SECS")]
    pub idle_timeout: Option<f64>,
    /// Seconds a served call may run before it is cancelled (its caller gets a `vole.cancelled` exception) [no limit].
    #[arg(help_heading = "Calls and budgets", long, value_name = "SECS")]
    pub max_call_time: Option<f64>,
    /// Listen backlog.
    #[arg(help_heading = "Network", long, value_name = "N")]
    pub backlog: Option<i32>,
    /// Worker threads per process [the number of CPUs in one-process mode, 1 per node].
    #[arg(help_heading = "Nodes and balancing", long, value_name = "N")]
    pub threads: Option<usize>,
    /// Node processes; 0 serves in this one process [the number of CPUs].
    #[arg(help_heading = "Nodes and balancing", long, value_name = "N")]
    pub nodes: Option<u32>,
    /// How connections are spread over nodes: grant, shared, dispatch, reuseport [grant].
    #[arg(help_heading = "Nodes and balancing", long, value_name = "MODE")]
    pub balance: Option<vole_control::control::Balance>,
    /// Most open connections over all nodes (grant and dispatch: the controller; shared and reuseport: each node takes max-clients / nodes, rounded up; one process: itself).
    #[arg(help_heading = "Nodes and balancing", long, value_name = "N")]
    pub max_clients: Option<u64>,
    /// Most open connections per node (every mode).
    #[arg(help_heading = "Nodes and balancing", long, value_name = "N")]
    pub max_node_clients: Option<u64>,
    /// Most open connections from one IP address, per serving process (each node, or the one process).
    #[arg(help_heading = "Nodes and balancing", long, value_name = "N")]
    pub max_clients_per_ip: Option<u64>,
    /// The peer's calls one link runs at once.
    #[arg(help_heading = "Calls and budgets", long, value_name = "N")]
    pub max_inflight: Option<usize>,
    /// Calls beyond --max-inflight: wait (stop reading) or refuse (answer "overloaded" at once).
    #[arg(help_heading = "Calls and budgets", long, value_name = "MODE")]
    pub overload: Option<vole_link::Overload>,
    /// Bytes of the peer's calls one link may hold before it stops reading, at least --max-message.
    #[arg(help_heading = "Calls and budgets", long, value_name = "BYTES")]
    pub link_buffer_budget: Option<usize>,
    /// Bytes of the peer's calls the links of one node may hold together before the links holding most stop reading.
    #[arg(help_heading = "Calls and budgets", long, value_name = "BYTES")]
    pub node_buffer_budget: Option<usize>,
    /// Seconds between heartbeats to each node.
    #[arg(help_heading = "Supervision", long, value_name = "SECS")]
    pub heartbeat_interval: Option<f64>,
    /// Seconds a node may take to answer a heartbeat before it is killed as hung.
    #[arg(help_heading = "Supervision", long, value_name = "SECS")]
    pub heartbeat_timeout: Option<f64>,
    /// Node restarts allowed within --restart-period before the service stops.
    #[arg(help_heading = "Supervision", long, value_name = "N")]
    pub restart_intensity: Option<u32>,
    /// The window for --restart-intensity, seconds.
    #[arg(help_heading = "Supervision", long, value_name = "SECS")]
    pub restart_period: Option<f64>,
    /// The admin socket `vole status` talks to [admin-<port>.sock in the state directory].
    #[arg(help_heading = "Daemon and files", long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Detach and run in the background (needs --pidfile).
    #[arg(help_heading = "Daemon and files", long)]
    pub daemon: bool,
    /// Write the controller's pid here, locked while it runs.
    #[arg(help_heading = "Daemon and files", long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Log to this file instead of stderr (reopened on SIGUSR1).
    #[arg(help_heading = "Logging and metrics", long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(help_heading = "Logging and metrics", long, value_name = "FORMAT")]
    pub log_format: Option<crate::settings::LogFormat>,
    /// Log level or filter (e.g. info, debug, vole_link=trace); RUST_LOG overrides.
    #[arg(help_heading = "Logging and metrics", long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Run nodes as this user (the controller binds first, then drops privileges).
    #[arg(help_heading = "Supervision", long, value_name = "USER")]
    pub user: Option<String>,
    /// Run nodes as this group.
    #[arg(help_heading = "Supervision", long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Allow nodes to run as root.
    #[arg(help_heading = "Supervision", long)]
    pub allow_root_nodes: bool,
    /// Serve Prometheus metrics on this address.
    #[arg(help_heading = "Logging and metrics", long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Connections come through a TCP balancer that starts each with a PROXY protocol header (v1 or v2; HAProxy send-proxy-v2, nginx proxy_protocol): off or required.
    #[arg(help_heading = "Network", long, value_name = "MODE")]
    pub proxy_protocol: Option<String>,
    /// A balancer's network (CIDR) or address allowed to send PROXY headers; connections from elsewhere are refused. Repeat for several.
    #[arg(help_heading = "Network", long, value_name = "CIDR")]
    pub proxy_protocol_from: Vec<String>,
    /// Serve HTTP health probes on this address: /livez (the controller answers) and /readyz (200 serving, 404 from the first instant of a shutdown delay or drain, 503 no node serves).
    #[arg(help_heading = "Supervision", long, value_name = "ADDR")]
    pub health: Option<SocketAddr>,
    /// Seconds a graceful stop (SIGTERM, vole drain) first serves on while /readyz says 404, so that balancers stop sending connections before the drain.
    #[arg(help_heading = "Supervision", long, value_name = "SECS")]
    pub shutdown_delay: Option<f64>,
    /// Seconds between TLS session-ticket key rotations.
    #[arg(help_heading = "TLS", long, value_name = "SECS")]
    pub ticket_rotation: Option<f64>,
    /// Run this command as each node instead of the service's own code: a program in any language that serves on the listening socket it gets at descriptor 3 (systemd socket activation: LISTEN_FDS, LISTEN_PID, plus VOLE_NODE_ID). Balance shared (default) or reuseport.
    #[arg(
        help_heading = "Nodes and balancing",
        long,
        value_name = "'CMD ARGS...'"
    )]
    pub node_command: Option<String>,
}

impl ServeArgs {
    /// What these arguments say over the settings file.
    pub fn overrides(&self) -> crate::settings::Overrides {
        let a = self.clone();
        crate::settings::Overrides {
            config: a.config,
            listen: a.listen,
            plain: a.plain,
            no_tls: a.no_tls,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            tls_client_ca: a.tls_client_ca,
            tls_ticket_key_file: a.tls_ticket_key_file,
            tls_watch: a.tls_watch,
            tls_client_auth: a.tls_client_auth,
            auth_allow_subjects: (!a.auth_allow_subject.is_empty()).then_some(a.auth_allow_subject),
            auth_allow_keys: (!a.auth_allow_key.is_empty()).then_some(a.auth_allow_key),
            vts: a.vts,
            vts_key: a.vts_key,
            vts_ciphers: a.vts_ciphers,
            state_dir: a.state_dir,
            handshake_timeout: a.handshake_timeout,
            max_message: a.max_message,
            grace: a.grace,
            write_timeout: a.write_timeout,
            keep_alive: a.keep_alive,
            idle_timeout: a.idle_timeout,
            max_call_time: a.max_call_time,
            backlog: a.backlog,
            threads: a.threads,
            nodes: a.nodes,
            balance: a.balance,
            max_clients: a.max_clients,
            max_node_clients: a.max_node_clients,
            max_clients_per_ip: a.max_clients_per_ip,
            max_inflight: a.max_inflight,
            overload: a.overload,
            link_buffer_budget: a.link_buffer_budget,
            node_buffer_budget: a.node_buffer_budget,
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_timeout: a.heartbeat_timeout,
            restart_intensity: a.restart_intensity,
            restart_period: a.restart_period,
            admin_socket: a.admin_socket,
            health: a.health,
            shutdown_delay: a.shutdown_delay,
            proxy_protocol: a.proxy_protocol,
            proxy_protocol_from: a.proxy_protocol_from,
            daemon: a.daemon,
            pidfile: a.pidfile,
            log_file: a.log_file,
            log_format: a.log_format,
            log_level: a.log_level,
            user: a.user,
            group: a.group,
            allow_root_nodes: a.allow_root_nodes,
            metrics: a.metrics,
            ticket_rotation: a.ticket_rotation,
            node_command: a.node_command,
        }
    }
}
