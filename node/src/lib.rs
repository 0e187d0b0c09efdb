//! A vole node: the part of vole that serves Versile sessions.
//!
//! [`Service`] takes connections from a listening socket and runs, for each,
//! VOP negotiation, TLS or PLAIN, and a VOL link to a fresh gateway object.
//! It is the whole server in one-process mode (`vole serve --nodes 0`) and
//! the serving half of every node process under a controller.
//!
//! [`auth`] decides which clients a service serves: an [`Authorize`]r sees
//! each connection after its transport handshake and may refuse it before
//! the link handshake; [`AllowList`] is the settings file's form.
//!
//! [`process`] is the node process runtime: it takes the sockets the
//! controller hands over, speaks the control link (its schema is in
//! `vole-control`) and runs a [`Service`] until told to stop.
//!
//! What it is not: it does not bind sockets passed to it by a controller or
//! decide which node accepts (that is `vole-controller`), and it implements
//! no protocol itself (see `vole-link`, `vole-transport` and
//! `vole-control`).

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
pub mod capacity;
pub mod lograte;
pub mod process;
mod service;

pub use auth::{AllowList, Authorize, Authorizer};
pub use service::{
    Admission, GatewayFactory, Service, ServiceConfig, ServiceStats, SessionObserver, Snapshot,
    DRAIN_QUIET,
};

/// Errors of a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be set up.
    #[error(transparent)]
    Listen(#[from] vole_control::Error),
    /// The wire layers failed to configure (TLS files, transports).
    #[error("transport configuration")]
    Transport(#[from] vole_transport::Error),
    /// The controller's handoff of sockets failed.
    #[error("socket handoff from the controller failed: {0}")]
    Handoff(String),
    /// The control link to the controller failed.
    #[error("control link: {0}")]
    Control(String),
    /// The hosted service's per-node init failed.
    #[error("the service's init failed: {0}")]
    Init(String),
    /// The configuration the controller sent is not usable.
    #[error("node configuration: {0}")]
    Config(String),
}
