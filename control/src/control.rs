//! The control protocol between the controller and a node.
//!
//! The two processes talk VOL over a socketpair (no VOP, no TLS: the socket
//! never leaves the host), each publishing a control object as its gateway,
//! as VPy's `VServiceController` and `VServiceNode` do. Before the link
//! starts, the controller sends one frame with the listening sockets
//! attached (see [`HANDOFF_LISTENERS`]).
//!
//! Methods the **node** publishes (the controller calls them):
//!
//! | method | kind | meaning |
//! |---|---|---|
//! | `grant(n)` | one-way | `grant` mode: accept up to `n` more connections |
//! | `stop(graceful, grace_ms)` | one-way | stop accepting; drain links for up to `grace_ms` (or close at once) and exit |
//! | `status()` | call | a [`NodeStatus`] |
//! | `ping()` | call | heartbeat: answers the node's pid |
//! | `ticket_keys(json)` | one-way | new TLS ticket keys ([`TicketKeys`] as JSON) |
//!
//! Methods the **controller** publishes (the node calls them):
//!
//! | method | kind | meaning |
//! |---|---|---|
//! | `hello(pid)` | call | returns the [`NodeConfig`] as JSON |
//! | `sessions(opened, closed)` | one-way | connections accepted and ended since the last report |
//! | `ready()` | one-way | the node serves |
//! | `capacity(n)` | one-way | the node can hold at most `n` connections at once (its descriptor limit, less what it uses besides and a reserve for a whole `dispatch` frame); sent before `ready` by a node with a limit |
//!
//! Reports are coalesced ([`Balance::report_delay`]): a node sends one
//! `sessions` for all the connections that opened and closed within the
//! delay after the first, and a `grant` node that used its last grant
//! reports at once. The controller answers a report with at most one
//! `grant(n)` per node.
//!
//! A node's `capacity` is a per-node limit like `max-node-clients`: the
//! controller neither grants nor dispatches past it, so connections wait in
//! the kernel's accept queue (or the controller's own, short, queue) until
//! the node reports closes. A node never takes a connection past it either
//! (in `shared` and `reuseport` modes that is the only bound).
//!
//! In `dispatch` mode connections travel over a second socket, not the
//! control link: each frame is one byte, the number of descriptors attached
//! (1 to [`crate::fdpass::MAX_FDS`]). Nothing comes back: the controller
//! closes its copies as soon as a frame is sent, and keeps a copy of the
//! node's end of the socket instead, so that if the node goes away it can
//! take the frames the node never received out of the socket
//! ([`crate::fdpass::drain`]) and hand them to another node.
//!
//! Compatibility rules: the controller and its nodes run the same
//! executable (the controller re-executes the file it was started from,
//! opened once at start), so both sides always agree. Still, new fields in
//! [`NodeConfig`] and [`NodeStatus`] get `#[serde(default)]`, and methods are
//! only ever added, never renamed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vole_transport::tickets::{SharedTicketer, TicketKey, KEY_ID_LEN, KEY_LEN};

/// Frame tag: the listening sockets are attached.
pub const HANDOFF_LISTENERS: u8 = b'L';
/// Frame tag: no listening socket (the controller dispatches connections).
pub const HANDOFF_DISPATCH: u8 = b'D';

/// Exit code of a node whose configuration is unusable (a bad certificate,
/// say): the controller reports it and does not restart the node.
pub const EXIT_CONFIG: i32 = 78;

/// How connections are spread over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// A node accepts only while it holds grants from the controller, which
    /// grants to the least-connected nodes (VPy's model).
    #[default]
    Grant,
    /// Every node accepts freely from the shared socket.
    Shared,
    /// The controller accepts and hands each connection to the least-loaded
    /// node.
    Dispatch,
    /// Each node has its own `SO_REUSEPORT` socket; the kernel spreads
    /// connections by hash. A node's queued connections die with it.
    Reuseport,
}

impl Balance {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Balance::Grant => "grant",
            Balance::Shared => "shared",
            Balance::Dispatch => "dispatch",
            Balance::Reuseport => "reuseport",
        }
    }
}

/// How long a node coalesces session reports in `grant` mode, where the
/// controller grants on them (a node that used its last grant reports at
/// once).
pub const REPORT_DELAY: Duration = Duration::from_millis(5);

/// How long a node coalesces session reports in `dispatch` mode: the
/// controller counts connections as it dispatches them, so reports only
/// bring closes, which matter less promptly.
pub const DISPATCH_REPORT_DELAY: Duration = Duration::from_millis(20);

/// How long a node coalesces session reports in `shared` and `reuseport`
/// modes, where nothing waits on them (`status` asks nodes directly).
pub const LAZY_REPORT_DELAY: Duration = Duration::from_secs(1);

