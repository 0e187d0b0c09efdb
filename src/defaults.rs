//! The default of every `serve` setting that has a fixed one, in one
//! place: the settings ([`crate::settings`]) fall back to these, and
//! `serve --help` shows them (`cli::help`), so the two cannot disagree.
//! Defaults that depend on the machine or on other settings (node and
//! thread counts, the state directory, the balance mode of external nodes)
//! are described in their help text instead.

use vole_controller::restart::RestartPolicy;

/// Seconds a connection has to complete VOP and TLS.
pub const HANDSHAKE_TIMEOUT: f64 = 10.0;
/// Largest accepted message, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Seconds to let calls finish on stop.
pub const GRACE: f64 = 10.0;
/// Seconds a graceful stop first serves on while not ready (0: none).
pub const SHUTDOWN_DELAY: f64 = 0.0;
/// Whether connections start with a PROXY protocol header.
pub const PROXY_PROTOCOL: &str = "off";
/// Seconds a link may make no write progress.
pub const WRITE_TIMEOUT: f64 = 30.0;
/// Seconds between the keep-alives asked of every peer.
pub const KEEP_ALIVE: f64 = 30.0;
/// Seconds a link may go without a call (0: never closed for that).
pub const IDLE_TIMEOUT: f64 = 0.0;
/// Listen backlog.
pub const BACKLOG: i32 = vole_control::listen::DEFAULT_BACKLOG;
/// Bytes of the peer's calls one link may hold (at least `max-message`).
pub const LINK_BUFFER_BUDGET: usize = vole_link::DEFAULT_MAX_BUFFERED;
/// Bytes of the peer's calls the links of one node may hold together (at
/// least `max-message`).
pub const NODE_BUFFER_BUDGET: usize = vole_link::budget::DEFAULT_NODE_BUDGET;
/// Seconds between heartbeats to each node.
pub const HEARTBEAT_INTERVAL: f64 = 1.0;
/// Seconds a node may take to answer a heartbeat.
pub const HEARTBEAT_TIMEOUT: f64 = 3.0;
/// Seconds between TLS session-ticket key rotations.
pub const TICKET_ROTATION: f64 = 3600.0;
/// Whether a service with a client CA requires client certificates.
pub const CLIENT_AUTH: crate::access::ClientAuthMode = crate::access::ClientAuthMode::Required;
/// Log level or filter.
pub const LOG_LEVEL: &str = "info";

/// VTS ciphers and modes a server accepts, in its order of preference:
/// every one vole implements, strongest first.
pub fn vts_ciphers() -> Vec<vole_transport::vts::Suite> {
    vole_transport::vts::Suite::ALL.to_vec()
}

/// The peer's calls one link runs at once (the link's own default).
pub fn max_inflight() -> usize {
    vole_link::LinkConfig::default().max_inflight
}

/// Node restarts and their backoff (the controller's own default).
pub fn restart() -> RestartPolicy {
    RestartPolicy::default()
}
