//! What a controller is told: its nodes, balance mode, limits, restart
//! policy, heartbeats and what every node gets.

use std::net::SocketAddr;
use std::time::Duration;

use vole_control::control::{Balance, NodeConfig};

use crate::balance::Limits;
use crate::restart::RestartPolicy;

/// Everything the controller needs to know.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The hosted service's name: nodes run as `<name>-node-<id>`.
    pub name: String,
    /// Number of node processes.
    pub nodes: u32,
    /// How connections are spread.
    pub balance: Balance,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Listen backlog.
    pub backlog: i32,
    /// Connection limits (`grant` and `dispatch` modes).
    pub limits: Limits,
    /// Restart backoff and intensity.
    pub restart: RestartPolicy,
    /// How often each node is pinged.
    pub heartbeat_interval: Duration,
    /// How long a ping may take before the node is declared hung.
    pub heartbeat_timeout: Duration,
    /// Default grace period of a graceful stop.
    pub grace: Duration,
    /// How long a graceful stop (SIGTERM, `vole drain`) first serves on
    /// while reporting not-ready, so that balancers stop sending new
    /// connections before the drain begins (0: drain at once).
    pub shutdown_delay: Duration,
    /// The configuration every node gets (its `node_id` is filled in).
    pub node: NodeConfig,
    /// Extra arguments for `vole node` (threads, verbosity).
    pub node_args: Vec<String>,
    /// How often the shared TLS ticket key is replaced.
    pub ticket_rotation: Duration,
    /// TLS ticket keys from `[tls] ticket-key-file`, newest first, shared
    /// with other hosts (so a client resumes on whichever host it reaches):
    /// when set, the controller uses these and rotates none of its own.
    pub shared_ticket_keys: Option<Vec<vole_transport::tickets::TicketKey>>,
    /// Run nodes as this user and group (uid, gid).
    pub node_user: Option<(u32, u32)>,
    /// If set, node metrics are polled at this period and recorded through
    /// the `metrics` crate (an exporter must be installed).
    pub metrics_interval: Option<Duration>,
    /// Nodes log JSON lines (`node_args` say `--log-format json`): their
    /// output is forwarded as JSON objects, not with a text prefix.
    pub log_json: bool,
    /// External nodes: each node runs this program (and arguments) instead
    /// of the host's own binary, with the listening sockets passed by the
    /// systemd socket-activation convention. Such nodes have no control
    /// link: they serve from the moment they start, are stopped with
    /// SIGTERM (SIGKILL after the grace period), and only `shared` and
    /// `reuseport` balance them.
    pub node_command: Option<Vec<String>>,
}