impl Balance {
    /// How long a node may hold connection events before reporting them.
    pub fn report_delay(self) -> Duration {
        match self {
            Balance::Grant => REPORT_DELAY,
            Balance::Dispatch => DISPATCH_REPORT_DELAY,
            Balance::Shared | Balance::Reuseport => LAZY_REPORT_DELAY,
        }
    }
}

impl std::str::FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grant" => Ok(Balance::Grant),
            "shared" => Ok(Balance::Shared),
            "dispatch" => Ok(Balance::Dispatch),
            "reuseport" => Ok(Balance::Reuseport),
            other => Err(format!(
                "unknown balance mode {other:?} (grant, shared, dispatch, reuseport)"
            )),
        }
    }
}

/// The TLS certificate chain and key a node serves with, as PEM text: the
/// controller reads the files (before any privilege drop) and sends their
/// contents over the private control link.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsMaterial {
    /// Certificate chain (PEM).
    pub cert_pem: String,
    /// Private key (PEM).
    pub key_pem: String,
    /// The CA certificates client certificates must chain to (PEM), when
    /// the service asks clients for certificates.
    #[serde(default)]
    pub client_ca_pem: Option<String>,
    /// Whether a client without a certificate is refused (`false`: it is
    /// served without an identity). Meaningless without `client_ca_pem`.
    #[serde(default)]
    pub client_auth_required: bool,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        write!(
            f,
            "TlsMaterial({} bytes of certificate)",
            self.cert_pem.len()
        )
    }
}

/// The VTS server key a node serves with, as PKCS#8 PEM text, sent like
/// [`TlsMaterial`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtsMaterial {
    /// The RSA private key (PEM).
    pub key_pem: String,
    /// Ciphers and modes accepted, in order of preference (`blowfish-cbc`
    /// etc.); empty: every one vole implements.
    #[serde(default)]
    pub ciphers: Vec<String>,
}

impl std::fmt::Debug for VtsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("VtsMaterial(..)")
    }
}

/// What a node needs to know to serve, sent by the controller in answer to
/// `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node's id (stable across restarts of the same slot).
    pub node_id: u32,
    /// How this node gets connections.
    pub balance: Balance,
    /// TLS, if enabled.
    pub tls: Option<TlsMaterial>,
    /// Whether PLAIN is allowed.
    pub plain: bool,
    /// VTS, if enabled (absent from an older controller: off).
    #[serde(default)]
    pub vts: Option<VtsMaterial>,
    /// VOP + TLS handshake limit, milliseconds.
    pub handshake_timeout_ms: u64,
    /// Write-progress limit per link, milliseconds.
    pub write_timeout_ms: u64,
    /// Keep-alive period asked of every peer, milliseconds (`None`: not
    /// asked).
    #[serde(default)]
    pub keep_alive_ms: Option<u64>,
    /// Links with no calls for this long are closed, milliseconds (`None`:
    /// never).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Longest a served call may run before it is cancelled, milliseconds
    /// (`None`: no limit).
    #[serde(default)]
    pub max_call_time_ms: Option<u64>,
    /// Largest accepted message.
    pub max_message: usize,
    /// Default grace period for a drain, milliseconds.
    pub grace_ms: u64,
    /// TLS session-ticket keys shared by all nodes (so a client resumes on
    /// whichever node it lands).
    #[serde(default)]
    pub tickets: Option<TicketKeys>,
    /// The hosted service's own settings: the `[service]` table of the
    /// settings file as TOML text, for its per-node init (parsed there by
    /// the same deserializer that validated it); `None` when there is none.
    #[serde(default)]
    pub service: Option<String>,
    /// Admission limits and buffer budgets the node applies itself
    /// (absent from an older controller: the defaults).
    #[serde(default)]
    pub budgets: Budgets,
    /// The settings file's allow lists (`[auth]`): when set, the node
    /// refuses every client whose identity they do not name.
    #[serde(default)]
    pub access: Option<AccessRules>,
    /// Every connection starts with a PROXY protocol header from a
    /// balancer in these networks (CIDR), others are refused; `None`: no
    /// header is expected.
    #[serde(default)]
    pub proxy_from: Option<Vec<String>>,
}

/// Which clients a service serves, by the identity they proved: a client
/// certificate whose subject is in `subjects`, or a certificate or key
/// whose SHA-256 fingerprint (lowercase hex) is in `keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRules {
    /// Allowed certificate subjects, exactly as `PeerIdentity` writes them
    /// (`"CN=alice, O=Example"`).
    pub subjects: Vec<String>,
    /// Allowed fingerprints, 64 lowercase hex digits.
    pub keys: Vec<String>,
}

