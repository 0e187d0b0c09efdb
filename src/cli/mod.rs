//! The `vole` command line: argument definitions (clap) and exit codes.

pub mod call;
pub mod exit;
pub mod serve;
pub mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Resolve a vop:// URI and call a method; prints the result as JSON.
    Call(CallArgs),
    /// Resolve a vop:// URI and list the methods of the object with their docs.
    Describe(DescribeArgs),
    /// Load generator: many links, many calls in flight, latency histogram.
    Bench(crate::bench::BenchArgs),
    /// Baseline length-prefixed echo server for `vole bench` (raw TLS or TCP).
    #[command(hide = true)]
    BenchServer(crate::bench::ServerArgs),
}

/// `vole serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:4433")]
    pub listen: Vec<SocketAddr>,
    /// Also accept PLAIN (unencrypted) connections; for trusted networks only.
    #[arg(long)]
    pub plain: bool,
    /// Disable TLS (then --plain is required).
    #[arg(long, requires = "plain")]
    pub no_tls: bool,
    /// TLS certificate chain (PEM); without it a dev certificate is generated.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the dev certificate is kept [default: $VOLE_STATE_DIR, else $XDG_STATE_HOME/vole, else ~/.local/state/vole].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a connection has to complete VOP and TLS.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Largest accepted message, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message: usize,
    /// Seconds to let calls finish on stop before closing links by force.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub grace: f64,
    /// Seconds a link may fail to make write progress (the peer stopped
    /// reading) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub write_timeout: f64,
    /// Listen backlog.
    #[arg(long, value_name = "N", default_value_t = vole_node::listen::DEFAULT_BACKLOG)]
    pub backlog: i32,
    /// Worker threads [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
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

/// `vole call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// vop://host[:port]/path/[name[?args]]
    pub uri: String,
    /// Method to call on the resolved object.
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
