//! [`LinkConfig`]: the settings of one link.

use std::time::Duration;

use crate::metrics::CallMetrics;

/// The default of [`LinkConfig::max_buffered`]: 64 MiB.
pub const DEFAULT_MAX_BUFFERED: usize = 64 << 20;

/// What a link does with the peer's calls beyond
/// [`LinkConfig::max_inflight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overload {
    /// Stop reading until a call finishes (the peer's calls wait).
    #[default]
    Wait,
    /// Read on, and answer each call beyond the limit at once with the
    /// exception `("overloaded", reason)`, which a vole client reports as
    /// [`Error::Overloaded`](crate::Error::Overloaded): the call was not
    /// run and may be retried. One-way calls beyond it are dropped and
    /// counted ([`LinkStats::refused_overload`](crate::LinkStats::refused_overload)).
    Refuse,
}

impl Overload {
    /// The name used in settings: `wait` or `refuse`.
    pub fn name(self) -> &'static str {
        match self {
            Overload::Wait => "wait",
            Overload::Refuse => "refuse",
        }
    }
}

impl std::str::FromStr for Overload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(Overload::Wait),
            "refuse" => Ok(Overload::Refuse),
            other => Err(format!("unknown overload mode {other:?} (wait, refuse)")),
        }
    }
}

/// The first argument of the exception that refuses a call as overloaded.
pub const OVERLOADED: &str = "overloaded";

/// Settings of one link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Keep the peer's gateway after the handshake. A service sets this to
    /// false: it never calls the client's gateway, so it releases it at once
    /// (VPy's `hold_peer=False`).
    pub hold_peer: bool,
    /// The handshake must complete within this time.
    pub handshake_timeout: Duration,
    /// Ask the peer to send keep-alives at this period; the link is closed
    /// if nothing arrives for 1.5 periods.
    pub keep_alive: Option<Duration>,
    /// The shortest keep-alive period this side agrees to send.
    pub keep_alive_min_send: Duration,
    /// Largest accepted message.
    pub max_message: usize,
    /// Deepest accepted entity nesting.
    pub max_depth: usize,
    /// Incoming calls that may run at once. Beyond it, as
    /// [`LinkConfig::overload`] says: reading pauses, or calls are refused.
    pub max_inflight: usize,
    /// What a link running `max_inflight` calls does with more.
    pub overload: Overload,
    /// Bytes of the peer's calls a link may hold (its input buffer and the
    /// calls it runs) before it stops reading until calls finish. A link
    /// running no call always reads, so one message of up to
    /// `max_message` always fits. See [`crate::budget`].
    pub max_buffered: usize,
    /// The budget shared by the links of a process (see
    /// [`crate::budget::Budget`]), if any.
    pub budget: Option<std::sync::Arc<crate::budget::Budget>>,
    /// Output buffered beyond this many bytes pauses reading and local calls
    /// until the peer reads.
    pub out_high_water: usize,
    /// If buffered output makes no progress for this long, the peer is
    /// taken to have stopped reading and the link is closed.
    pub write_timeout: Duration,
    /// A graceful close that has not finished after this long is forced.
    pub close_grace: Duration,
    /// A graceful close keeps the connection open (refusing the peer's new
    /// calls as closing) until the link handshake is done and the peer has
    /// made no call for this long, or has closed its side: a call the peer
    /// sent before it could see the close is then refused, never lost on
    /// the wire. A peer that goes on calling is refused for no longer than
    /// this after its first refusal, and at most
    /// [`DRAIN_REFUSALS`](crate::DRAIN_REFUSALS) times. Zero closes as
    /// soon as running calls are answered. A service sets it; the link's
    /// creation counts as a call, so a link drained as it is set up still
    /// refuses its first call.
    pub drain_quiet: Duration,
    /// Close the link gracefully (as a drain does) once the peer has made
    /// no call for this long and none of its calls is running; `None`
    /// keeps idle links open. A service sets it (`idle-timeout`).
    pub idle_timeout: Option<Duration>,
    /// A served call that runs longer than this is cancelled: its handler
    /// is dropped and the caller gets a `vole.cancelled` exception
    /// ([`Error::Cancelled`](crate::Error::Cancelled)). `None`: no limit.
    pub max_call_time: Option<Duration>,
    /// Where served-call latencies are recorded, if anywhere.
    pub metrics: Option<std::sync::Arc<CallMetrics>>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            hold_peer: true,
            handshake_timeout: Duration::from_secs(30),
            keep_alive: None,
            keep_alive_min_send: Duration::from_secs(1),
            max_message: vole_transport::vec::DecodeConfig::default().max_message,
            max_depth: vole_transport::vec::DecodeConfig::default().max_depth,
            max_inflight: 1024,
            overload: Overload::Wait,
            max_buffered: DEFAULT_MAX_BUFFERED,
            budget: None,
            out_high_water: 1 << 20,
            write_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(10),
            drain_quiet: Duration::ZERO,
            idle_timeout: None,
            max_call_time: None,
            metrics: None,
        }
    }
}