/// Admission limits and buffer budgets a node applies itself; `None`
/// leaves the node's default (or no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    /// The peer's calls a link runs at once.
    pub max_inflight: Option<usize>,
    /// Refuse calls beyond `max_inflight` as overloaded (else reading
    /// waits).
    pub overload_refuse: bool,
    /// Bytes of the peer's calls one link may hold.
    pub link_buffer_budget: Option<usize>,
    /// Bytes of the peer's calls the node's links may hold together.
    pub node_buffer_budget: Option<usize>,
    /// Most connections this node holds open (set in the modes where the
    /// node accepts without the controller's say: shared, reuseport).
    pub max_clients: Option<u64>,
    /// Most connections from one IP address this node holds open.
    pub max_clients_per_ip: Option<u64>,
}

/// TLS ticket keys as sent to nodes: each key is its id and key bytes,
/// hex-encoded (48 bytes). Sent only over the control link, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketKeys {
    /// The key that seals new tickets.
    pub current: String,
    /// Older keys that still open tickets, newest first.
    #[serde(default)]
    pub previous: Vec<String>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKeys({} previous)", self.previous.len())
    }
}

fn key_hex(k: &TicketKey) -> String {
    k.id.iter()
        .chain(k.key.iter())
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key_from_hex(s: &str) -> Option<TicketKey> {
    if s.len() != 2 * (KEY_ID_LEN + KEY_LEN) || !s.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect();
    let bytes = bytes?;
    TicketKey::from_parts(&bytes[..KEY_ID_LEN], &bytes[KEY_ID_LEN..]).ok()
}

impl TicketKeys {
    /// The wire form of `current` and `previous`.
    pub fn new(current: &TicketKey, previous: &[TicketKey]) -> Self {
        TicketKeys {
            current: key_hex(current),
            previous: previous.iter().map(key_hex).collect(),
        }
    }

    /// Installs these keys in `ticketer`; false if they are malformed.
    pub fn install(&self, ticketer: &SharedTicketer) -> bool {
        let Some(current) = key_from_hex(&self.current) else {
            return false;
        };
        let previous: Option<Vec<TicketKey>> =
            self.previous.iter().map(|p| key_from_hex(p)).collect();
        let Some(previous) = previous else {
            return false;
        };
        ticketer.set_keys(&current, &previous);
        true
    }
}

/// A node's state, as `status()` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Process id.
    pub pid: u32,
    /// Open sessions.
    #[serde(default)]
    pub sessions: u64,
    /// Calls running now.
    #[serde(default)]
    pub inflight: u64,
    /// Calls served.
    #[serde(default)]
    pub calls: u64,
    /// Calls that failed.
    #[serde(default)]
    pub errors: u64,
    /// Connections accepted.
    #[serde(default)]
    pub accepted: u64,
    /// Handshake failures.
    #[serde(default)]
    pub handshake_failures: u64,
    /// Milliseconds since the node started.
    #[serde(default)]
    pub uptime_ms: u64,
    /// Handshake failures by reason.
    #[serde(default)]
    pub handshake_failures_by_reason: Vec<(String, u64)>,
    /// Served-call latency histogram counts (`vole_link::metrics::BUCKETS`).
    #[serde(default)]
    pub latency_counts: Vec<u64>,
    /// Sum of served-call latencies, microseconds.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// The node's descriptor limit (soft `RLIMIT_NOFILE`), if it has one.
    #[serde(default)]
    pub fd_limit: Option<u64>,
    /// Connections the node can hold within its descriptor limit (see
    /// `capacity` in the [module](self) documentation), if limited.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// The node is not taking connections: it holds as many as its
    /// descriptor limit allows, or ran out of descriptors a moment ago.
    #[serde(default)]
    pub full: bool,
    /// Calls cancelled before they finished (by their caller, by
    /// `max-call-time`, or as their link closed).
    #[serde(default)]
    pub cancelled: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_keys_survive_the_wire_form() {
        let k = TicketKey::generate().expect("key");
        let p = TicketKey::generate().expect("key");
        let wire = TicketKeys::new(&k, &[p]);
        let json = serde_json::to_string(&wire).expect("json");
        let back: TicketKeys = serde_json::from_str(&json).expect("json");
        let a = SharedTicketer::new(60);
        assert!(back.install(&a));
        let b = SharedTicketer::new(60);
        b.set_keys(&k, &[]);
        use rustls::server::ProducesTickets;
        let t = b.encrypt(b"s").expect("ticket");
        assert!(a.decrypt(&t).is_some());
        assert!(!TicketKeys {
            current: "zz".into(),
            previous: vec![]
        }
        .install(&a));
        assert!(!format!("{back:?}").contains(&back.current));
    }
}
