//! The contract between a vole controller and its node processes.
//!
//! * [`control`]: the control link's schema: the methods each side
//!   publishes, the node's configuration and status, the balance modes,
//!   the exit code for an unusable configuration;
//! * [`fdpass`]: passing descriptors over a Unix socket (`SCM_RIGHTS`,
//!   received close-on-exec), the frames of the socket handoff and of
//!   `dispatch` mode;
//! * [`quiet`]: a Unix stream registered with the reactor only while it is
//!   read, for sockets that are written far more often than read;
//! * [`listen`]: binding listening sockets (backlog, `SO_REUSEPORT`,
//!   close-on-exec) and accepting in batches.
//!
//! Both the controller (`vole-controller`) and the node runtime
//! (`vole-node`) depend on this crate, and neither on the other: the
//! controller speaks a schema, not a node's internals.
//!
//! What it is not: it serves no sessions and supervises no process; it
//! holds no policy (which node gets a connection is the controller's).

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod control;
pub mod fdpass;
pub mod listen;
pub mod quiet;

/// Errors of the controller-node plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
