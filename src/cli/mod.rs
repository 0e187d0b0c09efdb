//! The `vole` command line: argument definitions (clap) and exit codes.

pub mod admin;
#[cfg(feature = "bench")]
pub mod bench;
pub mod call;
pub mod config;
pub mod exit;
pub mod node;
pub mod serve;
pub mod status;
pub mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Writes to stdout; a closed pipe (`vole call ... | head`) ends the
/// program quietly, as for any Unix filter.
pub fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("vole: cannot write to stdout: {e}");
        std::process::exit(i32::from(exit::INTERNAL));
    }
}

/// `println!` through [`out`].
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Host Versile-protocol object services across many processes.
#[derive(Debug, Parser)]
#[command(name = "vole", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the demo gateway (TLS with a generated dev certificate by default).
    Serve(Box<ServeArgs>),
    /// Resolve a vop:// URI and call a method; prints the result as JSON.
    Call(CallArgs),
    /// Resolve a vop:// URI and list the methods of the object with their docs.
    Describe(DescribeArgs),
    /// Load generator: many links, many calls in flight, latency histogram.
    #[cfg(feature = "bench")]
    Bench(BenchCommand),
    /// Show the nodes of a running service (from its admin socket).
    Status(StatusArgs),
    /// Stop a running service: gracefully, or at once with --force.
    Stop(StopArgs),
    /// Re-read the configuration and replace the nodes one by one.
    Reload(TargetArgs),
    /// Run this many nodes.
    Scale(ScaleArgs),
    /// Reopen the log file (after logrotate).
    ReopenLogs(TargetArgs),
    /// Zero-downtime binary upgrade: start a new controller, hand it the sockets, step down.
    Upgrade(TargetArgs),
    /// Settings files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Internal: a node process, started by the controller.
    #[command(hide = true)]
    Node(NodeArgs),
    /// Baseline length-prefixed echo server for `vole bench` (raw TLS or TCP).
    #[command(hide = true)]
    #[cfg(feature = "bench")]
    BenchServer(vole_bench::ServerArgs),
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
    /// Settings file (TOML); see `deploy/vole.toml`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; repeat for several [127.0.0.1:4433].
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Also accept PLAIN (unencrypted) connections; for trusted networks only.
    #[arg(long)]
    pub plain: bool,
    /// Disable TLS (then PLAIN must be enabled).
    #[arg(long)]
    pub no_tls: bool,
    /// TLS certificate chain (PEM); without it a dev certificate is generated.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Where the dev certificate and admin socket live [$VOLE_STATE_DIR, else $XDG_STATE_HOME/vole, else ~/.local/state/vole].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a connection has to complete VOP and TLS [10].
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<f64>,
    /// Largest accepted message, in bytes [16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_message: Option<usize>,
    /// Seconds to let calls finish on stop before closing links by force [10].
    #[arg(long, value_name = "SECS")]
    pub grace: Option<f64>,
    /// Seconds a link may make no write progress (the peer stopped reading) before it is closed [30].
    #[arg(long, value_name = "SECS")]
    pub write_timeout: Option<f64>,
    /// Listen backlog [1024].
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,
    /// Worker threads per process [the number of CPUs in one-process mode, 1 per node].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Node processes; 0 serves in this one process [the number of CPUs].
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,
    /// How connections are spread over nodes: grant, shared, dispatch, reuseport [grant].
    #[arg(long, value_name = "MODE")]
    pub balance: Option<vole_control::control::Balance>,
    /// Most open connections over all nodes (grant and dispatch modes).
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u64>,
    /// Most open connections per node (grant and dispatch modes).
    #[arg(long, value_name = "N")]
    pub max_node_clients: Option<u64>,
    /// Seconds between heartbeats to each node [1].
    #[arg(long, value_name = "SECS")]
    pub heartbeat_interval: Option<f64>,
    /// Seconds a node may take to answer a heartbeat before it is killed as hung [3].
    #[arg(long, value_name = "SECS")]
    pub heartbeat_timeout: Option<f64>,
    /// Node restarts allowed within --restart-period before the service stops [5].
    #[arg(long, value_name = "N")]
    pub restart_intensity: Option<u32>,
    /// The window for --restart-intensity, seconds [60].
    #[arg(long, value_name = "SECS")]
    pub restart_period: Option<f64>,
    /// The admin socket `vole status` talks to [admin-<port>.sock in the state directory].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Detach and run in the background (needs --pidfile).
    #[arg(long)]
    pub daemon: bool,
    /// Write the controller's pid here, locked while it runs.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Log to this file instead of stderr (reopened on SIGUSR1).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Log format: text or json [text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<crate::settings::LogFormat>,
    /// Log level or filter (e.g. info, debug, vole_link=trace) [info]; RUST_LOG overrides.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Run nodes as this user (the controller binds first, then drops privileges).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Run nodes as this group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Allow nodes to run as root.
    #[arg(long)]
    pub allow_root_nodes: bool,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Seconds between TLS session-ticket key rotations [3600].
    #[arg(long, value_name = "SECS")]
    pub ticket_rotation: Option<f64>,
}

/// Client connection flags shared by `call`, `describe` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Offer only PLAIN (unencrypted); the server must allow it.
    #[arg(long)]
    pub plain: bool,
    /// Trust servers whose certificate chains to this CA file (PEM).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (hex).
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub pin: Option<String>,
    /// Do not verify the server certificate at all (dangerous).
    #[arg(long)]
    pub insecure: bool,
    /// Where to find the local dev certificate, trusted automatically for localhost.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for the connection, the handshake and each call.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// `vole bench`: the load generator's flags and the connection flags.
#[cfg(feature = "bench")]
#[derive(Debug, Args)]
pub struct BenchCommand {
    /// The load generator's flags.
    #[command(flatten)]
    pub bench: vole_bench::BenchArgs,
    /// Connection flags (as for `vole call`); a link on which no call
    /// finishes for --timeout seconds is given up, its calls counted as errors.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vole call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// vop://host[:port]/path/[name[?args]]
    pub uri: String,
    /// Method to call on the resolved object; `meta.NAME` sends a meta call
    /// (`meta.ping`, `meta.methods`, `meta.doc`).
    pub method: Option<String>,
    /// Arguments: each is parsed as JSON if it can be, otherwise taken as a string.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vole describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// vop://host[:port]/path/
    pub uri: String,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}
