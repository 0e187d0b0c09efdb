//! The command-line arguments of `vole bench` and `vole bench-server`
//! (clap), apart from the connection flags: the caller adds its own (as
//! the `vole` command does with those of `vole call`) and builds the
//! client configuration from them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// `vole bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to load: vop://host:port/path/ (a Versile service), or
    /// raw-tls://host:port / raw-tcp://host:port (a `vole bench-server`).
    #[arg(
        long,
        value_name = "URI",
        default_value = "vop://localhost:4433/text/echo/"
    )]
    pub target: String,
    /// Method called on the resolved object (vop:// targets), with one string argument.
    #[arg(long, value_name = "NAME", default_value = "echo")]
    pub method: String,
    /// Links (connections) to open; with --sessions, concurrent workers.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 64)]
    pub links: usize,
    /// Calls kept in flight on each link (1 with --sessions).
    #[arg(short = 'm', long, value_name = "M", default_value_t = 1)]
    pub inflight: usize,
    /// New sessions instead of held links: each of --links workers loops
    /// connect, VOP and TLS, link handshake, resolve the path, one call
    /// (checked), close. Counts sessions; the latency is the whole session.
    /// Against a raw-tls:// or raw-tcp:// target: connect, TLS, one echo, close.
    #[arg(long)]
    pub sessions: bool,
    /// With --sessions: no TLS resumption, every session a full handshake
    /// (by default all workers share one session cache, as one reconnecting
    /// client does).
    #[arg(long, requires = "sessions")]
    pub no_resume: bool,
    /// With --sessions: give each worker its own TLS session cache, as N
    /// separate clients each reconnecting (a shared cache holds at most 8
    /// tickets per server, so with more than 8 workers some sessions find
    /// it empty and do a full handshake).
    #[arg(long, requires = "sessions", conflicts_with = "no_resume")]
    pub cache_per_worker: bool,
    /// The hosts of the service (HOST:PORT, comma-separated or repeated):
    /// links spread over them and fail over between them (a failing host is
    /// set aside with backoff), calls that provably never ran are tried
    /// again, and the report counts ok / retried / interrupted / failed.
    /// The target still gives the path and the name TLS verifies.
    #[arg(
        long,
        value_name = "ADDR",
        value_delimiter = ',',
        conflicts_with = "sessions"
    )]
    pub endpoints: Vec<String>,
    /// Find the hosts by the DNS SRV records of `_vop._tcp.HOST` (HOST
    /// from --target; a Kubernetes headless Service's port named `vop`),
    /// with the ports they give, and run the failover client over them.
    #[arg(long, conflicts_with_all = ["sessions", "endpoints"])]
    pub srv: bool,
    /// A fixed rate of calls per second over all links, instead of calls
    /// back to back; runs the failover client (over every address the
    /// target's host resolves to, unless --endpoints is given).
    #[arg(long, value_name = "CALLS", conflicts_with = "sessions")]
    pub rate: Option<f64>,
    /// With --endpoints or --rate: the calls are idempotent, so a call cut
    /// off in flight (or past --call-timeout) is tried again on another
    /// link instead of counting as interrupted.
    #[arg(long)]
    pub idempotent: bool,
    /// With --endpoints or --rate: a deadline for each try of a call; a
    /// host that misses it is set aside.
    #[arg(long, value_name = "SECS")]
    pub call_timeout: Option<f64>,
    /// Payload size in bytes (a string of this many ASCII characters).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub payload: usize,
    /// Seconds measured.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window.
    #[arg(short = 'w', long, value_name = "SECS", default_value_t = 2.0)]
    pub warmup: f64,
    /// Also measure this process's CPU time over the window (the server's pid).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// With --server-pid: measure the process and all its descendants (a
    /// controller and its nodes), listed again at each reading.
    #[arg(long, requires = "server_pid")]
    pub server_tree: bool,
    /// The service's admin socket: read each node's counters at the start and
    /// the end of the window, and report them with Jain's index over nodes
    /// (of calls with held links, of accepted connections with --sessions).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Print the summary as one line of JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A label copied into the summary (for scripts).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Worker threads of the load generator [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `vole bench-server` arguments (a hidden subcommand).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["tls", "plain"])))]
pub struct ServerArgs {
    /// Length-prefixed echo over TLS 1.3 (the dev certificate).
    #[arg(long)]
    pub tls: bool,
    /// Length-prefixed echo over plain TCP.
    #[arg(long)]
    pub plain: bool,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4434")]
    pub listen: SocketAddr,
    /// Where the dev certificate is kept (as for `vole serve`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Worker threads [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}
