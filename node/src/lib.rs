//! A vole node: the part of vole that serves Versile sessions.
//!
//! [`Service`] takes connections from a listening socket and runs, for each,
//! VOP negotiation, TLS or PLAIN, and a VOL link to a fresh gateway object.
//! It is the whole server in one-process mode (`vole serve --nodes 0`) and
//! the serving half of every node process under a controller.
//!
//! What it is not: it does not bind sockets passed to it by a controller or
//! decide which node accepts (that is `vole-controller` and the node process
//! runtime), and it implements no protocol itself (see `vole-link` and
//! `vole-transport`).

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod control;
pub mod fdpass;
pub mod listen;
pub mod process;
pub mod quiet;
mod service;

pub use service::{
    GatewayFactory, Service, ServiceConfig, ServiceStats, SessionObserver, Snapshot, DRAIN_QUIET,
};

/// Errors of a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The wire layers failed to configure (TLS files, transports).
    #[error("transport configuration")]
    Transport(#[from] vole_transport::Error),
    /// The controller's handoff of sockets failed.
    #[error("socket handoff from the controller failed: {0}")]
    Handoff(String),
    /// The control link to the controller failed.
    #[error("control link: {0}")]
    Control(String),
}
