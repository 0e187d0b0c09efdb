//! The vole controller: the process that binds the listening socket, starts
//! N node processes from its own executable, hands them the socket over
//! SCM_RIGHTS, balances connections between them over VOL control links,
//! restarts them when they die and stops them in order.
//!
//! * [`config`]: what a controller is told ([`ControllerConfig`]);
//! * [`core`]: every decision, without I/O ([`core::SupervisorCore`]);
//! * [`balance`]: which node gets the next connection (pure policy);
//! * [`restart`]: backoff and restart intensity (pure policy);
//! * [`spawn`]: starting a node process with exactly the right descriptors;
//! * [`sched`]: the controller runs `SCHED_BATCH`, so it never preempts a
//!   node;
//! * [`supervisor`]: the tokio driver of the core ([`Bound`]);
//! * [`admin`]: the local admin socket behind `vole status`;
//! * [`systemd`]: readiness notifications and socket activation;
//! * [`metrics`]: node statuses recorded through the `metrics` crate.
//!
//! What it is not: it serves no sessions itself (nodes do, with
//! `vole-node`), except that in `dispatch` mode it accepts connections and
//! passes them on.

#![warn(missing_docs)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod core;
pub mod metrics;
pub mod restart;
pub mod sched;
pub mod spawn;
pub mod supervisor;
pub mod systemd;

mod error;
mod lifecycle;

pub use config::ControllerConfig;
pub use error::Error;
pub use lifecycle::{Lifecycle, Outcome};
pub use supervisor::{Bound, Hooks, UpgradeChild, UpgradeRequest};
