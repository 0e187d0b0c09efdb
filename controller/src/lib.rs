//! The vole controller: the process that binds the listening socket, starts
//! N node processes from its own executable, hands them the socket over
//! SCM_RIGHTS, balances connections between them over VOL control links,
//! restarts them when they die and stops them in order.
//!
//! * [`balance`]: which node gets the next connection (pure policy);
//! * [`restart`]: backoff and restart intensity (pure policy);
//! * [`spawn`]: starting a node process with exactly the right descriptors;
//! * [`sched`]: the controller runs `SCHED_BATCH`, so it never preempts a
//!   node;
//! * [`supervisor`]: the runtime tying them together ([`Bound`]);
//! * [`admin`]: the local admin socket behind `vole status`;
//! * [`systemd`]: readiness notifications and socket activation.
//!
//! What it is not: it serves no sessions itself (nodes do, with
//! `vole-node`), except that in `dispatch` mode it accepts connections and
//! passes them on.

#![warn(missing_docs)]

pub mod admin;
pub mod balance;
pub mod restart;
pub mod sched;
pub mod spawn;
pub mod supervisor;
pub mod systemd;

pub use supervisor::{
    Bound, ControllerConfig, Hooks, Lifecycle, Outcome, UpgradeChild, UpgradeRequest,
};

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A listening socket could not be set up.
    #[error(transparent)]
    Listen(#[from] vole_control::Error),
    /// A system call failed.
    #[error("i/o")]
    Io(#[source] std::io::Error),
    /// The descriptors systemd passed (socket activation) are unusable.
    #[error("socket activation: {0}")]
    SocketActivation(String),
    /// The systemd notification socket or watchdog settings are unusable.
    #[error("systemd notify: {0}")]
    Notify(String),
}
pub mod metrics;
